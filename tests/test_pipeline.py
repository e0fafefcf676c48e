"""The pipelined scan: the same results as the serial loop, across frames and files; bounded memory; every thread
gone after a scan, a failure or Ctrl-C; worker failures on the file they belong to; precision and batch size.

Scans use real face detection on generated media and two small detectors (a colour-sensitive linear head at 32
and at 48 px, as an ensemble) so that scores differ from face to face and member crops differ in size.
"""

from __future__ import annotations

import _thread
import dataclasses
import math
import signal
import threading
import time
import weakref
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from deepscan.detectors.base import Detector, DetectorConfig
from deepscan.media.synthetic import moving_portrait_clip, second_portrait
from deepscan.pipeline import CtrlC, Pipeline
from deepscan.precision import (
    CPU_BATCH_SIZE,
    MAX_GPU_BATCH_SIZE,
    PrecisionError,
    autocast_dtype,
    gpu_batch_size,
)
from deepscan.scan import Judge, Member, ScanInterrupted, Scanner, ScanOptions
from deepscan.scan_stages import QUEUE_SIZES
from deepscan.weights import build_detector

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
pytestmark = pytest.mark.usefixtures("one_intra_op_thread")

BASE = ScanOptions(fps=4, batch_size=4, device="cpu")


class ColourHead(Detector):
    """A fake-logit that follows each crop's mean colour steeply: every face gets a score of its own."""

    def __init__(self, name: str, input_size: int, seed: int):
        super().__init__()
        self.config = DetectorConfig(name=name, paper="a test detector", input_size=input_size)
        generator = torch.Generator().manual_seed(seed)
        self.head = torch.nn.Linear(3, 1)
        with torch.no_grad():
            self.head.weight.copy_(20 * torch.randn(1, 3, generator=generator))
            self.head.bias.fill_(-float(self.head.weight.sum()) / 2)
        self.calls: list[dict] = []  # what each forward saw

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls.append({"autocast": torch.is_autocast_enabled("cpu") and torch.get_autocast_dtype("cpu"),
                           "inference_mode": torch.is_inference_mode_enabled(), "faces": len(x),
                           "thread": threading.current_thread().name})
        return self.head(x.mean(dim=(2, 3))).squeeze(1)


@pytest.fixture(scope="module")
def scanner():
    judge = Judge([Member(ColourHead("colour_a", 32, seed=1)), Member(ColourHead("colour_b", 48, seed=2))], 0.5,
                  "default", is_ensemble=True)
    with Scanner(None, BASE, judge=judge) as scanner:
        yield scanner


@pytest.fixture
def options(scanner):
    """Set the shared scanner's options for one test: ``options(**changes)`` on top of BASE."""

    def set_options(**changes) -> None:
        scanner.options = dataclasses.replace(BASE, **changes)

    yield set_options
    scanner.options = BASE


@pytest.fixture(scope="module")
def folder(tmp_path_factory, portrait_image) -> Path:
    """Images (two people, and one with no face), two clips and a file that is no media, sorted by name."""
    root = tmp_path_factory.mktemp("case")
    Image.fromarray(portrait_image).save(root / "a_portrait.jpg", quality=92)
    Image.fromarray(second_portrait()).save(root / "b_astronaut.png")
    moving_portrait_clip(root / "c_two_faces.mp4", seconds=2.0, fps=25, size=(320, 240), faces=2)
    Image.fromarray(np.full((240, 320, 3), 200, np.uint8)).save(root / "d_no_face.png")
    (root / "e_broken.mp4").write_text("not a video\n")
    Image.fromarray(portrait_image[::2, ::2]).save(root / "f_small_portrait.png")
    moving_portrait_clip(root / "g_one_face.mp4", seconds=1.5, fps=25, size=(320, 240), faces=1)
    Image.fromarray(portrait_image[:, ::-1]).save(root / "h_mirrored.jpg")
    return root


def files_of(folder: Path) -> list[Path]:
    return sorted(folder.iterdir())


def comparable(result) -> dict:
    """A result as data, every float compared to 1e-6 (batches of other sizes may round the last bits of a
    score differently), and without the time it took."""

    def approx(value):
        if isinstance(value, float):
            return pytest.approx(value, rel=1e-6, abs=1e-6, nan_ok=True)
        if isinstance(value, dict):
            return {key: approx(item) for key, item in value.items()}
        if isinstance(value, (list, tuple)):
            return [approx(item) for item in value]
        return value

    data = result.to_dict()
    del data["seconds"]
    return approx(data)


def scan(scanner, paths, **on) -> list:
    return list(scanner.scan_files(paths, **on))


# --- the same results as the serial loop ------------------------------------------------------------------------


def test_a_clip_scans_to_the_same_faces_tracks_scores_and_verdicts_as_the_serial_loop(scanner, options,
                                                                                       two_face_clip):
    options(pipeline=False)
    [serial] = scan(scanner, [two_face_clip])
    options(pipeline=True)
    [pipelined] = scan(scanner, [two_face_clip])
    assert serial.status == "complete" and serial.frames_scanned == 8
    assert len(serial.faces) >= 14 and {face.track_id for face in serial.faces} == {0, 1}  # two people
    assert len({round(face.fake_probability, 6) for face in serial.faces}) > 4  # the scores do differ
    assert comparable(pipelined) == comparable(serial)
    assert comparable(scanner.scan_file(two_face_clip)) == comparable(serial)


def test_a_folder_of_images_and_clips_scans_as_the_serial_loop_in_input_order(scanner, options, folder):
    paths = files_of(folder)
    options(pipeline=False)
    serial = scan(scanner, paths)
    options(pipeline=True)
    pipelined = scan(scanner, paths)
    assert [Path(result.path) for result in pipelined] == paths
    assert [result.status for result in serial] == ["complete"] * 4 + ["error"] + ["complete"] * 3
    assert [len(result.faces) for result in serial][:2] == [1, 1] and serial[3].verdict.label == "no face"
    assert [comparable(result) for result in pipelined] == [comparable(result) for result in serial]


def test_the_shipped_detector_scores_the_same_in_batches_across_frames(two_face_clip):
    """FAClue with its shipped weights through both paths: the real model's channels-last scoring, in batches of
    3 faces that cut frames in two."""
    detector, weights = build_detector("faclue")
    options = ScanOptions(fps=2, batch_size=3, device="cpu")
    with Scanner(detector, options, weights=weights) as scanner:
        [pipelined] = scanner.scan_files([two_face_clip])
        scanner.options = dataclasses.replace(options, pipeline=False)
        [serial] = scanner.scan_files([two_face_clip])
    assert serial.frames_scanned == 4 and len(serial.faces) == 8
    assert len({round(face.fake_probability, 4) for face in serial.faces}) > 4
    assert comparable(pipelined) == comparable(serial)


def test_batches_are_filled_across_files(scanner, options, folder, monkeypatch):
    """One face per image: while the first batch is being scored the other images' faces wait, and a later batch
    takes faces of several files together (scored file by file, every batch would hold one face)."""
    images = [path for path in files_of(folder) if path.suffix in {".jpg", ".png"} and "no_face" not in path.name]
    detected_all, detections = threading.Event(), []
    real_detect = scanner.faces.detect

    def counting_detect(image):
        faces = real_detect(image)
        detections.append(len(faces))
        if len(detections) == len(images):
            detected_all.set()
        return faces

    first = scanner.judge.members[0]
    real_probabilities, batches = first.probabilities, []

    def first_batch_waits(crops):
        if not batches:  # hold the first batch until every image's faces are found
            detected_all.wait(timeout=60)
        batches.append(len(crops))
        return real_probabilities(crops)

    monkeypatch.setattr(scanner.faces, "detect", counting_detect)
    monkeypatch.setattr(first, "probabilities", first_batch_waits)
    options(batch_size=4)
    results = scan(scanner, images)
    assert [result.status for result in results] == ["complete"] * len(images) and detections == [1] * len(images)
    assert sum(batches) == len(images) and max(batches) > 1


# --- bounded memory ---------------------------------------------------------------------------------------------


def test_every_channel_is_bounded(scanner, options, portrait_clip, monkeypatch):
    pipelines = []

    class Recorded(Pipeline):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            pipelines.append(self)

    monkeypatch.setattr("deepscan.scan.Pipeline", Recorded)
    scan(scanner, [portrait_clip])
    [pipeline] = pipelines
    sizes = {channel.name: channel.maxsize for channel in pipeline.channels}
    assert sizes == {"decoded frames": QUEUE_SIZES.decoded_frames, "found faces": QUEUE_SIZES.found_faces,
                     "scored frames": QUEUE_SIZES.scored_frames}
    assert all(0 < size < 10_000 for size in sizes.values())


def test_the_decoder_runs_ahead_of_a_stalled_face_stage_by_a_few_frames_only(scanner, options, portrait_clip,
                                                                             monkeypatch):
    """Every frame of a 50-frame clip, the face stage held on the first: decoded frames alive at once stay within
    the channel's bound (plus one in the hands of each of the stages on either side, and one being decoded),
    where an unbounded queue would hold the whole clip."""
    alive, most_alive, decoded_all = set(), [0], threading.Event()
    real_frames = scanner._frames

    def tracked_frames(path, result):
        for index, time_s, image in real_frames(path, result):
            alive.add(id(image))
            most_alive[0] = max(most_alive[0], len(alive))
            weakref.finalize(image, alive.discard, id(image))
            yield index, time_s, image
        decoded_all.set()

    class StalledFaces:
        calls = 0

        def detect(self, image):
            StalledFaces.calls += 1
            if StalledFaces.calls == 1:
                decoded_all.wait(timeout=1.5)  # an unbounded pipeline decodes the whole clip meanwhile
            return []

    monkeypatch.setattr(scanner, "_frames", tracked_frames)
    monkeypatch.setattr(scanner, "faces", StalledFaces())
    options(every_frame=True)
    [result] = scan(scanner, [portrait_clip])
    assert result.status == "complete" and result.frames_scanned == 50
    assert 2 <= most_alive[0] <= QUEUE_SIZES.decoded_frames + 3


# --- threads, failures, Ctrl-C ----------------------------------------------------------------------------------


def test_no_thread_outlives_a_scan_or_an_abandoned_one(scanner, options, folder):
    before = threading.active_count()
    scan(scanner, files_of(folder))
    assert threading.active_count() == before
    results = scanner.scan_files(files_of(folder))
    next(results)
    assert threading.active_count() <= before + 3  # decode, faces, scoring: at work on the next files
    results.close()  # what `break` in a for loop does, or contextlib.closing
    assert threading.active_count() == before


class FailingFaces:
    """Real face detection that raises ``error`` on frame ``fail_on`` of file ``fail_in`` (counted from 1 in
    the order files are scanned; the scan calls reset() before each file, in the thread that calls detect)."""

    def __init__(self, detector, fail_in: int, fail_on: int, error: BaseException):
        self.detector, self.fail_in, self.fail_on, self.error = detector, fail_in, fail_on, error
        self.file = self.frame = 0

    def reset(self) -> None:
        self.file, self.frame = self.file + 1, 0

    def detect(self, image):
        self.frame += 1
        if (self.file, self.frame) == (self.fail_in, self.fail_on):
            raise self.error
        return self.detector.detect(image)


@pytest.mark.parametrize("pipeline", [True, False])
def test_a_face_stage_failure_is_its_files_one_line_error_and_the_frames_before_are_kept(
        scanner, options, tmp_path, portrait_image, monkeypatch, pipeline):
    Image.fromarray(portrait_image).save(tmp_path / "a.jpg")
    clip = moving_portrait_clip(tmp_path / "b.mp4", seconds=2.0, fps=25, size=(320, 240))
    Image.fromarray(portrait_image).save(tmp_path / "c.jpg")
    before = threading.active_count()
    monkeypatch.delenv("DEEPSCAN_DEBUG", raising=False)
    monkeypatch.setattr(scanner, "faces", FailingFaces(scanner.faces, 2, 3, RuntimeError("tflite\nexploded")))
    options(pipeline=pipeline)
    a, b, c = scan(scanner, [tmp_path / "a.jpg", clip, tmp_path / "c.jpg"])
    assert (a.status, c.status) == ("complete", "complete") and len(a.faces) == len(c.faces) == 1
    assert b.status == "partial" and b.frames_scanned == 2 and len(b.faces) == 2
    assert b.message == (f"{clip}: unexpected failure while reading it (RuntimeError: tflite exploded); please "
                         "report it (DEEPSCAN_DEBUG=1 shows where)")
    assert all(not math.isnan(face.fake_probability) for face in b.faces) and b.verdict is not None
    assert threading.active_count() == before


@pytest.mark.parametrize("pipeline", [True, False])
def test_a_scoring_failure_is_the_error_of_the_file_whose_faces_it_held(scanner, options, tmp_path,
                                                                       portrait_image, monkeypatch, pipeline):
    paths = []
    for name in ("a.jpg", "b.jpg", "c.jpg"):
        Image.fromarray(portrait_image).save(tmp_path / name)
        paths.append(tmp_path / name)
    monkeypatch.delenv("DEEPSCAN_DEBUG", raising=False)
    first = scanner.judge.members[0]
    real_probabilities, calls = first.probabilities, []

    def second_batch_fails(crops):
        calls.append(len(crops))
        if len(calls) == 2:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory")
        return real_probabilities(crops)

    monkeypatch.setattr(first, "probabilities", second_batch_fails)
    options(pipeline=pipeline, batch_size=1)  # one face per batch: the second batch is b.jpg's face
    a, b, c = scan(scanner, paths)
    assert (a.status, b.status, c.status) == ("complete", "error", "complete")
    assert "unexpected failure while reading it (OutOfMemoryError: CUDA out of memory)" in b.message


def test_under_deepscan_debug_a_worker_failure_is_raised_with_its_traceback(scanner, options, portrait_clip,
                                                                           monkeypatch):
    before = threading.active_count()
    monkeypatch.setenv("DEEPSCAN_DEBUG", "1")
    monkeypatch.setattr(scanner, "faces", FailingFaces(scanner.faces, 1, 2, ValueError("bad box")))
    with pytest.raises(ValueError, match="^bad box$") as raised:
        scanner.scan_file(portrait_clip)
    assert "detect" in [entry.name for entry in raised.traceback]  # where it failed, in the worker thread
    assert threading.active_count() == before


@pytest.fixture
def sigint_raises():
    """Ctrl-C (SIGINT) raising KeyboardInterrupt, as in a terminal, however this process was started: one that a
    shell starts in the background (``pytest ... &``) ignores SIGINT, and ``_thread.interrupt_main()`` then does
    nothing at all. The scan must leave the handler as it found it."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    signal.signal(signal.SIGINT, previous)


def wait_until(condition, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.005)


def scored_faces_and_verdict(result) -> bool:
    return all(not math.isnan(face.fake_probability) for face in result.faces) and result.verdict is not None


@pytest.mark.parametrize("how", ["on_frame", "signal"])
@pytest.mark.parametrize("pipeline", [True, False])
def test_ctrl_c_ends_the_scan_with_the_files_results_so_far_and_stops_every_thread(scanner, options, portrait_clip,
                                                                                  monkeypatch, sigint_raises, how,
                                                                                  pipeline):
    """Ctrl-C reaches the caller's thread: raised there by on_frame, or delivered as SIGINT while the caller
    waits for results (the stages' threads never see it). The face stage that sends SIGINT then waits for the
    scan to stop it, so that the scan cannot run to its end first, however the threads are scheduled."""
    before = threading.active_count()
    frames_seen = []

    def on_frame(*_path):
        frames_seen.append(1)
        if how == "on_frame" and len(frames_seen) == 3:
            raise KeyboardInterrupt

    if how == "signal":
        real_detect, detections = scanner.faces.detect, []

        def detect_then_ctrl_c(image):
            detections.append(1)
            if len(detections) == 4:
                _thread.interrupt_main()  # as SIGINT does: KeyboardInterrupt in the main thread
                if pipeline:  # this is the face stage's thread: it goes on only once the scan stopped it
                    stopping = scanner._pipeline
                    wait_until(lambda: stopping.stopped)
            return real_detect(image)

        monkeypatch.setattr(scanner.faces, "detect", detect_then_ctrl_c)
    options(pipeline=pipeline)
    with pytest.raises(ScanInterrupted) as stopped:
        scan(scanner, [portrait_clip, portrait_clip], on_frame=on_frame)
    result = stopped.value.result
    assert result.status == "partial" and result.message == f"{portrait_clip}: interrupted by the user"
    # Frames count once their faces are scored and handed to the caller's thread: those still in flight when
    # Ctrl-C came are not counted, and no frame is counted twice or unscored.
    assert result.frames_scanned == len(frames_seen) <= 4
    if how == "on_frame":
        assert result.frames_scanned == 3
    assert len(result.faces) == result.frames_scanned  # one face a frame, every one of them scored
    assert scored_faces_and_verdict(result)
    assert threading.active_count() == before


class CtrlCInAFinalizer:
    """Dropped on the caller's thread, it is Ctrl-C pressed while a finalizer runs there: a KeyboardInterrupt
    raised inside a finalizer is printed as "Exception ignored" and lost."""

    def __del__(self):
        _thread.interrupt_main()
        len("the signal is handled at this call")


# Each puts Ctrl-C (SIGINT, as the terminal sends it) at one place where the caller's thread can be, the 1st file
# of two being scanned; then: the 1st file's result as ScanInterrupted must carry it, and how many frames.
def _while_starting_the_stages(scanner, monkeypatch, frames_seen):
    decoding, real_frames, real_start = threading.Event(), scanner._frames, Pipeline.start

    def frames(path, result):
        decoding.set()
        yield from real_frames(path, result)

    def start(pipeline, name, *args):
        if name == "scoring":  # the decoder has begun the 1st file: it is in progress
            decoding.wait(30)
            _thread.interrupt_main()
        real_start(pipeline, name, *args)

    monkeypatch.setattr(scanner, "_frames", frames)
    monkeypatch.setattr(Pipeline, "start", start)
    return "partial", lambda: 0


def _while_waiting_for_a_frame(scanner, monkeypatch, frames_seen):
    """As the wait for the next scored frame takes the queue's lock again (before, Ctrl-C there was RuntimeError:
    release unlocked lock). No frame is decoded before the caller's thread waits."""
    waited, real_frames, real_acquire_restore = threading.Event(), scanner._frames, threading.Condition._acquire_restore

    def frames(path, result):
        waited.wait(30)
        yield from real_frames(path, result)

    def acquire_restore(condition, state):
        pipeline = scanner._pipeline
        if (threading.current_thread() is threading.main_thread() and not waited.is_set() and pipeline is not None
                and len(pipeline.channels) == 3 and condition is pipeline.channels[-1]._queue.not_empty):
            waited.set()
            _thread.interrupt_main()
        return real_acquire_restore(condition, state)

    monkeypatch.setattr(scanner, "_frames", frames)
    monkeypatch.setattr(threading.Condition, "_acquire_restore", acquire_restore)
    return "partial", lambda: min(len(frames_seen), 1)


def _while_concluding_a_file(scanner, monkeypatch, frames_seen):
    """Scanned to its end and being concluded (before, a Ctrl-C there lost the file's result: the scan went on to
    interrupt the next file, or raised a plain KeyboardInterrupt)."""
    real_conclude = scanner._conclude

    def conclude(result, started):
        if not frames_seen[-1:] == ["concluded"]:
            frames_seen.append("concluded")
            _thread.interrupt_main()
        real_conclude(result, started)

    monkeypatch.setattr(scanner, "_conclude", conclude)
    return "complete", lambda: 8


def _in_a_finalizer(scanner, monkeypatch, frames_seen):
    """While a finalizer runs on the caller's thread (before, the scan ran on to its end: Ctrl-C was lost)."""

    def on_frame(*_path):
        frames_seen.append(1)
        if len(frames_seen) == 2:
            CtrlCInAFinalizer()

    return "partial", lambda: 2, on_frame


@pytest.mark.parametrize(("where", "pipeline"), [
    (_while_starting_the_stages, True),
    (_while_waiting_for_a_frame, True),
    (_while_concluding_a_file, True),
    (_while_concluding_a_file, False),
    (_in_a_finalizer, True),
    (_in_a_finalizer, False),
], ids=lambda value: value.__name__.strip("_") if callable(value) else None)
def test_ctrl_c_wherever_it_lands_in_the_callers_thread_interrupts_the_file_in_progress(
        scanner, options, portrait_clip, monkeypatch, sigint_raises, where, pipeline):
    before = threading.active_count()
    frames_seen = []
    status, frames, *on_frame = where(scanner, monkeypatch, frames_seen)
    options(pipeline=pipeline)
    with pytest.raises((ScanInterrupted, KeyboardInterrupt)) as stopped:  # a plain KeyboardInterrupt fails below
        scan(scanner, [portrait_clip, portrait_clip], on_frame=on_frame[0] if on_frame else None)
    monkeypatch.undo()
    assert stopped.type is ScanInterrupted
    result = stopped.value.result
    assert (result.status, result.frames_scanned) == (status, frames())
    assert result.frames_scanned == len([seen for seen in frames_seen if seen == 1]) or status == "complete"
    assert len(result.faces) == result.frames_scanned and scored_faces_and_verdict(result)
    assert threading.active_count() == before


def test_ctrl_c_until_scan_file_returns_is_scan_interrupted_with_the_files_result(scanner, options, portrait_clip,
                                                                                 monkeypatch, sigint_raises):
    """Even once the scan has handed the result out: before, that Ctrl-C was a plain KeyboardInterrupt and the
    result, complete, was lost."""
    frames_seen = []
    _while_concluding_a_file(scanner, monkeypatch, frames_seen)
    with pytest.raises((ScanInterrupted, KeyboardInterrupt)) as stopped:
        scanner.scan_file(portrait_clip)
    assert stopped.type is ScanInterrupted
    result = stopped.value.result
    assert (result.status, result.frames_scanned, result.message) == ("complete", 8, None)
    assert scored_faces_and_verdict(result)


def test_a_ctrl_c_while_the_pipeline_closes_is_raised_once_every_thread_has_ended(sigint_raises):
    """SIGINT to the main thread while Pipeline.close() joins: before, it broke out of the join with the stage
    still running (and Python 3.11 then took that thread for ended)."""
    pipeline, ended = Pipeline("test"), threading.Event()

    def stage():
        wait_until(lambda: pipeline.stopped)
        signal.pthread_kill(threading.main_thread().ident, signal.SIGINT)
        time.sleep(0.5)  # still at work when the Ctrl-C comes
        ended.set()

    pipeline.start("slow", stage)
    with pytest.raises(KeyboardInterrupt):
        pipeline.close()
    assert ended.is_set() and not pipeline.alive()


def test_ctrl_c_held_by_nested_blocks_on_the_main_thread_only(sigint_raises):
    with CtrlC() as outer:
        _thread.interrupt_main()
        assert outer.take() == 1
        with CtrlC() as inner:
            _thread.interrupt_main()
            inner.passing = True
            _thread.interrupt_main()  # passed on: held by the outer block
            inner.passing = False
            assert inner.take() == 1
        assert outer.take() == 1
        elsewhere = []
        worker = threading.Thread(target=lambda: elsewhere.append(CtrlC().__enter__()._installed))
        worker.start()
        worker.join()
        assert elsewhere == [False]  # other threads never get KeyboardInterrupt
    # One held to the end of the block comes out there, as it came; the handler is the one before.
    with pytest.raises(KeyboardInterrupt):
        with CtrlC():
            _thread.interrupt_main()
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    with pytest.raises(ValueError):
        with CtrlC():
            _thread.interrupt_main()
            raise ValueError("already ending: the Ctrl-C held changes nothing")


def test_ctrl_c_while_decoding_a_file_of_a_folder_keeps_the_files_before(scanner, options, folder, monkeypatch,
                                                                          sigint_raises):
    real_frames = scanner._frames

    def ctrl_c_in_the_third_file(path, result):
        if path.name == "c_two_faces.mp4":
            for count, frame in enumerate(real_frames(path, result)):
                if count == 2:
                    raise KeyboardInterrupt
                yield frame
        else:
            yield from real_frames(path, result)

    before = threading.active_count()
    monkeypatch.setattr(scanner, "_frames", ctrl_c_in_the_third_file)
    results = scanner.scan_files(files_of(folder))
    assert [next(results).status, next(results).status] == ["complete", "complete"]
    with pytest.raises(ScanInterrupted) as stopped:
        next(results)
    assert stopped.value.result.status == "partial" and stopped.value.result.frames_scanned == 2
    assert threading.active_count() == before


def test_one_scan_at_a_time(scanner, options, portrait_clip):
    results = scanner.scan_files([portrait_clip])
    next(results)
    with pytest.raises(RuntimeError, match="already scanning"):
        scanner.scan_file(portrait_clip)
    results.close()
    assert scanner.scan_file(portrait_clip).status == "complete"


@pytest.mark.parametrize("pipelined", [True, False])
def test_the_scan_tells_each_files_expected_frames_before_its_first_frame(scanner, options, folder, pipelined):
    """What sizes a progress bar: by the file's headers, probed once by the decoder that scans it (the command line
    probed each file a second time for it)."""
    from deepscan.media.video import probe_video

    options(pipeline=pipelined)
    events = []
    results = scan(scanner, files_of(folder), on_frame=lambda path: events.append(("frame", path.name)),
                   on_start=lambda path, frames: events.append(("start", path.name, frames)))
    starts = [event for event in events if event[0] == "start"]
    scanned = [Path(result.path).name for result in results if result.frames_scanned]
    assert [name for _, name, _ in starts] == scanned  # once per file that gave a frame, in order
    for _, name, frames in starts:
        assert events.index(("start", name, frames)) < events.index(("frame", name))
        if name.endswith(".mp4"):
            info = probe_video(folder / name)
            assert frames == int(info.duration_s * BASE.fps) + 1
        else:
            assert frames == 1


def test_each_file_starts_a_new_face_search(scanner, options, folder, monkeypatch):
    """A face search that keeps state (one guided by the tracks so far) is reset before each file, in the
    thread that calls its detect()."""
    calls, detecting = [], []
    real_detect = scanner.faces.detect

    def reset():
        if not detecting:  # the guided search also resets itself, within detect(), on frames too small to tile
            calls.append("reset")

    def detect(image):
        calls.append("detect")
        detecting.append(image)
        try:
            return real_detect(image)
        finally:
            detecting.pop()

    monkeypatch.setattr(scanner.faces, "reset", reset, raising=False)
    monkeypatch.setattr(scanner.faces, "detect", detect)
    paths = [path for path in files_of(folder) if path.suffix == ".png"]
    scan(scanner, paths)
    assert calls == ["reset", "detect"] * len(paths)


# --- precision and batch size -----------------------------------------------------------------------------------


def test_scoring_runs_in_inference_mode_and_autocasts_only_when_asked(scanner, options, portrait_clip, monkeypatch):
    detector = scanner.judge.members[0].detector
    monkeypatch.setattr(detector, "calls", [])
    scan(scanner, [portrait_clip])
    assert detector.calls and all(call["inference_mode"] and call["autocast"] is False for call in detector.calls)
    assert {call["thread"] for call in detector.calls} == {"scan-scoring"}
    detector.calls.clear()
    options(precision="bf16")  # on the CPU only when asked for: autocast is per thread, so entered by the scorer
    [result] = scan(scanner, [portrait_clip])
    assert detector.calls and all(call["autocast"] is torch.bfloat16 for call in detector.calls)
    assert result.status == "complete"


def test_precision_picks_autocast_by_device():
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert autocast_dtype("auto", cpu) is None and autocast_dtype("fp32", cuda) is None
    assert autocast_dtype("bf16", cpu) is torch.bfloat16 and autocast_dtype("fp16", cpu) is torch.float16
    with pytest.raises(PrecisionError, match=r"^unknown precision 'half' \(auto, fp32, bf16 or fp16\)$"):
        autocast_dtype("half", cpu)


def test_auto_precision_on_cuda_is_bf16_where_the_gpu_supports_it(monkeypatch):
    cuda = torch.device("cuda")
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *args, **kwargs: True)
    assert autocast_dtype("auto", cuda) is torch.bfloat16
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *args, **kwargs: False)
    assert autocast_dtype("auto", cuda) is None and autocast_dtype("fp16", cuda) is torch.float16
    with pytest.raises(PrecisionError, match="does not support bfloat16"):
        autocast_dtype("bf16", cuda)


def test_an_unknown_precision_stops_the_scanner_before_any_file():
    with pytest.raises(PrecisionError, match="unknown precision"):
        Scanner(ColourHead("colour", 32, seed=0), ScanOptions(device="cpu", precision="int8"))


def test_batch_size_is_the_users_else_16_on_the_cpu(scanner, options):
    options(batch_size=None)
    assert scanner.batch_size == CPU_BATCH_SIZE == 16
    options(batch_size=5)
    assert scanner.batch_size == 5


@pytest.mark.parametrize(("free", "per_face", "expected"), [
    (8 << 30, 100 << 20, 32),  # half of 8 GiB holds 40 faces of 100 MiB: the power of two below
    (80 << 30, 1 << 20, MAX_GPU_BATCH_SIZE),  # capped
    (1 << 20, 10 << 20, 1),  # not even one fits: one at a time
    (64 << 20, 2 << 20, 16),
])
def test_the_gpu_batch_is_the_largest_power_of_two_that_fits_half_the_free_memory(free, per_face, expected):
    assert gpu_batch_size(free, per_face) == expected


@needs_cuda
def test_on_cuda_scores_match_the_cpu_and_the_batch_comes_from_free_memory(two_face_clip):
    detector, weights = build_detector("faclue")
    options = ScanOptions(fps=2, device="cpu", precision="fp32", batch_size=None)
    with Scanner(detector, options, weights=weights) as scanner:
        [on_cpu] = scanner.scan_files([two_face_clip])
    with Scanner(detector, dataclasses.replace(options, device="cuda"), weights=weights) as scanner:
        batch_size = scanner.batch_size
        [fp32] = scanner.scan_files([two_face_clip])
        scanner.options = dataclasses.replace(scanner.options, precision="auto")
        [auto] = scanner.scan_files([two_face_clip])
    assert 1 <= batch_size <= MAX_GPU_BATCH_SIZE and batch_size & (batch_size - 1) == 0  # a power of two
    cpu_scores = [face.fake_probability for face in on_cpu.faces]
    assert len(cpu_scores) == 8 and len({round(score, 3) for score in cpu_scores}) > 4
    # TF32 convolutions (cuDNN's default on recent GPUs) round more than the CPU: close, not equal.
    np.testing.assert_allclose([face.fake_probability for face in fp32.faces], cpu_scores, atol=5e-3)
    # bfloat16 autocast where the GPU has it (frequency transforms stay float32 inside): closer than any verdict
    # would notice.
    np.testing.assert_allclose([face.fake_probability for face in auto.faces], cpu_scores, atol=0.05)


@needs_cuda
def test_on_cuda_crops_go_through_pinned_memory(monkeypatch):
    from deepscan.scan import face_logits

    pinned = []
    real_pin = torch.Tensor.pin_memory
    monkeypatch.setattr(torch.Tensor, "pin_memory", lambda self, *a, **k: (pinned.append(1), real_pin(self))[1])
    detector, _weights = build_detector("faclue")
    crops = np.random.default_rng(0).integers(0, 256, (3, 224, 224, 3), dtype=np.uint8)
    on_cpu = face_logits(detector.eval(), crops)
    on_gpu = face_logits(detector.cuda(), crops)
    assert pinned and np.allclose(on_gpu, on_cpu, atol=5e-2)


@needs_cuda
def test_frequency_transforms_stay_float32_under_cuda_autocast():
    from deepscan.frequency import dct2

    x = torch.rand(2, 3, 32, 32, device="cuda")
    with torch.autocast("cuda", dtype=torch.bfloat16):
        assert dct2(x).dtype == torch.float32 and torch.mm(x[0, 0], x[0, 0]).dtype == torch.bfloat16

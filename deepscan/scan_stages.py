"""The pipelined scan: each stage of a scan on a thread of its own, the caller's thread collecting the results.

    paths -> decode -> decoded frames -> faces -> found faces -> scoring -> scored frames -> the caller's thread

- **decode**: one file after another: its checks and checksum, then its frames (``Scanner._frames``: PyAV, or the
  image). A file that cannot be read, or that breaks part-way, ends with its error, after the frames it gave.
- **faces**: per frame, the faces found (``detect``), linked into tracks, cut at every member's input size and
  measured. The frame goes no further: only its crops, which are small, travel on (and, where a report keeps its
  faces, the frame at display size: ``deepscan.kept_faces``).
- **scoring**: faces in batches across frames and across files, so that a folder of images fills batches too. A
  batch is scored once it is full, or when a finished file waits on it and no more faces are ready (the stage
  would idle otherwise). A frame counts as scanned once its faces are scored. Where a report keeps faces, each
  file's result takes the scored faces it keeps here, in frame order (``FileResult.kept_faces``).
- **the caller's thread**: each scored frame goes into its file's result (the scan's progress callback is called
  there), and each file's result is handed out, in input order, as soon as it is complete.

A stage that fails on a file's frame marks the file failed from that frame on, and every stage passes the file's
later frames by: the result keeps every frame before the failure, as the serial scan does. Of several failures the
one at the earliest frame is the file's error, as the serial scan would have met it first.

Ctrl-C (in the caller's thread, where Python delivers it) stops every stage at once; the file in progress keeps
the frames already handed to the caller's thread, every face of them scored. Frames still on their way are not
counted: a frame counts once its faces are scored. The caller's thread holds Ctrl-C back (``deepscan.pipeline.
CtrlC``) and acts on it where it waits for the next frame, or before it hands a result out: never halfway through
its own bookkeeping, where it could lose a result, nor anywhere it could be lost.

Memory stays flat: the channels are bounded (``QUEUE_SIZES``) and the scoring stage holds at most
``WAITING_BATCHES x batch_size`` frames and one batch of faces, so decoded frames, crops and files in flight are
bounded whatever the length of a video or the number of files. Where a report keeps faces, each frame with faces
carries its display-size copy (at most 960 pixels wide) from the faces stage until it is scored: at most
``found_faces`` + ``batch_size`` of them at once; kept are a few faces per track (``deepscan.kept_faces``).
"""

from __future__ import annotations

import contextlib
import math
import threading
import time
from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

import numpy as np

from deepscan.kept_faces import keep_scored
from deepscan.pipeline import Channel, Pipeline, Stopped
from deepscan.scan_results import FaceResult, FileResult, ScanInterrupted

if TYPE_CHECKING:
    from deepscan.scan import FrameProgress, Scanner


@dataclass(frozen=True)
class QueueSizes:
    decoded_frames: int = 4  # whole frames are large, and decoding is the fastest stage: a few absorb its jitter
    found_faces: int = 32  # frames' crops ready to score: the next batch can start as soon as one is done
    scored_frames: int = 512  # face records only: the stages go on while the caller writes its report


QUEUE_SIZES = QueueSizes()
# The scoring stage releases its frames by this many batches' worth at the latest, even if they hold too few
# faces to fill a batch (frames without a face, say): what it holds stays bounded.
WAITING_BATCHES = 4

_FAILURE_LOCK = threading.Lock()


class _EndOfInput:
    """Follows the last file through every stage."""


END_OF_INPUT = _EndOfInput()


@dataclass(eq=False)
class FileJob:
    """One file on its way through the stages."""

    path: Path
    result: FileResult
    started: float
    # What a stage after decoding (or the caller's progress callback) failed with, and the index of the first frame
    # the failure takes out: that frame and the later ones are passed by.
    failure: BaseException | None = None
    failed_from: float = math.inf

    def fail(self, error: BaseException, from_frame: int) -> None:
        with _FAILURE_LOCK:
            # The stages see a file's frames at different times: keep the failure at the earliest frame.
            if from_frame < self.failed_from:
                self.failure, self.failed_from = error, from_frame

    def passes_by(self, frame_index: int) -> bool:
        return frame_index >= self.failed_from


@dataclass(eq=False)
class DecodedFrame:
    job: FileJob
    index: int
    time_s: float
    image: np.ndarray


@dataclass(eq=False)
class FoundFaces:
    job: FileJob
    index: int
    faces: list  # deepscan.scan._Pending: each face's record and its crops


@dataclass(eq=False)
class ScoredFrame:
    job: FileJob
    index: int
    faces: list[FaceResult]


@dataclass(eq=False)
class FileEnd:
    """After a file's last frame; ``error`` is what ended its decoding (None: it was read in full)."""

    job: FileJob
    error: BaseException | None = None


def scan_pipelined(
    scanner: Scanner,
    pipeline: Pipeline,
    paths: Iterable[str | Path],
    batch_size: int,
    progress: FrameProgress | None = None,
    sizes: QueueSizes = QUEUE_SIZES,
) -> Iterator[FileResult]:
    """Each file's complete result, in the order of ``paths``, its stages run on ``pipeline`` (which the caller
    closes); see the module's description. ``progress(path, result)`` is called after each frame is counted.

    Ctrl-C is held by ``pipeline.ctrl_c`` (entered by the caller) while this runs, and acted on where it belongs:
    it raises ScanInterrupted with the result of the file in progress, the earliest not handed out yet (as far as
    it was scanned; as concluded, if it was); a plain KeyboardInterrupt where no file is in progress. While the
    consumer has a result in hand, Ctrl-C is its own KeyboardInterrupt, raised where it lands."""
    ctrl_c = pipeline.ctrl_c
    in_flight: deque[FileJob] = deque()  # begun by the decoder, not yet handed out; in input order
    scored: Channel | None = None
    while True:
        ready: FileResult | None = None  # concluded, not yet handed out
        try:
            if scored is None:
                scored = _start_stages(scanner, pipeline, paths, batch_size, in_flight, sizes)
            ready = _next_result(scanner, scored, in_flight, progress)
            if ready is None:
                return
            if ctrl_c.let_through():
                raise KeyboardInterrupt  # held while the file was concluded: it is still the file in progress
            try:
                yield ready
            finally:
                ctrl_c.passing = False  # first, so that nothing can land between (no call comes before)
                ready = None  # handed out, whatever comes now
        except KeyboardInterrupt:
            _stop_for_ctrl_c(scanner, pipeline, in_flight, ready)


def _start_stages(scanner: Scanner, pipeline: Pipeline, paths: Iterable[str | Path], batch_size: int,
                  in_flight: deque, sizes: QueueSizes) -> Channel:
    decoded = pipeline.channel(sizes.decoded_frames, "decoded frames")
    found = pipeline.channel(sizes.found_faces, "found faces")
    scored = pipeline.channel(sizes.scored_frames, "scored frames")
    pipeline.start("decode", decode_files, scanner, paths, in_flight, decoded)
    pipeline.start("faces", find_faces, scanner, decoded, found)
    pipeline.start("scoring", score_faces, scanner, batch_size, found, scored)
    return scored


def _next_result(scanner: Scanner, scored: Channel, in_flight: deque,
                 progress: FrameProgress | None) -> FileResult | None:
    """The next file's result, once its last frame is counted and it is concluded (None after the last)."""
    while (item := scored.get()) is not END_OF_INPUT:
        if isinstance(item, ScoredFrame):
            _count_frame(item, progress)
            continue
        job = item.job
        result = scanner._settle(job.path, job.result, item.error if job.failure is None else job.failure,
                                 job.started)
        in_flight.popleft()  # only now: until it is concluded, the file is the one in progress
        return result
    return None


def _stop_for_ctrl_c(scanner: Scanner, pipeline: Pipeline, in_flight: deque, ready: FileResult | None) -> NoReturn:
    """Stop every stage, then raise ScanInterrupted with the file in progress (``ready``, concluded but not handed
    out, else the earliest one begun), or KeyboardInterrupt where there is none."""
    pipeline.close()  # no stage touches a result after this
    if ready is not None:
        raise ScanInterrupted(ready) from None
    if not in_flight:
        raise  # the KeyboardInterrupt being handled
    job = in_flight[0]
    scanner._settle(job.path, job.result, KeyboardInterrupt(), job.started)  # raises ScanInterrupted


def _count_frame(frame: ScoredFrame, progress: FrameProgress | None) -> None:
    job = frame.job
    if job.passes_by(frame.index):
        return
    job.result.faces.extend(frame.faces)
    job.result.frames_scanned += 1
    if progress is None:
        return
    try:
        progress(job.path, job.result)
    except Exception as error:  # noqa: BLE001 - as in the serial scan: the file's failure, after this frame
        job.fail(error, frame.index + 1)


# --- the stages, each on its own thread -------------------------------------------------------------------------


def decode_files(scanner: Scanner, paths: Iterable[str | Path], in_flight: deque, sink: Channel) -> None:
    for path in paths:
        path = Path(path)
        job = FileJob(path, scanner._new_result(path), time.perf_counter())
        in_flight.append(job)
        error = _decode_file(scanner, job, sink)
        sink.put(FileEnd(job, error))
        if isinstance(error, KeyboardInterrupt):
            break  # the user stopped the scan: begin no other file
    sink.put(END_OF_INPUT)


def _decode_file(scanner: Scanner, job: FileJob, sink: Channel) -> BaseException | None:
    try:
        scanner._check_file(job.path, job.result)
        with contextlib.closing(scanner._frames(job.path, job.result)) as frames:
            for index, time_s, image in frames:
                if job.passes_by(index):
                    break  # a later stage failed on this file: its other frames would be passed by
                sink.put(DecodedFrame(job, index, time_s, image))
    except Stopped:
        raise
    except BaseException as error:  # noqa: BLE001 - the file's own error, settled in the caller's thread
        return error
    return None


def find_faces(scanner: Scanner, source: Channel, sink: Channel) -> None:
    current, tracker = None, None
    while (item := source.get()) is not END_OF_INPUT:
        if isinstance(item, FileEnd):
            sink.put(item)
            continue
        job = item.job
        if job.passes_by(item.index):
            continue
        try:
            if job is not current:
                current, tracker = job, scanner._start_face_search()
            faces = scanner._find_faces(tracker, item.index, item.time_s, item.image)
        except BaseException as error:  # noqa: BLE001 - the file's failure, settled in the caller's thread
            job.fail(error, item.index)
            continue
        sink.put(FoundFaces(job, item.index, faces))
    sink.put(END_OF_INPUT)


def score_faces(scanner: Scanner, batch_size: int, source: Channel, sink: Channel) -> None:
    waiting: list[FoundFaces | FileEnd] = []  # in stream order, released together once their faces are scored
    faces = 0
    while (item := source.get()) is not END_OF_INPUT:
        if isinstance(item, FoundFaces):
            if item.job.passes_by(item.index):
                continue
            faces += len(item.faces)
        waiting.append(item)
        if _batch_is_due(waiting, faces, batch_size, more_ready=not source.empty()):
            _score_and_release(scanner, waiting, batch_size, sink)
            waiting, faces = [], 0
    _score_and_release(scanner, waiting, batch_size, sink)
    sink.put(END_OF_INPUT)


def _batch_is_due(waiting: list, faces: int, batch_size: int, *, more_ready: bool) -> bool:
    if faces == 0 or faces >= batch_size or len(waiting) >= WAITING_BATCHES * batch_size:
        return True
    # A finished file waits on these faces, and nothing else is ready: scoring now costs no throughput.
    return not more_ready and any(isinstance(item, FileEnd) for item in waiting)


def _score_and_release(scanner: Scanner, waiting: list, batch_size: int, sink: Channel) -> None:
    frames = [item for item in waiting if isinstance(item, FoundFaces) and not item.job.passes_by(item.index)]
    faces = [face for frame in frames for face in frame.faces]
    scored, error = _score_in_batches(scanner, faces, batch_size)
    if error is not None:
        reached = 0
        for frame in frames:
            reached += len(frame.faces)
            if reached > scored:  # a face of this frame was in the batch that failed
                frame.job.fail(error, frame.index)
    for item in waiting:
        if isinstance(item, FileEnd):
            sink.put(item)
        elif not item.job.passes_by(item.index):
            keep_scored(item.job.result, item.faces)  # what a report keeps of them (deepscan.kept_faces), if asked
            sink.put(ScoredFrame(item.job, item.index, [pending.face for pending in item.faces]))


def _score_in_batches(scanner: Scanner, faces: list, batch_size: int) -> tuple[int, BaseException | None]:
    """Score ``faces`` batch by batch: how many were scored, in order, and the failure that stopped the rest."""
    for start in range(0, len(faces), batch_size):
        try:
            scanner._score(faces[start : start + batch_size], batch_size)
        except BaseException as error:  # noqa: BLE001 - the failure of the files whose faces it held
            return start, error
    return len(faces), None

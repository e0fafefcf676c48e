"""The scan: media in -> faces -> batches -> scores -> tracks -> verdicts.

Frames stream from the decoder (one ``deepscan.media.open_media`` per file: its checksum read once, its headers
probed by the decoder that goes on to its frames); faces are found, cropped and scored in batches, so memory stays
flat whatever the video's length. Everything a report needs comes back as plain dataclasses
(``deepscan.scan_results``); a file's status and verdicts are concluded by ``deepscan.scan_conclusion``; rendering
is the caller's job. Two ways through, with the same results: the pipelined scan (``deepscan.scan_stages``:
decoding, face detection and scoring on threads of their own, batches across frames and files), and with
``ScanOptions(pipeline=False)`` the serial loop it is checked against (``deepscan.scan_serial``: one frame at a
time, in the caller's thread).

Scores are calibrated P(fake): each detector's logit goes through its model card's calibration (the identity
without one), and the track threshold is the card's unless the user gives one. A :class:`Judge` holds what
decides: one detector, or the ensemble's members, each scored on its own crop of the same face square at its
own input size.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterator

import numpy as np

from deepscan.catalog import DEFAULT_METHOD
from deepscan.kept_faces import KeepFaces, KeptFaces, attach_views
from deepscan.media import open_media
from deepscan.media.checksums import Checksums
from deepscan.media.errors import shown_path
from deepscan.media.face_search import make_face_search
from deepscan.media.faces import Face, crop_face
from deepscan.media.tracks import FaceTracker
from deepscan.media.video import expected_frame_count
from deepscan.pipeline import CtrlC, Pipeline
from deepscan.precision import (CPU_BATCH_SIZE, autocast, autocast_dtype, free_gpu_bytes, gpu_batch_size,
                                peak_bytes_per_face)
from deepscan.reliability import JointRange, ReliableRange, face_sharpness
from deepscan.runtime import select_device
from deepscan.runtimes import RuntimeChoiceError, load_runtime, runtime_custody
# FileResult and ScanInterrupted are also imported from here.
from deepscan.scan_results import FaceResult, FileResult, ScanInterrupted, media_record  # noqa: F401
from deepscan.scan_conclusion import judged_track, record_failure, scored_tracks
from deepscan.verdicts import TrackVerdict, file_verdict
from deepscan.weights import ResolvedWeights

if TYPE_CHECKING:
    from deepscan.calibration import Calibration
    from deepscan.detectors.base import Detector
    from deepscan.ensemble import EnsemblePlan
    from deepscan.runtimes import FaceRuntime

NO_WEIGHTS = ResolvedWeights(None, "none", None)

# Called in the caller's thread after each frame of a file is counted, with the file's result so far.
FrameProgress = Callable[[Path, FileResult], None]


@dataclass(frozen=True)
class ScanOptions:
    method: str = DEFAULT_METHOD
    weights: str | None = None
    fps: float = 2.0
    every_frame: bool = False
    batch_size: int | None = None  # faces per batch; None: 16 on the CPU, from free memory on CUDA (deepscan.precision)
    device: str = "auto"
    precision: str = "auto"  # "auto", "fp32", "bf16" or "fp16" (deepscan.precision)
    min_face_score: float = 0.5
    tile: bool = True  # False: the whole frame only, whatever face_search says (the old --no-tile)
    face_search: str = "guided"  # "guided", "tiles" or "whole" (deepscan.media.face_search)
    margin: float = 1.3
    threshold: float | None = None  # None: the weights' calibrated threshold (model card), else 0.5
    pipeline: bool = True  # False: the serial reference loop, one frame at a time in the caller's thread
    runtime: str = "auto"  # "auto", "eager", "compile", "onnx" or "openvino" (deepscan.runtimes)


@dataclass
class _Pending:
    face: FaceResult
    crops: dict[int, np.ndarray]  # input size -> the face's crop at that size
    kept: tuple | None = None  # for a report (Scanner keep_faces): (crop, FrameView), deepscan.kept_faces


def face_logits(detector: "Detector", crops: np.ndarray) -> np.ndarray:
    """Face crops ``(N, S, S, 3)`` uint8 RGB -> the detector's fake-logit per crop, in one batch on its device
    (eager PyTorch: the scan's members score through their runtime, :mod:`deepscan.runtimes`)."""
    import torch

    from deepscan.runtimes.torch_runtimes import eager_logits

    device = next(iter(detector.state_dict().values()), torch.empty(0)).device
    return eager_logits(detector, crops, device)


@dataclass
class Member:
    """One detector as the scan uses it: its weights' model card gives its calibration and reliable range."""

    detector: "Detector"
    weights: ResolvedWeights = NO_WEIGHTS
    calibration: "Calibration" = field(init=False)
    reliable_range: ReliableRange = field(init=False)
    runtime: "FaceRuntime | None" = field(default=None, init=False)  # set by the Scanner; None: eager

    def __post_init__(self) -> None:
        self.calibration = self.weights.calibration
        self.reliable_range = self.weights.reliable_range

    @property
    def name(self) -> str:
        return self.detector.config.name

    @property
    def input_size(self) -> int:
        return self.detector.config.input_size

    def probabilities(self, crops: np.ndarray) -> np.ndarray:
        """Calibrated P(fake) per crop."""
        logits = self.runtime.logits(crops) if self.runtime is not None else face_logits(self.detector, crops)
        return self.calibration.probability(logits)

    def custody(self) -> dict:
        reliability = self.weights.card.reliability if self.weights.card else None
        return {
            "name": self.name,
            "paper": self.detector.config.paper,
            "input_size": self.input_size,
            "weights": self.weights.custody(),
            "model_card": self.weights.card_custody(),
            "calibration": self.calibration.as_dict(),
            "reliable_range": self.reliable_range.as_dict(),
            "reliability_note": reliability.text if reliability else None,  # the card's words on where it fails
            "runtime": runtime_custody(self.runtime) if self.runtime is not None else {"name": "eager"},
        }


@dataclass
class Judge:
    """What turns faces into verdicts: the members (one detector, or the ensemble's) and the threshold.

    The ensemble's P(fake) is the mean of its members' calibrated P(fake); a face is inside its reliable range
    when it is inside every member's (the mean includes every member), each member's sharpness bound compared
    with the face's sharpness on that member's own crop (:class:`deepscan.reliability.JointRange`). The
    sharpness a face record reports is the one on the crop at the largest input size.
    """

    members: list[Member]
    threshold: float
    threshold_source: str  # "--threshold", "model card", "ensemble card" or "default"
    is_ensemble: bool = False
    trained: bool = True

    @classmethod
    def single(cls, detector: "Detector", weights: ResolvedWeights | None = None, threshold: float | None = None,
               *, trained: bool | None = None) -> "Judge":
        member = Member(detector, weights or NO_WEIGHTS)
        if threshold is not None:
            source = "--threshold"
        else:
            threshold = member.calibration.threshold
            source = "model card" if member.calibration.calibrated else "default"
        return cls([member], threshold, source, trained=member.weights.trained if trained is None else trained)

    @classmethod
    def ensemble(cls, plan: "EnsemblePlan", threshold: float | None = None) -> "Judge":
        """The ensemble's judge: each member of ``plan`` (:func:`deepscan.ensemble.plan_ensemble`) built as its
        weights were trained and calibrated by its own card; the threshold is ``threshold`` (``--threshold``)
        when given, else the plan's (the ensemble card's, or 0.5). Raises WeightsError for a member that does
        not build."""
        from deepscan.weights import build_detector

        members = [Member(*build_detector(name, resolved=resolved)) for name, resolved in plan.members]
        if threshold is not None:
            return cls(members, threshold, "--threshold", is_ensemble=True)
        return cls(members, plan.threshold, plan.threshold_source, is_ensemble=True)

    @property
    def name(self) -> str:
        return "ensemble" if self.is_ensemble else self.members[0].name

    @property
    def crop_sizes(self) -> list[int]:
        return sorted({member.input_size for member in self.members})

    @property
    def reliable_range(self) -> JointRange:
        return JointRange.of((member.input_size, member.reliable_range) for member in self.members)

    def custody(self) -> dict:
        """What a report records of how verdicts were reached."""
        return {
            "method": self.name,
            "threshold": self.threshold,
            "threshold_source": self.threshold_source,
            "reliable_range": self.reliable_range.as_dict(),
            "sharpness_input_size": max(self.crop_sizes),
            "members": [member.custody() for member in self.members],
        }


class Scanner:
    """Holds the detector(s) and the face detector for a run over many files; one scan at a time.

    ``Scanner(detector, options, trained=..., weights=...)`` scans with one detector, calibrated by its
    weights' card; ``Scanner(None, options, judge=judge)`` with a prepared :class:`Judge` (the ensemble).
    Faces are found only through ``self.faces.detect(image)`` (and its ``reset()`` before each file, where it
    has one), so that any face search with that method can stand in for :class:`FaceDetector`. ``checksums``:
    the command's (:class:`deepscan.media.checksums.Checksums`), so that what reads a file again after the scan
    (a report's heat maps) does not hash it again. ``keep_faces``: each file's result keeps the faces a report
    explains (``FileResult.kept_faces``, :mod:`deepscan.kept_faces`), so that the report need not decode it again.
    """

    def __init__(self, detector: "Detector | None", options: ScanOptions, *, trained: bool | None = None,
                 weights: ResolvedWeights | None = None, judge: Judge | None = None,
                 checksums: Checksums | None = None, keep_faces: KeepFaces | None = None):
        import torch

        if options.batch_size is not None and options.batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {options.batch_size}")
        self.options = options
        self.checksums = checksums if checksums is not None else Checksums()
        self.keep_faces = keep_faces
        self.judge = judge or Judge.single(detector, weights, options.threshold, trained=trained)
        self.trained = self.judge.trained
        self.device = torch.device(select_device(options.device))
        reduced = autocast_dtype(options.precision, self.device)  # an unknown or unsupported precision fails here
        if reduced is not None and options.runtime not in ("auto", "eager", "compile"):
            raise RuntimeChoiceError(f"runtime {options.runtime} runs float32 only: use --precision fp32, "
                                     "or --runtime eager")
        # Autocast (a reduced precision) works on PyTorch only: there auto means eager.
        runtime = "eager" if reduced is not None and options.runtime == "auto" else options.runtime
        for member in self.judge.members:
            # Eager and compile move the detector to the device, channels-last (see deepscan.runtimes).
            member.runtime = load_runtime(
                member.detector.eval(), runtime, weights_sha256=member.weights.sha256, input_size=member.input_size,
                device=self.device.type, batch_size=options.batch_size or CPU_BATCH_SIZE,
            )
        self.reliable_range = self.judge.reliable_range
        self.crop_sizes = self.judge.crop_sizes
        self.sharpness_size = max(self.crop_sizes)
        self.faces = make_face_search(options.face_search if options.tile else "whole",
                                      min_score=options.min_face_score)
        self._measured_batch_size: int | None = None
        self._scanning = threading.Lock()
        self._pipeline: Pipeline | None = None  # the pipelined scan's threads, while one runs

    def close(self) -> None:
        if self._pipeline is not None:
            self._pipeline.close()
        self.faces.close()

    def __enter__(self) -> "Scanner":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @property
    def batch_size(self) -> int:
        """Faces per batch: the options', else 16 on the CPU, else measured against free GPU memory (once)."""
        if self.options.batch_size is not None:
            return self.options.batch_size
        if self.device.type != "cuda":
            return CPU_BATCH_SIZE
        if self._measured_batch_size is None:
            free = free_gpu_bytes(self.device)
            with self._autocast():
                per_face = max(peak_bytes_per_face(member.probabilities, member.input_size, self.device)
                               for member in self.judge.members)
            self._measured_batch_size = gpu_batch_size(free, per_face)
        return self._measured_batch_size

    # --- scoring -------------------------------------------------------------------------------
    def _autocast(self):
        return autocast(self.device, autocast_dtype(self.options.precision, self.device))

    def _score(self, pending: list[_Pending], batch_size: int) -> None:
        """Give each pending face its calibrated P(fake) (and each member's, for the ensemble), in batches."""
        for start in range(0, len(pending), batch_size):
            batch = pending[start : start + batch_size]
            with self._autocast():  # per thread: entered in the thread that scores
                scores = {
                    member.name: member.probabilities(np.stack([p.crops[member.input_size] for p in batch]))
                    for member in self.judge.members
                }
            for index, item in enumerate(batch):
                by_member = {name: float(probabilities[index]) for name, probabilities in scores.items()}
                item.face.fake_probability = float(np.mean(list(by_member.values())))
                if self.judge.is_ensemble:
                    item.face.member_probabilities = by_member

    def _measure(self, record: FaceResult, face: Face, crops: dict[int, np.ndarray]) -> None:
        record.face_px = float(face.size)
        sizes = {self.sharpness_size, *self.reliable_range.sharpness_sizes}
        sharpness_at = {size: face_sharpness(crops[size]) for size in sizes}
        record.sharpness = sharpness_at[self.sharpness_size]
        record.outside_range = self.reliable_range.shortfalls(record.face_px, sharpness_at)

    # --- faces ---------------------------------------------------------------------------------
    def _start_face_search(self) -> FaceTracker:
        """A new file: the face search forgets the last one (where it keeps anything), and a new tracker."""
        reset = getattr(self.faces, "reset", None)
        if reset is not None:
            reset()
        return FaceTracker()

    def _find_faces(self, tracker: FaceTracker, frame_index: int, time_s: float, image: np.ndarray) -> list[_Pending]:
        """The frame's faces, tracked, cut and measured, waiting for their scores."""
        faces: list[Face] = self.faces.detect(image)
        found = []
        for face, track_id in zip(faces, tracker.update(frame_index, time_s, faces)):
            record = FaceResult(frame_index, time_s, track_id, tuple(map(float, face.box)), float(face.score))
            # Every member sees the same square of the frame, cut at its own input size.
            crops = {size: crop_face(image, face, size, self.options.margin) for size in self.crop_sizes}
            self._measure(record, face, crops)
            found.append(_Pending(record, crops))
        if self.keep_faces is not None and found:  # the heat maps' crop and frame, kept once scored
            attach_views(found, faces, image, self.judge.members[0].input_size, self.options.margin)
        return found

    # --- files ---------------------------------------------------------------------------------
    def _new_result(self, path: Path) -> FileResult:
        keep, size = self.keep_faces, self.judge.members[0].input_size
        kept = None if keep is None else KeptFaces(keep, size, self.options.margin)
        return FileResult(path=str(path), kind="image", status="complete", kept_faces=kept)

    @property
    def sampling_fps(self) -> float | None:
        """Frames per second sampled from videos; None: every frame."""
        return None if self.options.every_frame else self.options.fps

    def _check_file(self, path: Path, result: FileResult) -> None:
        media = open_media(path, checksums=self.checksums)  # the kind: by extension, else by content
        result.kind = media.kind
        # Through deepscan.media.files: a pipe or device is refused here, before anything reads it.
        result.sha256, result.size_bytes = media.sha256()

    def _frames(self, path: Path, result: FileResult) -> Iterator[tuple[int, float, np.ndarray]]:
        with open_media(path, kind=result.kind) as media:
            result.media = media_record(media.info)  # the probe: the decoder's first steps
            for frame in media.frames(fps=self.sampling_fps):
                yield frame.index, frame.time_s, frame.image

    def expected_frames(self, result: FileResult) -> int | None:
        """How many frames the scan of ``result``'s file counts, by what its headers said (None: unknown)."""
        if result.kind == "image":
            return 1
        return expected_frame_count(result.media.get("duration_s"), result.media.get("frame_count"),
                                    self.sampling_fps)

    def _progress(self, on_frame: Callable[[Path], None] | None,
                  on_start: Callable[[Path, int | None], None] | None) -> FrameProgress | None:
        """The scans' one callback after each counted frame: ``on_start(path, expected frames)`` at a file's first,
        then ``on_frame(path)``."""
        if on_frame is None and on_start is None:
            return None

        def counted(path: Path, result: FileResult) -> None:
            if on_start is not None and result.frames_scanned == 1:
                on_start(path, self.expected_frames(result))
            if on_frame is not None:
                on_frame(path)

        return counted

    @contextlib.contextmanager
    def _one_scan(self) -> Iterator[None]:
        # The face search and the detectors hold state that two scans at once would share.
        if not self._scanning.acquire(blocking=False):
            raise RuntimeError("this Scanner is already scanning: one scan at a time (finish or close the other)")
        try:
            yield
        finally:
            self._scanning.release()

    def scan_files(self, paths: Iterable[str | os.PathLike[str]], on_frame: Callable[[Path], None] | None = None,
                   on_start: Callable[[Path, int | None], None] | None = None) -> Iterator[FileResult]:
        """Scan ``paths`` in turn, yielding each file's complete result, in order, as soon as it is done.

        Several files are in flight at once when the pipeline has room, so that small files (images) fill the
        detector's batches together. ``on_frame(path)`` is called, in the caller's thread, after each frame of
        ``path`` is scanned; before the first, ``on_start(path, frames)`` with the number of frames the scan
        expects of the file by its headers (None: unknown), to size a progress bar without probing the file again.
        A file that fails is its result's error, and the scan goes on. Stopping early: close the iterator
        (``contextlib.closing``) to stop the pipeline's threads at once.

        Ctrl-C raises ScanInterrupted with the result of the file in progress: as far as it was scanned, or as
        concluded if it was scanned to its end but not yet handed out. Where no file is in progress (none begun
        yet, or the last one handed out) it is a plain KeyboardInterrupt, as it is while the caller has a result
        in hand (raised where it lands in the caller's code). Either way every thread of the scan has ended.
        """
        # Ctrl-C is held while the scan's own code runs in this thread, and acted on where it belongs: raised
        # wherever it lands, it could be lost in a finalizer or break a lock, a join or the bookkeeping of a file.
        progress = self._progress(on_frame, on_start)
        with CtrlC() as ctrl_c, self._one_scan():
            if not self.options.pipeline:
                from deepscan.scan_serial import scan_serially

                yield from scan_serially(self, map(Path, paths), progress, ctrl_c)
                return
            from deepscan.scan_stages import scan_pipelined

            with Pipeline("scan", ctrl_c) as self._pipeline:
                try:
                    yield from scan_pipelined(self, self._pipeline, paths, self.batch_size, progress)
                finally:
                    self._pipeline = None

    def scan_file(self, path: Path, on_frame: Callable[[], None] | None = None) -> FileResult:
        """Scan one file: its result (status complete, partial or error); Ctrl-C until it returns raises
        ScanInterrupted with the result so far. ``on_frame()`` is called after each frame is scanned."""
        result = None
        try:
            with CtrlC():  # held from the moment the scan hands the result out until this returns it
                tick = None if on_frame is None else (lambda _path: on_frame())
                with contextlib.closing(self.scan_files([path], tick)) as results:
                    result = next(results)
        except KeyboardInterrupt:
            if result is None:
                raise
            raise ScanInterrupted(result) from None
        return result

    def _settle(self, path: Path, result: FileResult, error: BaseException | None, started: float) -> FileResult:
        """Conclude the file's result, recording ``error`` (what ended it early; None: nothing) as its status and
        one-line message. Ctrl-C raises ScanInterrupted carrying the result so far; a failure deepscan did not
        foresee is raised as it is under DEEPSCAN_DEBUG."""
        if isinstance(error, KeyboardInterrupt):
            result.status, result.message = "partial", f"{shown_path(path)}: interrupted by the user"
            self._conclude(result, started)
            raise ScanInterrupted(result) from None
        record_failure(path, result, error)
        self._conclude(result, started)
        return result

    def _conclude(self, result: FileResult, started: float) -> None:
        result.seconds = time.perf_counter() - started
        result.tracks = [self._track(track_id, faces) for track_id, faces in scored_tracks(result.faces)]
        if result.status != "error" or result.tracks:
            result.verdict = file_verdict(result.tracks, trained=self.trained)
        if result.kept_faces is not None:
            result.kept_faces.conclude(result.tracks)

    def _track(self, track_id: int, faces: list[FaceResult]) -> TrackVerdict:
        return judged_track(self.judge, self.reliable_range, track_id, faces)

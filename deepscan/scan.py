"""The scan pipeline: media in -> faces -> batches -> scores -> tracks -> verdicts.

Frames stream one at a time from the decoder; faces are cropped and queued, and the queue is scored in
batches, so memory stays flat whatever the video's length. Everything a report needs comes back as plain
dataclasses (``FileResult``); rendering is the caller's job.

Scores are calibrated P(fake): each detector's logit goes through its model card's calibration (the identity
without one), and the track threshold is the card's unless the user gives one. A :class:`Judge` holds what
decides: one detector, or the ensemble's members, each scored on its own crop of the same face square at its
own input size.
"""

from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterator

import numpy as np

from deepscan.media.errors import MediaError, PartialMediaError, shown_path
from deepscan.media.faces import Face, FaceDetector, crop_face
from deepscan.media.files import file_sha256
from deepscan.media.images import load_image, media_kind
from deepscan.media.tracks import FaceTracker
from deepscan.media.video import iter_frames, probe_video
from deepscan.reliability import ReliableRange, bits_per_pixel, face_sharpness, strictest
from deepscan.runtime import select_device
from deepscan.verdicts import (
    FileVerdict,
    TrackVerdict,
    decide,
    file_verdict,
    judged_indices,
    member_agreement,
    track_verdict,
)
from deepscan.weights import ResolvedWeights

if TYPE_CHECKING:
    from deepscan.calibration import Calibration
    from deepscan.detectors.base import Detector
    from deepscan.ensemble import EnsemblePlan

NO_WEIGHTS = ResolvedWeights(None, "none", None)


@dataclass(frozen=True)
class ScanOptions:
    method: str = "faclue"
    weights: str | None = None
    fps: float = 2.0
    every_frame: bool = False
    batch_size: int = 16
    device: str = "auto"
    min_face_score: float = 0.5
    tile: bool = True
    margin: float = 1.3
    threshold: float | None = None  # None: the weights' calibrated threshold (model card), else 0.5


@dataclass
class FaceResult:
    frame_index: int
    time_s: float
    track_id: int
    box: tuple[float, float, float, float]
    detection_score: float
    fake_probability: float = float("nan")  # calibrated; for the ensemble, the mean of its members'
    face_px: float | None = None  # the face box's longer side, in frame pixels
    sharpness: float | None = None  # variance of the Laplacian of the grey crop (deepscan.reliability)
    outside_range: list[str] = field(default_factory=list)  # "too small", "too blurred": outside the reliable range
    member_probabilities: dict[str, float] | None = None  # ensemble only: each member's calibrated P(fake)


@dataclass
class FileResult:
    path: str
    kind: str  # "video" or "image"
    status: str  # "complete", "partial" or "error"
    message: str | None = None
    sha256: str | None = None
    size_bytes: int | None = None
    media: dict = field(default_factory=dict)
    frames_scanned: int = 0
    faces: list[FaceResult] = field(default_factory=list)
    tracks: list[TrackVerdict] = field(default_factory=list)
    verdict: FileVerdict | None = None
    seconds: float = 0.0

    def to_dict(self) -> dict:
        return asdict(self)


class ScanInterrupted(Exception):
    """Ctrl-C during a file: carries that file's results so far (status ``partial``)."""

    def __init__(self, result: "FileResult"):
        super().__init__(result.path)
        self.result = result


@dataclass
class _Pending:
    face: FaceResult
    crops: dict[int, np.ndarray]  # input size -> the face's crop at that size


def face_logits(detector: "Detector", crops: np.ndarray) -> np.ndarray:
    """Face crops ``(N, S, S, 3)`` uint8 RGB -> the detector's fake-logit per crop, in one batch on its device."""
    import torch

    device = next(iter(detector.state_dict().values()), torch.empty(0)).device
    batch = torch.from_numpy(np.ascontiguousarray(crops)).to(device).permute(0, 3, 1, 2).float().div_(255)
    with torch.inference_mode():
        logits = detector(batch)
    return logits.float().cpu().numpy().astype(np.float64)


@dataclass
class Member:
    """One detector as the scan uses it: its weights' model card gives its calibration and reliable range."""

    detector: "Detector"
    weights: ResolvedWeights = NO_WEIGHTS
    calibration: "Calibration" = field(init=False)
    reliable_range: ReliableRange = field(init=False)

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
        return self.calibration.probability(face_logits(self.detector, crops))

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
        }


@dataclass
class Judge:
    """What turns faces into verdicts: the members (one detector, or the ensemble's) and the threshold.

    The ensemble's P(fake) is the mean of its members' calibrated P(fake); its reliable range is the strictest
    of theirs (the mean includes every member), and sharpness is measured on the crop at the largest member
    input size, the blurriest of the members' crops, so that no member's range is overstated.
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
    def reliable_range(self) -> ReliableRange:
        return strictest([member.reliable_range for member in self.members])

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
    """Holds the detector(s) and the face detector for a run over many files.

    ``Scanner(detector, options, trained=..., weights=...)`` scans with one detector, calibrated by its
    weights' card; ``Scanner(None, options, judge=judge)`` with a prepared :class:`Judge` (the ensemble).
    """

    def __init__(self, detector: "Detector | None", options: ScanOptions, *, trained: bool | None = None,
                 weights: ResolvedWeights | None = None, judge: Judge | None = None):
        import torch

        self.options = options
        self.judge = judge or Judge.single(detector, weights, options.threshold, trained=trained)
        self.trained = self.judge.trained
        self.device = torch.device(select_device(options.device))
        for member in self.judge.members:
            # Channels-last suits the convolution kernels (measured 1.3-1.9x on FAClue on the CPU); the crops
            # arrive channels-last already, being a permuted (N, H, W, 3) array.
            member.detector = member.detector.to(self.device, memory_format=torch.channels_last).eval()
        self.reliable_range = self.judge.reliable_range
        self.crop_sizes = self.judge.crop_sizes
        self.sharpness_size = max(self.crop_sizes)
        self.faces = FaceDetector(min_score=options.min_face_score, tile=options.tile)

    def close(self) -> None:
        self.faces.close()

    def __enter__(self) -> "Scanner":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # --- scoring -------------------------------------------------------------------------------
    def _flush(self, pending: list[_Pending]) -> None:
        if not pending:
            return
        scores = {
            member.name: member.probabilities(np.stack([p.crops[member.input_size] for p in pending]))
            for member in self.judge.members
        }
        for index, item in enumerate(pending):
            by_member = {name: float(probabilities[index]) for name, probabilities in scores.items()}
            item.face.fake_probability = float(np.mean(list(by_member.values())))
            if self.judge.is_ensemble:
                item.face.member_probabilities = by_member
        pending.clear()

    def _measure(self, record: FaceResult, face: Face, crops: dict[int, np.ndarray]) -> None:
        record.face_px = float(face.size)
        record.sharpness = face_sharpness(crops[self.sharpness_size])
        record.outside_range = self.reliable_range.shortfalls(record.face_px, record.sharpness)

    # --- files ---------------------------------------------------------------------------------
    def _frames(self, path: Path, result: FileResult) -> Iterator[tuple[int, float, np.ndarray]]:
        if result.kind == "image":
            image = load_image(path)
            result.media = {"width": int(image.shape[1]), "height": int(image.shape[0])}
            yield 0, 0.0, image
            return
        info = probe_video(path)
        result.media = {
            "width": info.width,
            "height": info.height,
            "fps": info.fps,
            "duration_s": info.duration_s,
            "frame_count": info.frame_count,
            "codec": info.codec,
            "bit_rate": info.bit_rate,
            "bits_per_pixel": bits_per_pixel(info.bit_rate, info.width, info.height, info.fps),
        }
        for frame in iter_frames(path, fps=None if self.options.every_frame else self.options.fps):
            yield frame.index, frame.time_s, frame.image

    def scan_file(self, path: Path, on_frame: Callable[[], None] | None = None) -> FileResult:
        started = time.perf_counter()
        result = FileResult(path=str(path), kind="image", status="complete")
        try:
            result.kind = media_kind(path)
            # Through deepscan.media.files: a pipe or device is refused here, before anything reads it.
            result.sha256, result.size_bytes = file_sha256(path)
            self._scan_frames(path, result, on_frame)
        except KeyboardInterrupt:
            result.status, result.message = "partial", f"{shown_path(path)}: interrupted by the user"
            self._conclude(result, started)
            raise ScanInterrupted(result) from None
        except PartialMediaError as error:
            result.status, result.message = "partial", str(error)
        except MediaError as error:
            result.status, result.message = "error", str(error)
        except OSError as error:
            result.status, result.message = "error", f"{shown_path(path)}: {error.strerror or error}"
        except Exception as error:  # noqa: BLE001 - one hostile file must not end the scan of the others
            if os.environ.get("DEEPSCAN_DEBUG"):
                raise
            reason = " ".join(f"{type(error).__name__}: {error}".split())
            result.status = "partial" if result.frames_scanned else "error"
            result.message = (f"{shown_path(path)}: unexpected failure while reading it ({reason}); "
                              "please report it (DEEPSCAN_DEBUG=1 shows where)")
        self._conclude(result, started)
        return result

    def _scan_frames(self, path: Path, result: FileResult, on_frame) -> None:
        tracker = FaceTracker()
        pending: list[_Pending] = []
        try:
            for frame_index, time_s, image in self._frames(path, result):
                faces: list[Face] = self.faces.detect(image)
                for face, track_id in zip(faces, tracker.update(frame_index, time_s, faces)):
                    record = FaceResult(frame_index, time_s, track_id, tuple(map(float, face.box)), float(face.score))
                    # Every member sees the same square of the frame, cut at its own input size.
                    crops = {size: crop_face(image, face, size, self.options.margin) for size in self.crop_sizes}
                    self._measure(record, face, crops)
                    result.faces.append(record)
                    pending.append(_Pending(record, crops))
                if len(pending) >= self.options.batch_size:
                    self._flush(pending)
                result.frames_scanned += 1
                if on_frame is not None:
                    on_frame()
        finally:
            # Whatever was decoded before a failure (or an interrupt) is still scored and kept.
            self._flush(pending)

    def _conclude(self, result: FileResult, started: float) -> None:
        result.seconds = time.perf_counter() - started
        scored = [face for face in result.faces if not np.isnan(face.fake_probability)]
        by_track: dict[int, list[FaceResult]] = {}
        for face in scored:
            by_track.setdefault(face.track_id, []).append(face)
        result.tracks = [self._track(track_id, faces) for track_id, faces in sorted(by_track.items())]
        if result.status != "error" or result.tracks:
            result.verdict = file_verdict(result.tracks, trained=self.trained)

    def _track(self, track_id: int, faces: list[FaceResult]) -> TrackVerdict:
        threshold = self.judge.threshold
        outside_range = [f.outside_range for f in faces] if self.reliable_range.bounded else None
        track = track_verdict(
            track_id,
            [f.fake_probability for f in faces],
            [f.time_s for f in faces],
            threshold,
            outside_range=outside_range,
            reliable_range=self.reliable_range.describe(),
        )
        if self.judge.is_ensemble:
            judged = [faces[index] for index in judged_indices(outside_range, len(faces))]  # as the track's score
            track.members, track.agreement = member_agreement(
                {m.name: [f.member_probabilities[m.name] for f in judged] for m in self.judge.members},
                {m.name: m.calibration.threshold for m in self.judge.members},
                decide(track.score, threshold),
            )
        return track


"""A scanned file concluded: its status and one-line message from what ended it, and its tracks' verdicts."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from deepscan.media.errors import MediaError, PartialMediaError, shown_path
from deepscan.reliability import JointRange
from deepscan.scan_results import FaceResult, FileResult
from deepscan.verdicts import TrackVerdict, decide, judged_indices, member_agreement, track_verdict

if TYPE_CHECKING:
    from deepscan.scan import Judge


def record_failure(path: Path, result: FileResult, error: BaseException | None) -> None:
    """``error``, what ended the file's scan early (None: nothing), as the result's status and one-line message.
    A failure deepscan did not foresee is raised as it is under DEEPSCAN_DEBUG, as is anything not an Exception."""
    if isinstance(error, PartialMediaError):
        result.status, result.message = "partial", str(error)
    elif isinstance(error, MediaError):
        result.status, result.message = "error", str(error)
    elif isinstance(error, OSError):
        result.status, result.message = "error", f"{shown_path(path)}: {error.strerror or error}"
    elif isinstance(error, Exception) and not os.environ.get("DEEPSCAN_DEBUG"):
        # One hostile file must not end the scan of the others.
        reason = " ".join(f"{type(error).__name__}: {error}".split())
        result.status = "partial" if result.frames_scanned else "error"
        result.message = (f"{shown_path(path)}: unexpected failure while reading it ({reason}); "
                          "please report it (DEEPSCAN_DEBUG=1 shows where)")
    elif error is not None:
        raise error


def scored_tracks(faces: list[FaceResult]) -> Iterator[tuple[int, list[FaceResult]]]:
    """Each track's scored faces (an interrupt may leave some unscored), by track id."""
    by_track: dict[int, list[FaceResult]] = {}
    for face in faces:
        if not np.isnan(face.fake_probability):
            by_track.setdefault(face.track_id, []).append(face)
    yield from sorted(by_track.items())


def judged_track(judge: Judge, reliable_range: JointRange, track_id: int, faces: list[FaceResult]) -> TrackVerdict:
    """One track's verdict by ``judge`` (for the ensemble, with its members' own and their agreement), judged on
    its faces inside ``reliable_range``."""
    threshold = judge.threshold
    outside_range = [f.outside_range for f in faces] if reliable_range.bounded else None
    track = track_verdict(
        track_id,
        [f.fake_probability for f in faces],
        [f.time_s for f in faces],
        threshold,
        outside_range=outside_range,
        reliable_range=reliable_range.describe(),
    )
    if judge.is_ensemble:
        judged = [faces[index] for index in judged_indices(outside_range, len(faces))]  # as the track's score
        track.members, track.agreement = member_agreement(
            {m.name: [f.member_probabilities[m.name] for f in judged] for m in judge.members},
            {m.name: m.calibration.threshold for m in judge.members},
            decide(track.score, threshold),
        )
    return track

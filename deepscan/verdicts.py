"""From per-face scores to a verdict per face track and per file.

Track score: the median of the track's per-face P(fake). A face swap replaces the same identity in every
frame, so a forged track is high throughout; the median ignores the few frames where any detector misfires
(motion blur, a half-turned head, a bad crop), where the mean would be dragged by them and the maximum would
turn one bad frame into an accusation. The mean, the maximum and the share of faces above the threshold are
reported beside it so that a partly forged track (a swap in a few seconds only) stays visible.

File verdict: "fake" when any track is fake (one forged person makes a forged video), "real" when every track
is real, "no face" when nothing was found to judge (never "real"), and "untrained" when the detector has no
trained weights, whose scores mean nothing.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

FAKE, REAL, NO_FACE, UNTRAINED = "fake", "real", "no face", "untrained"


@dataclass
class TrackVerdict:
    track_id: int
    faces: int
    start_s: float
    end_s: float
    score: float  # median P(fake)
    mean: float
    max: float
    share_above_threshold: float
    label: str


@dataclass
class FileVerdict:
    label: str
    score: float | None  # the highest track score; None without faces
    reason: str
    fake_tracks: list[int] = field(default_factory=list)


def track_verdict(track_id: int, probabilities: list[float], times: list[float], threshold: float) -> TrackVerdict:
    scores = np.asarray(probabilities, dtype=float)
    median = float(np.median(scores))
    return TrackVerdict(
        track_id=track_id,
        faces=len(scores),
        start_s=float(min(times)),
        end_s=float(max(times)),
        score=median,
        mean=float(scores.mean()),
        max=float(scores.max()),
        share_above_threshold=float((scores >= threshold).mean()),
        label=FAKE if median >= threshold else REAL,
    )


def file_verdict(tracks: list[TrackVerdict], *, trained: bool) -> FileVerdict:
    if not tracks:
        return FileVerdict(NO_FACE, None, "no face was found, so there is nothing to judge")
    top = max(track.score for track in tracks)
    fake = [track.track_id for track in tracks if track.label == FAKE]
    if not trained:
        return FileVerdict(UNTRAINED, top, "the detector has no trained weights: its scores mean nothing", fake)
    if fake:
        ids = ", ".join(str(i) for i in fake)
        return FileVerdict(FAKE, top, f"face track {ids} scored as forged", fake)
    return FileVerdict(REAL, top, f"all {len(tracks)} face track(s) scored as authentic")

"""From per-face scores to a verdict per face track and per file.

Per-face P(fake) is the calibrated probability (see ``deepscan.calibration``) and the threshold is the one the
weights' model card chose on validation data, unless the user gives ``--threshold``.

Track score: the median of the track's per-face P(fake). A face swap replaces the same identity in every
frame, so a forged track is high throughout; the median ignores the few frames where any detector misfires
(motion blur, a half-turned head, a bad crop), where the mean would be dragged by them and the maximum would
turn one bad frame into an accusation. The mean, the maximum and the share of faces above the threshold are
reported beside it so that a partly forged track (a swap in a few seconds only) stays visible.

Track label: "fake" when the score reaches the threshold, "real" below it, and "inconclusive" when every face
of the track is outside the range the detector was found reliable on (smaller or blurrier than its model card's
``reliability`` section allows): its score is still reported, but it judges nothing.

File verdict: "fake" when any track is fake (one forged person makes a forged video); "inconclusive" when no
track is fake but some track is inconclusive (never "real" then: a face that could not be judged may be the
forged one); "real" when every track is real; "no face" when nothing was found to judge (never "real");
"untrained" when the detector has no trained weights, whose scores mean nothing.

Ensemble tracks also carry each member's own track score and label (at that member's threshold) and their
agreement: the share of members whose label equals the ensemble's decision on its score.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import numpy as np

FAKE, REAL, NO_FACE, UNTRAINED, INCONCLUSIVE = "fake", "real", "no face", "untrained", "inconclusive"
LABELS = (FAKE, REAL, INCONCLUSIVE, NO_FACE, UNTRAINED)


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
    reason: str | None = None  # why a track is inconclusive
    members: dict[str, dict] | None = None  # ensemble only: {method: {score, threshold, label}}
    agreement: float | None = None  # ensemble only: share of members whose label is the ensemble's decision


@dataclass
class FileVerdict:
    label: str
    score: float | None  # the highest track score; None without faces
    reason: str
    fake_tracks: list[int] = field(default_factory=list)


def decide(score: float, threshold: float) -> str:
    return FAKE if score >= threshold else REAL


def track_verdict(
    track_id: int,
    probabilities: list[float],
    times: list[float],
    threshold: float,
    *,
    outside_range: list[list[str]] | None = None,
    reliable_range: str = "",
) -> TrackVerdict:
    """``outside_range``: per face, what puts it outside the detector's reliable range ("too small",
    "too blurred"; empty when inside); ``reliable_range`` says that range in words for the reason."""
    scores = np.asarray(probabilities, dtype=float)
    median = float(np.median(scores))
    label, reason = decide(median, threshold), None
    if outside_range and all(outside_range):
        label, reason = INCONCLUSIVE, _inconclusive_reason(outside_range, reliable_range)
    return TrackVerdict(
        track_id=track_id,
        faces=len(scores),
        start_s=float(min(times)),
        end_s=float(max(times)),
        score=median,
        mean=float(scores.mean()),
        max=float(scores.max()),
        share_above_threshold=float((scores >= threshold).mean()),
        label=label,
        reason=reason,
    )


def _inconclusive_reason(outside_range: list[list[str]], reliable_range: str) -> str:
    counts = Counter(shortfall for face in outside_range for shortfall in face)
    found = ", ".join(f"{count} {shortfall}" for shortfall, count in sorted(counts.items()))
    where = f" ({reliable_range})" if reliable_range else ""
    faces = "its only face is" if len(outside_range) == 1 else f"all {len(outside_range)} of its faces are"
    return f"{faces} outside the range the detector is reliable on{where}: {found}"


def member_agreement(
    member_probabilities: dict[str, list[float]], member_thresholds: dict[str, float], decision: str
) -> tuple[dict[str, dict], float]:
    """Each ensemble member's own track score (median of its calibrated P(fake)) and label at its own
    threshold, and the share of members whose label is ``decision`` (the ensemble's, fake or real)."""
    members = {}
    for name, probabilities in member_probabilities.items():
        score = float(np.median(np.asarray(probabilities, dtype=float)))
        threshold = member_thresholds[name]
        members[name] = {"score": score, "threshold": threshold, "label": decide(score, threshold)}
    agreeing = sum(member["label"] == decision for member in members.values())
    return members, agreeing / len(members) if members else 0.0


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
    unjudged = [track for track in tracks if track.label == INCONCLUSIVE]
    if unjudged:
        ids = ", ".join(str(track.track_id) for track in unjudged)
        judged = len(tracks) - len(unjudged)
        rest = f"; the other {judged} track(s) scored as authentic" if judged else ""
        return FileVerdict(
            INCONCLUSIVE,
            top,
            f"face track {ids} could not be judged ({unjudged[0].reason}){rest}; not called real while a face "
            "could not be judged",
        )
    return FileVerdict(REAL, top, f"all {len(tracks)} face track(s) scored as authentic")

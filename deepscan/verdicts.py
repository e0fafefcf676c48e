"""From per-face scores to a verdict per face track and per file.

Per-face P(fake) is the calibrated probability (see ``deepscan.calibration``) and the threshold is the one the
weights' model card chose on validation data, unless the user gives ``--threshold``.

Track score: the median of the track's per-face P(fake). A face swap replaces the same identity in every
frame, so a forged track is high throughout; the median ignores the few frames where any detector misfires
(motion blur, a half-turned head, a bad crop), where the mean would be dragged by them and the maximum would
turn one bad frame into an accusation. The mean, the maximum and the share of faces above the threshold are
reported beside it so that a partly forged track (a swap in a few seconds only) stays visible.

Reliable range: a track is judged on its faces inside the range the detector was found reliable on (at least as
large and as sharp as its model card's ``reliability`` section says). When some of its faces are outside it, the
track's score (and its mean, maximum and share above the threshold) are those of the faces inside only, and the
share of its faces outside the range is reported beside them: a face the detector cannot judge must not move the
verdict, in either direction. When every face is outside, the track is "inconclusive": its score (the median of
all its faces) is still reported, but it judges nothing.

Track label: "fake" when the score reaches the threshold, "real" below it, "inconclusive" as above.

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
    score: float  # median P(fake) of the faces judged (those inside the reliable range; all when none is)
    mean: float
    max: float
    share_above_threshold: float
    label: str
    reason: str | None = None  # why a track is inconclusive
    judged_faces: int | None = None  # how many faces the score is taken over (None: every face)
    share_outside_range: float = 0.0  # share of the track's faces outside the detector's reliable range
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


def judged_indices(outside_range: list[list[str]] | None, count: int) -> list[int]:
    """The faces (indices) a track is judged on: those inside the reliable range, or every face when no range
    applies or none is inside (the track is then inconclusive, and its score is that of all its faces)."""
    inside = [index for index, shortfalls in enumerate(outside_range or []) if not shortfalls]
    return inside if outside_range and inside else list(range(count))


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
    if len(probabilities) == 0:
        # Said plainly: numpy would make a NaN score of it (with a warning), and a NaN is below every
        # threshold, so the track would come out "real".
        raise ValueError(f"track {track_id} has no face to judge")
    every = np.asarray(probabilities, dtype=float)
    judged = judged_indices(outside_range, len(every))
    scores = every[judged]
    median = float(np.median(scores))
    label, reason = decide(median, threshold), None
    outside = sum(1 for shortfalls in outside_range or [] if shortfalls)
    if outside_range and outside == len(outside_range):
        label, reason = INCONCLUSIVE, _inconclusive_reason(outside_range, reliable_range)
    return TrackVerdict(
        track_id=track_id,
        faces=len(every),
        start_s=float(min(times)),
        end_s=float(max(times)),
        score=median,
        mean=float(scores.mean()),
        max=float(scores.max()),
        share_above_threshold=float((scores >= threshold).mean()),
        label=label,
        reason=reason,
        judged_faces=len(judged) if outside_range else None,
        share_outside_range=outside / len(every) if outside_range else 0.0,
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
        if len(probabilities) == 0:
            # As for a track: the median of nothing is NaN, which decide() would call "real".
            raise ValueError(f"ensemble member {name} has no face to judge")
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

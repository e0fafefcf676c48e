"""Evaluation runs: face samples (``samples``) -> raw logits (``scores``, cached) -> frame- and video-level metrics.

Scores are calibrated P(fake), as the scan reports them: each detector's raw fake-logit goes through its weights'
model card calibration (``sigmoid(scale * logit + bias)``; the plain sigmoid without one), and the threshold the
scan takes verdicts at (the card's) gets rates of its own, per face and per file (the median of all the file's
faces). The per-file rate is not the scan's verdict rate: a scan judges per face track, on the faces inside the
detector's reliable range only, where evaluation takes every face of the file.

The ensemble (``-m ensemble``, :func:`evaluate_ensemble`) is measured as a scan judges with it: per sample the
mean of its members' calibrated P(fake), each member scoring the face at its own input size through its own
cached logits (a member scored already, on disk or earlier in the run, is not scored again), rated at the
ensemble card's threshold.

Data of one class only (authentic footage, to measure false alarms) is evaluated too: the metrics that need both
classes (AUC, AP, EER, TPR at FPR, balanced accuracy) are ``None`` and the rate of the class present at the card's
threshold is still given.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Callable, Iterable, Sequence

import numpy as np

from deepscan.calibration import Calibration
from deepscan.evaluate import metrics
from deepscan.evaluate.perturb import condition_name
from deepscan.evaluate.samples import EvaluationError, Sample
from deepscan.evaluate.scores import ScoreCache, sample_logits

CLEAN = ("none", 0.0)
VIDEO_AGGREGATES = {"video_mean": "mean of the frame scores", "video_median": "median of all the file's face scores"}
# The levels the card's threshold gets rates at: per face, and per file (the median of all its faces, as a scan
# takes a track's median, but per file rather than per track, and without the reliable range).
CARD_THRESHOLD_LEVELS = ("frame", "video_median")
CARD_THRESHOLD_LEVEL_MEANING = {
    "frame": "per face",
    "video_median": "per file (median of all its faces), without the reliable range: not the scan's verdict rate, "
                    "which is per face track and counts only faces inside the reliable range",
}


# --- aggregation and metrics ---------------------------------------------------------------------------------


def aggregate_videos(samples: Sequence[Sample], scores: np.ndarray, how: str) -> tuple[list[str], np.ndarray, np.ndarray]:
    """One score per video (mean of its frames, or the median the scan's track verdict uses): (videos, labels, scores)."""
    from deepscan.verdicts import track_verdict

    by_video: dict[str, list[int]] = {}
    for index, sample in enumerate(samples):
        by_video.setdefault(sample.video, []).append(index)
    videos = sorted(by_video)
    labels = np.array([samples[by_video[v][0]].label for v in videos], dtype=np.int64)
    if how == "video_mean":
        values = [float(np.mean(scores[by_video[v]])) for v in videos]
    elif how == "video_median":
        values = [track_verdict(0, list(scores[by_video[v]]), [0.0] * len(by_video[v]), 0.5).score for v in videos]
    else:
        raise ValueError(f"unknown video aggregate {how!r}")
    return videos, labels, np.array(values, dtype=np.float64)


LEVELS = ("frame", *VIDEO_AGGREGATES)


def level_arrays(samples: Sequence[Sample], scores: np.ndarray, level: str) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """(labels, scores, resampling unit of each) at ``level``: the unit is the sample's group (see ``Sample``), which
    a bootstrap draws whole at the frame level and at the video levels alike."""
    if level == "frame":
        return np.array([s.label for s in samples], dtype=np.int64), scores, [s.resampling_unit for s in samples]
    videos, labels, values = aggregate_videos(samples, scores, level)
    unit_of_video = {s.video: s.resampling_unit for s in samples}
    return labels, values, [unit_of_video[video] for video in videos]


def thresholds_from_val(val_samples: Sequence[Sample], val_scores: np.ndarray) -> dict[str, float]:
    chosen = {}
    for level in LEVELS:
        labels, values, _ = level_arrays(val_samples, val_scores, level)
        if not metrics.has_both_classes(labels):
            raise EvaluationError("--val data must hold real and fake faces to choose a threshold")
        chosen[level] = metrics.choose_threshold(labels, values)
    return chosen


def level_metrics(
    samples: Sequence[Sample],
    scores: np.ndarray,
    thresholds: dict[str, float] | None,
    *,
    bootstrap: int,
    seed: int,
    by_manipulation: bool,
    card_threshold: float | None = None,
) -> dict:
    result = {}
    for level in LEVELS:
        labels, values, units = level_arrays(samples, scores, level)
        entry = metrics.summarize(
            labels,
            values,
            val_threshold=thresholds[level] if thresholds else None,
            card_threshold=card_threshold if level in CARD_THRESHOLD_LEVELS else None,
            groups=units,
            bootstrap=bootstrap,
            seed=seed,
        )
        result[level] = entry
    if by_manipulation:
        kinds = sorted({s.manipulation for s in samples if s.label == 1})
        if len(kinds) > 1 or (kinds and kinds[0] != "fake"):
            result["per_manipulation"] = {}
            for kind in kinds:
                chosen = [i for i, s in enumerate(samples) if s.label == 0 or s.manipulation == kind]
                subset = [samples[i] for i in chosen]
                result["per_manipulation"][kind] = {
                    level: {
                        "auc": metrics.auc(*level_arrays(subset, scores[chosen], level)[:2]),
                        "n": int(len(level_arrays(subset, scores[chosen], level)[0])),
                    }
                    for level in LEVELS
                }
    return result


def threshold_source(calibration: Calibration) -> str:
    return "model card" if calibration.calibrated else "default (no calibration in the model card)"


@dataclass(frozen=True)
class EnsembleMember:
    """One member of the ensemble as evaluation scores it: its detector (at its own input size), its weights'
    calibration, its logit cache key (:func:`logit_cache_key`) and its weights' custody for results.json."""

    name: str
    detector: object
    calibration: Calibration
    cache_key: str | None
    weights: dict = field(default_factory=dict)


@dataclass(frozen=True)
class EnsembleThreshold:
    """The ensemble's verdict threshold on the mean calibrated P(fake), as the scan takes it
    (:func:`deepscan.ensemble.plan_ensemble`): the ensemble card's, or the default 0.5 without a card."""

    threshold: float
    source: str  # "ensemble card" or "default"
    rule: str = ""


@dataclass
class MethodRun:
    """Everything evaluated for one method: per condition, its scores and metrics."""

    method: str
    weights: dict
    thresholds: dict[str, float] | None
    # The weights' calibration; for the ensemble only its threshold counts (the members calibrate themselves).
    calibration: Calibration = field(default_factory=Calibration)
    scores: dict[str, np.ndarray] = field(default_factory=dict)  # condition name -> per-sample calibrated P(fake)
    logits: dict[str, np.ndarray] = field(default_factory=dict)  # condition name -> per-sample raw fake-logits
    results: dict[str, dict] = field(default_factory=dict)  # condition name -> level metrics
    conditions: dict[str, tuple[str, float]] = field(default_factory=dict)
    # The ensemble only: its members and threshold, and per condition each member's calibrated P(fake) per sample.
    members: list[EnsembleMember] | None = None
    ensemble_threshold: EnsembleThreshold | None = None
    member_scores: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)

    def calibration_summary(self) -> dict:
        levels = {
            "threshold_levels": list(CARD_THRESHOLD_LEVELS),
            "threshold_level_meaning": {level: CARD_THRESHOLD_LEVEL_MEANING[level] for level in CARD_THRESHOLD_LEVELS},
        }
        if self.members is None:
            return {**self.calibration.as_dict(), "threshold_source": threshold_source(self.calibration), **levels}
        chosen = self.ensemble_threshold
        return {
            "method": "ensemble: mean of the members' calibrated P(fake), each member scoring its own input size",
            "threshold": chosen.threshold,
            "threshold_rule": chosen.rule,
            "threshold_source": "ensemble card" if chosen.source == "ensemble card"
                                else "default (no ensemble card)",
            **levels,
            "members": {member.name: member.calibration.as_dict() for member in self.members},
        }

    def to_dict(self) -> dict:
        clean_auc = {level: self.results["clean"][level]["auc"] for level in LEVELS}
        conditions = {}
        for name, result in self.results.items():
            entry = dict(result)
            perturbation, strength = self.conditions[name]
            entry["perturbation"], entry["strength"] = perturbation, strength
            if name != "clean":
                entry["auc_drop"] = {
                    level: None if result[level]["auc"] is None or clean_auc[level] is None
                    else result[level]["auc"] - clean_auc[level]
                    for level in LEVELS
                }
            conditions[name] = entry
        return {
            "method": self.method,
            "weights": self.weights,
            "calibration": self.calibration_summary(),
            "thresholds": (
                {"chosen_on": "val", "rule": "max balanced accuracy", **self.thresholds}
                if self.thresholds
                else {"chosen_on": None,
                      "note": "no --val data: accuracy is reported at 0.5 only, besides the rates at the "
                              "model card's threshold"}
            ),
            "conditions": conditions,
        }


def evaluate_method(
    detector,
    method: str,
    weights: dict,
    samples: Sequence[Sample],
    conditions: Iterable[tuple[str, float]],
    cache: ScoreCache,
    *,
    calibration: Calibration | None = None,
    cache_key: str | None = None,
    val_samples: Sequence[Sample] | None = None,
    batch_size: int = 16,
    bootstrap: int = 1000,
    seed: int = 0,
    load: Callable[[Sample], np.ndarray] | None = None,
    on_batch: Callable[[int], None] | None = None,
) -> MethodRun:
    """``calibration``: the weights' (``ResolvedWeights.calibration``; None: the plain sigmoid and 0.5);
    ``cache_key``: the logit cache's model (:func:`logit_cache_key`; None: the weights' sha256, itself None for
    an untrained detector, which caches nothing)."""
    calibration = calibration or Calibration()
    model = cache_key or weights.get("sha256")
    common = dict(batch_size=batch_size, load=load, on_batch=on_batch)
    thresholds = None
    if val_samples:
        val_scores = calibration.probability(sample_logits(detector, model, val_samples, CLEAN, cache, **common))
        thresholds = thresholds_from_val(val_samples, val_scores)
    run = MethodRun(method=method, weights=weights, thresholds=thresholds, calibration=calibration)
    for condition in _with_clean(conditions):
        name = condition_name(*condition)
        logits = sample_logits(detector, model, samples, condition, cache, **common)
        run.logits[name] = logits
        _measure(run, name, condition, samples, calibration.probability(logits), bootstrap, seed)
    return run


def _with_clean(conditions: Iterable[tuple[str, float]]) -> list[tuple[str, float]]:
    return [CLEAN, *[c for c in conditions if c != CLEAN]]


def _measure(run: MethodRun, name: str, condition: tuple[str, float], samples: Sequence[Sample], scores: np.ndarray,
             bootstrap: int, seed: int) -> None:
    run.conditions[name] = condition
    run.scores[name] = scores
    run.results[name] = level_metrics(
        samples, scores, run.thresholds, bootstrap=bootstrap, seed=seed, by_manipulation=name == "clean",
        card_threshold=run.calibration.threshold,
    )


def ensemble_probabilities(
    members: Sequence[EnsembleMember],
    samples: Sequence[Sample],
    condition: tuple[str, float],
    cache: ScoreCache,
    *,
    batch_size: int = 16,
    on_batch: Callable[[int], None] | None = None,
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """The ensemble's P(fake) per sample, as a scan's (``deepscan.scan.Scanner._score``): the mean of every
    member's calibrated P(fake), each member scoring the face framed at its own input size. Each member's raw
    logits come through :func:`sample_logits` under its own cache key, so a member already scored (on disk, or
    earlier in this run, alone or in the ensemble) is read, never scored again. Returns (mean, per member)."""
    by_member = {
        member.name: member.calibration.probability(
            sample_logits(member.detector, member.cache_key, samples, condition, cache, batch_size=batch_size,
                          on_batch=on_batch))
        for member in members
    }
    return np.mean(np.stack(list(by_member.values())), axis=0), by_member


def evaluate_ensemble(
    members: Sequence[EnsembleMember],
    threshold: EnsembleThreshold,
    weights: dict,
    samples: Sequence[Sample],
    conditions: Iterable[tuple[str, float]],
    cache: ScoreCache,
    *,
    method: str = "ensemble",
    val_samples: Sequence[Sample] | None = None,
    batch_size: int = 16,
    bootstrap: int = 1000,
    seed: int = 0,
    on_batch: Callable[[int], None] | None = None,
) -> MethodRun:
    """The ensemble measured as a scan judges with it: per sample the mean of its members' calibrated P(fake)
    (:func:`ensemble_probabilities`), rated at the ensemble's threshold (``threshold``: the ensemble card's, or
    0.5), every metric, level and perturbation as for one method."""
    if not members:
        raise EvaluationError("the ensemble has no member to evaluate")
    common = dict(batch_size=batch_size, on_batch=on_batch)
    thresholds = None
    if val_samples:
        val_scores, _ = ensemble_probabilities(members, val_samples, CLEAN, cache, **common)
        thresholds = thresholds_from_val(val_samples, val_scores)
    run = MethodRun(method=method, weights=weights, thresholds=thresholds,
                    calibration=Calibration(threshold=threshold.threshold, threshold_rule=threshold.rule),
                    members=[replace(member, detector=None) for member in members],  # not the networks
                    ensemble_threshold=threshold)
    for condition in _with_clean(conditions):
        name = condition_name(*condition)
        scores, by_member = ensemble_probabilities(members, samples, condition, cache, **common)
        run.member_scores[name] = by_member
        _measure(run, name, condition, samples, scores, bootstrap, seed)
    return run

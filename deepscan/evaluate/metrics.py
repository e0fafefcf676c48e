"""Detection metrics over (labels, scores): pure functions, label 1 = fake, 0 = real, score = P(fake).

Every ranking metric comes from scikit-learn (the rates at one threshold are plain counts); this module only
fixes the conventions the papers leave open:
- a sample is called fake when its score is ``>= threshold``;
- EER is read off the ROC curve where the false-positive and false-negative rates cross, interpolating
  linearly between the two ROC points around the crossing (the ROC is piecewise linear anyway);
- TPR at FPR x is the highest TPR among ROC points whose FPR is ``<= x`` (no interpolation: a claim of
  "99 % of fakes caught at 1 % false alarms" must be attainable with some threshold);
- a threshold chosen on validation data maximises balanced accuracy, and lies halfway between two
  neighbouring validation scores, so that it does not sit exactly on a validation sample;
- the false-positive rate at a threshold is the share of real samples called fake, the true-positive rate the
  share of fakes caught; each needs only its own class, so real-only data (authentic footage, to measure false
  alarms) still has an FPR.
A metric that needs both classes is ``None`` when one class is missing; one that needs a class that is absent
(the FPR without reals, the TPR without fakes) is ``None`` too.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

TPR_AT_FPR_TARGETS = (0.01, 0.001)


def _arrays(labels: Sequence[int], scores: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    labels = np.asarray(labels, dtype=np.int64)
    scores = np.asarray(scores, dtype=np.float64)
    if labels.shape != scores.shape or labels.ndim != 1:
        raise ValueError(f"labels and scores must be 1-D and the same length, got {labels.shape} and {scores.shape}")
    if np.isin(labels, (0, 1), invert=True).any():
        raise ValueError("labels must be 0 (real) or 1 (fake)")
    return labels, scores


def has_both_classes(labels: Sequence[int]) -> bool:
    return len(np.unique(np.asarray(labels))) == 2


def auc(labels, scores) -> float | None:
    from sklearn.metrics import roc_auc_score

    labels, scores = _arrays(labels, scores)
    return float(roc_auc_score(labels, scores)) if has_both_classes(labels) else None


def average_precision(labels, scores) -> float | None:
    from sklearn.metrics import average_precision_score

    labels, scores = _arrays(labels, scores)
    return float(average_precision_score(labels, scores)) if has_both_classes(labels) else None


def accuracy(labels, scores, threshold: float) -> float | None:
    from sklearn.metrics import accuracy_score

    labels, scores = _arrays(labels, scores)
    return float(accuracy_score(labels, scores >= threshold)) if len(labels) else None


def balanced_accuracy(labels, scores, threshold: float) -> float | None:
    from sklearn.metrics import balanced_accuracy_score

    labels, scores = _arrays(labels, scores)
    return float(balanced_accuracy_score(labels, scores >= threshold)) if has_both_classes(labels) else None


def false_positive_rate(labels, scores, threshold: float) -> float | None:
    """Share of real samples (label 0) scored ``>= threshold``, i.e. called fake; None without reals."""
    labels, scores = _arrays(labels, scores)
    real = labels == 0
    return float((scores[real] >= threshold).mean()) if real.any() else None


def true_positive_rate(labels, scores, threshold: float) -> float | None:
    """Share of fake samples (label 1) scored ``>= threshold``, i.e. caught; None without fakes."""
    labels, scores = _arrays(labels, scores)
    fake = labels == 1
    return float((scores[fake] >= threshold).mean()) if fake.any() else None


def true_negative_rate(labels, scores, threshold: float) -> float | None:
    """Share of real samples (label 0) scored ``< threshold``, i.e. called real (accuracy on the reals); None
    without reals."""
    labels, scores = _arrays(labels, scores)
    real = labels == 0
    return float((scores[real] < threshold).mean()) if real.any() else None


def roc_points(labels, scores) -> tuple[np.ndarray, np.ndarray] | None:
    """The ROC curve as (false-positive rates, true-positive rates), for plotting; None without both classes."""
    from sklearn.metrics import roc_curve

    labels, scores = _arrays(labels, scores)
    if not has_both_classes(labels):
        return None
    fpr, tpr, _ = roc_curve(labels, scores)
    return fpr, tpr


def equal_error_rate(labels, scores) -> float | None:
    from sklearn.metrics import roc_curve

    labels, scores = _arrays(labels, scores)
    if not has_both_classes(labels):
        return None
    fpr, tpr, _ = roc_curve(labels, scores, drop_intermediate=False)
    gap = (1.0 - tpr) - fpr  # falls from 1 at the first ROC point to -1 at the last
    crossed = int(np.flatnonzero(gap <= 0)[0])
    if gap[crossed] == 0 or crossed == 0:
        return float(fpr[crossed])
    before = crossed - 1
    step = gap[before] / (gap[before] - gap[crossed])
    return float(fpr[before] + step * (fpr[crossed] - fpr[before]))


def tpr_at_fpr(labels, scores, max_fpr: float) -> float | None:
    from sklearn.metrics import roc_curve

    labels, scores = _arrays(labels, scores)
    if not has_both_classes(labels):
        return None
    fpr, tpr, _ = roc_curve(labels, scores, drop_intermediate=False)
    return float(tpr[fpr <= max_fpr].max())


def choose_threshold(labels, scores) -> float:
    """The threshold that maximises balanced accuracy on (validation) data; ties go to the lowest one."""
    from sklearn.metrics import balanced_accuracy_score

    labels, scores = _arrays(labels, scores)
    if not has_both_classes(labels):
        raise ValueError("choosing a threshold needs real and fake validation samples")
    unique = np.unique(scores)
    candidates = np.concatenate(([unique[0] - 1e-6], (unique[:-1] + unique[1:]) / 2, [unique[-1] + 1e-6]))
    values = [balanced_accuracy_score(labels, scores >= t) for t in candidates]
    return float(candidates[int(np.argmax(values))])


def bootstrap_auc_ci(
    labels,
    scores,
    groups: Sequence[str] | None = None,
    *,
    resamples: int = 1000,
    level: float = 0.95,
    seed: int = 0,
) -> tuple[float, float] | None:
    """Percentile bootstrap interval for the AUC.

    With ``groups`` (the video of each frame) whole groups are resampled: frames of one video are not
    independent, and resampling them one by one would give a falsely narrow interval.
    """
    from sklearn.metrics import roc_auc_score

    labels, scores = _arrays(labels, scores)
    if not has_both_classes(labels) or resamples < 1:
        return None
    return _percentile_bootstrap(labels, lambda chosen: roc_auc_score(labels[chosen], scores[chosen]), groups,
                                 resamples, level, seed)


def _percentile_bootstrap(labels: np.ndarray, statistic, groups, resamples: int, level: float,
                          seed: int) -> tuple[float, float] | None:
    """Percentile interval of ``statistic(indices)`` over resamples that hold both classes."""
    rng = np.random.default_rng(seed)
    members = _resampling_units(len(labels), groups)
    values = []
    for _ in range(resamples):
        chosen = np.concatenate([members[i] for i in rng.integers(0, len(members), len(members))])
        if has_both_classes(labels[chosen]):
            values.append(statistic(chosen))
    if not values:
        return None
    tail = (1.0 - level) / 2 * 100
    low, high = np.percentile(values, [tail, 100 - tail])
    return float(low), float(high)


def _resampling_units(count: int, groups: Sequence[str] | None) -> list[np.ndarray]:
    """What a bootstrap draws: each sample alone, or with ``groups`` the indices of each group together."""
    if groups is None:
        return [np.array([i]) for i in range(count)]
    group_ids = np.unique(np.asarray(groups), return_inverse=True)[1]
    order = np.argsort(group_ids, kind="stable")
    return np.split(order, np.flatnonzero(np.diff(group_ids[order])) + 1)


def paired_auc_difference(
    labels,
    scores_a,
    scores_b,
    groups: Sequence[str] | None = None,
    *,
    resamples: int = 1000,
    level: float = 0.95,
    seed: int = 0,
) -> tuple[float, float, float] | None:
    """AUC of ``scores_a`` minus AUC of ``scores_b`` on the same samples, with a percentile bootstrap interval.

    Both detectors are scored on each resample together, so what they share (hard or easy faces) cancels: two
    detectors whose own intervals overlap can still differ clearly. With ``groups`` whole groups are resampled.
    """
    from sklearn.metrics import roc_auc_score

    labels, scores_a = _arrays(labels, scores_a)
    scores_b = np.asarray(scores_b, dtype=np.float64).ravel()
    if scores_b.shape != scores_a.shape:
        raise ValueError(f"paired scores differ in length: {scores_a.shape[0]} and {scores_b.shape[0]}")
    if not has_both_classes(labels) or resamples < 1:
        return None

    def difference(chosen: np.ndarray) -> float:
        return roc_auc_score(labels[chosen], scores_a[chosen]) - roc_auc_score(labels[chosen], scores_b[chosen])

    interval = _percentile_bootstrap(labels, difference, groups, resamples, level, seed)
    if interval is None:  # no resample held both classes (one group of each, say)
        return None
    return float(difference(np.arange(len(labels)))), *interval


def summarize(
    labels,
    scores,
    *,
    val_threshold: float | None = None,
    card_threshold: float | None = None,
    groups: Sequence[str] | None = None,
    bootstrap: int = 1000,
    seed: int = 0,
) -> dict:
    """Every metric of one level (frame or video) in one dict; ``*@val`` only when a threshold came from --val,
    ``*_at_card_threshold`` only when ``card_threshold`` (the threshold a scan takes verdicts at) is given."""
    labels, scores = _arrays(labels, scores)
    result = {
        "n": int(len(labels)),
        "n_real": int((labels == 0).sum()),
        "n_fake": int((labels == 1).sum()),
        "auc": auc(labels, scores),
        "auc_ci95": bootstrap_auc_ci(labels, scores, groups, resamples=bootstrap, seed=seed),
        # How many units the interval resampled: fewer than n when groups (videos, an original with its fakes) are
        # drawn whole, and the interval is as wide as those few units make it.
        "auc_ci95_units": int(len(set(groups))) if groups is not None else int(len(labels)),
        "ap": average_precision(labels, scores),
        "eer": equal_error_rate(labels, scores),
        "acc@0.5": accuracy(labels, scores, 0.5),
        "balanced_acc@0.5": balanced_accuracy(labels, scores, 0.5),
    }
    for target in TPR_AT_FPR_TARGETS:
        result[f"tpr@fpr={target:g}"] = tpr_at_fpr(labels, scores, target)
    if val_threshold is not None:
        result["val_threshold"] = val_threshold
        result["acc@val"] = accuracy(labels, scores, val_threshold)
        result["balanced_acc@val"] = balanced_accuracy(labels, scores, val_threshold)
    if card_threshold is not None:
        result["card_threshold"] = float(card_threshold)
        result["fpr_at_card_threshold"] = false_positive_rate(labels, scores, card_threshold)
        result["tpr_at_card_threshold"] = true_positive_rate(labels, scores, card_threshold)
        result["balanced_acc_at_card_threshold"] = balanced_accuracy(labels, scores, card_threshold)
    return result

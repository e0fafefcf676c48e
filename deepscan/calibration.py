"""From a detector's fake-logit to a calibrated P(fake), and the threshold a verdict is taken at.

A network's ``sigmoid(logit)`` is a score, not a probability: trained with pseudo-fakes, on faces unlike the
footage being examined, it is typically over-confident. Platt scaling (Platt, 1999) maps the logit through a
fitted logistic curve, ``P(fake) = sigmoid(scale * logit + bias)``, fitted on validation faces the network never
trained on with the two classes weighted equally, so that a reported 0.8 means about eight in ten such faces
were forged when forged and authentic faces are equally likely beforehand (the fit does not assume the
validation split's own share of fakes). The mapping is monotonic,
so it changes no ranking (AUC, ROC) and only makes the numbers mean what they say.

The threshold is chosen on the same validation faces by a stated rule (the highest one that catches as many
fakes as any threshold at which at most ``target_fpr`` of the authentic faces would be called forged; given the
faces' sources, at most ``target_fpr`` of the authentic faces of *each* source), never on test data. Weights
without a
calibration section in their model card get the identity: ``sigmoid(logit)`` and threshold 0.5.

No torch here: the training side calls :func:`fit_calibration` on plain arrays, the scanner
:meth:`Calibration.probability`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Sequence

import numpy as np

from deepscan.errors import DeepscanError

if TYPE_CHECKING:
    from deepscan.model_card import CalibrationSection

PLATT = "platt"
IDENTITY = "identity"
DEFAULT_THRESHOLD = 0.5
DEFAULT_TARGET_FPR = 0.05
CHECK_POINTS = 20  # stored logits (and what they must map to) in a card's calibration check
# Almost no regularisation: with one feature and thousands of faces the fit is well determined, and a penalty
# would pull the slope towards 0, i.e. towards under-confidence.
PLATT_C = 1e6
# A card's check probabilities are written as JSON floats; anything beyond rounding means another mapping.
CHECK_TOLERANCE = 1e-6


class CalibrationError(DeepscanError, ValueError):
    """Calibration that cannot be fitted or trusted; the message is one line for the user."""


def sigmoid(x: np.ndarray) -> np.ndarray:
    """The logistic function, without overflow warnings for large negative inputs."""
    x = np.asarray(x, dtype=np.float64)
    out = np.empty_like(x)
    positive = x >= 0
    out[positive] = 1.0 / (1.0 + np.exp(-x[positive]))
    exp = np.exp(x[~positive])
    out[~positive] = exp / (1.0 + exp)
    return out


@dataclass(frozen=True)
class Calibration:
    """``P(fake) = sigmoid(scale * logit + bias)``; a track is fake when its P(fake) reaches ``threshold``."""

    scale: float = 1.0
    bias: float = 0.0
    threshold: float = DEFAULT_THRESHOLD
    method: str = IDENTITY
    threshold_rule: str = "0.5 (no calibration in the model card)"

    @property
    def calibrated(self) -> bool:
        return self.method != IDENTITY

    def probability(self, logits: np.ndarray | Sequence[float]) -> np.ndarray:
        return sigmoid(self.scale * np.asarray(logits, dtype=np.float64) + self.bias)

    def as_dict(self) -> dict:
        return {
            "method": self.method,
            "scale": self.scale,
            "bias": self.bias,
            "threshold": self.threshold,
            "threshold_rule": self.threshold_rule,
        }

    @classmethod
    def from_card(cls, section: "CalibrationSection | None") -> "Calibration":
        """The card's calibration, after checking that it maps the card's stored logits to the card's stored
        probabilities (a card edited by hand, or a change in this code, fails here rather than mis-scoring)."""
        if section is None:
            return cls()
        calibration = cls(
            scale=section.scale,
            bias=section.bias,
            threshold=section.threshold,
            method=section.method,
            threshold_rule=section.threshold_rule or "as stated in the model card",
        )
        if section.check is not None:
            expected = np.asarray(section.check.probabilities, dtype=np.float64)
            got = calibration.probability(section.check.logits)
            if not np.allclose(got, expected, rtol=0.0, atol=CHECK_TOLERANCE):
                worst = int(np.argmax(np.abs(got - expected)))
                raise CalibrationError(
                    f"calibration check fails: logit {section.check.logits[worst]:g} maps to {got[worst]:.6f}, "
                    f"the card says {expected[worst]:.6f}"
                )
        return calibration


def threshold_rule(reals: int, target_fpr: float, sources: int | None = None, degraded: Sequence[str] = ()) -> str:
    """The rule in words; ``sources``: how many validation sources the budget held on, each on its own;
    ``degraded``: the degradations of all the real faces the budget held on as well, each on its own."""
    where = (f"the real faces of each of the {sources} validation sources ({reals} in all)" if sources and sources > 1
             else f"the {reals} validation real faces")
    also = (f", and on all of them after each of {', '.join(degraded)} (each face crop degraded alone)"
            if degraded else "")
    return (
        f"highest threshold on the calibrated validation scores that reaches the best true-positive rate "
        f"while the false-positive rate on {where}{also} stays at most {target_fpr:g}"
    )


def false_positive_rates_by_source(probabilities, labels, sources, threshold: float) -> dict[str, float]:
    """Per source with real faces: the share of them scored at or above ``threshold``."""
    p, y, where = np.asarray(probabilities, dtype=np.float64), np.asarray(labels), np.asarray(sources)
    return {str(source): float((p[(y == 0) & (where == source)] >= threshold).mean())
            for source in sorted(set(where[y == 0].tolist()), key=str)}


def choose_threshold(probabilities: np.ndarray, labels: np.ndarray, target_fpr: float,
                     sources: Sequence | np.ndarray | None = None) -> tuple[float, float, float]:
    """The verdict threshold on validation P(fake) (see :func:`fit_calibration`): (threshold, its FPR, its TPR).

    ``sources``: each face's source. Given, the budget holds for the real faces of every source on its own (the
    worst source's false-positive rate), not only for all of them together, where a source of many easy faces
    can hide one whose faces are called fake twice as often. A source of fewer than ``1 / target_fpr`` real faces
    then allows none of them to be called fake: give sources of a size that can measure the budget. The FPR
    returned is over all real faces."""
    from sklearn.metrics import roc_curve

    fpr, tpr, thresholds = roc_curve(labels, probabilities, drop_intermediate=False)
    worst = fpr if sources is None else _worst_source_fpr(probabilities, labels, sources, thresholds)
    # fpr and tpr grow as the threshold falls. Among the thresholds within the false-positive budget, take the
    # highest one that already catches as many fakes as any of them: lower ones would spend the budget on
    # nothing (on separable data, the smallest allowed threshold sits far below every fake, near 0).
    within = np.flatnonzero(worst <= target_fpr)
    allowed = int(within[np.argmax(tpr[within] >= tpr[within].max())])
    threshold = float(thresholds[allowed])
    if not np.isfinite(threshold) or threshold > 1.0:  # scikit-learn's "above every score" sentinel
        threshold = min(1.0, float(np.nextafter(np.max(probabilities), np.inf)))
    return threshold, float(fpr[allowed]), float(tpr[allowed])


def false_positive_rates_with_degraded(probabilities, labels, sources, threshold: float,
                                       degraded_reals: dict[str, np.ndarray]) -> dict[str, float]:
    """:func:`false_positive_rates_by_source` (when ``sources`` are given), then each degradation's rate on the
    real faces so degraded (name -> their P(fake)): the card's ``val_fpr_by_source``."""
    rates = false_positive_rates_by_source(probabilities, labels, sources, threshold) if sources is not None else {}
    return {**rates, **{name: float((np.asarray(values) >= threshold).mean()) for name, values in degraded_reals.items()}}


def choose_threshold_with_degraded(probabilities, labels, target_fpr: float, sources=None,
                                   degraded_reals: dict[str, np.ndarray] | None = None) -> tuple[float, float, float]:
    """:func:`choose_threshold`, with the budget held as well on the validation real faces degraded as footage
    degrades them (``degraded_reals``: a name such as ``h264@23`` -> the P(fake) of every real face so degraded),
    each degradation on its own as if it were a source: a threshold that keeps clean real faces within the budget
    but calls a lightly re-encoded copy of them fake twice as often does not mean what a verdict claims. The
    false-positive rate returned is over the clean real faces; the true-positive rate is unchanged in meaning."""
    p, y = np.asarray(probabilities, dtype=np.float64), np.asarray(labels)
    if not degraded_reals:
        return choose_threshold(p, y, target_fpr, sources)
    where = np.asarray(sources if sources is not None else ["validation"] * len(p), dtype=object)
    extra = {name: np.asarray(values, dtype=np.float64) for name, values in degraded_reals.items()}
    threshold, _pooled_fpr, tpr = choose_threshold(
        np.concatenate([p, *extra.values()]),
        np.concatenate([y, *(np.zeros(len(values), dtype=y.dtype) for values in extra.values())]),
        target_fpr,
        np.concatenate([where, *(np.full(len(values), name, dtype=object) for name, values in extra.items())]),
    )
    return threshold, float((p[y == 0] >= threshold).mean()), tpr


def _worst_source_fpr(probabilities, labels, sources, thresholds: np.ndarray) -> np.ndarray:
    """At each threshold, the highest false-positive rate among the sources' real faces."""
    p, y, where = np.asarray(probabilities, dtype=np.float64), np.asarray(labels), np.asarray(sources)
    if where.shape != p.shape:
        raise CalibrationError(f"{where.size} sources but {p.size} scores")
    worst = np.zeros(len(thresholds))
    for source in set(where[y == 0].tolist()):
        reals = np.sort(p[(y == 0) & (where == source)])
        at_or_above = len(reals) - np.searchsorted(reals, thresholds, side="left")
        worst = np.maximum(worst, at_or_above / len(reals))
    return worst


def _checked_inputs(logits, labels, target_fpr: float) -> tuple[np.ndarray, np.ndarray, int, int]:
    """``logits`` and ``labels`` as flat arrays, checked: as many of each, finite logits, 0/1 labels of both
    classes, ``target_fpr`` in [0, 1); and the counts of real and fake faces."""
    x = np.asarray(logits, dtype=np.float64).ravel()
    y = np.asarray(labels).ravel()
    if x.shape != y.shape:
        raise CalibrationError(f"{x.size} logits but {y.size} labels")
    if not np.isfinite(x).all():
        raise CalibrationError("logits must be finite numbers")
    if not np.isin(y, (0, 1)).all():
        raise CalibrationError("labels must be 0 (real) or 1 (fake)")
    if not 0.0 <= target_fpr < 1.0:
        raise CalibrationError(f"target_fpr must be in [0, 1), got {target_fpr}")
    reals, fakes = int((y == 0).sum()), int((y == 1).sum())
    if reals == 0 or fakes == 0:
        raise CalibrationError(f"calibration needs real and fake faces (got {reals} real, {fakes} fake)")
    return x, y, reals, fakes


def _fit_platt(x: np.ndarray, y: np.ndarray) -> Calibration:
    from sklearn.linear_model import LogisticRegression

    # Balanced classes: the fitted P(fake) assumes even odds of forgery, not the validation split's own mix (more
    # fakes than reals there, with pseudo-fakes), which says nothing about the footage an investigator brings.
    model = LogisticRegression(C=PLATT_C, max_iter=1000, class_weight="balanced").fit(x[:, None], y.astype(int))
    scale, bias = float(model.coef_[0, 0]), float(model.intercept_[0])
    if scale <= 0:
        raise CalibrationError(
            f"fitted scale {scale:.4g} is not positive: on these faces the detector does not score fakes above reals"
        )
    return Calibration(scale=scale, bias=bias, method=PLATT)


def _check(calibration: Calibration, x: np.ndarray) -> dict:
    """The card's calibration check: ``CHECK_POINTS`` logits spread over the fitted ones, and what they map to."""
    order = np.sort(x)
    stored = order[np.linspace(0, len(order) - 1, CHECK_POINTS).round().astype(int)]
    return {
        "logits": [float(v) for v in stored],
        "probabilities": [float(v) for v in calibration.probability(stored)],
    }


def fit_calibration(
    logits: Sequence[float] | np.ndarray,
    labels: Sequence[int] | np.ndarray,
    target_fpr: float = DEFAULT_TARGET_FPR,
    *,
    fitted_on: str = "validation faces",
    sources: Sequence | np.ndarray | None = None,
    degraded_reals: dict[str, np.ndarray] | None = None,
) -> dict:
    """Fit Platt scaling on validation ``logits`` (the detector's raw fake-logits) and ``labels`` (1 = fake,
    0 = real) and choose the threshold; returns the model card's ``calibration`` section.

    Threshold rule: among the calibrated validation scores at which the share of validation real faces scored at
    or above it (the false-positive rate) is at most ``target_fpr``, the highest one that reaches the best
    true-positive rate within that budget; when even the highest score breaks the budget, a threshold just above
    the highest score (nothing called fake). With ``sources`` (each face's source name), the budget holds on the
    real faces of each source (:func:`choose_threshold`), and the section gives each source's ``val_fpr_by_source``.
    With ``degraded_reals`` (a degradation's name -> the raw logits of the validation real faces so degraded), it
    holds on each degradation too (:func:`choose_threshold_with_degraded`; they take no part in the fit), and
    ``val_fpr_by_source`` gives their rates as well. ``fitted_on`` describes the faces (data set, split, how many
    videos) for the card's readers.
    """
    x, y, reals, _fakes = _checked_inputs(logits, labels, target_fpr)
    calibration = _fit_platt(x, y)
    probabilities = calibration.probability(x)
    degraded = {name: calibration.probability(np.asarray(values, dtype=np.float64).ravel())
                for name, values in (degraded_reals or {}).items()}
    threshold, val_fpr, val_tpr = choose_threshold_with_degraded(probabilities, y, target_fpr, sources, degraded)
    section = {
        "method": PLATT,
        "scale": calibration.scale,
        "bias": calibration.bias,
        "threshold": threshold,
        "threshold_rule": threshold_rule(reals, target_fpr, len(set(np.asarray(sources)[y == 0].tolist()))
                                         if sources is not None else None, list(degraded)),
        "fitted_on": fitted_on,
        "val_faces": int(x.size),
        "target_fpr": float(target_fpr),
        "val_fpr": val_fpr,
        "val_tpr": val_tpr,
        "check": _check(calibration, x),
    }
    if sources is not None or degraded:
        section["val_fpr_by_source"] = false_positive_rates_with_degraded(probabilities, y, sources, threshold, degraded)
    return section

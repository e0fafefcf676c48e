"""What validation measures after each epoch, and which epoch's weights a run keeps.

The rates and the AUC are those of ``deepscan.evaluate.metrics``, so that a run's validation numbers mean what an
evaluation's numbers mean (a face is called fake at P(fake) >= 0.5); the loss is the training loss, binary
cross-entropy on the logits.
"""

from __future__ import annotations

import numpy as np

THRESHOLD = 0.5  # P(fake) at or above which a validation face counts as called fake


def validation_metrics(logits: np.ndarray, labels: np.ndarray) -> dict:
    """Loss, accuracy (overall and per class) and AUC over the validation faces; empty without any."""
    from scipy.special import expit

    from deepscan.evaluate import metrics

    if not len(labels):
        return {}
    probabilities = expit(logits)
    # Binary cross-entropy on logits, written stably.
    loss = float(np.mean(np.maximum(logits, 0) - logits * labels + np.log1p(np.exp(-np.abs(logits)))))
    result = {
        "loss": loss,
        "acc": metrics.accuracy(labels, probabilities, THRESHOLD),
        "faces": int(len(labels)),
        "real_faces": int(np.sum(labels == 0)),
        "fake_faces": int(np.sum(labels == 1)),
    }
    if result["real_faces"]:
        result["real_acc"] = metrics.true_negative_rate(labels, probabilities, THRESHOLD)
    if result["fake_faces"]:
        result["fake_acc"] = metrics.true_positive_rate(labels, probabilities, THRESHOLD)
    result["auc"] = metrics.auc(labels, probabilities)
    return result


def selection_key(val: dict, select_on: str) -> str:
    """The metric that chooses the best epoch: the recipe's ``select_on``, but the validation loss when AUC is asked
    for and undefined (validation of one class only)."""
    if select_on == "val_auc" and val.get("auc") is None and val:
        return "val_loss"
    return select_on


def selection_value(val: dict, key: str) -> float | None:
    """The epoch's score on ``key`` (a ``selection_key``), higher is better; None when validation lacks it."""
    value = val.get(key.removeprefix("val_"))
    if value is None:
        return None
    return -value if key == "val_loss" else value

"""Validation after each epoch measures with deepscan.evaluate.metrics, and chooses the best epoch as it always did."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from deepscan.train.validation import selection_key, selection_value, validation_metrics


def test_validation_metrics_are_the_loss_the_rates_at_one_half_and_the_auc():
    logits = np.array([-2.0, -0.5, 0.3, 1.5, 2.5, -1.0])
    labels = np.array([0.0, 0.0, 0.0, 1.0, 1.0, 1.0])
    metrics = validation_metrics(logits, labels)
    probabilities = 1 / (1 + np.exp(-logits))
    expected_loss = -np.mean(labels * np.log(probabilities) + (1 - labels) * np.log(1 - probabilities))
    assert metrics["loss"] == pytest.approx(expected_loss)
    assert (metrics["faces"], metrics["real_faces"], metrics["fake_faces"]) == (6, 3, 3)
    assert metrics["acc"] == pytest.approx(4 / 6)  # the real at logit 0.3 and the fake at -1.0 are missed
    assert metrics["real_acc"] == pytest.approx(2 / 3) and metrics["fake_acc"] == pytest.approx(2 / 3)
    assert metrics["auc"] == pytest.approx(roc_auc_score(labels, probabilities))
    assert list(metrics) == ["loss", "acc", "faces", "real_faces", "fake_faces", "real_acc", "fake_acc", "auc"]


def test_one_class_validation_has_no_auc_and_chooses_on_the_loss():
    metrics = validation_metrics(np.array([-1.0, 0.5]), np.array([0.0, 0.0]))
    assert metrics["auc"] is None and "fake_acc" not in metrics and metrics["real_acc"] == 0.5
    assert selection_key(metrics, "val_auc") == "val_loss"
    assert selection_value(metrics, "val_loss") == -metrics["loss"]  # higher is better
    assert validation_metrics(np.array([]), np.array([])) == {}
    assert selection_key({}, "val_auc") == "val_auc" and selection_value({}, "val_auc") is None


def test_selection_reads_the_recipe_s_metric():
    val = {"loss": 0.4, "acc": 0.8, "auc": 0.9}
    assert selection_value(val, selection_key(val, "val_auc")) == 0.9
    assert selection_value(val, selection_key(val, "val_loss")) == -0.4

"""A run's history as it grows, rewritten after every epoch: ``metrics.jsonl`` (one JSON object per epoch) and
``curves.png`` (losses, and the validation AUC and accuracies, per epoch), drawn in deepscan's one figure style
(``deepscan.report.plots``). Both are written atomically: a look at them mid-run never finds half a file.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from deepscan.report.plots import figure_png, line_colour, new_figure
from deepscan.runtime import atomic_write

if TYPE_CHECKING:
    from matplotlib.figure import Figure

METRICS_NAME = "metrics.jsonl"
CURVES_NAME = "curves.png"
# The validation curves, in the order of their colours.
_SCORE_CURVES = (("auc", "val AUC"), ("acc", "val accuracy"), ("real_acc", "val real accuracy"))


def write_run_log(history: list[dict], output: Path) -> None:
    """``metrics.jsonl`` and ``curves.png`` in ``output`` for the epochs in ``history``."""
    lines = "".join(json.dumps(entry) + "\n" for entry in history)
    atomic_write(output / METRICS_NAME, lines)
    atomic_write(output / CURVES_NAME, figure_png(curves_figure(history)))


def curves_figure(history: list[dict]) -> "Figure":
    """Training and validation loss, and validation AUC and accuracy, per epoch."""
    epochs = [entry["epoch"] for entry in history]
    figure = new_figure(10, 4)
    losses, scores = figure.subplots(1, 2)
    losses.plot(epochs, [entry["train"]["loss"] for entry in history], "o-", color=line_colour(0), label="train loss")
    val_loss = [entry["val"].get("loss", np.nan) for entry in history]
    if np.isfinite(val_loss).any():
        losses.plot(epochs, val_loss, "o-", color=line_colour(1), label="val BCE")
    losses.set_xlabel("epoch")
    losses.set_title("loss")
    losses.legend()
    for index, (key, label) in enumerate(_SCORE_CURVES):
        values = [entry["val"].get(key) for entry in history]
        if any(value is not None for value in values):
            scores.plot(epochs, [np.nan if value is None else value for value in values], "o-",
                        color=line_colour(index), label=label)
    scores.set_ylim(0.0, 1.02)
    scores.set_xlabel("epoch")
    scores.set_title("validation")
    if scores.lines:
        scores.legend(loc="lower right")
    return figure

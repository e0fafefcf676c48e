"""The tables `deepscan evaluate` prints, built from the results the evaluation returns (results.json's ``methods``):
the rows come from ``deepscan.evaluate.report``, formatted; here they become rich tables, titled and in order."""

from __future__ import annotations

from typing import Sequence

from rich.table import Table

from deepscan.evaluate.report import (
    LEVEL_TITLES,
    card_threshold_rows,
    manipulation_rows,
    metric_rows,
    robustness_rows,
)
from deepscan.evaluate.runner import LEVELS


def _table(title: str, rows: list[dict[str, str]]) -> Table:
    table = Table(title=title, title_justify="left")
    for column in rows[0] if rows else ["method"]:
        table.add_column(column, justify="left" if column in {"method", "manipulation"} else "right")
    for row in rows:
        table.add_row(*row.values())
    return table


def metrics_table(runs: Sequence[dict], level: str) -> Table:
    has_val = any(run["thresholds"]["chosen_on"] for run in runs)
    rows = metric_rows(runs, level)
    if not has_val:  # no --val: leave the columns out rather than show dashes that look like failures
        rows = [{k: v for k, v in row.items() if "@val" not in k} for row in rows]
    return _table(f"{LEVEL_TITLES[level]}: clean data", rows)


def tables(runs: Sequence[dict]) -> list[Table]:
    """Every table to print, in order."""
    shown = [metrics_table(runs, level) for level in LEVELS]
    shown.append(_table("at the model card's threshold, the scan's verdict threshold (FPR: reals called fake, "
                        "TPR: fakes caught; frame: per face; file: per file, median of all its faces, without the "
                        "reliable range, so not the scan's per-track verdict rate): clean data",
                        card_threshold_rows(runs)))
    if any(manipulation_rows([run]) for run in runs):
        shown.append(_table("AUC per manipulation (reals of the same data + that manipulation's fakes)",
                            manipulation_rows(runs)))
    if any(len(run["conditions"]) > 1 for run in runs):
        for level in ("frame", "video_mean"):
            shown.append(_table(f"robustness, {LEVEL_TITLES[level]}: AUC change under each perturbation@strength",
                                robustness_rows(runs, level)))
    return shown

"""What `deepscan evaluate` writes, and the rows its tables show: results.json, per-sample scores.csv, ROC and
histogram PNGs; the rows (one per method, formatted) that ``deepscan/cli/evaluate_tables.py`` puts in tables.

Every number carries its level: ``frame`` (one score per face crop), ``video_mean`` (mean of a video's frame
scores) or ``video_median`` (median of all the file's face scores). Scores are calibrated P(fake) (the weights'
model card calibration); the rates at the card's threshold, the one a scan takes verdicts at, are given per face
and per file (median of all its faces), without the reliable range: the per-file rate is not the scan's verdict
rate, which is per face track and counts only the faces inside the detector's reliable range. The CSV holds one
row per (method, condition, sample) with the sample's media file and frame, its calibrated score and its raw
logit, so that any number in results.json can be recomputed; the ensemble's rows hold each member's calibrated
P(fake) too, whose mean is the ensemble's score.
"""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path
from typing import Sequence

import numpy as np

from deepscan.evaluate.runner import CARD_THRESHOLD_LEVELS, LEVELS, MethodRun, level_arrays
from deepscan.evaluate.samples import Sample

LEVEL_TITLES = {"frame": "frame level", "video_mean": "video level (mean of frames)",
                "video_median": "video level (median of all its faces)"}
METRIC_COLUMNS = (
    ("AUC [95% CI]", "auc"),
    ("AP", "ap"),
    ("EER", "eer"),
    ("ACC@0.5", "acc@0.5"),
    ("BalACC@0.5", "balanced_acc@0.5"),
    ("ACC@val", "acc@val"),
    ("BalACC@val", "balanced_acc@val"),
    ("TPR@FPR1%", "tpr@fpr=0.01"),
    ("TPR@FPR0.1%", "tpr@fpr=0.001"),
    ("n (real/fake)", "n"),
)


def format_number(value) -> str:
    return "-" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.3f}"


def metric_rows(runs: Sequence[dict], level: str, condition: str = "clean") -> list[dict[str, str]]:
    """One row per method (results.json form of each run), formatted for a table."""
    rows = []
    for run in runs:
        result = run["conditions"][condition][level]
        row = {"method": run["method"]}
        for title, key in METRIC_COLUMNS:
            if key == "auc":
                ci = result.get("auc_ci95")
                row[title] = format_number(result["auc"]) + (f" [{ci[0]:.3f}, {ci[1]:.3f}]" if ci else "")
            elif key == "n":
                row[title] = f"{result['n']} ({result['n_real']}/{result['n_fake']})"
            else:
                row[title] = format_number(result.get(key))
        rows.append(row)
    return rows


CARD_LEVEL_NAMES = {"frame": "frame", "video_median": "file"}


def format_rate(rate: float | None, count: int) -> str:
    """``0.083 (1/12)``: the rate and what it counts, so that a rate on few samples reads as such."""
    if rate is None:
        return "-"
    return f"{rate:.3f} ({round(rate * count)}/{count})"


def card_threshold_rows(runs: Sequence[dict], condition: str = "clean") -> list[dict[str, str]]:
    """One row per method: the card's threshold, and at it the share of reals called fake (FPR), the share of
    fakes caught (TPR) and the balanced accuracy, per face and per file (median of all its faces, without the
    reliable range: not the scan's per-track verdict rate)."""
    rows = []
    for run in runs:
        calibration = run["calibration"]
        source = "card" if calibration["threshold_source"] in ("model card", "ensemble card") else "default"
        row = {"method": run["method"], "threshold": f"{calibration['threshold']:.3f} ({source})"}
        for level in CARD_THRESHOLD_LEVELS:
            result = run["conditions"][condition][level]
            name = CARD_LEVEL_NAMES[level]
            row[f"FPR {name}"] = format_rate(result.get("fpr_at_card_threshold"), result["n_real"])
            row[f"TPR {name}"] = format_rate(result.get("tpr_at_card_threshold"), result["n_fake"])
            row[f"BalACC {name}"] = format_number(result.get("balanced_acc_at_card_threshold"))
        rows.append(row)
    return rows


def manipulation_rows(runs: Sequence[dict]) -> list[dict[str, str]]:
    rows = []
    for run in runs:
        for kind, entry in run["conditions"]["clean"].get("per_manipulation", {}).items():
            rows.append({"method": run["method"], "manipulation": kind,
                         **{f"AUC {level}": format_number(entry[level]["auc"]) for level in LEVELS}})
    return rows


def robustness_rows(runs: Sequence[dict], level: str) -> list[dict[str, str]]:
    rows = []
    for run in runs:
        row = {"method": run["method"], "clean AUC": format_number(run["conditions"]["clean"][level]["auc"])}
        for name, entry in run["conditions"].items():
            if name != "clean":
                row[f"ΔAUC {name}"] = format_number(entry["auc_drop"][level])
        rows.append(row)
    return rows


def _json_ready(value):
    if isinstance(value, dict):
        return {str(k): _json_ready(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_ready(v) for v in value]
    if isinstance(value, (np.floating, float)):
        return None if math.isnan(value) else float(value)
    if isinstance(value, np.integer):
        return int(value)
    return value


def write_results_json(path: Path, runs: Sequence[dict], meta: dict) -> Path:
    path.write_text(json.dumps(_json_ready({**meta, "methods": list(runs)}), indent=2))
    return path


def write_scores_csv(path: Path, runs: Sequence[MethodRun], samples: Sequence[Sample]) -> Path:
    """One row per (method, condition, sample). With an ensemble, a ``p_fake_<member>`` column per member holds
    each member's calibrated P(fake) on the ensemble's rows (their mean is the ensemble's score; its logit is
    ``nan``, it has none), empty on other rows."""
    member_names = list(dict.fromkeys(member.name for run in runs for member in run.members or []))
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["method", "weights_sha256", "condition", "perturbation", "strength", "dataset", "media", "video",
                         "group", "frame", "label", "manipulation", "sample", "score", "logit",
                         *(f"p_fake_{name}" for name in member_names)])
        for run in runs:
            for name, scores in run.scores.items():
                perturbation, strength = run.conditions[name]
                logits = run.logits.get(name, [float("nan")] * len(samples))
                by_member = run.member_scores.get(name, {})
                for index, (sample, score, logit) in enumerate(zip(samples, scores, logits)):
                    members = [f"{by_member[m][index]:.6f}" if m in by_member else "" for m in member_names]
                    writer.writerow([run.method, run.weights.get("sha256") or "", name, perturbation, f"{strength:g}",
                                     sample.dataset, sample.media or sample.video, sample.video,
                                     sample.resampling_unit, sample.frame_index,
                                     sample.label, sample.manipulation, sample.key, f"{score:.6f}", f"{logit:.6f}", *members])
    return path


def write_plots(folder: Path, runs: Sequence[MethodRun], samples: Sequence[Sample]) -> list[Path]:
    """roc_<level>.png (every method on one plot) and hist_<method>_<level>.png, clean data; the histograms of the
    levels a scan judges at mark the card's threshold. Data of one class gets an empty ROC saying so. Drawn in
    deepscan's one figure style (``deepscan.report.plots``)."""
    from deepscan.report.plots import save_png

    written = []
    for level in LEVELS:
        written.append(save_png(roc_figure(runs, samples, level), folder / f"roc_{level}.png"))
        for run in runs:
            written.append(save_png(histogram_figure(run, samples, level), folder / f"hist_{run.method}_{level}.png"))
    return written


def roc_figure(runs: Sequence[MethodRun], samples: Sequence[Sample], level: str):
    """Every method's ROC curve at ``level`` on clean data, against chance."""
    from deepscan.evaluate.metrics import roc_points
    from deepscan.report.plots import MUTED_LINE, line_colour, new_figure

    figure = new_figure(5, 5)
    axes = figure.add_subplot(1, 1, 1)
    curves = 0
    for run in runs:
        labels, scores, _ = level_arrays(samples, run.scores["clean"], level)
        points = roc_points(labels, scores)
        if points is not None:
            auc = run.results["clean"][level]["auc"]
            axes.plot(*points, color=line_colour(curves), label=f"{run.method} (AUC {auc:.3f})")
            curves += 1
    axes.plot([0, 1], [0, 1], color=MUTED_LINE, linestyle=":", linewidth=1)
    axes.set(xlabel="false positive rate (reals called fake)", ylabel="true positive rate (fakes caught)",
             title=f"ROC, {LEVEL_TITLES[level]}", xlim=(0, 1), ylim=(0, 1.01))
    if curves:
        axes.legend(loc="lower right", fontsize="small")
    else:
        axes.text(0.5, 0.55, "no ROC: the data holds\nonly one class (real or fake)", ha="center", va="center")
    return figure


def histogram_figure(run: MethodRun, samples: Sequence[Sample], level: str):
    """The method's P(fake) of the reals and of the fakes at ``level`` on clean data; the card's threshold at the
    levels a scan judges at."""
    from deepscan.report.plots import FAKE_COLOUR, REAL_COLOUR, REFERENCE_LINE, new_figure

    labels, scores, _ = level_arrays(samples, run.scores["clean"], level)
    figure = new_figure(5, 3.5)
    axes = figure.add_subplot(1, 1, 1)
    bins = np.linspace(0, 1, 26)
    axes.hist(scores[labels == 0], bins=bins, alpha=0.6, label=f"real ({(labels == 0).sum()})", color=REAL_COLOUR)
    axes.hist(scores[labels == 1], bins=bins, alpha=0.6, label=f"fake ({(labels == 1).sum()})", color=FAKE_COLOUR)
    if level in CARD_THRESHOLD_LEVELS:
        threshold = run.calibration.threshold
        axes.axvline(threshold, color=REFERENCE_LINE, linestyle="--", linewidth=1,
                     label=f"card threshold {threshold:.3f}")
    axes.set(xlabel="P(fake)", ylabel="count", title=f"{run.method}, {LEVEL_TITLES[level]}")
    axes.legend(fontsize="small")
    return figure


def write_outputs(folder: Path, runs: Sequence[MethodRun], samples: Sequence[Sample], meta: dict) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    return [
        write_results_json(folder / "results.json", [run.to_dict() for run in runs], meta),
        write_scores_csv(folder / "scores.csv", runs, samples),
        *write_plots(folder, runs, samples),
    ]

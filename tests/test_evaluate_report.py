"""Tables (one row per method), results.json, scores.csv and PNGs, and the `evaluate` command end to end."""

import csv
import json

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from deepscan.cli import app
from deepscan.cli.evaluate_tables import tables as evaluate_tables
from deepscan.detectors.base import Detector, DetectorConfig
from deepscan.evaluate import report
from deepscan.evaluate.runner import LEVELS, evaluate_method
from deepscan.evaluate.samples import Sample
from deepscan.evaluate.scores import ScoreCache
from deepscan.media.synthetic import portrait, second_portrait


class ScaledBrightness(Detector):
    def __init__(self, gain: float):
        super().__init__()
        self.config = DetectorConfig(name="stub", paper="test stub", input_size=16)
        self.gain = gain

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x.mean(dim=(1, 2, 3)) - 0.5) * self.gain


@pytest.fixture
def samples(tmp_path):
    made = []
    for index, (video, label, brightness) in enumerate(
        [("/r/real/a.mp4", 0, 50), ("/r/real/a.mp4", 0, 90), ("/r/real/b.png", 0, 160),
         ("/r/fake/a.mp4", 1, 140), ("/r/fake/a.mp4", 1, 200), ("/r/fake/c.png", 1, 230)]
    ):
        path = tmp_path / f"{index}.png"
        Image.fromarray(np.full((24, 24, 3), brightness, np.uint8)).save(path)
        made.append(Sample(f"s{index}", "test", video, label, "fake" if label else "real", index, path,
                           np.full((6, 2), np.nan)))
    return made


@pytest.fixture
def runs(samples):
    return [
        evaluate_method(ScaledBrightness(gain), name, {"sha256": None, "trained": False}, samples,
                        [("gaussian_noise", 30.0)], ScoreCache(None), bootstrap=20)
        for name, gain in (("first", 4.0), ("second", -4.0))
    ]


def test_table_has_one_row_per_method_at_every_level(runs):
    summaries = [run.to_dict() for run in runs]
    for level in LEVELS:
        rows = report.metric_rows(summaries, level)
        assert [row["method"] for row in rows] == ["first", "second"]
    # Frames: reals 50, 90, 160; fakes 140, 200, 230 -> 8 of 9 pairs ordered; the inverted detector gets 1/9.
    rows = report.metric_rows(summaries, "frame")
    assert rows[0]["AUC [95% CI]"].startswith(f"{8 / 9:.3f}") and rows[1]["AUC [95% CI]"].startswith(f"{1 / 9:.3f}")
    assert rows[0]["n (real/fake)"] == "6 (3/3)"
    assert report.metric_rows(summaries, "video_mean")[0]["n (real/fake)"] == "4 (2/2)"
    robustness = report.robustness_rows(summaries, "frame")
    assert [row["method"] for row in robustness] == ["first", "second"] and "ΔAUC gaussian_noise@30" in robustness[0]
    tables = evaluate_tables(summaries)
    assert all(table.row_count == 2 for table in tables)


def test_card_threshold_table_gives_rates_with_their_counts(runs):
    summaries = [run.to_dict() for run in runs]
    rows = report.card_threshold_rows(summaries)
    assert [row["method"] for row in rows] == ["first", "second"]
    # No card: the scan's default 0.5. Gain 4 puts brightness above 127.5 at P(fake) >= 0.5: real 160 (1 of 3)
    # and fakes 140, 200, 230 (3 of 3); videos (median): real b.png (160), fakes a.mp4 and c.png.
    assert rows[0]["threshold"] == "0.500 (default)"
    assert rows[0]["FPR frame"] == "0.333 (1/3)"
    assert rows[0]["TPR frame"] == "1.000 (3/3)"
    assert rows[0]["FPR file"] == "0.500 (1/2)"
    [title] = [str(table.title) for table in evaluate_tables(summaries) if "model card's threshold" in str(table.title)]
    assert "per file, median of all its faces, without the reliable range" in title
    assert "not the scan's per-track verdict rate" in title


def test_outputs_are_written_where_asked(tmp_path, runs, samples):
    folder = tmp_path / "nested" / "results"
    written = report.write_outputs(folder, runs, samples, {"data": ["x"]})
    assert all(path.parent == folder and path.stat().st_size > 0 for path in written)
    names = {path.name for path in written}
    assert {"results.json", "scores.csv", "roc_frame.png", "roc_video_mean.png", "hist_first_frame.png"} <= names
    results = json.loads((folder / "results.json").read_text())
    assert [m["method"] for m in results["methods"]] == ["first", "second"]
    frame = results["methods"][0]["conditions"]["clean"]["frame"]
    assert frame["auc"] == pytest.approx(8 / 9)
    with open(folder / "scores.csv") as handle:
        rows = list(csv.DictReader(handle))
    # One row per (method, condition, sample); the clean frame AUC can be recomputed from the CSV alone.
    assert len(rows) == 2 * 2 * len(samples)
    from sklearn.metrics import roc_auc_score

    clean_first = [r for r in rows if r["method"] == "first" and r["condition"] == "clean"]
    assert roc_auc_score([int(r["label"]) for r in clean_first], [float(r["score"]) for r in clean_first]) == \
        pytest.approx(frame["auc"])
    # The score is the (calibrated) P(fake) of the logit beside it; no card here, so sigmoid(logit).
    assert [float(r["score"]) for r in clean_first] == \
        pytest.approx([1 / (1 + np.exp(-float(r["logit"]))) for r in clean_first], abs=1e-6)
    assert frame["fpr_at_card_threshold"] == pytest.approx(1 / 3)
    assert {r["media"] for r in clean_first} == {s.video for s in samples}
    with Image.open(folder / "roc_frame.png") as image:
        assert image.size[0] > 100


def test_one_class_data_is_tabled_and_written_without_warnings(tmp_path, samples):
    import warnings

    reals = [sample for sample in samples if sample.label == 0]
    runs = [evaluate_method(ScaledBrightness(4.0), "first", {"sha256": None}, reals, [("gaussian_noise", 30.0)],
                            ScoreCache(None), bootstrap=20)]
    summaries = [run.to_dict() for run in runs]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no matplotlib legend warning, no numpy warning on empty classes
        tables = evaluate_tables(summaries)
        report.write_outputs(tmp_path, runs, reals, {"data": ["x"]})
    assert report.metric_rows(summaries, "frame")[0]["AUC [95% CI]"] == "-"
    assert report.card_threshold_rows(summaries)[0]["FPR frame"] == "0.333 (1/3)"
    assert report.card_threshold_rows(summaries)[0]["TPR frame"] == "-"
    assert len(tables) >= 4
    frame = json.loads((tmp_path / "results.json").read_text())["methods"][0]["conditions"]["clean"]["frame"]
    assert frame["auc"] is None and frame["fpr_at_card_threshold"] == pytest.approx(1 / 3)


# --- the command -------------------------------------------------------------------------------------------

runner = CliRunner()


@pytest.fixture(scope="module")
def face_folder(tmp_path_factory):
    """real/ and fake/ portraits (the fakes brightened and noised: any difference will do for plumbing)."""
    root = tmp_path_factory.mktemp("evaluate-data")
    rng = np.random.default_rng(0)
    for name, image in (("hopper", portrait()), ("second", second_portrait())):
        for label in ("real", "fake"):
            (root / label).mkdir(exist_ok=True)
            if label == "fake":
                image = np.clip(image.astype(float) * 1.1 + rng.normal(0, 8, image.shape), 0, 255).astype(np.uint8)
            Image.fromarray(image).save(root / label / f"{name}.png")
    return root


def test_evaluate_command_two_methods_with_perturbation(tmp_path, face_folder, untrained):
    import torch

    from deepscan.detectors import create_detector
    from deepscan.weights import save_weights

    torch.manual_seed(0)
    weights = tmp_path / "faclue.safetensors"
    save_weights(create_detector("faclue"), weights)
    out = tmp_path / "out"
    args = ["evaluate", "-m", "faclue", "--weights", str(weights), "-m", "sficonv", "--weights", "shipped", str(face_folder),
            "--perturb", "jpeg:50", "--cache-dir", str(tmp_path / "cache"), "--bootstrap", "20"]
    result = runner.invoke(app, [*args, "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "frame level" in result.stdout and "video level" in result.stdout
    assert "faclue" in result.stdout and "sficonv" in result.stdout
    assert "no trained weights" in result.stderr and "0.5 only" in result.stderr
    results = json.loads((out / "results.json").read_text())
    assert [m["method"] for m in results["methods"]] == ["faclue", "sficonv"]
    clean = results["methods"][0]["conditions"]["clean"]
    assert clean["frame"]["n_real"] == 2 and clean["frame"]["n_fake"] == 2
    assert "jpeg@50" in results["methods"][0]["conditions"]
    # real/hopper.png and fake/hopper.png (made from it) are one group, resampled whole: 2 units, not 4 files, at
    # the frame level and the file level alike; scores.csv names each face's group.
    assert clean["frame"]["auc_ci95_units"] == 2 and clean["video_median"]["auc_ci95_units"] == 2
    with open(out / "scores.csv") as handle:
        groups = {row["media"]: row["group"] for row in csv.DictReader(handle)}
    assert len(groups) == 4 and len(set(groups.values())) == 2
    assert len({groups[str((face_folder / kind / "hopper.png").resolve())] for kind in ("real", "fake")}) == 1
    first_scores = (out / "scores.csv").read_text()
    # Re-run: the trained detector's scores all come from the cache, so they are identical.
    again = runner.invoke(app, [*args, "--out", str(tmp_path / "again")])
    assert again.exit_code == 0, again.output
    second_scores = (tmp_path / "again" / "scores.csv").read_text()

    def rows(text, method):
        return [line for line in text.splitlines() if line.startswith(method + ",")]

    assert rows(second_scores, "faclue") == rows(first_scores, "faclue") != []


@pytest.mark.parametrize(
    "args, message",
    [
        (["-m", "nonesuch"], "unknown detector"),
        (["-m", "faclue", "--weights", "a.safetensors", "--weights", "b.safetensors"], "one --weights per --method"),
        (["-m", "faclue", "--perturb", "sharpen"], "unknown perturbation"),
        (["-m", "faclue", "--weights", "missing.safetensors"], "not found"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(tmp_path, face_folder, args, message):
    result = runner.invoke(app, ["evaluate", str(face_folder), *args, "--cache-dir", str(tmp_path)])
    assert result.exit_code == 2
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and message in lines[0] and "Traceback" not in result.output


def test_missing_data_is_reported(tmp_path):
    result = runner.invoke(app, ["evaluate", "-m", "faclue", str(tmp_path / "nowhere"), "--cache-dir", str(tmp_path)])
    assert result.exit_code == 2 and "no such file or folder" in result.stderr


@pytest.fixture(scope="module")
def real_only_folder(tmp_path_factory):
    """Authentic faces only, as an investigator's footage to measure false alarms on."""
    root = tmp_path_factory.mktemp("real-only")
    (root / "real").mkdir()
    for name, image in (("hopper", portrait()), ("second", second_portrait())):
        Image.fromarray(image).save(root / "real" / f"{name}.png")
    return root


def _card(scale: float, bias: float, threshold: float) -> dict:
    import math

    return {"method": "platt", "scale": scale, "bias": bias, "threshold": threshold, "threshold_rule": "test",
            "fitted_on": "test", "check": {"logits": [0.0], "probabilities": [1 / (1 + math.exp(-bias))]}}


def test_real_only_data_gives_the_false_alarm_rate_at_the_cards_threshold(tmp_path, real_only_folder, shipped):
    import math

    # tiny_a gives every face the logit 2: calibrated P(fake) = sigmoid(0.5 * 2 - 0.5) = 0.622, below the card's
    # threshold 0.7 (no false alarm), though above 0.5 (where every real face would be called fake).
    weights = shipped.add("tiny_a", 2.0, calibration=_card(0.5, -0.5, 0.7))
    out = tmp_path / "out"
    args = ["evaluate", "-m", "tiny_a", str(real_only_folder), "--cache-dir", str(tmp_path / "cache"),
            "--bootstrap", "20"]
    result = runner.invoke(app, [*args, "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "Traceback" not in result.output and "real samples only" in result.stderr
    assert "model card's threshold" in result.stdout
    results = json.loads((out / "results.json").read_text())
    [method] = results["methods"]
    assert method["calibration"]["method"] == "platt" and method["calibration"]["threshold"] == 0.7
    assert method["calibration"]["threshold_source"] == "model card"
    assert method["weights"]["model_card"]["path"].endswith("tiny_a.card.json")
    assert results["notes"] and "fpr_at_card_threshold" in results["notes"][0]
    clean = method["conditions"]["clean"]
    for level in ("frame", "video_median"):
        entry = clean[level]
        assert entry["n_real"] == 2 and entry["n_fake"] == 0
        assert entry["auc"] is None and entry["ap"] is None and entry["eer"] is None
        assert entry["card_threshold"] == 0.7
        assert entry["fpr_at_card_threshold"] == 0.0 and entry["tpr_at_card_threshold"] is None
        assert entry["balanced_acc_at_card_threshold"] is None
    assert clean["frame"]["acc@0.5"] == 0.0  # at 0.5 both real faces would be false alarms
    with open(out / "scores.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert [float(r["logit"]) for r in rows] == pytest.approx([2.0, 2.0], abs=1e-5)
    assert [float(r["score"]) for r in rows] == pytest.approx([1 / (1 + math.exp(-0.5))] * 2, abs=1e-5)

    # A new card for the same weights (same sha256, same score cache): the new calibration is applied, not
    # scores cached under the old one. sigmoid(2) = 0.881 >= 0.7: both real faces are now false alarms.
    shipped.card(weights, calibration=_card(1.0, 0.0, 0.7))
    shipped.seal()
    again = runner.invoke(app, [*args, "--out", str(tmp_path / "again")])
    assert again.exit_code == 0, again.output
    method = json.loads((tmp_path / "again" / "results.json").read_text())["methods"][0]
    assert method["calibration"]["scale"] == 1.0
    assert method["conditions"]["clean"]["frame"]["fpr_at_card_threshold"] == 1.0
    assert method["conditions"]["clean"]["video_median"]["fpr_at_card_threshold"] == 1.0
    with open(tmp_path / "again" / "scores.csv") as handle:
        assert [float(r["score"]) for r in csv.DictReader(handle)] == \
            pytest.approx([1 / (1 + math.exp(-2.0))] * 2, abs=1e-5)

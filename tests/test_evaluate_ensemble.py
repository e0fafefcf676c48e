"""`deepscan evaluate -m ensemble`: the ensemble measured as a scan judges with it (the mean of its members'
calibrated P(fake), each member at its own input size, at the ensemble card's threshold), from the members'
own logits, each face scored once per member (tiny detectors, see conftest.shipped)."""

import csv
import json

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from deepscan.calibration import Calibration
from deepscan.cli import app
from deepscan.detectors.base import Detector, DetectorConfig
from deepscan.evaluate.report import card_threshold_rows
from deepscan.evaluate.runner import EnsembleMember, EnsembleThreshold, evaluate_ensemble, evaluate_method
from deepscan.evaluate.samples import Sample
from deepscan.evaluate.scores import ScoreCache
from deepscan.media.synthetic import portrait, second_portrait

runner = CliRunner()


def sigmoid(x):
    return 1 / (1 + np.exp(-np.asarray(x, dtype=np.float64)))


# --- the runner ------------------------------------------------------------------------------------------------


class Brightness(Detector):
    """Logit ``gain * (mean brightness - 0.5)``; records the input size of every batch it scores."""

    def __init__(self, name: str, size: int, gain: float):
        super().__init__()
        self.config = DetectorConfig(name=name, paper="test stub", input_size=size)
        self.gain = gain
        self.seen: list[int] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.seen += [x.shape[-1]] * len(x)
        return (x.mean(dim=(1, 2, 3)) - 0.5) * self.gain


@pytest.fixture
def samples(tmp_path):
    made = []
    for index, (video, label, level) in enumerate(
        [("/r/a.mp4", 0, 60), ("/r/a.mp4", 0, 100), ("/r/b.png", 0, 170),
         ("/f/a.mp4", 1, 150), ("/f/a.mp4", 1, 210), ("/f/c.png", 1, 230)]
    ):
        path = tmp_path / f"{index}.png"
        Image.fromarray(np.full((46, 46, 3), level, np.uint8)).save(path)
        made.append(Sample(f"s{index}", "test", video, label, "fake" if label else "real", index, path,
                           np.full((6, 2), np.nan)))
    return made


PLATT = Calibration(scale=0.5, bias=-0.5, threshold=0.7, method="platt")


def test_the_ensemble_is_the_mean_of_calibrated_members_at_its_own_threshold(samples):
    a, b = Brightness("a", 16, 8.0), Brightness("b", 24, 4.0)
    members = [EnsembleMember("a", a, PLATT, "key-a"), EnsembleMember("b", b, Calibration(), "key-b")]
    cache = ScoreCache(None)
    run = evaluate_ensemble(members, EnsembleThreshold(0.45, "ensemble card", "test rule"), {"sha256": None},
                            samples, [("contrast", 0.5)], cache, bootstrap=0)
    # Each member scored every face once per condition, at its own input size.
    assert a.seen == [16] * 12 and b.seen == [24] * 12
    alone_a = evaluate_method(a, "a", {"sha256": None}, samples, [("contrast", 0.5)], cache, calibration=PLATT,
                              cache_key="key-a", bootstrap=0)
    alone_b = evaluate_method(b, "b", {"sha256": None}, samples, [], cache, cache_key="key-b", bootstrap=0)
    assert a.seen == [16] * 12 and b.seen == [24] * 12  # read from this run's cache: nothing scored again
    for name in ("clean", "contrast@0.5"):
        assert run.member_scores[name]["a"] == pytest.approx(alone_a.scores[name])
        assert run.scores[name] == pytest.approx((run.member_scores[name]["a"] + run.member_scores[name]["b"]) / 2)
    assert run.member_scores["clean"]["b"] == pytest.approx(alone_b.scores["clean"])
    assert run.member_scores["clean"]["a"] == pytest.approx(PLATT.probability(alone_a.logits["clean"]))
    frame = run.results["clean"]["frame"]
    assert frame["card_threshold"] == run.results["clean"]["video_median"]["card_threshold"] == 0.45
    reals, fakes = run.scores["clean"][:3], run.scores["clean"][3:]
    assert frame["fpr_at_card_threshold"] == pytest.approx((reals >= 0.45).mean())
    assert frame["tpr_at_card_threshold"] == pytest.approx((fakes >= 0.45).mean())
    summary = run.to_dict()
    assert summary["calibration"]["threshold"] == 0.45 and summary["calibration"]["threshold_source"] == "ensemble card"
    assert summary["calibration"]["threshold_rule"] == "test rule"
    assert summary["calibration"]["members"]["a"]["scale"] == 0.5
    assert summary["conditions"]["contrast@0.5"]["auc_drop"]["frame"] is not None


def test_the_ensemble_threshold_on_val_comes_from_the_mean(samples, tmp_path):
    a, b = Brightness("a", 16, 8.0), Brightness("b", 24, -2.0)
    members = [EnsembleMember("a", a, Calibration(), "key-a"), EnsembleMember("b", b, Calibration(), "key-b")]
    run = evaluate_ensemble(members, EnsembleThreshold(0.5, "default"), {"sha256": None}, samples, [],
                            ScoreCache(tmp_path / "scores.sqlite"), val_samples=samples, bootstrap=0)
    assert run.thresholds["frame"] is not None
    assert run.to_dict()["calibration"]["threshold_source"] == "default (no ensemble card)"
    assert a.seen == [16] * 6 and b.seen == [24] * 6  # the val faces are the test faces here: scored once


# --- the command ------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def face_folder(tmp_path_factory):
    """Two real and two fake portraits (the fakes brightened)."""
    root = tmp_path_factory.mktemp("ensemble-data")
    for name, image in (("hopper", portrait()), ("second", second_portrait())):
        for label in ("real", "fake"):
            (root / label).mkdir(exist_ok=True)
            shown = image if label == "real" else np.clip(image.astype(float) * 1.25 + 20, 0, 255).astype(np.uint8)
            Image.fromarray(shown).save(root / label / f"{name}.png")
    return root


def ship_brightness(shipped, name: str, weight: float, bias: float, **sections):
    """``name``'s logit is ``weight * (R + G + B mean) + bias``: it depends on the face and its crop size."""
    from deepscan.detectors import create_detector
    from deepscan.weights import save_weights

    detector = create_detector(name)
    with torch.no_grad():
        detector.head.weight.fill_(weight)
        detector.head.bias.fill_(bias)
    path = shipped.folder / f"{name}.safetensors"
    save_weights(detector, path)
    if sections:
        shipped.card(path, **sections)
    shipped.seal()


@pytest.fixture
def ensemble_shipped(shipped, calibration_card, monkeypatch):
    """tiny_a (calibrated: sigmoid(2 logit - 1)) and tiny_b (no card), and an ensemble card naming both with the
    threshold 0.1, far below where 0.5 would put it: every mean score (0.2-0.5) reaches it."""
    import deepscan.scan as scan_module

    ship_brightness(shipped, "tiny_a", 0.5, 0.0, calibration=calibration_card)
    ship_brightness(shipped, "tiny_b", -1.0, -1.0)
    (shipped.folder / "ensemble.card.json").write_text(json.dumps({
        "schema": "deepscan.ensemble-card", "members": ["tiny_a", "tiny_b"],
        "calibration": {"threshold": 0.1, "threshold_rule": "test rule"},
    }))
    shipped.seal()
    calls = []
    original = scan_module.face_logits

    def counting(detector, crops):
        logits = original(detector, crops)
        calls.append((detector.config.name, crops.shape[1], logits))
        return logits

    monkeypatch.setattr(scan_module, "face_logits", counting)  # the one path every evaluation score comes through
    return calls


def scored(calls, name):
    return [size for member, size, logits in calls if member == name for _ in logits]


def read_rows(path):
    with open(path) as handle:
        return list(csv.DictReader(handle))


def test_evaluate_ensemble_as_the_scan_judges_with_members_scored_once(tmp_path, face_folder, ensemble_shipped):
    calls = ensemble_shipped
    out = tmp_path / "out"
    args = ["evaluate", "-m", "ensemble", "-m", "tiny_a", str(face_folder), "--perturb", "jpeg:50",
            "--cache-dir", str(tmp_path / "cache"), "--bootstrap", "0"]
    result = runner.invoke(app, [*args, "--out", str(out)])
    assert result.exit_code == 0, result.output
    said = " ".join(result.stderr.split())
    assert "ensemble of tiny_a, tiny_b" in said and "threshold 0.1 (ensemble card)" in said
    results = json.loads((out / "results.json").read_text())
    assert [m["method"] for m in results["methods"]] == ["ensemble", "tiny_a"]
    ensemble, alone = results["methods"]
    faces = ensemble["conditions"]["clean"]["frame"]["n"]
    assert faces == 4
    # Each member scored each face once per condition (clean, jpeg@50), at its own input size; tiny_a, also
    # evaluated alone, was not scored again.
    assert scored(calls, "tiny_a") == [32] * 2 * faces and scored(calls, "tiny_b") == [48] * 2 * faces

    rows = read_rows(out / "scores.csv")
    for condition in ("clean", "jpeg@50"):
        mine = [r for r in rows if r["method"] == "ensemble" and r["condition"] == condition]
        own = {r["sample"]: r for r in rows if r["method"] == "tiny_a" and r["condition"] == condition}
        assert len(mine) == faces
        for row in mine:
            members = [float(row["p_fake_tiny_a"]), float(row["p_fake_tiny_b"])]
            assert float(row["score"]) == pytest.approx(np.mean(members), abs=2e-6)  # the mean of the members
            assert members[0] == pytest.approx(float(own[row["sample"]]["score"]), abs=1e-6)  # tiny_a's own score
            assert row["p_fake_tiny_a"] != row["p_fake_tiny_b"]
    # Each member's P(fake) is its logit through its own card: tiny_a sigmoid(2 logit - 1), tiny_b sigmoid(logit).
    clean = [r for r in rows if r["method"] == "ensemble" and r["condition"] == "clean"]
    logits = {name: np.concatenate([out for member, _, out in calls if member == name])[:faces]
              for name in ("tiny_a", "tiny_b")}
    assert [float(r["p_fake_tiny_a"]) for r in clean] == pytest.approx(sigmoid(2 * logits["tiny_a"] - 1), abs=1e-6)
    assert [float(r["p_fake_tiny_b"]) for r in clean] == pytest.approx(sigmoid(logits["tiny_b"]), abs=1e-6)
    assert all(r["p_fake_tiny_a"] == "" for r in rows if r["method"] == "tiny_a")

    # The ensemble card's threshold (0.1), not 0.5, nor tiny_a's 0.7: every mean score reaches it.
    calibration = ensemble["calibration"]
    assert calibration["threshold"] == 0.1 and calibration["threshold_source"] == "ensemble card"
    assert calibration["threshold_rule"] == "test rule" and calibration["members"]["tiny_a"]["threshold"] == 0.7
    means = np.array([float(r["score"]) for r in clean])
    assert (means < 0.5).all() and (means >= 0.1).all()
    for level in ("frame", "video_median"):
        entry = ensemble["conditions"]["clean"][level]
        assert entry["card_threshold"] == 0.1
        assert entry["fpr_at_card_threshold"] == 1.0 and entry["tpr_at_card_threshold"] == 1.0
    assert ensemble["conditions"]["clean"]["frame"]["acc@0.5"] == 0.5  # at 0.5 no face would be called fake
    assert alone["calibration"]["threshold"] == 0.7
    assert ensemble["conditions"]["jpeg@50"]["auc_drop"]["frame"] is not None
    assert ensemble["weights"]["model_card"]["path"].endswith("ensemble.card.json")
    assert [m["method"] for m in ensemble["weights"]["members"]] == ["tiny_a", "tiny_b"]

    result = runner.invoke(app, ["evaluate", "-m", "ensemble", str(face_folder), "--cache-dir", str(tmp_path / "c"),
                                 "--bootstrap", "0", "--out", str(tmp_path / "without"), "--without", "tiny_b"])
    assert result.exit_code == 0, result.output
    [ensemble] = json.loads((tmp_path / "without" / "results.json").read_text())["methods"]
    assert [m["method"] for m in ensemble["weights"]["members"]] == ["tiny_a"]
    assert [row["threshold"] for row in card_threshold_rows(results["methods"])] == ["0.100 (card)", "0.700 (card)"]
    assert (out / "hist_ensemble_frame.png").is_file()

    # Again, with the score cache: the members' logits all come from it, nothing is scored.
    calls.clear()
    again = runner.invoke(app, [*args, "--out", str(tmp_path / "again")])
    assert again.exit_code == 0, again.output
    assert calls == []
    assert read_rows(tmp_path / "again" / "scores.csv") == rows

    # Without the cache file, in the other order: still each face once per member.
    calls.clear()
    fresh = runner.invoke(app, ["evaluate", "-m", "tiny_a", "-m", "ensemble", str(face_folder), "--no-score-cache",
                                "--cache-dir", str(tmp_path / "cache"), "--bootstrap", "0"])
    assert fresh.exit_code == 0, fresh.output
    assert scored(calls, "tiny_a") == [32] * faces and scored(calls, "tiny_b") == [48] * faces


def test_the_ensemble_without_a_card_uses_every_trained_detector_at_0_5(tmp_path, face_folder, shipped,
                                                                         calibration_card):
    ship_brightness(shipped, "tiny_a", 0.5, 0.0, calibration=calibration_card)
    ship_brightness(shipped, "tiny_b", -1.0, -1.0)
    out = tmp_path / "out"
    result = runner.invoke(app, ["evaluate", "-m", "ensemble", str(face_folder), "--cache-dir", str(tmp_path / "c"),
                                 "--bootstrap", "0", "--out", str(out)])
    assert result.exit_code == 0, result.output
    [ensemble] = json.loads((out / "results.json").read_text())["methods"]
    assert ensemble["calibration"]["threshold"] == 0.5
    assert ensemble["calibration"]["threshold_source"] == "default (no ensemble card)"
    assert ensemble["weights"]["model_card"] is None
    assert [m["method"] for m in ensemble["weights"]["members"]] == ["tiny_a", "tiny_b"]


@pytest.mark.parametrize(
    "args, message",
    [
        (["-m", "ensemble", "--weights", "x.safetensors"], "each member's own"),
        (["-m", "tiny_a", "-m", "ensemble", "--weights", "shipped", "--weights", "x.safetensors"], "each member's own"),
        (["-m", "tiny_a", "--without", "tiny_a"], "needs --method ensemble"),
        (["-m", "ensemble", "--without", "tiny_a"], "no member with trained weights is left"),
    ],
)
def test_weights_for_the_ensemble_are_a_usage_error(tmp_path, face_folder, shipped, calibration_card, args, message):
    ship_brightness(shipped, "tiny_a", 0.5, 0.0, calibration=calibration_card)
    result = runner.invoke(app, ["evaluate", str(face_folder), *args, "--cache-dir", str(tmp_path)])
    assert result.exit_code == 2
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and message in lines[0] and "Traceback" not in result.output


def test_an_ensemble_without_trained_members_is_one_line(tmp_path, face_folder, shipped):
    result = runner.invoke(app, ["evaluate", "-m", "ensemble", str(face_folder), "--cache-dir", str(tmp_path)])
    assert result.exit_code == 2
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "no detector has trained weights" in lines[0]

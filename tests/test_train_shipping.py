"""Shipping a run: fp16 weights that keep their metadata, and the reliable range read off degraded faces."""

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors import safe_open
from safetensors.torch import save_file

from deepscan.reliability import face_sharpness
from deepscan.media.synthetic import portrait
from deepscan.train.shipping import as_if_face_px, blurred, last_reliable, to_fp16_safetensors


def test_fp16_weights_keep_metadata_and_integer_buffers(tmp_path):
    source, target = tmp_path / "run.safetensors", tmp_path / "ship.safetensors"
    state = {"conv.weight": torch.randn(4, 3, 3, 3), "bn.num_batches_tracked": torch.tensor(7)}
    save_file(state, str(source), metadata={"detector": "faclue", "input_size": "160"})
    to_fp16_safetensors(source, target)
    with safe_open(str(target), "pt") as handle:
        assert handle.metadata()["detector"] == "faclue" and handle.metadata()["input_size"] == "160"
        assert handle.get_tensor("conv.weight").dtype == torch.float16
        assert handle.get_tensor("bn.num_batches_tracked").dtype == torch.int64
        torch.testing.assert_close(handle.get_tensor("conv.weight").float(), state["conv.weight"], atol=2e-3, rtol=1e-3)
    assert target.stat().st_size < 0.7 * source.stat().st_size


def test_smaller_and_blurrier_faces_lose_sharpness_as_a_scan_would_see():
    crop = np.asarray(Image.fromarray(portrait()).resize((160, 160)))
    by_size = [face_sharpness(as_if_face_px(crop[None], size, 1.3)[0]) for size in (128, 64, 32)]
    by_blur = [face_sharpness(blurred(crop[None], sigma)[0]) for sigma in (0.5, 1.5, 3.0)]
    assert by_size == sorted(by_size, reverse=True) and by_blur == sorted(by_blur, reverse=True)


def test_the_reliable_range_stops_at_the_first_degradation_that_fails():
    rows = [  # mildest first
        {"face_px": 128, "auc": 0.95, "fpr": 0.04},
        {"face_px": 64, "auc": 0.93, "fpr": 0.06},
        {"face_px": 48, "auc": 0.80, "fpr": 0.05},  # AUC fell by more than 0.05: not reliable
        {"face_px": 32, "auc": 0.94, "fpr": 0.05},  # a lucky point past a failure is not trusted
    ]
    assert last_reliable(rows, 0.96, "face_px", 256) == 64
    rows[1]["fpr"] = 0.2  # too many false alarms fails too
    assert last_reliable(rows, 0.96, "face_px", 256) == 128
    assert last_reliable([{"face_px": 128, "auc": None, "fpr": 0.0}], 0.96, "face_px", 256) == 256


def test_the_ensembles_evaluation_plan_is_recorded_in_its_card(tmp_path, shipped, calibration_card, monkeypatch):
    import json
    import subprocess
    from pathlib import Path

    import pytest

    from deepscan.ensemble import plan_ensemble
    from deepscan.model_card import read_ensemble_card
    from deepscan.train import shipping

    shipped.add("tiny_a", 2.0, calibration=calibration_card)
    shipped.add("tiny_b", -2.5)
    card_path = shipped.folder / "ensemble.card.json"
    card_path.write_text(json.dumps({"schema": "deepscan.ensemble-card", "members": ["tiny_a", "tiny_b"],
                                     "calibration": {"threshold": 0.6, "threshold_rule": "test"}}))
    shipped.seal()
    splits = tmp_path / "splits"
    splits.mkdir()
    (splits / "dfdc_faces.csv").write_text("path,label\n")
    monkeypatch.setattr(shipping, "EVALUATION_PLAN", {"in_domain": (["dfdc_faces.csv"], []),
                                                      "robustness": (["dfdc_faces.csv"], ["--perturb", "jpeg:75"]),
                                                      "elsewhere": (["missing.csv"], [])})
    ran = []

    def evaluate(command, check):  # stands in for `python -m deepscan evaluate ...`: writes its results.json
        ran.append(command[2:])
        out = command[command.index("--out") + 1]
        Path(out).mkdir(parents=True)
        (Path(out) / "results.json").write_text(json.dumps({"methods": [{"method": "ensemble", "conditions": {
            "clean": {"frame": {"auc": 0.8, "eer": 0.2, "fpr_at_card_threshold": 0.05, "tpr_at_card_threshold": 0.5,
                                "n_real": 20, "n_fake": 20}}}}]}))

    monkeypatch.setattr(subprocess, "run", evaluate)
    shipping.evaluate_shipped("ensemble", shipped.folder, splits, tmp_path / "eval")
    assert [command[:4] for command in ran] == [["deepscan", "evaluate", str(splits / "dfdc_faces.csv"), "-m"]] * 2
    assert all(command[4] == "ensemble" and "--weights" not in command for command in ran)
    metrics = json.loads(card_path.read_text())["metrics"]
    assert set(metrics) == {"in_domain", "robustness"}  # the plan entry without its data is skipped
    command = metrics["robustness"]["command"]
    assert command.startswith("deepscan evaluate") and "-m ensemble" in command and "--perturb jpeg:75" in command
    assert metrics["in_domain"]["results"]["methods"][0]["method"] == "ensemble"
    # The card with its metrics still reads, passes SHA256SUMS and gives the scan its members and threshold.
    assert read_ensemble_card(card_path).calibration.threshold == 0.6
    plan = plan_ensemble()
    assert [name for name, _ in plan.members] == ["tiny_a", "tiny_b"] and plan.threshold == 0.6
    # Its Markdown half compares it with its members (whose cards here hold no measurements), and is checksummed.
    markdown = (shipped.folder / "ensemble.md").read_text()
    assert "| in_domain | clean | 0.800 (5.0 %) | not measured | not measured |" in markdown
    assert "ensemble.md" in (shipped.folder / "SHA256SUMS").read_text()

    with pytest.raises(SystemExit, match="shipped weights deepscan loads"):
        shipping.evaluate_shipped("ensemble", tmp_path, splits, tmp_path / "eval")


def test_the_markdown_card_says_whether_sbi_pseudo_fakes_were_used():
    import copy
    import json
    from pathlib import Path

    from deepscan.train.shipping import card_markdown

    card = json.loads((Path(__file__).resolve().parent.parent / "weights" / "faclue.card.json").read_text())
    with_sbi = copy.deepcopy(card)
    with_sbi["data"]["pseudo_fakes"] = {"ratio": 1.0}
    without = copy.deepcopy(card)
    without["data"]["pseudo_fakes"] = None
    assert "1 per real training face" in card_markdown(with_sbi)
    assert "No SBI pseudo-fakes" in card_markdown(without)
    assert "per real training face" not in card_markdown(without)


def test_the_markdown_card_says_what_a_fine_tuned_run_started_from_and_its_part_blends():
    import copy
    import json
    from pathlib import Path

    from deepscan.train.shipping import card_markdown

    card = json.loads((Path(__file__).resolve().parent.parent / "weights" / "faclue.card.json").read_text())
    tuned = copy.deepcopy(card)
    stage1 = str(Path("/home/someone/runs/stage1.safetensors"))
    tuned.setdefault("start", {})["init"] = {"spec": stage1, "source": stage1, "sha256": "ab" * 32}
    tuned["data"]["pseudo_fakes"] = {"ratio": 1.0, "parts": 0.4}
    fresh = copy.deepcopy(tuned)
    fresh["start"]["init"] = None
    fresh["data"]["pseudo_fakes"] = {"ratio": 1.0, "parts": 0.0}
    assert f"Fine-tuned from whole-detector weights with sha256 `{'ab' * 32}`" in card_markdown(tuned)
    assert "(given as `stage1.safetensors`;" in card_markdown(tuned) and "someone" not in card_markdown(tuned)
    assert "40% of them blended over facial parts" in card_markdown(tuned)
    assert "Fine-tuned from" not in card_markdown(fresh) and "facial parts" not in card_markdown(fresh)


def test_the_ensembles_markdown_card_sets_it_beside_each_member_source_by_source():
    from deepscan.train.card_markdown import ensemble_markdown

    def measured(auc: float, fpr: float) -> dict:
        frame = {"auc": auc, "eer": 0.3, "fpr_at_card_threshold": fpr, "tpr_at_card_threshold": 0.4,
                 "n_real": 100, "n_fake": 100}
        return {"command": "deepscan evaluate x.csv", "results": {"methods": [{"conditions": {"clean": {"frame": frame}}}]}}

    card = {"schema": "deepscan.ensemble-card", "members": ["a", "b"],
            "calibration": {"threshold": 0.61, "threshold_rule": "rule", "fitted_on": "val"},
            "metrics": {"swaps": measured(0.75, 0.02), "photos": measured(0.55, 0.0)}}
    members = {"a": {"metrics": {"swaps": measured(0.8, 0.1)}}, "b": {"metrics": {"swaps": measured(0.6, 0.01),
                                                                                   "photos": measured(0.5, 0.2)}}}
    markdown = ensemble_markdown(card, members)
    assert "| swaps | clean | 0.750 (2.0 %) | 0.800 (10.0 %) | 0.600 (1.0 %) |" in markdown
    assert "| photos | clean | 0.550 (0.0 %) | not measured | 0.500 (20.0 %) |" in markdown
    assert "Verdict threshold 0.6100" in markdown and "`a` (`a.md`), `b` (`b.md`)" in markdown


def test_the_readme_table_puts_each_card_in_a_column_and_the_best_auc_of_a_row_in_bold():
    from deepscan.train.card_markdown import readme_table

    def card(dfdc_auc: float, deepfacelive_auc: float | None, fairface_fpr: float) -> dict:
        def measured(frame: dict) -> dict:
            return {"results": {"methods": [{"conditions": {"clean": {"frame": frame}}}]}}

        metrics = {"in_domain_dfdc_test": measured({"auc": dfdc_auc, "fpr_at_card_threshold": 0.05,
                                                    "tpr_at_card_threshold": 0.5}),
                   "false_alarms_fairface_test": measured({"auc": None, "fpr_at_card_threshold": fairface_fpr})}
        if deepfacelive_auc is not None:
            metrics["cross_source_deepfacelive"] = measured({"auc": deepfacelive_auc})
        return {"metrics": metrics}

    table = readme_table({"a": card(0.9, 0.6, 0.031), "b": card(0.8, None, 0.0)}, {"a": "A"})
    lines = table.splitlines()
    assert lines[0] == "| test data | A | b |"
    assert "| DFDC, held-out groups (in-domain) | **0.900**; 5.0 % / 50.0 % | 0.800; 5.0 % / 50.0 % |" in lines
    assert "| DeepFaceLive live swaps (never trained on) | **0.600** | not measured |" in lines
    assert "| FairFace, held-out 30 % (real only): called fake | 3.1 % | 0.0 % |" in lines
    assert "| DFDC under JPEG 75 | not measured | not measured |" in lines


@pytest.mark.parametrize("groups_from", ["split CSVs", "scores.csv"])
def test_compare_pairs_two_detectors_faces_by_group_on_each_evaluation(tmp_path, groups_from):
    import csv

    import numpy as np

    from deepscan.evaluate.metrics import auc
    from deepscan.train.shipping import compare

    splits, out = tmp_path / "splits", tmp_path / "eval"
    splits.mkdir()
    rng = np.random.default_rng(0)
    frames = [(f"/data/{kind}/v{video}/f{frame}.jpg", int(kind == "fake"), f"v{video}")
              for kind in ("real", "fake") for video in range(6) for frame in range(4)]
    if groups_from == "split CSVs":  # a scores.csv written before it had a group column
        with (splits / "demos.csv").open("w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["path", "label", "group", "split"])
            writer.writerows([path, "fake" if label else "real", group, "test"] for path, label, group in frames)
    scores = {"good": [label + rng.normal(0, 0.5) for _, label, _ in frames],
              "poor": [rng.normal(0, 0.5) for _ in frames]}
    for name, values in scores.items():
        folder = out / name / "cross_source_deepfacelive"
        folder.mkdir(parents=True)
        with (folder / "scores.csv").open("w", newline="") as handle:
            writer = csv.writer(handle)
            group_column = ["group"] if groups_from == "scores.csv" else []
            writer.writerow(["condition", "perturbation", "strength", "media", *group_column, "frame", "label",
                             "score"])
            writer.writerows(["clean", "none", 0, path, *([group] if group_column else []), 0, label, score]
                             for (path, label, group), score in zip(frames, values))
    [line] = compare("good", "poor", out, splits, resamples=200)
    labels = [label for _, label, _ in frames]
    expected = auc(labels, scores["good"]) - auc(labels, scores["poor"])
    assert line.startswith(f"cross_source_deepfacelive clean: AUC good - poor = {expected:+.3f} [")
    # A video's real and fake halves share its group, as in the DeepFaceLive demos: 6 groups of 8 faces.
    assert "(48 faces, 6 groups resampled whole)" in line
    assert compare("good", "absent", out, splits) == []
    # Faces named otherwise in one of the two (a scores.csv written before frames kept their own file) pair with
    # nothing: the row says so instead of vanishing.
    renamed = out / "renamed" / "cross_source_deepfacelive"
    renamed.mkdir(parents=True)
    text = (out / "poor" / "cross_source_deepfacelive" / "scores.csv").read_text().replace("/data/", "/clips/")
    (renamed / "scores.csv").write_text(text)
    assert compare("good", "renamed", out, splits) == [
        "cross_source_deepfacelive clean: no face scored by both; re-run the older evaluation"]


def test_ship_calibrates_on_the_validation_faces_of_the_recipe_it_is_given(tmp_path, shipped, monkeypatch):
    import json
    from types import SimpleNamespace

    from deepscan.train import recipe as recipe_module
    from deepscan.train import shipping

    from deepscan.detectors import create_detector
    from deepscan.weights import save_weights

    run = tmp_path / "run"
    run.mkdir()
    detector = create_detector("tiny_a")  # scores a face by its mean colour: brighter reads as fake
    with torch.no_grad():
        detector.head.weight.fill_(4.0)
        detector.head.bias.fill_(-2.0)
    save_weights(detector, run / "tiny_a.safetensors")
    card = {"schema": "deepscan.model-card", "schema_version": 1, "validation": {"epoch": 4},
            "detector": {"name": "tiny_a", "input_size": shipped.SIZES["tiny_a"]}}
    (run / "tiny_a.card.json").write_text(json.dumps(card))
    margins = {"train.yaml": 1.3, "full-val.yaml": 1.5}
    monkeypatch.setattr(recipe_module, "load_recipe", lambda path: SimpleNamespace(
        detector=SimpleNamespace(name="tiny_a"), data=SimpleNamespace(face=SimpleNamespace(margin=margins[Path(path).name]))))
    asked = []

    def validation_faces(recipe_path, input_size=None):
        asked.append((Path(recipe_path).name, input_size))
        faces = 40 if Path(recipe_path).name == "full-val.yaml" else 12
        labels = np.arange(faces) % 2
        brightness = np.random.default_rng(0).uniform(60, 160, faces) + 40 * labels
        crops = np.broadcast_to(brightness[:, None, None, None], (faces, input_size, input_size, 3)).astype(np.uint8)
        sources = np.where(np.arange(faces) < faces // 2, "dfdc", "fairface")
        return shipping.ValidationFaces(crops, labels, f"{faces} faces of {Path(recipe_path).name}", sources)

    monkeypatch.setattr(shipping, "validation_faces", validation_faces)
    monkeypatch.setattr(shipping, "write_markdown", lambda card_path: None)  # this card has only what shipping reads
    into = tmp_path / "shipped"
    into.mkdir()
    shipped_card = json.loads(shipping.ship(run, Path("train.yaml"), into).read_text())
    assert asked == [("train.yaml", shipped.SIZES["tiny_a"])] and "calibrated_on" not in shipped_card["shipped_from"]
    assert shipped_card["calibration"]["fitted_on"] == "12 faces of train.yaml"

    asked.clear()
    shipped_card = json.loads(shipping.ship(run, Path("train.yaml"), into, calibrate_on=Path("full-val.yaml")).read_text())
    assert asked == [("full-val.yaml", shipped.SIZES["tiny_a"])]  # at the detector's own input size
    assert shipped_card["calibration"]["fitted_on"] == "40 faces of full-val.yaml"
    # The false-alarm budget held on each validation source's real faces, and on all of them after H.264.
    assert set(shipped_card["calibration"]["val_fpr_by_source"]) == {"dfdc", "fairface", "h264@18", "h264@23",
                                                                     "h264@28", "h264@33"}
    assert max(shipped_card["calibration"]["val_fpr_by_source"].values()) <= 0.05
    assert shipped_card["shipped_from"] == {"run": "run", "recipe": "train.yaml", "selected_epoch": 4,
                                            "calibrated_on": "full-val.yaml"}

    # Recalibrating a shipped card refits on the faces it was calibrated on, from the shipped weights, and drops
    # the metrics measured at the old threshold.
    card_path = into / "tiny_a.card.json"
    card = json.loads(card_path.read_text())
    card["metrics"] = {"in_domain": {"command": "deepscan evaluate ..."}}
    card["calibration"]["threshold"] = 0.5
    card_path.write_text(json.dumps(card))
    asked.clear()
    shipping.recalibrate("tiny_a", into)
    again = json.loads(card_path.read_text())
    assert asked == [("full-val.yaml", shipped.SIZES["tiny_a"])] and again["metrics"] == {}
    assert again["calibration"] == shipped_card["calibration"]
    assert again["shipped_from"]["recalibrated"]["recipe"] == "full-val.yaml"
    assert again["weights"] == shipped_card["weights"]


def test_the_markdown_card_gives_each_validation_sources_false_positive_rate():
    import copy
    import json
    from pathlib import Path

    from deepscan.train.shipping import card_markdown

    card = json.loads((Path(__file__).resolve().parent.parent / "weights" / "faclue.card.json").read_text())
    card["calibration"]["val_fpr"] = 0.0437
    per_source = copy.deepcopy(card)
    per_source["calibration"]["val_fpr_by_source"] = {"dfdc": 0.04, "fairface": 0.0354}
    pooled = copy.deepcopy(card)
    pooled["calibration"].pop("val_fpr_by_source", None)
    assert "false-positive rate 0.044 (dfdc 0.040, fairface 0.035), true-positive rate" in card_markdown(per_source)
    assert "false-positive rate 0.044, true-positive rate" in card_markdown(pooled)


def test_h264_false_alarms_of_real_validation_faces_are_recorded_crf_by_crf(tmp_path, monkeypatch):
    """A detector that reads smooth faces as forged calls more real faces fake once H.264 smooths them: the card
    records how many, source by source, for one detector and for the ensemble of several."""
    import json

    import torch

    from deepscan.detectors import registry
    from deepscan.detectors.base import Detector, DetectorConfig
    from deepscan.evaluate.perturb import apply_perturbation
    from deepscan.train import shipping
    from deepscan.weights import save_weights

    class Smoothness(Detector):  # fake-logit = bias - mean vertical pixel difference
        def __init__(self):
            super().__init__()
            self.head = torch.nn.Linear(1, 1)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            detail = (x[..., 1:, :] - x[..., :-1, :]).abs().mean(dim=(1, 2, 3))
            return self.head(detail[:, None]).squeeze(1)

    sizes = {"smooth_a": 32, "smooth_b": 48}
    registry.list_detectors()
    for name, size in sizes.items():
        config = DetectorConfig(name=name, paper="a test detector", input_size=size, weights=f"{name}.safetensors")
        monkeypatch.setitem(registry._ENTRYPOINTS, name, (lambda **kwargs: Smoothness(), config))

    rng = np.random.default_rng(0)
    faces, asked = 24, []
    labels = np.arange(faces) % 2
    noise = rng.uniform(4, 40, faces)  # real faces from nearly smooth to grainy

    def validation_faces(recipe_path, input_size=None):
        asked.append(input_size)
        crops = np.clip(128 + noise[:, None, None, None] * np.random.default_rng(1).standard_normal(
            (faces, input_size, input_size, 3)), 0, 255).astype(np.uint8)
        sources = np.where(np.arange(faces) < faces // 2, "dfdc", "fairface")
        return shipping.ValidationFaces(crops, labels, f"{faces} test faces", sources)

    monkeypatch.setattr(shipping, "validation_faces", validation_faces)
    monkeypatch.setattr(shipping, "write_markdown", lambda card_path: None)  # these cards hold only what h264 reads
    identity = {"method": "platt", "scale": 1.0, "bias": 0.0, "threshold": 0.5,
                "check": {"logits": [0.0], "probabilities": [0.5]}}
    detectors = {}
    for name, size in sizes.items():
        detector = detectors[name] = registry.create_detector(name).eval()
        with torch.no_grad():
            detector.head.weight.fill_(-1.0)
            detector.head.bias.zero_()
            detail = -shipping.score(detector, validation_faces(None, size).crops[labels == 0])
            # Steep enough that P(fake) spreads over (0, 1): the smoothest third of the clean reals is called fake.
            detector.head.weight.fill_(-50.0)
            detector.head.bias.fill_(50.0 * float(np.quantile(detail, 1 / 3)))
        save_weights(detector, tmp_path / f"{name}.safetensors")
        (tmp_path / f"{name}.card.json").write_text(json.dumps({
            "schema": "deepscan.model-card", "detector": {"name": name, "input_size": size},
            "calibration": identity, "shipped_from": {"recipe": "val.yaml"}}))
    (tmp_path / "ensemble.card.json").write_text(json.dumps({
        "schema": "deepscan.ensemble-card", "members": list(sizes), "calibration": {"threshold": 0.3}}))
    thresholds = {"smooth_a": 0.5, "ensemble": 0.3}  # the card's own threshold, not its members'

    for name in ("smooth_a", "ensemble"):
        asked.clear()
        card_path = shipping.h264_false_alarms(name, tmp_path, crfs=(23, 40))
        measured = json.loads(card_path.read_text())["h264_false_alarms"]
        assert asked == [32 if name == "smooth_a" else 48]  # the ensemble: at its largest member's size
        assert [row["crf"] for row in measured["rows"]] == [None, 23, 40]
        assert measured["command"] == f"python -m deepscan.train.shipping h264 {name}"
        faces_seen = validation_faces(None, asked[0])
        reals, sources = faces_seen.crops[labels == 0], faces_seen.sources[labels == 0]
        for row in measured["rows"]:
            # Each member scores its own resize of the face, encoded at that size (as `deepscan evaluate` does).
            probabilities = []
            for member in (sizes if name == "ensemble" else [name]):
                side = sizes[member]
                crops = [np.asarray(Image.fromarray(crop).resize((side, side), Image.Resampling.BOX)) for crop in reals]
                if row["crf"] is not None:
                    crops = [apply_perturbation(crop, "h264", row["crf"], index) for index, crop in enumerate(crops)]
                probabilities.append(1 / (1 + np.exp(-shipping.score(detectors[member], np.stack(crops)))))
            called_fake = np.mean(probabilities, axis=0) >= thresholds[name]
            assert row["false_alarms"] == pytest.approx(called_fake.mean(), abs=1e-4)
            assert row["by_source"] == pytest.approx(
                {source: called_fake[sources == source].mean() for source in ("dfdc", "fairface")}, abs=1e-4)
        assert measured["rows"][-1]["false_alarms"] > measured["rows"][0]["false_alarms"]  # H.264 smoothed them

    # A name without a card, or a card that was never shipped, is one line, not a traceback.
    with pytest.raises(SystemExit, match="nobody.card.json: no such card"):
        shipping.h264_false_alarms("nobody", tmp_path)
    (tmp_path / "hand_made.card.json").write_text(json.dumps({"schema": "deepscan.model-card"}))
    with pytest.raises(SystemExit, match="not a shipped card"):
        shipping.h264_false_alarms("hand_made", tmp_path)

    # A shipped card's Markdown half gives the table, row by row.
    card = json.loads((Path(__file__).resolve().parent.parent / "weights" / "faclue.card.json").read_text())
    markdown = shipping.card_markdown({**card, "h264_false_alarms": measured})
    assert "## Real faces after H.264 re-encoding" in markdown and "| encoding | all | dfdc | fairface |" in markdown
    row = measured["rows"][-1]
    assert (f"| H.264 CRF 40 | {row['false_alarms']:.3f} | {row['by_source']['dfdc']:.3f} | "
            f"{row['by_source']['fairface']:.3f} |") in markdown


def test_the_ensemble_threshold_is_chosen_on_its_members_mean_probability_source_by_source(shipped, monkeypatch):
    import json

    import torch

    from deepscan.calibration import choose_threshold_with_degraded, sigmoid
    from deepscan.detectors import create_detector
    from deepscan.train import shipping
    from deepscan.weights import save_weights

    faces, asked = 60, []
    labels = np.arange(faces) % 2
    brightness = np.random.default_rng(2).uniform(40, 200, faces) + 30 * labels  # fakes brighter, overlapping
    sources = np.where(np.arange(faces) < 40, "dfdc", "fairface")

    def validation_faces(recipe_path, input_size=None):
        asked.append(input_size)
        crops = np.broadcast_to(brightness[:, None, None, None], (faces, input_size, input_size, 3)).astype(np.uint8)
        return shipping.ValidationFaces(crops, labels, f"{faces} test faces", sources)

    monkeypatch.setattr(shipping, "validation_faces", validation_faces)
    monkeypatch.setattr(shipping, "write_markdown", lambda card_path: None)
    scales = {"tiny_a": 1.0, "tiny_b": 3.0}  # members disagree in how sure they are
    detectors = {}
    for name, scale in scales.items():
        detector = detectors[name] = create_detector(name).eval()
        with torch.no_grad():
            detector.head.weight.fill_(1.0)
            detector.head.bias.zero_()
        save_weights(detector, shipped.folder / f"{name}.safetensors")
        calibration = {"method": "platt", "scale": scale, "bias": -scale * 0.5, "threshold": 0.5,
                       "check": {"logits": [0.0], "probabilities": [float(sigmoid(np.array(-scale * 0.5)))]}}
        (shipped.folder / f"{name}.card.json").write_text(json.dumps({
            "schema": "deepscan.model-card", "detector": {"name": name, "input_size": shipped.SIZES[name]},
            "calibration": calibration, "shipped_from": {"recipe": "val.yaml"}}))

    card = json.loads(shipping.ship_ensemble(shipped.folder).read_text())
    assert card["members"] == ["tiny_a", "tiny_b"] and asked == [max(shipped.SIZES.values())]
    # Uniform crops look the same at any size: each member's calibrated P(fake) from its own logits.
    probability = {name: sigmoid(scale * (shipping.score(detectors[name], validation_faces(None, 32).crops) - 0.5))
                   for name, scale in scales.items()}
    mean = (probability["tiny_a"] + probability["tiny_b"]) / 2
    assert not np.allclose(probability["tiny_a"], probability["tiny_b"])
    # The real faces re-encoded with H.264, each member encoding its own resize, hold the budget as well.
    degraded = {f"h264@{crf}": np.mean([sigmoid(scale * (shipping.score(detectors[name], shipping.h264_encoded(
        validation_faces(None, shipped.SIZES[name]).crops[labels == 0], crf)) - 0.5)) for name, scale in scales.items()],
        axis=0) for crf in shipping.H264_CRFS}
    threshold, fpr, tpr = choose_threshold_with_degraded(mean, labels, 0.05, sources, degraded)
    assert card["calibration"]["threshold"] == pytest.approx(threshold)
    assert (card["calibration"]["val_fpr"], card["calibration"]["val_tpr"]) == pytest.approx((fpr, tpr))
    assert card["calibration"]["val_fpr_by_source"] == pytest.approx(
        {**{source: float((mean[(labels == 0) & (sources == source)] >= threshold).mean()) for source in ("dfdc", "fairface")},
         **{name: float((values >= threshold).mean()) for name, values in degraded.items()}})
    assert max(card["calibration"]["val_fpr_by_source"].values()) <= 0.05
    assert "h264@33" in card["calibration"]["threshold_rule"]


def test_validate_records_the_auc_on_the_comparison_split_with_its_command(shipped, monkeypatch):
    import json

    import torch
    from sklearn.metrics import roc_auc_score

    from deepscan.detectors import create_detector
    from deepscan.train import shipping
    from deepscan.weights import save_weights, sha256_file

    faces = 40
    labels = np.arange(faces) % 2
    brightness = np.random.default_rng(4).uniform(40, 200, faces) + 40 * labels  # overlapping: AUC below 1
    asked = []

    def validation_faces(recipe_path, input_size=None):
        asked.append((Path(recipe_path), input_size))
        crops = np.broadcast_to(brightness[:, None, None, None], (faces, input_size, input_size, 3)).astype(np.uint8)
        return shipping.ValidationFaces(crops, labels, f"{faces} test faces", np.full(faces, "dfdc"))

    monkeypatch.setattr(shipping, "validation_faces", validation_faces)
    monkeypatch.setattr(shipping, "write_markdown", lambda card_path: None)
    detector = create_detector("tiny_a").eval()
    with torch.no_grad():
        detector.head.weight.fill_(1.0)
        detector.head.bias.zero_()
    save_weights(detector, shipped.folder / "tiny_a.safetensors")
    (shipped.folder / "tiny_a.card.json").write_text(json.dumps(
        {"schema": "deepscan.model-card", "detector": {"name": "tiny_a", "input_size": 32}}))

    card = json.loads(shipping.validate_shipped("tiny_a", shipped.folder).read_text())
    sums = dict(line.split()[::-1] for line in (shipped.folder / "SHA256SUMS").read_text().splitlines())
    assert sums["tiny_a.card.json"] == sha256_file(shipped.folder / "tiny_a.card.json")  # a scan would refuse it
    expected = roc_auc_score(labels, brightness)  # the tiny detector's logit rises with brightness
    assert 0.5 < expected < 1.0 and card["validation_auc"]["auc"] == pytest.approx(expected, abs=1e-4)
    assert asked == [(shipping.COMPARISON_RECIPE, 32)]
    assert card["validation_auc"]["command"] == "python -m deepscan.train.shipping validate tiny_a"
    shipped_card = json.loads((Path(__file__).resolve().parent.parent / "weights" / "faclue.card.json").read_text())
    markdown = shipping.card_markdown({**shipped_card, "validation_auc": card["validation_auc"]})
    assert f"Frame AUC {card['validation_auc']['auc']:.3f} on 40 test faces, at 32 px" in markdown
    with pytest.raises(SystemExit, match="no such weights file"):
        shipping.validation_auc("tiny_a", shipped.folder / "missing.safetensors", 32)

"""Scoring through one batched path, the score cache, video aggregation and the validation threshold."""

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from deepscan.calibration import Calibration
from deepscan.detectors.base import Detector, DetectorConfig
from deepscan.evaluate import samples as runner_samples
from deepscan.evaluate.runner import LEVELS, aggregate_videos, evaluate_method
from deepscan.evaluate.samples import Sample
from deepscan.evaluate.scores import ScoreCache, logit_cache_key, sample_logits


class BrightnessDetector(Detector):
    """P(fake) rises with the crop's mean brightness; counts the faces it is asked to score."""

    def __init__(self):
        super().__init__()
        self.config = DetectorConfig(name="brightness", paper="test stub", input_size=32)
        self.faces_scored = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.faces_scored += len(x)
        return (x.mean(dim=(1, 2, 3)) - 0.5) * 8


def make_sample(folder: Path, video: str, label: int, frame: int, brightness: int, manipulation="fake") -> Sample:
    path = folder / f"{abs(hash((video, frame)))}.png"
    Image.fromarray(np.full((46, 46, 3), brightness, np.uint8)).save(path)
    return Sample(key=f"{video}#{frame}", dataset="test", video=video, label=label,
                  manipulation=manipulation if label else "real", frame_index=frame, face_path=path,
                  keypoints=np.full((6, 2), np.nan))


@pytest.fixture
def samples(tmp_path):
    # Two real and two fake videos; same file name in different folders, two videos in one folder.
    spec = [("/x/real/a.mp4", 0, [60, 80]), ("/y/real/a.mp4", 0, [100, 180]),
            ("/d/fake/a.mp4", 1, [150, 170, 220]), ("/d/fake/b.mp4", 1, [200])]
    return [make_sample(tmp_path, video, label, i, b, "Deepfakes" if video.endswith("a.mp4") else "FaceSwap")
            for video, label, levels in spec for i, b in enumerate(levels)]


def test_video_scores_group_by_media_file_not_by_folder_or_name():
    samples = [Sample(f"k{i}", "d", video, label, "real", i, Path("unused"), np.zeros((6, 2)))
               for i, (video, label) in enumerate([("/x/real/a.mp4", 0), ("/y/real/a.mp4", 0), ("/x/real/a.mp4", 0),
                                                    ("/d/fake/a.mp4", 1), ("/d/fake/b.mp4", 1), ("/d/fake/b.mp4", 1)])]
    scores = np.array([0.1, 0.3, 0.2, 0.9, 0.6, 0.8])
    videos, labels, means = aggregate_videos(samples, scores, "video_mean")
    assert videos == ["/d/fake/a.mp4", "/d/fake/b.mp4", "/x/real/a.mp4", "/y/real/a.mp4"]
    assert labels.tolist() == [1, 1, 0, 0]
    assert means == pytest.approx([0.9, 0.7, 0.15, 0.3])
    three = samples[:1] + samples[2:3] + [Sample("k9", "d", "/x/real/a.mp4", 0, "real", 9, Path("u"), np.zeros((6, 2)))]
    _, _, medians = aggregate_videos(three, np.array([0.1, 0.2, 0.9]), "video_median")
    assert medians == pytest.approx([0.2])  # the scan's track aggregate: median, not mean (0.4)


def test_the_bootstrap_resamples_a_samples_group_whole_at_every_level(samples):
    from dataclasses import replace

    # Frames that are files of their own (as the DeepFaceLive frames are) but one group per source video.
    grouped = [replace(sample, video=f"{sample.video}#{sample.frame_index}", group=f"g{sample.label}{index % 2}")
               for index, sample in enumerate(samples)]
    run = evaluate_method(BrightnessDetector(), "brightness", {"sha256": None}, grouped, [], ScoreCache(None),
                          bootstrap=30)
    for level in LEVELS:
        assert run.results["clean"][level]["auc_ci95_units"] == 4, level
    # Without a group each media file is its own unit.
    ungrouped = evaluate_method(BrightnessDetector(), "brightness", {"sha256": None}, samples, [], ScoreCache(None),
                                bootstrap=30)
    assert ungrouped.results["clean"]["frame"]["auc_ci95_units"] == 4
    assert ungrouped.results["clean"]["video_mean"]["auc_ci95_units"] == 4
    separate = [replace(sample, video=f"{sample.video}#{sample.frame_index}") for sample in samples]
    one_per_file = evaluate_method(BrightnessDetector(), "brightness", {"sha256": None}, separate, [],
                                   ScoreCache(None), bootstrap=30)
    assert one_per_file.results["clean"]["frame"]["auc_ci95_units"] == 8


def test_scores_are_cached_per_model_sample_and_condition(tmp_path, samples):
    detector = BrightnessDetector()
    cache = ScoreCache(tmp_path / "scores.sqlite")
    first = sample_logits(detector, "model-a", samples, ("none", 0.0), cache, batch_size=3)
    assert detector.faces_scored == len(samples)
    # Brightness b gives the logit 8 (b/255 - 0.5).
    assert first[0] == pytest.approx(8 * (60 / 255 - 0.5), abs=1e-4)
    again = sample_logits(detector, "model-a", samples, ("none", 0.0), cache)
    assert detector.faces_scored == len(samples) and (again == first).all()
    sample_logits(detector, "model-b", samples, ("none", 0.0), cache)  # other weights: scored anew
    assert detector.faces_scored == 2 * len(samples)
    salted = sample_logits(detector, "model-a", samples, ("salt_pepper", 0.3), cache)
    assert detector.faces_scored == 3 * len(samples)
    assert not np.allclose(salted, first)
    cache.close()
    reopened = ScoreCache(tmp_path / "scores.sqlite")
    # The cache holds the raw logit, 8 (60/255 - 0.5), not the probability: calibration is applied after it.
    assert reopened.get("model-a", [samples[0].key], "none", 0.0)[samples[0].key] == pytest.approx(8 * (60 / 255 - 0.5), abs=1e-5)
    reopened.close()


def test_no_cache_file_keeps_nothing_past_the_run(samples):
    detector = BrightnessDetector()
    cache = ScoreCache(None)
    sample_logits(detector, "m", samples, ("none", 0.0), cache)
    sample_logits(detector, "m", samples, ("none", 0.0), cache)
    assert detector.faces_scored == len(samples)  # within a run (one cache), a face is scored once
    sample_logits(detector, "m", samples, ("none", 0.0), ScoreCache(None))
    assert detector.faces_scored == 2 * len(samples)  # the next run scores it again


def test_evaluate_method_levels_manipulations_and_robustness(samples):
    run = evaluate_method(BrightnessDetector(), "brightness", {"sha256": None}, samples,
                          [("contrast", 0.2)], ScoreCache(None), bootstrap=50)
    clean = run.results["clean"]
    assert clean["frame"]["n"] == 8 and clean["video_mean"]["n"] == 4 and clean["video_median"]["n"] == 4
    # Frames: reals 60, 80, 100, 180; fakes 150, 170, 200, 220 -> 180 outranks two fakes: AUC 14/16.
    assert clean["frame"]["auc"] == pytest.approx(14 / 16)
    # Videos (mean brightness): reals 70, 140; fakes 180, 200 -> perfectly separated.
    assert clean["video_mean"]["auc"] == pytest.approx(1.0)
    assert set(clean["per_manipulation"]) == {"Deepfakes", "FaceSwap"}
    # FaceSwap video (200) against the real frames: above all of them.
    assert clean["per_manipulation"]["FaceSwap"]["frame"]["auc"] == pytest.approx(1.0)
    assert "acc@val" not in clean["frame"] and run.thresholds is None
    summary = run.to_dict()
    assert summary["thresholds"]["chosen_on"] is None
    drop = summary["conditions"]["contrast@0.2"]["auc_drop"]["frame"]
    assert drop == pytest.approx(run.results["contrast@0.2"]["frame"]["auc"] - 14 / 16)


def test_threshold_comes_from_val_and_is_applied_to_test(tmp_path, samples):
    val = [make_sample(tmp_path, f"/val/{i}.mp4", label, 0, b) for i, (label, b) in
           enumerate([(0, 40), (0, 200), (1, 230), (1, 250)])]
    run = evaluate_method(BrightnessDetector(), "brightness", {"sha256": None}, samples, [], ScoreCache(None),
                          val_samples=val, bootstrap=0)
    probability = lambda b: 1 / (1 + np.exp(-8 * (b / 255 - 0.5)))
    # Halfway between the val scores of 200 and 230 (brightness ~212), whatever the test data says.
    assert run.thresholds["frame"] == pytest.approx((probability(200) + probability(230)) / 2, abs=1e-4)
    # Test frames above it: only 220 (fake) -> 4 reals right + 1 fake of 4 = 5/8 (at 0.5 it would be 7/8).
    assert run.results["clean"]["frame"]["acc@0.5"] == pytest.approx(7 / 8)
    assert run.results["clean"]["frame"]["acc@val"] == pytest.approx(5 / 8)


def test_dataset_layouts_are_recognised(tmp_path):
    (tmp_path / "ffpp" / "original_sequences").mkdir(parents=True)
    (tmp_path / "celeb" / "Celeb-synthesis").mkdir(parents=True)
    (tmp_path / "plain").mkdir()
    csv_path = tmp_path / "labels.csv"
    csv_path.write_text("path,label,split\nx.mp4,1,test\n")
    assert runner_samples.dataset_source(tmp_path / "ffpp", "val").split == "val"
    assert runner_samples.dataset_source(tmp_path / "celeb", "test").kind == "celebdf"
    assert runner_samples.dataset_source(tmp_path / "plain", "test").kind == "folder"
    assert runner_samples.dataset_source(csv_path, "test").split == "test"
    with pytest.raises(runner_samples.EvaluationError):
        runner_samples.dataset_source(tmp_path / "celeb", "val")
    assert runner_samples.manipulation_of(Path("/r/manipulated_sequences/NeuralTextures/c23/videos/1_2.mp4"), 1) == "NeuralTextures"
    assert runner_samples.manipulation_of(Path("/r/fake/1.mp4"), 1) == "fake"


def test_scores_of_an_untrained_detector_are_never_cached(tmp_path):
    # Random weights differ on every run: a cached score would belong to a model that no longer exists.
    cache = ScoreCache(tmp_path / "scores.sqlite")
    cache.put(None, {"sample": 0.7}, "clean", 0.0)
    cache.put("abc123", {"sample": 0.3}, "clean", 0.0)
    assert cache.get(None, ["sample"], "clean", 0.0) == {}
    assert cache.get("abc123", ["sample"], "clean", 0.0) == {"sample": 0.3}
    cache.close()


# --- the model card's calibration and threshold ----------------------------------------------------------------

# P(fake) = sigmoid(0.5 logit - 1) = sigmoid(4 b/255 - 3) for brightness b; the threshold sits at brightness 175.
CARD = Calibration(scale=0.5, bias=-1.0, threshold=float(1 / (1 + np.exp(-(4 * 175 / 255 - 3)))), method="platt")


def test_scores_are_calibrated_and_rated_at_the_cards_threshold(samples):
    run = evaluate_method(BrightnessDetector(), "brightness", {"sha256": None}, samples, [], ScoreCache(None),
                          calibration=CARD, bootstrap=0)
    logits = run.logits["clean"]
    assert logits[0] == pytest.approx(8 * (60 / 255 - 0.5), abs=1e-5)
    assert run.scores["clean"] == pytest.approx(1 / (1 + np.exp(-(0.5 * logits - 1))))  # calibrated, not sigmoid(logit)
    frame, median = run.results["clean"]["frame"], run.results["clean"]["video_median"]
    assert frame["card_threshold"] == median["card_threshold"] == CARD.threshold
    # Frames: reals 60, 80, 100, 180 -> 180 called fake (1 of 4); fakes 150, 170, 220, 200 -> 2 of 4 caught.
    assert frame["fpr_at_card_threshold"] == pytest.approx(1 / 4)
    assert frame["tpr_at_card_threshold"] == pytest.approx(2 / 4)
    assert frame["balanced_acc_at_card_threshold"] == pytest.approx((3 / 4 + 2 / 4) / 2)
    # At 0.5 the same calibrated scores give other rates (180 -> 0.456 is not a false alarm there): the card's
    # threshold, not 0.5, is the one used.
    assert frame["balanced_acc@0.5"] != pytest.approx(frame["balanced_acc_at_card_threshold"])
    # Videos, median of the calibrated frame scores as the scan's track verdict: /y/real/a.mp4 (100, 180) ->
    # (0.193 + 0.456) / 2 = 0.325 < 0.437: no false alarm; /d/fake/a.mp4 (150, 170, 220) -> its 170 is below,
    # /d/fake/b.mp4 (200) caught.
    assert median["fpr_at_card_threshold"] == 0.0
    assert median["tpr_at_card_threshold"] == pytest.approx(1 / 2)
    assert median["balanced_acc_at_card_threshold"] == pytest.approx(0.75)
    assert "fpr_at_card_threshold" not in run.results["clean"]["video_mean"]  # not what a scan does
    summary = run.to_dict()["calibration"]
    assert summary["method"] == "platt" and summary["threshold"] == CARD.threshold
    assert summary["threshold_source"] == "model card" and summary["threshold_levels"] == ["frame", "video_median"]
    assert summary["threshold_level_meaning"]["video_median"].startswith(
        "per file (median of all its faces), without the reliable range")


def test_without_a_card_the_threshold_is_the_scans_default(samples):
    run = evaluate_method(BrightnessDetector(), "brightness", {"sha256": None}, samples, [], ScoreCache(None),
                          bootstrap=0)
    frame = run.results["clean"]["frame"]
    assert frame["card_threshold"] == 0.5
    assert frame["fpr_at_card_threshold"] == pytest.approx(1 / 4)  # 180 of 60, 80, 100, 180 is above 127.5
    assert run.to_dict()["calibration"]["threshold_source"].startswith("default")


def test_a_changed_calibration_never_meets_stale_scores(tmp_path, samples):
    # The same weights (one cache key), first with one card, then with another: the logits are reused, the
    # scores follow the new card.
    cache = ScoreCache(tmp_path / "scores.sqlite")
    detector = BrightnessDetector()
    before = evaluate_method(detector, "brightness", {"sha256": "abc"}, samples, [], cache, bootstrap=0)
    assert detector.faces_scored == len(samples)
    after = evaluate_method(detector, "brightness", {"sha256": "abc"}, samples, [], cache, calibration=CARD,
                            bootstrap=0)
    assert detector.faces_scored == len(samples)  # nothing scored again: the raw logits came from the cache
    assert after.scores["clean"] == pytest.approx(CARD.probability(before.logits["clean"]))
    assert not np.allclose(after.scores["clean"], before.scores["clean"])
    assert after.results["clean"]["frame"]["fpr_at_card_threshold"] == pytest.approx(1 / 4)
    cache.close()


def test_logit_cache_key_covers_what_builds_the_detector():
    key = logit_cache_key("abc", 224, {"backbone": "b0"})
    assert key == logit_cache_key("abc", 224, {"backbone": "b0"})
    assert key != logit_cache_key("abc", 256, {"backbone": "b0"})  # a card may set the input size
    assert key != logit_cache_key("abc", 224, {"backbone": "b4"})
    assert key != logit_cache_key("abd", 224, {"backbone": "b0"})
    assert logit_cache_key(None, 224) is None  # untrained: never cached


def test_real_only_data_is_evaluated(samples):
    reals = [s for s in samples if s.label == 0]
    run = evaluate_method(BrightnessDetector(), "brightness", {"sha256": None}, reals, [("contrast", 0.2)],
                          ScoreCache(None), calibration=CARD, bootstrap=20)
    frame = run.results["clean"]["frame"]
    assert frame["n_real"] == 4 and frame["n_fake"] == 0
    assert frame["auc"] is None and frame["auc_ci95"] is None and frame["eer"] is None
    assert frame["fpr_at_card_threshold"] == pytest.approx(1 / 4) and frame["tpr_at_card_threshold"] is None
    summary = run.to_dict()
    assert summary["conditions"]["contrast@0.2"]["auc_drop"]["frame"] is None
    assert "per_manipulation" not in summary["conditions"]["clean"]


def test_frame_files_of_one_video_are_scored_as_one_video_at_the_video_levels(tmp_path, monkeypatch):
    """Evaluation takes a frame file's video from its labels CSV, so the video levels see clips, not files."""
    from types import SimpleNamespace

    import deepscan.data.face_cache as face_cache

    names = ["real/v1/f0.jpg", "real/v1/f1.jpg", "fake/v1/f0.jpg", "fake/v1/f1.jpg", "real/solo.jpg"]
    for name in names:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).touch()
    csv_path = tmp_path / "labels.csv"
    csv_path.write_text("path,label,video\n" + "".join(f"{name},{name.split('/')[0]},"
                                                        f"{'v1' if '/v1/' in name else ''}\n" for name in names))

    def one_face_each(cache, jobs, on_item=None):
        found = {path: [SimpleNamespace(path=tmp_path / "faces" / f"{index}.png", frame_index=0,
                                        keypoints=np.zeros((6, 2)))] for index, (path, _, _) in enumerate(jobs)}
        return found, SimpleNamespace(failed=0)

    monkeypatch.setattr(face_cache, "extract_all", one_face_each)
    found = runner_samples.collect_samples([csv_path], "test", input_size=32, cache_dir=tmp_path / "cache")
    videos, labels, means = aggregate_videos(found.samples, np.array([0.2, 0.4, 0.7, 0.9, 0.1]), "video_mean")
    assert len(videos) == 3 and sorted(labels.tolist()) == [0, 0, 1]
    assert sorted(means.tolist()) == pytest.approx([0.1, 0.3, 0.8])
    # Each frame still names its own file (scores.csv's media column), so that a number can be traced to it.
    assert sorted(sample.media for sample in found.samples) == sorted(str((tmp_path / name).resolve()) for name in names)

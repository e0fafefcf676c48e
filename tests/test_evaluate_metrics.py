"""Each metric against values worked out by hand on small fixed score sets."""

import numpy as np
import pytest

from deepscan.evaluate import metrics

# Four reals and four fakes; one real (0.6) outranks one fake (0.4).
LABELS = [0, 0, 0, 0, 1, 1, 1, 1]
SCORES = [0.1, 0.2, 0.3, 0.6, 0.4, 0.7, 0.8, 0.9]


def test_auc_counts_correctly_ordered_pairs():
    # 16 real/fake pairs; only (fake 0.4, real 0.6) is misordered.
    assert metrics.auc(LABELS, SCORES) == pytest.approx(15 / 16)


def test_eer_where_false_alarms_equal_misses():
    # Threshold 0.6: one real of four above it (FPR 1/4), one fake of four below it (FNR 1/4).
    assert metrics.equal_error_rate(LABELS, SCORES) == pytest.approx(0.25)


def test_eer_is_interpolated_between_roc_points():
    # Reals 0.1, 0.5; fakes 0.4, 0.6, 0.7. ROC points (FPR, TPR): ... (0, 2/3) at 0.6, (1/2, 2/3) at 0.5,
    # (1/2, 1) at 0.4. The gap FNR - FPR is 1/3 at (0, 2/3) and -1/6 at (1/2, 2/3): it crosses at
    # t = (1/3) / (1/2) = 2/3 of the way, FPR = 1/3 = FNR.
    assert metrics.equal_error_rate([0, 0, 1, 1, 1], [0.1, 0.5, 0.4, 0.6, 0.7]) == pytest.approx(1 / 3)


def test_eer_of_perfect_separation_is_zero():
    assert metrics.equal_error_rate([0, 0, 1, 1], [0.1, 0.2, 0.8, 0.9]) == pytest.approx(0.0)


def test_average_precision_by_hand():
    # Ranked by score: fake, fake, fake, real, fake -> precision at each fake: 1, 1, 1, 4/5.
    assert metrics.average_precision(LABELS, SCORES) == pytest.approx((1 + 1 + 1 + 0.8) / 4)


def test_accuracies_at_a_threshold():
    # At 0.5 the real 0.6 and the fake 0.4 are wrong: 6 of 8 right, 3 of 4 in each class.
    assert metrics.accuracy(LABELS, SCORES, 0.5) == pytest.approx(6 / 8)
    assert metrics.balanced_accuracy(LABELS, SCORES, 0.5) == pytest.approx(0.75)
    # At 0.35 every real but 0.6 is right (3/4) and every fake is caught (4/4); a score equal to it is fake.
    assert metrics.balanced_accuracy(LABELS, SCORES, 0.35) == pytest.approx((3 / 4 + 1) / 2)
    assert metrics.accuracy([0, 1], [0.5, 0.5], 0.5) == pytest.approx(0.5)


def test_tpr_at_low_fpr_takes_only_reachable_points():
    # No false alarm is allowed at 1 % of 4 reals: above 0.6 only 3 of 4 fakes are caught.
    assert metrics.tpr_at_fpr(LABELS, SCORES, 0.01) == pytest.approx(0.75)
    assert metrics.tpr_at_fpr(LABELS, SCORES, 0.25) == pytest.approx(1.0)


def test_threshold_chosen_on_validation_maximises_balanced_accuracy():
    # Separable validation scores: the best threshold lies halfway between 0.3 and 0.6.
    assert metrics.choose_threshold([0, 0, 1, 1], [0.2, 0.3, 0.6, 0.7]) == pytest.approx(0.45)
    with pytest.raises(ValueError):
        metrics.choose_threshold([0, 0], [0.2, 0.3])


def test_single_class_metrics_are_none():
    assert metrics.auc([1, 1], [0.2, 0.9]) is None
    assert metrics.equal_error_rate([0, 0], [0.2, 0.9]) is None
    assert metrics.bootstrap_auc_ci([0, 0], [0.2, 0.9]) is None


def test_bootstrap_interval_is_seeded_and_brackets_the_auc():
    rng = np.random.default_rng(3)
    labels = np.repeat([0, 1], 40)
    scores = np.concatenate([rng.normal(0.4, 0.15, 40), rng.normal(0.6, 0.15, 40)])
    low, high = metrics.bootstrap_auc_ci(labels, scores, resamples=300, seed=1)
    assert low < metrics.auc(labels, scores) < high
    assert (low, high) == metrics.bootstrap_auc_ci(labels, scores, resamples=300, seed=1)
    assert (low, high) != metrics.bootstrap_auc_ci(labels, scores, resamples=300, seed=2)
    assert metrics.bootstrap_auc_ci([0, 0, 1, 1], [0.1, 0.2, 0.8, 0.9], resamples=50) == (1.0, 1.0)


def test_bootstrap_by_video_is_wider_than_by_frame_when_frames_repeat():
    # Ten videos of 20 identical frames each: frames are not independent evidence, so resampling videos
    # must give a wider interval than pretending there are 200 independent samples.
    rng = np.random.default_rng(0)
    video_labels = np.repeat([0, 1], 5)
    video_scores = np.concatenate([rng.normal(0.45, 0.1, 5), rng.normal(0.55, 0.1, 5)])
    labels, scores = np.repeat(video_labels, 20), np.repeat(video_scores, 20)
    groups = np.repeat([f"v{i}" for i in range(10)], 20)
    by_frame = metrics.bootstrap_auc_ci(labels, scores, resamples=300, seed=0)
    by_video = metrics.bootstrap_auc_ci(labels, scores, groups, resamples=300, seed=0)
    assert by_video[1] - by_video[0] > 1.5 * (by_frame[1] - by_frame[0])


def test_paired_difference_sees_what_overlapping_intervals_hide():
    # Two detectors that share most of their errors (hard faces are hard for both) and differ a little: each one's
    # own interval overlaps the other's, yet resampling them together shows the better one is better.
    rng = np.random.default_rng(0)
    labels = np.repeat([0, 1], 300)
    shared = rng.normal(0.0, 1.0, 600) + 0.8 * labels
    better, worse = shared + 0.3 * labels + rng.normal(0, 0.2, 600), shared + rng.normal(0, 0.2, 600)
    value, low, high = metrics.paired_auc_difference(labels, better, worse, resamples=300)
    assert value == pytest.approx(metrics.auc(labels, better) - metrics.auc(labels, worse))
    assert 0 < low < value < high
    own_better = metrics.bootstrap_auc_ci(labels, better, resamples=300)
    own_worse = metrics.bootstrap_auc_ci(labels, worse, resamples=300)
    assert own_better[0] < own_worse[1]  # the separate intervals overlap
    assert metrics.paired_auc_difference(labels, worse, better, resamples=300)[2] < 0  # and it is signed
    assert metrics.paired_auc_difference(labels, better, better, resamples=50) == (0.0, 0.0, 0.0)
    assert metrics.paired_auc_difference([1, 1], [0.2, 0.9], [0.1, 0.3]) is None
    # One group of each class: a resample that draws one group twice holds one class only (seed 0's single draw
    # does), and with no usable resample there is no interval.
    assert metrics.paired_auc_difference([0, 1], [0.2, 0.9], [0.1, 0.3], ["r", "f"], resamples=1, seed=0) is None
    assert metrics.paired_auc_difference([0, 1], [0.2, 0.9], [0.1, 0.3], ["r", "f"], resamples=1, seed=2) == (
        0.0, 0.0, 0.0)
    with pytest.raises(ValueError, match="differ in length"):
        metrics.paired_auc_difference(labels, better, worse[:-1])


def test_paired_difference_resamples_whole_groups():
    rng = np.random.default_rng(1)
    video_labels = np.repeat([0, 1], 6)
    a, b = rng.normal(0, 1, 12) + video_labels, rng.normal(0, 1, 12) + video_labels
    labels, a, b = np.repeat(video_labels, 15), np.repeat(a, 15), np.repeat(b, 15)
    groups = np.repeat([f"v{i}" for i in range(12)], 15)
    _, low_frames, high_frames = metrics.paired_auc_difference(labels, a, b, resamples=300)
    _, low_videos, high_videos = metrics.paired_auc_difference(labels, a, b, groups, resamples=300)
    assert high_videos - low_videos > 1.5 * (high_frames - low_frames)


def test_summary_reports_val_accuracy_only_with_a_val_threshold():
    plain = metrics.summarize(LABELS, SCORES, bootstrap=0)
    assert "acc@val" not in plain and plain["auc_ci95"] is None
    assert plain["n"] == 8 and plain["n_real"] == 4 and plain["n_fake"] == 4
    assert plain["tpr@fpr=0.01"] == pytest.approx(0.75)
    with_val = metrics.summarize(LABELS, SCORES, val_threshold=0.35, bootstrap=0)
    assert with_val["acc@val"] == pytest.approx(7 / 8)


def test_bad_labels_are_refused():
    with pytest.raises(ValueError):
        metrics.auc([0, 2], [0.1, 0.2])
    with pytest.raises(ValueError):
        metrics.auc([0, 1, 1], [0.1, 0.2])


def test_rates_at_a_threshold_by_hand():
    # At 0.6 (a score equal to it is fake): the real 0.6 is a false alarm (1 of 4), fakes 0.7, 0.8, 0.9 caught (3 of 4).
    assert metrics.false_positive_rate(LABELS, SCORES, 0.6) == pytest.approx(1 / 4)
    assert metrics.true_positive_rate(LABELS, SCORES, 0.6) == pytest.approx(3 / 4)
    # Just above it: no false alarm, the same fakes caught.
    assert metrics.false_positive_rate(LABELS, SCORES, 0.65) == 0.0
    assert metrics.true_positive_rate(LABELS, SCORES, 0.35) == 1.0
    # Each rate needs only its own class.
    assert metrics.false_positive_rate([0, 0, 0], [0.1, 0.5, 0.9], 0.5) == pytest.approx(2 / 3)
    assert metrics.true_positive_rate([0, 0, 0], [0.1, 0.5, 0.9], 0.5) is None
    assert metrics.false_positive_rate([1, 1], [0.1, 0.9], 0.5) is None


def test_summary_at_the_card_threshold():
    summary = metrics.summarize(LABELS, SCORES, card_threshold=0.65, bootstrap=0)
    assert summary["card_threshold"] == 0.65
    assert summary["fpr_at_card_threshold"] == 0.0
    assert summary["tpr_at_card_threshold"] == pytest.approx(3 / 4)
    assert summary["balanced_acc_at_card_threshold"] == pytest.approx((1 + 3 / 4) / 2)
    assert "fpr_at_card_threshold" not in metrics.summarize(LABELS, SCORES, bootstrap=0)


def test_summary_of_real_only_data_gives_the_false_alarm_rate():
    # Authentic footage only: how often is a real face called fake? Everything needing fakes is None.
    summary = metrics.summarize([0, 0, 0, 0], [0.1, 0.2, 0.75, 0.9], card_threshold=0.7, bootstrap=50)
    assert summary["fpr_at_card_threshold"] == pytest.approx(2 / 4)
    assert summary["acc@0.5"] == pytest.approx(2 / 4)
    for key in ("auc", "auc_ci95", "ap", "eer", "balanced_acc@0.5", "tpr@fpr=0.01", "tpr_at_card_threshold",
                "balanced_acc_at_card_threshold"):
        assert summary[key] is None, key
    fakes = metrics.summarize([1, 1], [0.4, 0.8], card_threshold=0.7, bootstrap=50)
    assert fakes["tpr_at_card_threshold"] == pytest.approx(1 / 2) and fakes["fpr_at_card_threshold"] is None

"""Platt calibration: fitted on validation logits, its threshold by a stated rule, and the card's own check."""

import numpy as np
import pytest

from deepscan.calibration import CHECK_POINTS, Calibration, CalibrationError, fit_calibration, sigmoid
from deepscan.model_card import CalibrationSection


def _validation(n=4000, scale=2.0, bias=-1.0, seed=0):
    """Logits whose true P(fake) is sigmoid(scale * logit + bias): what a well-specified Platt fit recovers."""
    rng = np.random.default_rng(seed)
    logits = rng.normal(0.5, 2.0, n)
    labels = (rng.random(n) < sigmoid(scale * logits + bias)).astype(int)
    return logits, labels


def test_fit_recovers_the_logistic_mapping_and_fills_the_card_section():
    logits, labels = _validation()
    section = fit_calibration(logits, labels, fitted_on="synthetic val")
    assert section["method"] == "platt" and section["fitted_on"] == "synthetic val"
    # Classes weighted equally: the bias is the true one with the sample's own odds of a fake taken out.
    share = labels.mean()
    assert section["scale"] == pytest.approx(2.0, abs=0.2)
    assert section["bias"] == pytest.approx(-1.0 - np.log(share / (1 - share)), abs=0.2)
    assert section["val_faces"] == len(logits) and 0.0 <= section["threshold"] <= 1.0
    assert "false-positive rate" in section["threshold_rule"]
    # The card section reads back and passes its own check.
    calibration = Calibration.from_card(CalibrationSection.model_validate(section))
    assert calibration.calibrated and calibration.threshold == section["threshold"]


def test_the_share_of_fakes_in_validation_does_not_move_the_calibration():
    logits, labels = _validation()
    once = fit_calibration(logits, labels)
    fakes = labels == 1
    # The same faces with every fake counted three times: a split with far more fakes than reals.
    tripled = fit_calibration(np.concatenate([logits, logits[fakes], logits[fakes]]), np.concatenate([labels, labels[fakes], labels[fakes]]))
    assert tripled["bias"] == pytest.approx(once["bias"], abs=0.02) and tripled["scale"] == pytest.approx(once["scale"], abs=0.02)


def test_check_holds_twenty_evenly_spaced_stored_logits_and_their_probabilities():
    logits, labels = _validation()
    check = fit_calibration(logits, labels)["check"]
    assert len(check["logits"]) == len(check["probabilities"]) == CHECK_POINTS
    assert check["logits"] == sorted(check["logits"])
    assert check["logits"][0] == logits.min() and check["logits"][-1] == logits.max()
    assert set(check["logits"]) <= set(logits.tolist())  # stored validation logits, not invented ones


@pytest.mark.parametrize("target", [0.01, 0.05, 0.2])
def test_threshold_catches_the_most_fakes_within_the_fpr_budget_and_is_the_highest_that_does(target):
    logits, labels = _validation(n=3000, seed=1)
    section = fit_calibration(logits, labels, target_fpr=target)
    probabilities = Calibration(section["scale"], section["bias"], method="platt").probability(logits)
    reals, fakes = probabilities[labels == 0], probabilities[labels == 1]
    threshold = section["threshold"]
    assert (reals >= threshold).mean() <= target
    assert section["val_fpr"] == pytest.approx((reals >= threshold).mean())
    caught = (fakes >= threshold).mean()
    assert section["val_tpr"] == pytest.approx(caught)
    for candidate in np.unique(probabilities):
        if (reals >= candidate).mean() <= target:  # every threshold within the budget catches at most as many
            assert (fakes >= candidate).mean() <= caught
    higher = probabilities[probabilities > threshold]
    if higher.size:  # the next higher validation score would catch fewer fakes
        assert (fakes >= higher.min()).mean() < caught


def test_on_separable_data_the_threshold_does_not_sink_towards_zero():
    logits = np.concatenate([np.linspace(-8, -2, 200), np.linspace(2, 8, 200)])
    labels = np.array([0] * 200 + [1] * 200)
    section = fit_calibration(logits, labels, target_fpr=0.05)
    probabilities = Calibration(section["scale"], section["bias"], method="platt").probability(logits)
    assert section["val_tpr"] == 1.0 and section["val_fpr"] == 0.0
    assert section["threshold"] == pytest.approx(probabilities[labels == 1].min())


def test_threshold_above_every_score_when_even_the_top_score_is_real():
    logits = np.array([5.0, -3.0, -2.0, -1.0, 1.0, 2.0, 3.0, 4.0])
    labels = np.array([0, 0, 0, 0, 1, 1, 1, 1])  # the top score is a real face: 1 real in 4, far above the target
    section = fit_calibration(logits, labels, target_fpr=0.05)
    probabilities = Calibration(section["scale"], section["bias"], method="platt").probability(logits)
    assert section["threshold"] > probabilities.max() and section["val_fpr"] == 0.0


def test_identity_without_a_card_section():
    calibration = Calibration.from_card(None)
    assert not calibration.calibrated and calibration.threshold == 0.5
    np.testing.assert_allclose(calibration.probability([-2.0, 0.0, 3.0]), sigmoid(np.array([-2.0, 0.0, 3.0])))


def test_sigmoid_is_stable_at_extremes():
    values = sigmoid(np.array([-1000.0, 0.0, 1000.0]))
    assert values.tolist() == [0.0, 0.5, 1.0]


def test_a_card_whose_check_fails_is_refused():
    logits, labels = _validation()
    section = fit_calibration(logits, labels)
    section["bias"] += 0.5  # edited by hand after the fit
    with pytest.raises(CalibrationError, match="calibration check fails"):
        Calibration.from_card(CalibrationSection.model_validate(section))


@pytest.mark.parametrize("logits, labels, message", [
    ([0.1, 0.2, 0.3], [0, 0, 0], "real and fake"),
    ([0.1, 0.2], [0, 1, 1], "2 logits but 3 labels"),
    ([0.1, float("nan")], [0, 1], "finite"),
    ([0.1, 0.2], [0, 2], "0 \\(real\\) or 1"),
    ([3.0, 2.0, 1.0, -1.0, -2.0, -3.0], [0, 0, 0, 1, 1, 1], "not positive"),
])
def test_unusable_validation_data_is_one_clear_error(logits, labels, message):
    with pytest.raises(CalibrationError, match=message):
        fit_calibration(logits, labels)


def test_a_saturated_top_real_still_gives_a_threshold_the_card_accepts():
    rng = np.random.default_rng(3)
    logits = np.concatenate([rng.normal(-2, 1, 500), rng.normal(2, 1, 500), [60.0]])
    labels = np.array([0] * 500 + [1] * 500 + [0])
    section = fit_calibration(logits, labels, target_fpr=0.0)
    assert section["threshold"] <= 1.0 and section["val_fpr"] == 0.0
    CalibrationSection.model_validate(section)


def test_with_sources_the_false_alarm_budget_holds_for_the_real_faces_of_each_source():
    """Many easy real faces of one source must not hide another source whose faces are called fake twice as
    often: the budget holds per source, and the section says each source's rate."""
    rng = np.random.default_rng(3)
    easy, hard, fakes = rng.normal(-2.0, 1.0, 900), rng.normal(0.0, 1.0, 100), rng.normal(2.0, 1.0, 1000)
    logits = np.concatenate([easy, hard, fakes])
    labels = np.repeat([0, 0, 1], [900, 100, 1000])
    sources = np.repeat(["studio", "phones", "studio"], [900, 100, 1000])
    pooled = fit_calibration(logits, labels, target_fpr=0.05)
    probabilities = Calibration(pooled["scale"], pooled["bias"], method="platt").probability(logits)
    hard_fpr = (probabilities[900:1000] >= pooled["threshold"]).mean()
    assert pooled["val_fpr"] <= 0.05 < hard_fpr  # else this test could not tell the two rules apart
    assert "val_fpr_by_source" not in pooled

    each = fit_calibration(logits, labels, target_fpr=0.05, sources=sources)
    assert (each["scale"], each["bias"]) == (pooled["scale"], pooled["bias"])  # the same mapping: only the threshold
    assert each["threshold"] > pooled["threshold"]
    by_source = {name: float((probabilities[(labels == 0) & (sources == name)] >= each["threshold"]).mean())
                 for name in ("studio", "phones")}
    assert each["val_fpr_by_source"] == pytest.approx(by_source) and max(by_source.values()) <= 0.05
    # The highest threshold that catches as many fakes as any threshold within the per-source budget.
    allowed = [t for t in np.unique(probabilities)
               if all((probabilities[(labels == 0) & (sources == name)] >= t).mean() <= 0.05 for name in by_source)]
    best = max((probabilities[labels == 1] >= t).mean() for t in allowed)
    assert each["threshold"] == max(t for t in allowed if (probabilities[labels == 1] >= t).mean() == best)
    assert "each of the 2 validation sources (1000 in all)" in each["threshold_rule"]


def test_the_budget_holds_on_degraded_copies_of_the_real_faces_as_on_a_source():
    """Real faces that light re-encoding pushes towards 'fake' (as H.264 does to some detectors) must not be called
    fake more often than the budget allows: the threshold rises until their rate is within it too, and the fit
    itself does not move."""
    rng = np.random.default_rng(5)
    reals, fakes, reencoded = rng.normal(-2.0, 1.0, 500), rng.normal(2.0, 1.0, 500), rng.normal(0.0, 1.0, 500)
    logits, labels = np.concatenate([reals, fakes]), np.repeat([0, 1], 500)
    sources = np.repeat(["studio"], 1000)
    clean_only = fit_calibration(logits, labels, target_fpr=0.05, sources=sources)
    with_h264 = fit_calibration(logits, labels, target_fpr=0.05, sources=sources, degraded_reals={"h264@18": reencoded})
    calibration = Calibration(clean_only["scale"], clean_only["bias"], method="platt")
    p_reencoded = calibration.probability(reencoded)
    assert (p_reencoded >= clean_only["threshold"]).mean() > 0.05  # else the test could not tell the rules apart
    assert (with_h264["scale"], with_h264["bias"]) == (clean_only["scale"], clean_only["bias"])
    assert with_h264["threshold"] > clean_only["threshold"]
    rates = with_h264["val_fpr_by_source"]
    assert rates["h264@18"] == pytest.approx((p_reencoded >= with_h264["threshold"]).mean()) and rates["h264@18"] <= 0.05
    # The clean figures stay clean: the false-positive rate is over the undegraded real faces.
    p = calibration.probability(logits)
    assert with_h264["val_fpr"] == pytest.approx((p[:500] >= with_h264["threshold"]).mean()) == rates["studio"]
    assert with_h264["val_tpr"] == pytest.approx((p[500:] >= with_h264["threshold"]).mean())
    # The highest threshold that catches as many fakes as any threshold within every budget.
    allowed = [t for t in np.unique(np.concatenate([p, p_reencoded]))
               if (p[:500] >= t).mean() <= 0.05 and (p_reencoded >= t).mean() <= 0.05]
    best = max((p[500:] >= t).mean() for t in allowed)
    assert with_h264["threshold"] == pytest.approx(max(t for t in allowed if (p[500:] >= t).mean() == best))
    assert "h264@18" in with_h264["threshold_rule"]
    CalibrationSection.model_validate(with_h264)

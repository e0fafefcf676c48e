"""What ``deepscan models`` lists, read without the command line: every detector, then the ensemble of those whose
weights are at hand."""

import pytest

from deepscan.catalog import catalog
from deepscan.detectors import list_detectors


def test_every_detector_is_listed_then_the_ensemble_of_those_with_weights(shipped, calibration_card):
    shipped.add("tiny_a", 2.0, calibration=calibration_card)
    shipped.add("tiny_b", -2.5)
    rows = catalog()
    assert [row["name"] for row in rows] == [*list_detectors(), "ensemble"]
    by_name = {row["name"]: row for row in rows}
    assert (by_name["tiny_a"]["weights"], by_name["tiny_a"]["weights_available"]) == ("shipped", True)
    assert (by_name["tiny_a"]["input_size"], by_name["tiny_b"]["input_size"]) == (32, 48)
    ensemble = rows[-1]
    assert ensemble["members"] == ["tiny_a", "tiny_b"] and ensemble["weights"] == "members: tiny_a, tiny_b"
    assert ensemble["parameters"] == by_name["tiny_a"]["parameters"] + by_name["tiny_b"]["parameters"]
    assert ensemble["input_size"] is None


def test_without_weights_the_ensemble_has_no_member(untrained):
    ensemble = catalog()[-1]
    assert ensemble["members"] == [] and not ensemble["weights_available"]
    assert ensemble["weights"] == "no member: no detector has trained weights" and ensemble["parameters"] == 0


def test_a_build_of_another_backbone_states_its_own_counted_cost():
    from deepscan.catalog import counted_gflops
    from deepscan.detectors import get_config

    config = get_config("pel")
    # The paper's build, counted, is what the config states; a Lite0 build at 160 px costs several times less, so
    # scaling the config's figure by the pixels alone would overstate it.
    assert counted_gflops("pel", {}, config.input_size) == pytest.approx(config.gflops, rel=0.05)
    lite = counted_gflops("pel", {"backbone": "efficientnet_lite0"}, 160)
    assert 0 < lite < 0.5 * config.gflops * (160 / config.input_size) ** 2

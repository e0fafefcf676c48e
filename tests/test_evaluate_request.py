"""An evaluation's request, checked without the command line: every mistake is one line before any face is sought."""

import pytest

from deepscan.evaluate.request import EvaluateRequest, check_data_exists, perturb_conditions, resolve_methods
from deepscan.evaluate.samples import EvaluationError


def test_an_unknown_compression_folder_is_refused_as_the_request_is_made(tmp_path):
    with pytest.raises(EvaluationError, match=r"unknown --compression 'c99' \(raw, c23 or c40\)"):
        EvaluateRequest(data=[tmp_path], methods=["faclue"], compression="c99")


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"methods": ["faclue", "faclue"]}, "each --method may be given once"),
        ({"weights": ["a.safetensors", "b.safetensors"]}, "one --weights per --method"),
        ({"without": ["faclue"]}, "needs --method ensemble"),
        ({"methods": ["ensemble"], "weights": ["x.safetensors"]}, "each member's own"),
        ({"weights": ["missing.safetensors"]}, "not found"),
    ],
)
def test_mistakes_in_the_methods_are_one_line(tmp_path, changes, message):
    request = EvaluateRequest(data=[tmp_path], **{"methods": ["faclue"], **changes})
    with pytest.raises(Exception, match=message) as raised:
        resolve_methods(request)
    assert "\n" not in str(raised.value)


def test_each_method_gets_its_weights_and_the_ensemble_its_plan(tmp_path, shipped, calibration_card):
    shipped.add("tiny_a", 2.0, calibration=calibration_card)
    shipped.add("tiny_b", -2.5)
    other = shipped.weights("tiny_a", 1.0, folder=tmp_path)
    request = EvaluateRequest(data=[tmp_path], methods=["tiny_a", "tiny_b", "ensemble"],
                              weights=[str(other), "shipped", "shipped"], without=["tiny_b"])
    (a, _, a_weights), (b, _, b_weights), (ensemble, config, plan) = resolve_methods(request)
    assert (a, a_weights.source, a_weights.path) == ("tiny_a", "file", other)
    assert (b, b_weights.source) == ("tiny_b", "shipped")
    assert (ensemble, config) == ("ensemble", None)
    assert [name for name, _ in plan.members] == ["tiny_a"]


def test_conditions_are_taken_once_each_in_the_order_given():
    assert perturb_conditions(["jpeg:50,75", "jpeg:50", "gaussian_blur:1"]) == [
        ("jpeg", 50.0), ("jpeg", 75.0), ("gaussian_blur", 1.0)]


def test_missing_data_is_named(tmp_path):
    request = EvaluateRequest(data=[tmp_path], methods=["faclue"], val=[tmp_path / "nowhere"])
    with pytest.raises(EvaluationError, match="nowhere: no such file or folder"):
        check_data_exists(request)

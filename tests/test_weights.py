import hashlib

import pytest
import torch

from deepscan.registry import create_detector
from deepscan.weights import WeightsError, load_weights, resolve_weights, save_weights, shipped_checksums


@pytest.fixture(scope="module")
def detector():
    torch.manual_seed(0)
    return create_detector("faclue", use_local=False)


def test_no_spec_and_nothing_shipped_means_untrained():
    resolved = resolve_weights("does-not-ship.safetensors")
    assert not resolved.trained and resolved.source == "none"


def test_round_trip_through_safetensors(tmp_path, detector):
    path = tmp_path / "w.safetensors"
    digest = save_weights(detector, path)
    assert digest == hashlib.sha256(path.read_bytes()).hexdigest()
    other = create_detector("faclue", use_local=False)
    resolved = resolve_weights(None, path)
    assert resolved.trained and resolved.sha256 == digest
    load_weights(other, resolved)
    for (name, a), (_, b) in zip(detector.state_dict().items(), other.state_dict().items()):
        assert torch.equal(a, b), name


def test_weights_for_another_architecture_are_refused(tmp_path, detector):
    path = tmp_path / "w.safetensors"
    save_weights(detector, path)  # saved without the local FA branch
    with pytest.raises(WeightsError, match="does not fit"):
        load_weights(create_detector("faclue"), resolve_weights(None, path))


@pytest.mark.parametrize("name, content, message", [
    ("w.pt", b"\x80\x04pickle", "only .safetensors"),
    ("w.safetensors", b"garbage", "not a readable safetensors"),
])
def test_unsafe_or_broken_files_are_refused(tmp_path, detector, name, content, message):
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(WeightsError, match=message):
        load_weights(detector, resolve_weights(None, path))


def test_missing_file_is_a_clear_error(tmp_path):
    with pytest.raises(WeightsError, match="not found"):
        resolve_weights(None, tmp_path / "nope.safetensors")


def test_hub_spec_reads_the_local_cache_offline(tmp_path, monkeypatch, detector):
    # Build a Hugging Face cache by hand, as a previous online download would have left it.
    cache = tmp_path / "hub"
    snapshot = cache / "models--lab--detector" / "snapshots" / "0123abc"
    snapshot.mkdir(parents=True)
    save_weights(detector, snapshot / "faclue.safetensors")
    (cache / "models--lab--detector" / "refs").mkdir()
    (cache / "models--lab--detector" / "refs" / "main").write_text("0123abc")
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    import huggingface_hub.constants as constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    resolved = resolve_weights(None, "hf://lab/detector/faclue.safetensors")
    assert resolved.source == "hub" and resolved.path.name == "faclue.safetensors"
    with pytest.raises(WeightsError, match="offline"):
        resolve_weights(None, "hf://lab/missing/faclue.safetensors")


def test_shipped_checksums_parse_sha256sum_format(tmp_path):
    (tmp_path / "SHA256SUMS").write_text("ab12  a.safetensors\ncd34 *b.safetensors\n")
    assert shipped_checksums(tmp_path) == {"a.safetensors": "ab12", "b.safetensors": "cd34"}


def test_training_only_modules_stay_out_of_shipped_weights_and_the_count(tmp_path):
    from deepscan.detectors.base import Detector, DetectorConfig

    class WithCritic(Detector):
        training_only = ("critic",)

        def __init__(self):
            super().__init__()
            self.body = torch.nn.Linear(4, 1)
            self.critic = torch.nn.Linear(4, 1)

    detector = WithCritic()
    detector.config = DetectorConfig(name="with-critic", paper="-", input_size=4)
    assert detector.count_parameters() == 5
    path = tmp_path / "w.safetensors"
    save_weights(detector, path)
    from safetensors.torch import load_file

    assert set(load_file(str(path))) == {"body.weight", "body.bias"}
    fresh = WithCritic()
    fresh.config = detector.config
    load_weights(fresh, resolve_weights(None, path))  # the critic may be missing: inference never uses it
    assert torch.equal(fresh.body.weight, detector.body.weight)


def test_build_detector_follows_the_architecture_recorded_in_the_weights(tmp_path, detector):
    import json

    from deepscan.weights import build_detector

    path = tmp_path / "w.safetensors"
    save_weights(detector, path, {"detector_kwargs": json.dumps({"use_local": False}), "input_size": "128"})
    built, resolved = build_detector("faclue", path)
    assert built.fae.out_channels == 3 and built.config.input_size == 128 and resolved.source == "file"
    assert torch.equal(built.head.weight, detector.head.weight)
    with pytest.raises(WeightsError, match="weights of detector 'faclue', not 'pel'"):
        build_detector("pel", path)

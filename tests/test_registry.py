import pytest
import torch

from deepscan.detectors import UnknownDetectorError, create_detector, get_config, list_detectors
from deepscan.detectors.base import Detector


def test_every_registered_detector_has_a_complete_config():
    names = list_detectors()
    assert "faclue" in names
    for name in names:
        config = get_config(name)
        assert config.name == name
        assert config.paper and config.input_size > 0
        assert config.cam_target_layers, f"{name} declares no Grad-CAM target layer"


def test_unknown_detector_lists_the_known_ones():
    with pytest.raises(UnknownDetectorError, match="faclue"):
        get_config("no-such-method")


def test_created_detector_carries_its_config_and_accepts_kwargs():
    detector = create_detector("faclue", use_local=False)
    assert isinstance(detector, Detector)
    assert detector.config is get_config("faclue")
    assert detector.fae.out_channels == 3


def test_cam_target_layers_resolve_to_modules():
    detector = create_detector("faclue")
    layers = detector.cam_target_layers()
    assert len(layers) == 2 and all(isinstance(layer, torch.nn.Module) for layer in layers)


@pytest.mark.parametrize("name, size", [("faclue", 224), ("sficonv", 256), ("pel", 224), ("mclcr", 256),
                                        ("ralf", 128)])  # RALF at half size: a quarter of the pixels, all conv
def test_the_stated_cost_per_face_is_what_a_forward_counts(name, size):
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from deepscan.detectors import create_detector, get_config

    config = get_config(name)
    kwargs = {"image_size": size} if name in ("mclcr", "ralf") else {}
    detector = create_detector(name, **kwargs).eval()
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        detector(torch.rand(1, 3, size, size))
    expected = config.gflops * (size / config.input_size) ** 2
    assert counter.get_total_flops() / 1e9 == pytest.approx(expected, rel=0.05)

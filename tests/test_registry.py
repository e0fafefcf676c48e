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

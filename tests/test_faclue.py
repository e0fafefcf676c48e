from pathlib import Path

import pytest
import torch

from deepscan.detectors import create_detector
from deepscan.detectors.faclue import (
    FrequencyAttention,
    FrequencyAttentionExtractor,
    RGBFrequencyComplementaryEnhancement,
)
from deepscan.train.recipe import load_recipe

RECIPE_YAML = Path(__file__).resolve().parents[1] / "recipes" / "faclue.yaml"


@pytest.fixture(scope="module")
def detector():
    torch.manual_seed(0)
    return create_detector("faclue")


def test_output_is_one_logit_per_face(detector):
    logits = detector(torch.rand(2, 3, 224, 224))
    assert logits.shape == (2,) and torch.isfinite(logits).all()


def test_parameter_count_is_two_b0_trunks_plus_modules(detector):
    # Two EfficientNet-B0 trunks without their 1280-channel head (3.58 M each; the frequency stem takes
    # 6 channels) plus FAE, RFCE, FGA and the FC layer.
    count = detector.count_parameters()
    assert 7.2e6 < count < 7.4e6, count


def test_gradients_reach_both_streams_and_every_module(detector):
    detector.zero_grad()
    detector.train()
    out = detector.loss(torch.rand(2, 3, 224, 224), torch.tensor([0, 1]))
    out.loss.backward()
    for name in ["fae.global_attention.conv", "fae.local_attention.conv", "rgb_stem.0", "freq_stem.0",
                 "rfce.2.spatial_rgb.0", "rfce.7.spatial_freq.0", "fga.guide.0", "fga.channel", "head"]:
        grad = detector.get_submodule(name).weight.grad
        assert grad is not None and grad.abs().sum() > 0, name
    assert set(out.terms) == {"bce"}


def test_fae_gives_six_channels_at_input_resolution():
    fae = FrequencyAttentionExtractor(patch_size=16)
    assert fae(torch.rand(1, 3, 64, 64)).shape == (1, 6, 64, 64)


def test_fae_with_open_attention_returns_the_ycbcr_image_twice():
    # With every FA weight at 1 the DCT/IDCT pairs must give back the YCbCr image exactly.
    from deepscan.frequency import rgb_to_ycbcr

    fae = FrequencyAttentionExtractor(patch_size=16)
    for attention in (fae.global_attention, fae.local_attention):
        attention.weights = lambda coefficients: torch.ones_like(coefficients[:, :1])
    x = torch.rand(1, 3, 32, 32, dtype=torch.float64)
    out = fae(x)
    torch.testing.assert_close(out[:, :3], rgb_to_ycbcr(x))
    torch.testing.assert_close(out[:, 3:], rgb_to_ycbcr(x))


def test_fa_weights_are_in_unit_interval_and_shaped_like_the_coefficients():
    attention = FrequencyAttention(kernel_size=7)
    coefficients = torch.randn(4, 3, 16, 16)
    weights = attention.weights(coefficients)
    assert weights.shape == (4, 1, 16, 16)
    assert (weights >= 0).all() and (weights <= 1).all()


@pytest.mark.parametrize("switch", [{"use_global": False}, {"use_local": False}, {"use_rfce": False}, {"use_fga": False}])
def test_ablation_switches_build_and_run(switch):
    detector = create_detector("faclue", **switch).eval()
    with torch.no_grad():
        assert detector(torch.rand(1, 3, 64, 64)).shape == (1,)


def test_frequency_views_cover_both_perspectives(detector):
    detector.eval()
    views = detector.frequency_views(torch.rand(1, 3, 224, 224))
    assert {"dct", "fa_global", "fa_local"} <= set(views)
    assert all(view.image.shape == (224, 224) for view in views.values())
    assert views["fa_local"].image.std() > 0


def test_rfce_channel_scale_softens_the_domain_competition_and_learns():
    torch.manual_seed(0)
    rgb, freq = torch.randn(2, 8, 5, 5) * 10 + 3, torch.randn(2, 8, 5, 5) * 10

    def channel_weights(module):
        pooled = torch.stack([rgb.mean((2, 3), keepdim=True), freq.mean((2, 3), keepdim=True)])
        scale = 1.0 if module.channel_scale is None else module.channel_scale
        return torch.softmax(pooled * scale, dim=0)

    paper = RGBFrequencyComplementaryEnhancement(8)
    softened = RGBFrequencyComplementaryEnhancement(8, channel_scale=0.1)
    assert paper.channel_scale is None and "channel_scale" not in dict(paper.named_parameters())
    spread = lambda weights: (weights[0] - 0.5).abs().max()  # noqa: E731
    assert spread(channel_weights(softened)) < spread(channel_weights(paper))
    # At scale 1 the softened module computes the paper's eq. 4 exactly.
    softened.load_state_dict(paper.state_dict(), strict=False)
    softened.channel_scale.data.fill_(1.0)
    for ours, theirs in zip(softened(rgb, freq), paper(rgb, freq)):
        torch.testing.assert_close(ours, theirs)
    sum(out.sum() for out in softened(rgb, freq)).backward()
    assert softened.channel_scale.grad is not None and softened.channel_scale.grad != 0


def test_paper_recipe():
    recipe = load_recipe(RECIPE_YAML)  # sec. 4.1
    assert recipe.detector.kwargs == {"backbone": "efficientnet_b0", "pretrained": True}
    optim = recipe.optim
    assert (optim.name, optim.lr, optim.weight_decay, optim.momentum) == ("sgd", 1e-2, 1e-4, 0.9)
    assert recipe.schedule.name == "cosine" and (recipe.input_size, recipe.batch_size) == (224, 32)
    assert (recipe.augment.hflip, recipe.augment.vflip, recipe.data.face.margin) == (0.5, 0.5, 1.3)

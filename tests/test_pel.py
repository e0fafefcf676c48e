"""Tests for the PEL detector (Gu et al., AAAI 2022).

The full EfficientNet-B4 model is built once (output shape, parameter count); training-mode gradients and the
ablation matrix run on EfficientNet-B0, which has the same seven-stage layout, to keep the file fast on a
shared CPU.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import scipy.fft
import scipy.ndimage
import torch

from deepscan.detectors import create_detector, list_detectors
from deepscan.detectors.pel import (
    PEL,
    ChannelAttention,
    FineGrainedFrequencyInput,
    MutualEnhancement,
    NoiseEnhancement,
    fine_grained_decomposition,
    mean_filter2d,
    median_filter2d,
    parse_denoiser,
)
from deepscan.train.recipe import load_recipe

RECIPE_YAML = Path(__file__).resolve().parents[1] / "recipes" / "pel.yaml"

SMALL = "efficientnet_b0"


@pytest.fixture(scope="module")
def full_model() -> PEL:
    torch.manual_seed(0)
    return create_detector("pel")


@pytest.fixture(scope="module")
def small_model() -> PEL:
    """The default PEL on the small backbone; tests that change weights build their own."""
    torch.manual_seed(0)
    return PEL(backbone="efficientnet_b0")


def _small(**kwargs) -> PEL:
    torch.manual_seed(0)
    return PEL(backbone=SMALL, **kwargs)


def _reference_ycbcr(rgb: np.ndarray) -> np.ndarray:
    """BT.601 full-range YCbCr of a (3, H, W) image in [0, 1], written out independently of deepscan."""
    r, g, b = rgb
    return np.stack(
        [
            0.299 * r + 0.587 * g + 0.114 * b,
            -0.168736 * r - 0.331264 * g + 0.5 * b + 0.5,
            0.5 * r - 0.418688 * g - 0.081312 * b + 0.5,
        ]
    )


def test_decomposition_equals_patch_by_patch_scipy_dct():
    rng = np.random.default_rng(0)
    image = rng.random((3, 18, 22))
    bands = fine_grained_decomposition(torch.from_numpy(image)[None])[0].numpy()

    padded = np.pad(_reference_ycbcr(image), ((0, 0), (3, 3), (3, 3)), mode="reflect")
    expected = np.zeros((192, 9, 11))
    for i in range(9):
        for j in range(11):
            for channel in range(3):
                window = padded[channel, 2 * i : 2 * i + 8, 2 * j : 2 * j + 8]
                spectrum = scipy.fft.dctn(window, norm="ortho")
                expected[channel * 64 : (channel + 1) * 64, i, j] = spectrum.reshape(64)
    # deepscan's YCbCr matrix is stored in float32, hence not 1e-12 in float64
    np.testing.assert_allclose(bands, expected, atol=1e-6)


def test_frequency_input_has_64_channels_at_rgb_resolution():
    frequency_input = FineGrainedFrequencyInput()
    out = frequency_input(torch.rand(2, 3, 48, 64))
    assert out.shape == (2, 64, 48, 64)


@pytest.mark.parametrize("kernel_size", [3, 5, 7])
def test_median_filter_matches_scipy(kernel_size):
    features = torch.randn(2, 4, 9, 11, dtype=torch.float64)
    expected = scipy.ndimage.median_filter(features.numpy(), size=(1, 1, kernel_size, kernel_size), mode="nearest")
    np.testing.assert_allclose(median_filter2d(features, kernel_size).numpy(), expected, atol=1e-12)


def test_mean_filter_matches_scipy():
    features = torch.randn(2, 4, 9, 11, dtype=torch.float64)
    expected = scipy.ndimage.uniform_filter(features.numpy(), size=(1, 1, 3, 3), mode="nearest")
    np.testing.assert_allclose(mean_filter2d(features, 3).numpy(), expected, atol=1e-12)


def test_noise_enhancement_is_identity_at_init_and_follows_eq3_with_several_filters():
    features = torch.randn(1, 2, 8, 8, dtype=torch.float64)
    block = NoiseEnhancement(2, parse_denoiser("median3+median5")).double()
    torch.testing.assert_close(block(features), features)

    weights = torch.tensor([[1.0, -2.0], [0.5, 3.0]], dtype=torch.float64)  # (channel, filter)
    with torch.no_grad():
        block.amplitude.weight.copy_(weights.view(2, 2, 1, 1))
        block.amplitude.bias.fill_(0.1)
    array = features.numpy()
    expected = array.copy()
    for k, size in enumerate((3, 5)):
        noise = array - scipy.ndimage.median_filter(array, size=(1, 1, size, size), mode="nearest")
        squashed = 1.0 / (1.0 + np.exp(-noise))
        expected += weights[:, k].numpy().reshape(1, 2, 1, 1) * squashed
    expected += 0.1
    np.testing.assert_allclose(block(features).detach().numpy(), expected, atol=1e-10)


def test_channel_attention_scales_each_channel_by_one_plus_a_gate():
    attention = ChannelAttention(32)
    features = torch.rand(2, 32, 5, 5) + 0.1
    ratio = attention(features) / features
    per_channel = ratio.flatten(2)
    # f + f * g with g in (0, 1): every channel is scaled by one factor in (1, 2)
    torch.testing.assert_close(per_channel, per_channel[..., :1].expand_as(per_channel))
    assert bool(((ratio > 1) & (ratio < 2)).all())


def test_default_model_gives_one_logit_per_face(full_model):
    full_model.eval()
    with torch.no_grad():
        logits = full_model(torch.rand(3, 3, 64, 64))
    assert logits.shape == (3,) and torch.isfinite(logits).all()


def test_gradients_reach_both_streams(small_model):
    model = small_model.train()
    model.zero_grad(set_to_none=True)
    out = model.loss(torch.rand(2, 3, 64, 64), torch.tensor([0, 1]))
    assert out.logits.shape == (2,)
    out.loss.backward()

    for stream in ("rgb", "freq"):
        stem_grad = model.streams[stream].stem[0].weight.grad
        assert stem_grad is not None and stem_grad.abs().sum() > 0, stream
    assert model.frequency_input.band_conv.weight.grad.abs().sum() > 0
    missing = [name for name, p in model.named_parameters() if p.grad is None]
    assert not missing
    assert all(torch.isfinite(p.grad).all() for p in model.parameters())


def test_parameter_count_is_two_b4_streams_plus_small_modules(full_model):
    import timm

    rgb_b4 = timm.create_model("efficientnet_b4", num_classes=0)
    freq_b4 = timm.create_model("efficientnet_b4", num_classes=0, in_chans=64)
    backbones = sum(p.numel() for p in rgb_b4.parameters()) + sum(p.numel() for p in freq_b4.parameters())
    total = full_model.count_parameters()
    extra = total - backbones
    assert 17e6 < backbones / 2 < 18e6
    assert 0 < extra < 0.5e6, extra
    assert full_model.classifier.in_features == 2 * rgb_b4.num_features


def test_enhancements_sit_where_the_paper_puts_them(small_model):
    model = small_model
    for stream in ("rgb", "freq"):
        modules = model.self_enhancement[stream]
        with_noise = sorted(int(k) for k, m in modules.items() if isinstance(m.noise, NoiseEnhancement))
        with_attention = sorted(int(k) for k, m in modules.items() if isinstance(m.attention, ChannelAttention))
        assert with_noise == [0, 1]  # after the first two of the seven blocks
        assert with_attention == [1, 2, 3, 4, 5]  # after the second to the penultimate
    assert sorted(int(k) for k in model.mutual_enhancement) == [1, 2, 3, 4, 5]
    assert all(isinstance(m, MutualEnhancement) for m in model.mutual_enhancement.values())


TABLE_4 = [  # (streams, self-enhancement, mutual enhancement)
    ("rgb", False, False),
    ("freq", False, False),
    ("rgb", True, True),
    ("freq", True, True),
    ("both", False, False),
    ("both", True, False),
    ("both", False, True),
    ("both", True, True),
]


@pytest.mark.parametrize(("streams", "self_enhancement", "mutual_enhancement"), TABLE_4)
def test_table4_ablations_build_and_run(streams, self_enhancement, mutual_enhancement):
    model = _small(streams=streams, self_enhancement=self_enhancement, mutual_enhancement=mutual_enhancement).eval()
    used = ["rgb", "freq"] if streams == "both" else [streams]
    assert list(model.streams) == used
    assert (model.frequency_input is not None) == ("freq" in used)
    assert list(model.self_enhancement) == (used if self_enhancement else [])
    assert len(model.mutual_enhancement) == (5 if mutual_enhancement else 0)
    assert len(model.cam_target_layers()) == len(used)
    with torch.no_grad():
        logits = model(torch.rand(2, 3, 64, 64))
    assert logits.shape == (2,) and torch.isfinite(logits).all()


@pytest.mark.parametrize("denoiser", ["mean3", "median5", "median7", "median3+median5", "median3+median5+median7"])
def test_table5_denoisers_build_and_run(denoiser):
    # the frequency stream alone carries every noise-enhancement module of the two-stream model
    model = _small(streams="freq", denoiser=denoiser).eval()
    filters = parse_denoiser(denoiser)
    assert model.self_enhancement["freq"]["0"].noise.filters == filters
    with torch.no_grad():
        logits = model(torch.rand(1, 3, 64, 64))
    assert logits.shape == (1,) and torch.isfinite(logits).all()


@pytest.mark.parametrize("bad", ["median4", "gaussian3", "median3+", ""])
def test_unknown_denoiser_is_rejected(bad):
    with pytest.raises(ValueError):
        parse_denoiser(bad)


def test_unknown_stream_choice_is_rejected():
    with pytest.raises(ValueError):
        _small(streams="ycbcr")


@pytest.mark.parametrize("mutual", [True, False])
def test_mutual_enhancement_lets_the_frequency_stream_change_the_rgb_features(mutual):
    model = _small(mutual_enhancement=mutual).eval()
    with torch.no_grad():
        for module in model.mutual_enhancement.values():
            for amplitude in module.amplitudes:
                amplitude.weight.fill_(1.0)
        x = torch.rand(1, 3, 64, 64)
        inputs = model.stream_inputs(x)
        rgb_width = model.streams["rgb"].num_features
        before = model.features(inputs)[:, :rgb_width]
        inputs["freq"] = inputs["freq"] + torch.randn_like(inputs["freq"])
        after = model.features(inputs)[:, :rgb_width]
    assert (not torch.allclose(before, after)) == mutual


def test_frequency_views_show_band_energy_and_learned_band_weights():
    model = _small().eval()
    flat_face = torch.full((1, 3, 32, 32), 0.3)
    views = model.frequency_views(flat_face)
    energy = views["dct_band_energy"].image
    assert energy.shape == (8, 24)
    # a flat image has energy only in the DC band of each colour channel
    for channel in range(3):
        grid = energy[:, 8 * channel : 8 * channel + 8]
        assert np.unravel_index(np.argmax(grid), grid.shape) == (0, 0)

    with torch.no_grad():
        model.frequency_input.band_conv.weight.zero_()
        model.frequency_input.band_conv.weight[:, 64 + 8 * 2 + 5] = -0.5  # Cb band (2, 5)
    weights = model.frequency_views(flat_face)["band_weights"].image
    expected = np.zeros((8, 24), dtype=np.float32)
    expected[2, 8 + 5] = 0.5 * model.frequency_input.band_conv.out_channels
    np.testing.assert_allclose(weights, expected)

    assert "band_weights" not in _small(streams="rgb").frequency_views(flat_face)


def test_cam_target_layers_output_tensors_that_require_grad(small_model):
    model = small_model.eval()
    layers = model.cam_target_layers()
    assert len(layers) == 2
    outputs = []
    handles = [layer.register_forward_hook(lambda _m, _i, out: outputs.append(out)) for layer in layers]
    model(torch.rand(1, 3, 64, 64))
    for handle in handles:
        handle.remove()
    assert len(outputs) == 2
    assert all(isinstance(out, torch.Tensor) and out.requires_grad for out in outputs)


def test_registry_builds_pel_with_its_config():
    assert "pel" in list_detectors()
    model = create_detector("pel", backbone=SMALL, streams="rgb")
    assert model.config.name == "pel"
    assert model.config.input_size == 224
    assert model.config.mean == (0.485, 0.456, 0.406)


def test_paper_recipe():
    recipe = load_recipe(RECIPE_YAML)  # sec. 4.1 (FF++; WildDeepfake trains at 224)
    assert recipe.detector.kwargs == {"backbone": "efficientnet_b4", "pretrained": True}
    optim = recipe.optim
    assert (optim.name, optim.lr, optim.weight_decay) == ("adam", 2e-4, 1e-5)
    assert (recipe.input_size, recipe.batch_size, recipe.data.face.frames_per_video) == (320, 32, 50)

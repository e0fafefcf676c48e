from pathlib import Path

import pytest
import torch
import torch.nn as nn
from torch.utils.flop_counter import FlopCounterMode

from deepscan.detectors import create_detector, get_config
from deepscan.detectors.sficonv import (
    MCSConv,
    SFIConvStage1,
    SFIConvStage2,
    SFIConvStage3,
    kernel_frequency_response,
    split_channels,
)
from deepscan.train.recipe import load_recipe

RECIPE_YAML = Path(__file__).resolve().parents[1] / "recipes" / "sficonv.yaml"

SFIC_MODELS = ("sficonv", "sficonv_resnet50", "sficonv_vgg13")
BASELINES = {"sficonv": "baseline_resnet26", "sficonv_resnet50": "baseline_resnet50", "sficonv_vgg13": "baseline_vgg13"}

# Table III (alpha 0.5, beta 1.0 for the SFIC models): parameters (M) and GMac at 256 x 256.
PAPER_TABLE_III = {
    "baseline_resnet26": (13.95, 3.08),
    "sficonv": (13.95, 3.09),
    "baseline_resnet50": (23.51, 5.38),
    "sficonv_resnet50": (23.51, 5.38),
    "baseline_vgg13": (9.41, 14.68),
    "sficonv_vgg13": (9.41, 14.66),
}
# Table II: SFIC-ResNet26 GMac for each (alpha, beta); 13.95 M parameters throughout.
PAPER_TABLE_II = {
    (0.25, 0.25): 2.47, (0.25, 0.50): 2.60, (0.25, 0.75): 2.80, (0.25, 1.00): 3.09,
    (0.50, 0.25): 1.86, (0.50, 0.50): 2.10, (0.50, 0.75): 2.51, (0.50, 1.00): 3.09,
    (0.75, 0.25): 1.24, (0.75, 0.50): 1.61, (0.75, 0.75): 2.23, (0.75, 1.00): 3.09,
}
# Table V: SFIC-VGG13 in its flexible form.
PAPER_TABLE_V_VGG13 = {(0.25, 0.75): 13.34, (0.75, 0.75): 10.69}


def _complexity(name: str, **kwargs) -> tuple[float, float]:
    """(parameters in M, GMac) at 256 x 256, as the paper counts them (multiply-adds = FLOPs / 2).

    Built and run on the meta device: shapes only, so the count costs no arithmetic.
    """
    with torch.device("meta"):
        detector = create_detector(name, **kwargs).eval()
        with FlopCounterMode(display=False) as counter:
            detector(torch.empty(1, 3, 256, 256))
    return detector.count_parameters() / 1e6, counter.get_total_flops() / 2 / 1e9


def _constraint_residuals(kernels: torch.Tensor) -> tuple[float, float]:
    """Largest deviation from eq. 1: (centre + 1, off-centre sum - 1)."""
    k = kernels.shape[-1]
    centre = kernels[..., k // 2, k // 2]
    off_centre_sum = kernels.sum(dim=(-2, -1)) - centre
    return (centre + 1).abs().max().item(), (off_centre_sum - 1).abs().max().item()


def _mcsconvs(detector: nn.Module) -> list[MCSConv]:
    return [module for module in detector.modules() if isinstance(module, MCSConv)]


# --- parity with the paper -------------------------------------------------------------------------------


@pytest.mark.parametrize("name", list(PAPER_TABLE_III))
def test_parameters_and_gmac_match_table_iii(name):
    paper_params, paper_gmac = PAPER_TABLE_III[name]
    params, gmac = _complexity(name)
    assert params == pytest.approx(paper_params, rel=0.02), params
    assert gmac == pytest.approx(paper_gmac, rel=0.05), gmac


@pytest.mark.parametrize("alpha, beta", list(PAPER_TABLE_II))
def test_sfic_resnet26_gmac_match_table_ii(alpha, beta):
    params, gmac = _complexity("sficonv", alpha=alpha, beta=beta)
    assert params == pytest.approx(13.95, rel=0.02), params
    assert gmac == pytest.approx(PAPER_TABLE_II[alpha, beta], rel=0.05), gmac


@pytest.mark.parametrize("alpha, beta", list(PAPER_TABLE_V_VGG13))
def test_sfic_vgg13_flexible_gmac_match_table_v(alpha, beta):
    _, gmac = _complexity("sficonv_vgg13", alpha=alpha, beta=beta)
    assert gmac == pytest.approx(PAPER_TABLE_V_VGG13[alpha, beta], rel=0.05), gmac


def test_smaller_beta_lowers_gmac_and_keeps_parameters():
    params_full, gmac_full = _complexity("sficonv", alpha=0.5, beta=1.0)
    params_half, gmac_half = _complexity("sficonv", alpha=0.5, beta=0.5)
    assert params_half == params_full
    assert gmac_half < 0.75 * gmac_full


def test_stage2_keeps_the_parameters_of_the_convolution_it_replaces():
    for alpha in (0.25, 0.5, 0.75):
        stage = SFIConvStage2(64, 128, 3, alpha)
        assert sum(p.numel() for p in stage.parameters()) == 64 * 128 * 3 * 3


# --- MCSConv ---------------------------------------------------------------------------------------------


def test_constrained_kernels_satisfy_eq1_at_start():
    kernels = MCSConv(8, 4, 3).kernels
    assert kernels.shape == (8, 1, 5, 5)
    centre_error, sum_error = _constraint_residuals(kernels)
    assert centre_error < 1e-6 and sum_error < 1e-5


def test_constraint_holds_after_adam_steps_and_kernels_still_learn():
    torch.manual_seed(0)
    network = nn.Sequential(
        SFIConvStage1(4, 8, 3, alpha=0.5, beta=0.5),
        SFIConvStage2(8, 8, 3, alpha=0.5),
        SFIConvStage3(8, 1, 1, alpha=0.5),
    )
    mcsconv = network[0].frequency
    before = mcsconv.kernels.detach().clone()
    optimizer = torch.optim.Adam(network.parameters(), lr=5e-2)
    x, target = torch.rand(4, 4, 16, 16), torch.rand(4, 1, 16, 16)
    for _ in range(5):
        optimizer.zero_grad()
        nn.functional.mse_loss(network(x), target).backward()
        optimizer.step()
        centre_error, sum_error = _constraint_residuals(mcsconv.kernels)
        assert centre_error < 1e-6 and sum_error < 1e-5, (centre_error, sum_error)
    assert (mcsconv.kernels - before).abs().max() > 1e-2, "the constrained kernels did not train"


def test_constrained_kernels_ignore_flat_regions():
    mcsconv = MCSConv(3, 2, 1)
    with torch.no_grad():
        traces = mcsconv.trace_maps(torch.full((1, 3, 12, 12), 0.7))
        textured = mcsconv.trace_maps(torch.rand(1, 3, 12, 12))
    interior = (slice(None), slice(None), slice(2, -2), slice(2, -2))  # away from the zero padding
    assert traces[interior].abs().max() < 1e-5
    assert textured[interior].abs().mean() > 1e-2


def test_kernel_frequency_response_is_zero_at_dc():
    response = kernel_frequency_response(MCSConv(6, 6, 3).kernels.detach(), size=16)
    assert response.shape == (6, 16, 16)
    assert response[:, 8, 8].max() < 1e-5  # fftshift puts DC at size // 2
    assert response.mean() > 0.1


# --- SFIConv stages ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("beta", [0.5, 1.0])
@pytest.mark.parametrize("alpha", [0.25, 0.5, 0.75])
def test_stage_shapes(alpha, beta):
    stage1 = SFIConvStage1(16, 32, 3, alpha, beta)
    stage2 = SFIConvStage2(32, 48, 3, alpha, stride=2)
    stage3 = SFIConvStage3(48, 24, 1, alpha)
    spatial, frequency = stage1(torch.rand(2, 16, 16, 16))
    size = int(16 * beta)
    assert spatial.shape == (2, 32 - int(alpha * 32), 16, 16)
    assert frequency.shape == (2, int(alpha * 32), size, size)
    spatial, frequency = stage2((spatial, frequency))
    assert spatial.shape == (2, 48 - int(alpha * 48), 8, 8)
    assert frequency.shape == (2, int(alpha * 48), size // 2, size // 2)
    fused = stage3((spatial, frequency))
    assert fused.shape == (2, 24, 8, 8)


def test_split_channels_follows_alpha_and_rejects_an_empty_branch():
    assert split_channels(64, 0.25) == (48, 16)
    for alpha in (0.0, 1.0, 0.001):
        with pytest.raises(ValueError):
            split_channels(64, alpha)
    with pytest.raises(ValueError):
        SFIConvStage1(16, 32, 3, 0.5, beta=0.0)


def test_training_step_reaches_both_branches_every_stage_and_keeps_eq1():
    torch.manual_seed(0)
    detector = create_detector("sficonv", beta=0.5)
    detector.train()
    mcsconv = _mcsconvs(detector)
    assert len(mcsconv) == 1, "SFIC-ResNet26 has one Stage 1, hence one MCSConv"
    before = mcsconv[0].kernels.detach().clone()
    optimizer = torch.optim.Adam(detector.parameters(), lr=1e-3)
    # training_step leaves the gradients of its step in place.
    detector.training_step(torch.rand(2, 3, 32, 32), torch.tensor([0, 1]), {"model": optimizer})
    names = [
        "backbone.conv1",
        "backbone.layer1.0.conv1.spatial",
        "backbone.layer1.0.conv1.frequency.cross_channel",
        "backbone.layer2.0.conv2.spatial_to_spatial",
        "backbone.layer2.0.conv2.spatial_to_frequency",
        "backbone.layer2.0.conv2.frequency_to_frequency",
        "backbone.layer2.0.conv2.frequency_to_spatial",
        "backbone.layer4.0.conv3.spatial_to_spatial",
        "backbone.layer4.0.conv3.frequency_to_spatial",
        "backbone.layer4.1.conv1",
        "backbone.fc",
    ]
    for name in names:
        grad = detector.get_submodule(name).weight.grad
        assert grad is not None and grad.abs().sum() > 0, name
    free_weights = mcsconv[0].constrained.parametrizations.weight.original
    assert free_weights.grad.abs().sum() > 0
    centre_error, sum_error = _constraint_residuals(mcsconv[0].kernels)
    assert centre_error < 1e-6 and sum_error < 1e-5, (centre_error, sum_error)
    assert not torch.equal(mcsconv[0].kernels, before)


# --- detectors --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", SFIC_MODELS)
def test_sfic_backbone_takes_the_input_of_its_baseline_and_gives_its_output_shape(name):
    # On the meta device: shapes at the paper's 256 x 256 without the arithmetic.
    for model in (name, BASELINES[name]):
        with torch.device("meta"):
            detector = create_detector(model).eval()
            activations = []
            hooks = [layer.register_forward_hook(lambda m, i, o: activations.append(o))
                     for layer in detector.cam_target_layers()]
            logits = detector(torch.empty(2, 3, 256, 256))
        for hook in hooks:
            hook.remove()
        assert logits.shape == (2,), model
        # Grad-CAM needs a tensor (not a branch pair) that carries gradients, at a useful resolution.
        assert len(activations) == 1 and isinstance(activations[0], torch.Tensor), model
        assert activations[0].requires_grad and activations[0].shape[-2:] == (16, 16), model


def test_sfic_vgg13_runs_on_real_numbers_in_its_flexible_form():
    torch.manual_seed(0)
    detector = create_detector("sficonv_vgg13", alpha=0.75, beta=0.5).eval()
    with torch.no_grad():
        logits = detector(torch.rand(2, 3, 32, 32))
    assert logits.shape == (2,) and torch.isfinite(logits).all()


def test_configs_carry_the_paper_defaults_and_kwargs_change_the_model():
    config = get_config("sficonv")
    assert (config.input_size, config.alpha, config.beta, config.backbone) == (256, 0.5, 1.0, "resnet26")
    assert get_config("sficonv_vgg13").backbone == "vgg13"
    detector = create_detector("sficonv", alpha=0.25, beta=0.5)
    assert (detector.alpha, detector.beta) == (0.25, 0.5)
    assert detector.get_submodule("backbone.layer1.0.conv1.frequency.cross_channel").out_channels == 16


def test_paper_recipe():
    recipe = load_recipe(RECIPE_YAML)  # sec. IV-A-3
    assert recipe.detector.name == "sficonv" and recipe.detector.kwargs == {"alpha": 0.5, "beta": 1.0}
    assert (recipe.optim.name, recipe.optim.lr, recipe.optim.betas) == ("adam", 1e-4, (0.9, 0.999))
    assert (recipe.schedule.name, recipe.schedule.step_epochs, recipe.schedule.gamma) == ("step", 1, 0.5)
    assert (recipe.epochs, recipe.batch_size, recipe.input_size, recipe.seed) == (20, 64, 256, 7)
    assert recipe.augment.hflip > 0 and recipe.augment.rotation > 0


def test_frequency_views_show_the_mcsconv_traces_and_kernel_spectra():
    torch.manual_seed(0)
    detector = create_detector("sficonv")
    detector.train()
    running_mean = detector.backbone.bn1.running_mean.clone()
    views = detector.frequency_views(torch.rand(1, 3, 64, 64))
    assert detector.training and torch.equal(detector.backbone.bn1.running_mean, running_mean)
    assert set(views) == {"mcsconv_traces", "mcsconv_energy", "mcsconv_kernel_spectra"}
    # 64 kernels on the 16 x 16 maps that enter layer1 at 64 x 64 input: an 8 x 8 grid with 1-pixel gaps.
    assert views["mcsconv_traces"].image.shape == (8 * 17 - 1, 8 * 17 - 1)
    assert views["mcsconv_energy"].image.shape == (64, 64)
    assert views["mcsconv_kernel_spectra"].image.shape == (8 * 33 - 1, 8 * 33 - 1)
    for view in views.values():
        assert view.image.dtype.kind == "f" and view.image.std() > 0
        assert torch.isfinite(torch.from_numpy(view.image)).all()
    traces = views["mcsconv_traces"].image
    assert traces.min() >= 0 and traces.max() == pytest.approx(1.0)

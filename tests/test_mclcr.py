import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from deepscan.detectors import create_detector, get_config
from deepscan.detectors.mclcr import ShallowStyleRepresentation, supervised_contrastive_loss
from deepscan.train.recipe import load_recipe

RECIPE_YAML = Path(__file__).resolve().parents[1] / "recipes" / "mclcr.yaml"

# Smaller faces where Table 1's sizes are not under test: the token-mixing MLP is sized by N = (S/16)^2.
SMALL = 64


@pytest.fixture(scope="module")
def detector():
    torch.manual_seed(0)
    return create_detector("mclcr")


@pytest.fixture(scope="module")
def table1_sizes(detector):
    """One pass of the training loss on two 256x256 faces, recording what each part of the network outputs."""
    recorded: dict[str, list] = {}

    def record(name):
        def hook(module, inputs, output):
            recorded.setdefault(name, []).append(output)

        return hook

    frequency = detector.frequency
    modules = {
        "ssrb": detector.ssrb,
        "gf": detector.backbone.fc,
        "patch_spectra": frequency.patch_spectra,
        "e_as": frequency.embed_amplitude,
        "e_ps": frequency.embed_phase,
        "papda": frequency.papda,
        "af": frequency.amplitude_mixer,
        "pf": frequency.phase_mixer,
        "f_e": detector.encoder,
        "z": detector.projection,
        "fc": detector.classifier,
    }
    handles = [module.register_forward_hook(record(name)) for name, module in modules.items()]
    detector.eval()
    try:
        with torch.no_grad():
            out = detector.loss(torch.rand(2, 3, 256, 256), torch.tensor([0, 1]))
    finally:
        for handle in handles:
            handle.remove()
    return recorded, out


def test_registry_entry_matches_the_paper():
    config = get_config("mclcr")
    assert config.input_size == 256
    assert config.mean == config.std == (0.5, 0.5, 0.5)  # legacy_xception's ImageNet normalisation
    recipe = load_recipe(RECIPE_YAML)  # sec. 4.1
    assert recipe.sampler == "balanced" and recipe.batch_size == 16  # 8 real and 8 fake faces per batch
    assert (recipe.detector.kwargs["supcon_weight"], recipe.detector.kwargs["temperature"]) == (0.5, 0.1)
    assert recipe.input_size == config.input_size


def test_table1_spatial_sizes(table1_sizes):
    recorded, _ = table1_sizes
    assert [tuple(ssf.shape) for ssf in recorded["ssrb"]] == [(2, 64), (2, 128), (2, 256)]  # SSF_b1..b3
    assert tuple(recorded["gf"][0].shape) == (2, 1024)  # GF


def test_table1_frequency_sizes(detector, table1_sizes):
    recorded, _ = table1_sizes
    amplitude, phase = recorded["patch_spectra"][0]
    # N = 256 patches of 16x16x1 (grey), flattened.
    assert tuple(amplitude.shape) == tuple(phase.shape) == (2, 256, 16 * 16)
    per_patch, _ = detector.frequency.patch_spectra.spectra(torch.rand(1, 3, 256, 256))
    assert tuple(per_patch.shape) == (1, 16, 16, 16, 16)  # one grey 16x16 spectrum per patch of the 16x16 grid
    assert tuple(recorded["e_as"][0].shape) == tuple(recorded["e_ps"][0].shape) == (2, 256, 256)  # N x D
    amplitude_tokens, phase_tokens, _ = recorded["papda"][0]
    assert tuple(amplitude_tokens.shape) == tuple(phase_tokens.shape) == (2, 256, 256)  # AT, PT
    papda = detector.frequency.papda
    for attention in (papda.phase_queries_amplitude, papda.amplitude_queries_phase):
        assert attention.num_heads == 4 and attention.head_dim == 64
    for stream in (detector.frequency.amplitude_mixer, detector.frequency.phase_mixer):
        assert len(stream.layers) == 2
        for layer in stream.layers:
            for mlp in (layer.mlp_tokens, layer.mlp_channels):  # W1, W2 (N wide); W3, W4 (D wide)
                assert (mlp.fc1.in_features, mlp.fc1.out_features, mlp.fc2.out_features) == (256, 256, 256)
    assert tuple(recorded["af"][0].shape) == tuple(recorded["pf"][0].shape) == (2, 256)


def test_table1_fusion_and_head_sizes(detector, table1_sizes):
    recorded, out = table1_sizes
    assert detector.encoder.in_features == 64 + 128 + 256 + 1024 + 256 + 256  # F_MM, eq. 12
    assert tuple(recorded["f_e"][0].shape) == (2, 1024)  # F_E
    assert tuple(recorded["z"][0].shape) == (2, 128)  # z
    assert tuple(recorded["fc"][0].shape) == (2, 2)
    assert out.logits.shape == (2,) and torch.isfinite(out.loss)
    assert set(out.terms) == {"ce", "supcon"}
    expected = 0.5 * out.terms["supcon"] + 0.5 * out.terms["ce"]
    assert out.loss.item() == pytest.approx(expected, rel=1e-5)


def test_fake_logit_is_the_log_odds_of_the_two_class_head(detector, table1_sizes):
    recorded, out = table1_sizes
    two_class = recorded["fc"][0]
    torch.testing.assert_close(torch.sigmoid(out.logits), torch.softmax(two_class, dim=1)[:, 1])
    y = torch.tensor([0, 1])
    torch.testing.assert_close(
        F.binary_cross_entropy_with_logits(out.logits, y.float()), torch.tensor(out.terms["ce"])
    )


def test_parameter_count(detector):
    # legacy_xception with a 1024-way head (22.91 M) + frequency branch (1.72 M) + encoder/projection/FC (2.17 M).
    assert detector.count_parameters() == 26_787_754


def test_wrong_input_size_is_refused(detector):
    with pytest.raises(ValueError, match="256x256"):
        detector(torch.rand(1, 3, 224, 224))


def test_frequency_views_show_the_patch_spectra_and_papda_attention(detector):
    face = torch.rand(1, 3, 256, 256)
    views = detector.frequency_views(face)
    assert set(views) == {"patch_amplitude", "patch_phase", "papda_attention", "papda_attention_received"}
    amplitude = views["patch_amplitude"].image
    assert amplitude.shape == views["patch_phase"].image.shape == (256, 256)
    # With each patch's spectrum centred, pixel (8, 8) of every patch is its DC term: the patch's mean grey level.
    grey = (0.299 * face[0, 0] + 0.587 * face[0, 1] + 0.114 * face[0, 2]).reshape(16, 16, 16, 16)
    patch_means = grey.mean(dim=(1, 3))
    dc_terms = torch.from_numpy(amplitude[8::16, 8::16])
    torch.testing.assert_close(dc_terms, torch.log(patch_means + 1e-6), rtol=1e-4, atol=1e-4)
    phase = views["patch_phase"].image
    assert phase.min() >= -math.pi - 1e-6 and phase.max() <= math.pi + 1e-6
    attention = torch.from_numpy(views["papda_attention"].image)
    assert attention.shape == (2, 256, 256)
    torch.testing.assert_close(attention.sum(dim=-1), torch.ones(2, 256))  # softmax rows
    assert views["papda_attention_received"].image.shape == (2, 16, 16)


def test_gradients_reach_every_parameter_of_both_branches_and_the_cam_layer():
    torch.manual_seed(0)
    detector = create_detector("mclcr", image_size=SMALL)
    detector.train()
    cam_outputs = []
    (cam_layer,) = detector.cam_target_layers()
    handle = cam_layer.register_forward_hook(lambda module, inputs, output: cam_outputs.append(output))
    out = detector.loss(torch.rand(4, 3, SMALL, SMALL), torch.tensor([0, 1, 1, 0]))
    handle.remove()
    out.loss.backward()
    assert cam_outputs[0].requires_grad and cam_outputs[0].dim() == 4  # Grad-CAM needs a 4-D tensor with grad
    missing = [
        name
        for name, parameter in detector.named_parameters()
        if parameter.grad is None or not torch.isfinite(parameter.grad).all() or parameter.grad.abs().sum() == 0
    ]
    assert missing == []
    for name in ["backbone.conv1", "frequency.embed_amplitude", "frequency.embed_phase", "projection"]:
        assert detector.get_submodule(name).weight.grad.abs().sum() > 0, name


def test_ssrb_is_the_row_average_of_the_gram_matrix_of_the_activated_map():
    features = torch.randn(2, 5, 4, 3, dtype=torch.float64)
    activated = features.clamp(min=0).reshape(2, 5, 12)
    gram = [[[float(activated[b, i] @ activated[b, j]) for j in range(5)] for i in range(5)] for b in range(2)]
    expected = torch.tensor(gram, dtype=torch.float64).mean(dim=2) / 12
    torch.testing.assert_close(ShallowStyleRepresentation()(features), expected)


def _reference_supcon(z: torch.Tensor, labels: list[int], temperature: float) -> float:
    """Khosla et al.'s L_out written out anchor by anchor, positive by positive."""
    losses = []
    for i in range(len(labels)):
        others = [a for a in range(len(labels)) if a != i]
        positives = [p for p in others if labels[p] == labels[i]]
        if not positives:
            continue
        denominator = sum(math.exp(float(z[i] @ z[a]) / temperature) for a in others)
        terms = [math.log(math.exp(float(z[i] @ z[p]) / temperature) / denominator) for p in positives]
        losses.append(-sum(terms) / len(positives))
    return sum(losses) / len(losses)


def test_supcon_equals_a_direct_computation():
    torch.manual_seed(1)
    z = F.normalize(torch.randn(7, 16, dtype=torch.float64), dim=1)
    labels = [0, 1, 1, 0, 1, 0, 1]  # the paper's two classes; the last-but-one real face is not alone
    value = supervised_contrastive_loss(z, torch.tensor(labels), temperature=0.1)
    assert value.item() == pytest.approx(_reference_supcon(z, labels, 0.1), rel=1e-10)


def test_supcon_skips_anchors_without_positives():
    torch.manual_seed(2)
    z = F.normalize(torch.randn(5, 8, dtype=torch.float64), dim=1)
    labels = [0, 0, 0, 0, 1]  # the only fake has no positive; it still serves as a negative
    value = supervised_contrastive_loss(z, torch.tensor(labels), temperature=0.1)
    assert value.item() == pytest.approx(_reference_supcon(z, labels, 0.1), rel=1e-10)


def test_supcon_closed_form_on_orthogonal_clusters():
    # Two faces on e1 (real), two on e2 (fake): each anchor has one positive at cos 1 and two negatives at cos 0.
    z = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0], [0.0, 1.0]], dtype=torch.float64)
    value = supervised_contrastive_loss(z, torch.tensor([0, 0, 1, 1]), temperature=0.1)
    assert value.item() == pytest.approx(math.log(1 + 2 * math.exp(-10)), rel=1e-9)


def test_supcon_is_finite_with_a_single_class():
    z = F.normalize(torch.ones(6, 4), dim=1)
    identical = supervised_contrastive_loss(z, torch.ones(6, dtype=torch.long), temperature=0.1)
    assert identical.item() == pytest.approx(math.log(5), rel=1e-5)  # every other face a positive: -log(1/5)
    torch.manual_seed(3)
    z = F.normalize(torch.randn(6, 4), dim=1).requires_grad_()
    value = supervised_contrastive_loss(z, torch.zeros(6, dtype=torch.long), temperature=0.1)
    value.backward()
    assert torch.isfinite(value) and torch.isfinite(z.grad).all()
    single = F.normalize(torch.randn(1, 4), dim=1).requires_grad_()
    alone = supervised_contrastive_loss(single, torch.tensor([1]), temperature=0.1)
    alone.backward()
    assert alone.item() == 0.0 and torch.isfinite(single.grad).all()


@pytest.mark.parametrize(
    "switches, fused_dim, has",
    [
        ({"use_ssrb": False}, 1024 + 512, {"ssrb": False, "frequency": True, "projection": True}),
        ({"use_papda": False}, 448 + 1024, {"ssrb": True, "frequency": False, "projection": True}),
        ({"use_supcon": False}, 448 + 1024 + 512, {"ssrb": True, "frequency": True, "projection": False}),
        (
            {"use_ssrb": False, "use_papda": False, "use_supcon": False},
            1024,
            {"ssrb": False, "frequency": False, "projection": False},
        ),
    ],
)
def test_ablation_switches_remove_their_part_and_still_give_a_loss(switches, fused_dim, has):
    torch.manual_seed(0)
    detector = create_detector("mclcr", image_size=SMALL, **switches)
    assert detector.encoder.in_features == fused_dim
    assert {name: getattr(detector, name) is not None for name in has} == has
    detector.train()
    out = detector.loss(torch.rand(4, 3, SMALL, SMALL), torch.tensor([1, 0, 1, 0]))
    assert out.logits.shape == (4,) and torch.isfinite(out.loss)
    if switches.get("use_supcon", True):
        assert set(out.terms) == {"ce", "supcon"}
    else:  # eq. 15 with alpha = 0: plain cross-entropy
        assert set(out.terms) == {"ce"} and out.loss.item() == pytest.approx(out.terms["ce"])


@pytest.mark.parametrize("backbone, ssf_widths", [("efficientnet_lite0", [16, 24, 40]), ("mobilenetv2_100", [16, 24, 32])])
def test_a_reachable_imagenet_backbone_feeds_the_ssrb_from_its_first_three_stages(backbone, ssf_widths):
    torch.manual_seed(0)
    detector = create_detector("mclcr", image_size=SMALL, backbone=backbone)
    assert list(detector._stage_channels().values()) == ssf_widths
    global_feature, shallow = detector.spatial_features(torch.rand(2, 3, SMALL, SMALL))
    assert global_feature.shape == (2, 1024) and [s.shape[1] for s in shallow] == ssf_widths
    assert detector.encoder.in_features == sum(ssf_widths) + 1024 + 2 * 256
    detector.train()
    (cam_layer,) = detector.cam_target_layers()
    assert cam_layer is detector.backbone.bn2
    out = detector.loss(torch.rand(4, 3, SMALL, SMALL), torch.tensor([0, 1, 1, 0]))
    out.loss.backward()
    assert detector.backbone.blocks[0][0].conv_dw.weight.grad.abs().sum() > 0  # the tapped first stage learns


def test_an_unknown_backbone_is_refused_naming_the_choices():
    with pytest.raises(TypeError, match="legacy_xception, efficientnet_lite0, mobilenetv2_100"):
        create_detector("mclcr", image_size=SMALL, backbone="resnet50")

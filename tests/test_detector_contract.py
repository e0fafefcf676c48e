"""The contract every registered detector keeps, in the manner of timm's tests/test_models.py.

Parametrised over ``list_detectors()``: a detector is held to it the day it registers. The checks run on small
faces (64 px); MC-LCR and RALF, whose tensors are sized by the face size, are built for it through their
``image_size`` argument, RALF with its seeded random perceptual network (no ImageNet checkpoint needed). One
check builds each detector with its defaults and runs it at its config's input size.
"""

from __future__ import annotations

import importlib
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn as nn

from deepscan.detectors import create_detector, get_config, list_detectors, registry
from deepscan.detectors.base import Detector, DetectorConfig, FrequencyView, LossOutput

RECIPES = Path(__file__).resolve().parents[1] / "recipes"
DETECTORS = list_detectors()
SMALL = 64
SMALL_KWARGS = {
    "mclcr": {"image_size": SMALL},
    "ralf": {"image_size": SMALL, "perceptual": "random"},
}

pytestmark = pytest.mark.usefixtures("one_intra_op_thread")


@pytest.fixture(scope="module", params=DETECTORS)
def built(request) -> tuple[str, Detector]:
    """(name, detector built for SMALL-pixel faces), shared by this module's tests of that detector."""
    torch.manual_seed(0)
    return request.param, create_detector(request.param, **SMALL_KWARGS.get(request.param, {}))


def faces(batch: int, size: int = SMALL, seed: int = 0) -> torch.Tensor:
    return torch.rand(batch, 3, size, size, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("name", DETECTORS)
def test_default_config_sits_beside_the_entrypoint(name):
    entrypoint, config = registry._ENTRYPOINTS[name]
    module = importlib.import_module(entrypoint.__module__)
    assert module.__name__.startswith("deepscan.detectors.") and module is not registry
    assert isinstance(config, DetectorConfig) and config is get_config(name) and config.name == name
    assert config.paper and config.summary
    assert isinstance(config.input_size, int) and config.input_size >= SMALL
    assert len(config.mean) == len(config.std) == 3 and all(s > 0 for s in config.std)
    assert config.cam_target_layers, f"{name} declares no Grad-CAM target layer"
    assert config.weights is None or config.weights == f"{name}.safetensors"
    assert config.hub_repo is None or config.weights


@pytest.mark.parametrize("name", DETECTORS)
def test_defaults_score_a_face_at_the_config_input_size(name):
    """What ``deepscan scan`` does: the entrypoint's defaults, faces at ``config.input_size``."""
    torch.manual_seed(0)
    detector = create_detector(name).eval()
    assert detector.config is get_config(name)
    size = detector.config.input_size
    with torch.no_grad():
        logits = detector(faces(1, size))
    assert logits.shape == (1,) and logits.dtype == torch.float32 and torch.isfinite(logits).all()


def test_forward_gives_one_finite_logit_per_face_independent_of_the_batch(built):
    name, detector = built
    detector.eval()
    x = faces(3)
    with torch.no_grad():
        together = detector(x)
        alone = torch.cat([detector(x[i : i + 1]) for i in range(3)])
    assert together.shape == (3,) and alone.shape == (3,), name
    assert torch.isfinite(together).all(), name
    torch.testing.assert_close(together, alone, rtol=1e-4, atol=1e-4)


def test_loss_is_finite_and_reaches_every_inference_parameter(built):
    name, detector = built
    detector.train()
    detector.zero_grad(set_to_none=True)
    try:
        out = detector.loss(faces(2, seed=1), torch.tensor([0, 1]))
        assert isinstance(out, LossOutput)
        assert out.loss.shape == () and torch.isfinite(out.loss), name
        assert out.logits.shape == (2,) and torch.isfinite(out.logits).all(), name
        assert out.terms and all(isinstance(v, float) and np.isfinite(v) for v in out.terms.values()), out.terms
        out.loss.backward()
        used = [(n, p) for n, p in detector.named_parameters() if p.requires_grad and not detector.is_training_only(n)]
        missing = [n for n, p in used if p.grad is None]
        assert not missing, f"{name}: no gradient reaches {missing[:5]}"
        assert all(torch.isfinite(p.grad).all() for _, p in used), name
        assert sum(float(p.grad.abs().sum()) for _, p in used) > 0, name
        groups = detector.parameter_groups()
        assert "model" in groups and all(groups.values()), name
    finally:
        detector.zero_grad(set_to_none=True)
        detector.eval()


def test_channels_last_training_gives_the_same_loss_and_gradients(built):
    """Recipes may train in the channels-last layout (GPU tensor cores): a detector that reshapes with ``view`` or
    assumes contiguous strides fails here rather than on a lent GPU."""
    import copy

    name, detector = built
    losses, grads = [], []
    for layout in (torch.contiguous_format, torch.channels_last):
        # In float64, where summing in another order changes nothing visible: what differs is the layout alone.
        model = copy.deepcopy(detector).double().to(memory_format=layout).train()
        if hasattr(model, "perceptual_features"):  # RALF's frozen network of eq. 6 is no submodule: not converted
            model.perceptual_features().layers.double()
        torch.manual_seed(3)  # the same dropout draws for both layouts
        out = model.loss(faces(2, seed=2).double().contiguous(memory_format=layout), torch.tensor([0, 1]))
        out.loss.backward()
        losses.append(out.loss.detach())
        grads.append({n: p.grad for n, p in model.named_parameters() if p.grad is not None})
    assert torch.allclose(losses[0], losses[1], rtol=1e-9, atol=1e-9), (name, losses)
    assert grads[0].keys() == grads[1].keys() and grads[0], name
    scale = max(float(g.abs().max()) for g in grads[0].values())
    worst = max(float((grads[0][n] - grads[1][n]).abs().max()) for n in grads[0]) / scale
    assert worst < 1e-6, f"{name}: gradients differ by {worst:.2g} of the largest one"


def test_cam_target_layers_resolve_to_modules_that_output_4d_tensors_with_gradients(built):
    name, detector = built
    detector.eval()
    layers = detector.cam_target_layers()
    assert len(layers) == len(detector.config.cam_target_layers) >= 1, name
    assert all(isinstance(layer, nn.Module) for layer in layers), name
    outputs: list[list[object]] = [[] for _ in layers]
    hooks = [layer.register_forward_hook(lambda _m, _i, output, seen=seen: seen.append(output))
             for layer, seen in zip(layers, outputs)]
    try:
        with torch.enable_grad():
            detector(faces(2))
    finally:
        for hook in hooks:
            hook.remove()
    for target, seen in zip(detector.config.cam_target_layers, outputs):
        assert len(seen) == 1, f"{name}.{target} runs {len(seen)} times per forward pass (Grad-CAM needs once)"
        output = seen[0]
        assert isinstance(output, torch.Tensor) and output.dim() == 4 and output.shape[0] == 2, f"{name}.{target}"
        assert output.requires_grad and torch.isfinite(output).all(), f"{name}.{target}"


def test_frequency_views_are_finite_pictures_and_leave_the_detector_as_it_was(built):
    name, detector = built
    detector.eval()  # as `deepscan explain` calls them
    buffers = {key: value.clone() for key, value in detector.named_buffers()}
    views = detector.frequency_views(faces(1, seed=2))
    assert not detector.training, f"{name}: frequency_views switched the detector to training mode"
    for key, value in detector.named_buffers():
        assert torch.equal(value, buffers[key]), f"{name}: frequency_views changed the buffer {key}"
    if type(detector).frequency_views is Detector.frequency_views:
        # A plain baseline (pixels only): nothing of its own to show. A paper method always has views.
        assert views == {} and not (RECIPES / f"{name}.yaml").exists(), name
        return
    assert views, f"{name} gives no frequency view"
    for key, view in views.items():
        assert isinstance(key, str) and isinstance(view, FrequencyView), f"{name}.{key}"
        image = np.asarray(view.image, dtype=np.float64)
        assert image.ndim in (2, 3) and image.size > 1, f"{name}.{key}: shape {image.shape}"
        assert np.isfinite(image).all(), f"{name}.{key} has non-finite values"
        if image.ndim == 3 and image.shape[-1] == 3:  # a colour image
            assert image.min() >= 0.0 and image.max() <= 1.0, f"{name}.{key}: colours outside [0, 1]"
        assert view.title and view.description, f"{name}.{key} is not explained"


def test_a_view_asked_for_during_training_leaves_the_batch_norm_statistics_alone(built):
    """A view mid-training (a probe, a figure) must not train the detector: the network runs in eval mode for it,
    and the detector is left in training mode, as it was found."""
    name, detector = built
    detector.train()
    buffers = {key: value.clone() for key, value in detector.named_buffers()}
    try:
        detector.frequency_views(faces(1, seed=3))
        assert detector.training, f"{name}: frequency_views left training mode"
        for key, value in detector.named_buffers():
            assert torch.equal(value, buffers[key]), f"{name}: a view in training mode changed the buffer {key}"
    finally:
        detector.eval()

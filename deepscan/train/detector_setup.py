"""The network a run trains, before its first step: which detector, the weights it starts from, the frozen networks
its loss needs, and the device and numeric precision it runs in.

What changes here is how a run starts (a new source of starting weights, a new precision); the loop that trains
the network does not depend on it.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

import torch

from deepscan.runtime import select_device
from deepscan.train.distributed import DistributedContext
from deepscan.train.errors import TrainingError
from deepscan.train.recipe import Recipe

# Detector kwargs that say where starting weights come from, not what the network is; RALF's perceptual network
# (eq. 6) is training-only and never part of the saved weights.
_LOADING_KWARGS = ("pretrained", "pretrained_path", "checkpoint_path", "perceptual", "perceptual_path")


def training_device(requested: str, context: DistributedContext) -> torch.device:
    """The recipe's ``device`` (:func:`deepscan.runtime.select_device`); under torchrun, this process's GPU."""
    kind = select_device(requested, setting="device:")
    if kind == "cuda" and context.enabled:
        torch.cuda.set_device(context.local_rank)
        return torch.device("cuda", context.local_rank)
    return torch.device(kind)


def training_autocast_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    """What the recipe's ``precision`` autocasts to on ``device`` (None: float32). ``auto``: bfloat16 on a CUDA GPU
    that supports it; ``bf16``: bfloat16 on any device (on the CPU, to rehearse a GPU run's numerics)."""
    if precision == "fp32":
        return None
    if device.type == "cuda" and not torch.cuda.is_bf16_supported():
        if precision == "bf16":
            raise TrainingError("precision: bf16 asked for, but this GPU does not support bfloat16 (use fp32)")
        return None
    return torch.bfloat16 if precision == "bf16" or device.type == "cuda" else None


def tensor_layout(recipe: Recipe) -> torch.memory_format:
    """The memory layout of the network's weights and of each batch (``channels_last``, or PyTorch's default)."""
    return torch.channels_last if recipe.channels_last else torch.contiguous_format


def autocast(device: torch.device, dtype: torch.dtype | None):
    """The context a forward pass runs in: autocast to ``dtype``, or plain float32 when it is None."""
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=dtype)


def architecture_kwargs(kwargs: dict) -> dict:
    """The detector kwargs that shape the network (what is needed to rebuild it for the saved weights)."""
    return {key: value for key, value in kwargs.items() if key not in _LOADING_KWARGS}


def build_detector(recipe: Recipe) -> tuple[torch.nn.Module, dict]:
    """The detector with its starting weights: random, pretrained trunk(s), then ``init`` (whole detector)."""
    from deepscan.detectors import UnknownDetectorError, create_detector, get_config
    from deepscan.detectors.pretrained import apply_pretrained

    try:
        config = get_config(recipe.detector.name)
    except UnknownDetectorError as error:
        raise TrainingError(f"detector.name: {error}") from None
    try:
        detector = create_detector(recipe.detector.name, **recipe.detector.kwargs)
    except TypeError as error:
        raise TrainingError(f"detector.kwargs: {error}") from None
    except (OSError, RuntimeError) as error:
        if not recipe.detector.kwargs.get("pretrained"):
            raise
        # timm fetches ImageNet weights from the Hugging Face hub; offline or unreachable, that fails.
        raise TrainingError(
            f"detector.kwargs.pretrained: the backbone's ImageNet weights could not be fetched ({type(error).__name__}); "
            "set pretrained: false, or start from a local checkpoint with a `pretrained:` section"
        ) from None
    start: dict = {"pretrained": None, "init": None}
    if recipe.pretrained is not None:
        start["pretrained"] = apply_pretrained(detector, recipe.pretrained)
    if recipe.init is not None:
        start["init"] = _load_init_weights(detector, recipe.init, config)
    return detector, start


def _load_init_weights(detector: torch.nn.Module, init: str, config) -> dict:
    """Load the recipe's ``init`` (``shipped``, a path or an hf:// address) into the whole detector; says what was
    loaded, for the model card."""
    from deepscan.weights import WeightsError, load_weights, resolve_weights

    try:
        if init == "shipped":
            resolved = resolve_weights(config.weights)
            if not resolved.trained:
                raise TrainingError(f"init: detector {config.name!r} ships no weights to start from")
        else:
            resolved = resolve_weights(None, init)
        load_weights(detector, resolved)
    except WeightsError as error:
        raise TrainingError(f"init: {error}") from None
    return {"spec": init, "source": resolved.source, "sha256": resolved.sha256}


def prepare_training_only_networks(detector: torch.nn.Module, recipe: Recipe, recipe_origin: str, start: dict) -> None:
    """Frozen networks a detector's loss needs besides its weights (RALF: the perceptual network of eq. 6), built
    now and recorded in ``start`` (the model card's ``start`` section) under ``perceptual``.

    They are not in the checkpoint, so they are built at setup from the run's seed (before --resume restores any
    RNG state; the detector builds them without drawing from the global RNG): a resumed run gets the very network
    the uninterrupted one had. Missing ImageNet weights stop the run here, in one line, rather than at the first
    step. Relative paths in the detector's kwargs are read from the recipe's folder (``recipe_origin``).
    """
    prepare = getattr(detector, "prepare_training", None)
    if prepare is None:
        return
    origin = Path(recipe_origin) if recipe_origin else None
    base_dir = origin.resolve().parent if origin is not None and origin.is_file() else None
    try:
        start["perceptual"] = prepare(seed=recipe.seed, base_dir=base_dir)
    except ValueError as error:
        raise TrainingError(f"detector.kwargs.perceptual: {error}") from None

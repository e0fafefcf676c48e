"""Reading and writing detector weights as safetensors (a single file, or shards with their index): the state dict,
checked tensor by tensor against the detector, and the header's metadata.

Tensors stored in half precision (shipped weights are fp16, to halve the download) are cast to the detector's own
dtype on loading.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from deepscan.runtime import atomic_write, sha256_file
from deepscan.weights.errors import WeightsError
from deepscan.weights.resolved import ResolvedWeights
from deepscan.weights.shards import index_path_for, is_index, load_sharded, read_index, save_sharded

if TYPE_CHECKING:
    import torch

    from deepscan.detectors.base import Detector


def _read_state(path: Path) -> dict[str, torch.Tensor]:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        # A shard index: every shard verified against the sha256 the index gives it, and merged.
        return load_sharded(path)[0] if is_index(path) else load_file(str(path))
    except (SafetensorError, OSError) as error:
        raise WeightsError(f"{path.name}: not a readable safetensors file ({error})") from None


def _check_fit(detector: Detector, own: dict, state: dict, name: str) -> None:
    """Every tensor of ``state`` matches the detector's own (``own``) by name and shape (training-only ones may
    be absent)."""
    missing = [key for key in own if key not in state and not detector.is_training_only(key)]
    unexpected = [key for key in state if key not in own]
    misshapen = [key for key in own if key in state and state[key].shape != own[key].shape]
    if not (missing or unexpected or misshapen):
        return
    # A shape mismatch says the most (another build: backbone, width, input size): named first, with both shapes.
    if misshapen:
        key = misshapen[0]
        detail = (f"shape mismatch in {key}: {list(state[key].shape)} in the file, "
                  f"{list(own[key].shape)} in the detector")
    elif missing:
        detail = f"tensor {missing[0]} is missing"
    else:
        detail = f"tensor {unexpected[0]} is not the detector's"
    raise WeightsError(
        f"{name}: does not fit detector {detector.config.name!r}: {detail} ({len(missing)} missing, "
        f"{len(unexpected)} unexpected, {len(misshapen)} misshapen tensors)"
    )


def load_weights(detector: Detector, weights: ResolvedWeights) -> None:
    """Load a state dict into ``detector``; every tensor must match by name and shape. Floating-point tensors
    are cast to the detector's own dtype (fp16 files into a float32 detector)."""
    if weights.path is None:
        return
    state = _read_state(weights.path)
    own = detector.state_dict()
    _check_fit(detector, own, state, weights.path.name)
    for name, tensor in state.items():
        target = own[name]
        if tensor.is_floating_point() and target.is_floating_point() and tensor.dtype != target.dtype:
            state[name] = tensor.to(target.dtype)
    detector.load_state_dict(state, strict=False)


def weights_metadata(weights: ResolvedWeights) -> dict[str, str]:
    """The safetensors header's metadata: which detector, built with which kwargs, at which input size."""
    if weights.path is None:
        return {}
    from safetensors import SafetensorError, safe_open

    if is_index(weights.path):
        return read_index(weights.path).metadata
    try:
        with safe_open(str(weights.path), "pt") as handle:
            return dict(handle.metadata() or {})
    except (SafetensorError, OSError) as error:
        raise WeightsError(f"{weights.path.name}: not a readable safetensors file ({error})") from None


def save_weights(
    detector: Detector,
    path: Path,
    metadata: dict[str, str] | None = None,
    *,
    inference_only: bool = True,
    max_shard_mib: float | None = None,
    half: bool = False,
) -> str:
    """Write ``detector``'s state dict as safetensors (by default without training-only modules), atomically;
    returns its sha256. ``half``: floating-point tensors in float16. ``max_shard_mib``: instead of ``path``,
    shards of at most that size and their index ``<path>.index.json`` (see ``deepscan.weights.shards``), whose
    sha256 is returned."""
    from safetensors.torch import save

    state = {
        name: tensor.detach().contiguous().cpu()
        for name, tensor in detector.state_dict().items()
        if not (inference_only and detector.is_training_only(name))
    }
    if half:
        state = {name: t.half() if t.is_floating_point() else t for name, t in state.items()}
    header = {"detector": detector.config.name, **(metadata or {})}
    if max_shard_mib is not None:
        return save_sharded(state, index_path_for(Path(path)), header, max_shard_mib)
    atomic_write(path, save(state, metadata=header))
    return sha256_file(path)

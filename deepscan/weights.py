"""Find, verify and load detector weights. Safetensors only: weights come from strangers.

A weights spec is one of:
- ``None``: the detector's shipped weights (``weights/<config.weights>``, checked against ``SHA256SUMS``),
  or no weights at all when none ship (the detector is then untrained, and the caller must say so);
- a path to a ``.safetensors`` file;
- ``hf://OWNER/REPO/FILE.safetensors``: fetched with huggingface-hub, which honours ``HF_HUB_OFFLINE`` and
  its local cache.
"""

from __future__ import annotations

import hashlib
import importlib.resources
import json
from dataclasses import dataclass, replace
from pathlib import Path

from deepscan.detectors.base import Detector


class WeightsError(Exception):
    """A weights file that cannot be used; the message is one line for the user."""


@dataclass(frozen=True)
class ResolvedWeights:
    path: Path | None  # None: no weights, the detector is untrained
    source: str  # "shipped", "file", "hub" or "none"
    sha256: str | None

    @property
    def trained(self) -> bool:
        return self.path is not None


def sha256_file(path: Path, chunk_size: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(chunk_size):
            digest.update(chunk)
    return digest.hexdigest()


def shipped_weights_dir() -> Path:
    return Path(str(importlib.resources.files("deepscan.shipped_weights")))


def shipped_checksums(folder: Path | None = None) -> dict[str, str]:
    """``SHA256SUMS`` as {file name: sha256} (``sha256sum`` format)."""
    sums = (folder or shipped_weights_dir()) / "SHA256SUMS"
    entries = {}
    if sums.exists():
        for line in sums.read_text().splitlines():
            if line.strip():
                digest, name = line.split(maxsplit=1)
                entries[name.lstrip("*")] = digest
    return entries


def _from_hub(spec: str) -> Path:
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    parts = spec.removeprefix("hf://").split("/", 2)
    if len(parts) != 3:
        raise WeightsError(f"{spec}: expected hf://OWNER/REPO/FILE.safetensors")
    owner, repo, filename = parts
    try:
        return Path(hf_hub_download(repo_id=f"{owner}/{repo}", filename=filename))
    except LocalEntryNotFoundError:
        raise WeightsError(f"{spec}: not in the local Hugging Face cache and the hub is offline") from None
    except Exception as error:  # network, auth, missing repo: one line for the user
        raise WeightsError(f"{spec}: could not fetch from the hub ({type(error).__name__})") from None


def resolve_weights(default_name: str | None, spec: str | Path | None = None) -> ResolvedWeights:
    if spec is None:
        if default_name is None:
            return ResolvedWeights(None, "none", None)
        folder = shipped_weights_dir()
        path = folder / default_name
        if not path.exists():
            return ResolvedWeights(None, "none", None)
        expected = shipped_checksums(folder).get(default_name)
        digest = sha256_file(path)
        if expected is None or expected != digest:
            raise WeightsError(f"{path.name}: shipped weights fail their SHA256SUMS check; reinstall deepscan")
        return ResolvedWeights(path, "shipped", digest)
    if str(spec).startswith("hf://"):
        path = _from_hub(str(spec))
        return ResolvedWeights(path, "hub", sha256_file(path))
    path = Path(spec)
    if not path.is_file():
        raise WeightsError(f"{path}: weights file not found")
    if path.suffix != ".safetensors":
        raise WeightsError(f"{path}: only .safetensors weights are accepted (pickled checkpoints can run code)")
    return ResolvedWeights(path, "file", sha256_file(path))


def load_weights(detector: Detector, weights: ResolvedWeights) -> None:
    """Load a state dict into ``detector``; every tensor must match by name and shape."""
    if weights.path is None:
        return
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        state = load_file(str(weights.path))
    except (SafetensorError, OSError) as error:
        raise WeightsError(f"{weights.path.name}: not a readable safetensors file ({error})") from None
    own = detector.state_dict()
    missing = [name for name in own if name not in state and not detector.is_training_only(name)]
    unexpected = [name for name in state if name not in own]
    misshapen = [name for name in own if name in state and state[name].shape != own[name].shape]
    if missing or unexpected or misshapen:
        example = (missing + unexpected + misshapen)[0]
        raise WeightsError(
            f"{weights.path.name}: does not fit detector {detector.config.name!r} ({len(missing)} missing, "
            f"{len(unexpected)} unexpected, {len(misshapen)} misshapen tensors, e.g. {example})"
        )
    detector.load_state_dict(state, strict=False)


def weights_metadata(weights: ResolvedWeights) -> dict[str, str]:
    """The safetensors header's metadata: which detector, built with which kwargs, at which input size."""
    if weights.path is None:
        return {}
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(weights.path), "pt") as handle:
            return dict(handle.metadata() or {})
    except (SafetensorError, OSError) as error:
        raise WeightsError(f"{weights.path.name}: not a readable safetensors file ({error})") from None


def build_detector(
    method: str, spec: str | Path | None = None, *, resolved: ResolvedWeights | None = None
) -> tuple[Detector, ResolvedWeights]:
    """The detector ``method`` as its weights were trained: architecture kwargs and input size come from the
    weights' metadata (written by ``deepscan train``), so a recipe's backbone or input size needs no flag."""
    from deepscan.registry import create_detector, get_config

    if resolved is None:
        resolved = resolve_weights(get_config(method).weights, spec)
    metadata = weights_metadata(resolved)
    trained_for = metadata.get("detector")
    if trained_for and trained_for != method:
        raise WeightsError(f"{resolved.path.name}: weights of detector {trained_for!r}, not {method!r} (use --method {trained_for})")
    try:
        kwargs = json.loads(metadata.get("detector_kwargs", "{}"))
        detector = create_detector(method, **kwargs)
    except (ValueError, TypeError) as error:
        raise WeightsError(f"{resolved.path.name}: its detector settings do not build {method!r} ({error})") from None
    if "input_size" in metadata:
        detector.config = replace(detector.config, input_size=int(metadata["input_size"]))
    load_weights(detector, resolved)
    return detector, resolved


def save_weights(
    detector: Detector, path: Path, metadata: dict[str, str] | None = None, *, inference_only: bool = True
) -> str:
    """Write ``detector``'s state dict as safetensors (by default without training-only modules); returns its sha256."""
    from safetensors.torch import save_file

    state = {
        name: tensor.detach().contiguous().cpu()
        for name, tensor in detector.state_dict().items()
        if not (inference_only and detector.is_training_only(name))
    }
    save_file(state, str(path), metadata={"detector": detector.config.name, **(metadata or {})})
    return sha256_file(path)

"""Find, verify and load detector weights, with their model card. Safetensors only: weights come from strangers.

One function, :func:`resolve_weights`, resolves every weights spec:

- ``--weights PATH``: a ``.safetensors`` file, or the index of one split into shards
  (``<stem>.safetensors.index.json``, :mod:`deepscan.weight_shards`: every shard checked against the sha256 the
  index gives it); its card is the sibling ``<stem>.card.json`` when there is one;
- ``--weights hf://OWNER/REPO/[SUBFOLDER/]FILE.safetensors``: fetched with huggingface-hub (its cache first;
  offline, only the cache); its card is ``[SUBFOLDER/]<stem>.card.json`` from the same repository when the
  repository has one (the hub saying the file does not exist, or, offline, the cache not holding it). Any other
  failure to fetch the card (network, authentication) is an error: a card silently dropped would drop the
  weights' calibration;
- no spec, the detector's own weights, in this order:
  1. bundled in ``weights/`` (``<config.weights>``, checked against ``weights/SHA256SUMS``);
  2. the Hugging Face cache, for the hub repository named by the bundled card's ``hub`` section or the
     detector config's ``hub_repo``;
  3. downloaded from that repository, unless ``HF_HUB_OFFLINE`` is set;
  and no weights at all (the detector is untrained, which the caller must say) when nothing names any.

A file whose sha256 differs from its card's ``weights.sha256`` or from its ``SHA256SUMS`` line is refused, and
so is a bundled card that fails ``SHA256SUMS`` or a card whose calibration check fails (:class:`IntegrityError`);
weights that cannot be had (offline, hub unreachable) raise :class:`WeightsUnavailableError`. Tensors stored in
half precision (shipped weights are fp16, to halve the download) are cast to the detector's own dtype on loading.
"""

from __future__ import annotations

import importlib.resources
import json
from dataclasses import dataclass, replace
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING

from deepscan.calibration import Calibration, CalibrationError
from deepscan.errors import DeepscanError
from deepscan.model_card import HubSource, ModelCard, ModelCardError, card_path_for, read_model_card
from deepscan.reliability import ReliableRange
from deepscan.runtime import atomic_write, sha256_file

if TYPE_CHECKING:
    from deepscan.detectors.base import Detector, DetectorConfig

def what_to_do(repo_id: str | None = None) -> str:
    """The ways out when trained weights cannot be found, for the end of a one-line error."""
    where = f" from {repo_id}" if repo_id else ""
    return f"pass --weights FILE, or go online to fetch them{where}, or train your own with `deepscan train`"


def untrained_warning(name: str, what: str = "scores") -> str:
    """The one warning for a detector with random weights (``what``: what of its output means nothing)."""
    return (f"detector {name} has no trained weights: its {what} are random and mean nothing. Pass --weights, or "
            "train one with `deepscan train`.")


class WeightsError(DeepscanError):
    """A weights file that cannot be used; the message is one line for the user."""


class IntegrityError(WeightsError):
    """Weights or a model card that fail a check of what they must be: their ``SHA256SUMS`` line, the sha256 their
    card states, the card's calibration check. Never a reason to carry on without them: someone altered them."""


class WeightsUnavailableError(WeightsError):
    """Trained weights that cannot be had here and now (not bundled, not cached, and the hub offline or not
    answering): the only weights failure an ensemble may leave a member out for."""


@dataclass(frozen=True)
class ResolvedWeights:
    path: Path | None  # None: no weights, the detector is untrained
    source: str  # "shipped", "file", "hub" or "none"
    sha256: str | None
    card: ModelCard | None = None  # the model card beside the weights, None when there is none
    card_path: Path | None = None
    card_sha256: str | None = None

    @property
    def trained(self) -> bool:
        return self.path is not None

    @property
    def calibration(self) -> Calibration:
        """The card's Platt calibration, or the identity (sigmoid, threshold 0.5) without one."""
        return Calibration.from_card(self.card.calibration if self.card else None)

    @property
    def reliable_range(self) -> ReliableRange:
        return ReliableRange.from_card(self.card.reliability if self.card else None)

    def custody(self) -> dict:
        """What a scan report records of these weights."""
        return {
            "source": self.source,
            "path": str(self.path) if self.path else None,
            "sha256": self.sha256,
            "trained": self.trained,
        }

    def card_custody(self) -> dict | None:
        if self.card is None:
            return None
        return {"path": str(self.card_path), "sha256": self.card_sha256}


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
                entries[name.lstrip("*")] = digest.lower()  # hex digits in either case mean the same digest
    return entries


# --- model cards ---------------------------------------------------------------------------------------------


def _read_card(path: Path) -> ModelCard:
    try:
        card = read_model_card(path)
        Calibration.from_card(card.calibration)  # its check must hold before any score is reported
    except (ModelCardError, CalibrationError) as error:
        message = str(error)
        kind = IntegrityError if isinstance(error, CalibrationError) else WeightsError
        raise kind(message if message.startswith(path.name) else f"{path.name}: {message}") from None
    return card


def _check_card_fits(card: ModelCard, card_path: Path, weights: Path, digest: str) -> None:
    if card.weights.sha256.lower() != digest.lower():
        raise IntegrityError(
            f"{weights.name}: sha256 {digest[:12]}... differs from its model card {card_path.name} "
            f"({card.weights.sha256[:12]}...): the card belongs to other weights, or the file was altered"
        )


def _shipped_card(folder: Path, name: str, sums: dict[str, str]) -> tuple[ModelCard | None, Path, str | None]:
    """The bundled card for weights ``name``, verified against SHA256SUMS; (None, path, None) when none ships."""
    path = card_path_for(folder / name)
    if not path.exists():
        return None, path, None
    digest = sha256_file(path)
    if sums.get(path.name) != digest:
        raise IntegrityError(f"{path.name}: shipped model card fails its SHA256SUMS check; reinstall deepscan")
    return _read_card(path), path, digest


def _sibling_card(weights: Path) -> tuple[ModelCard | None, Path | None, str | None]:
    from deepscan.weight_shards import is_index, weights_path_for

    path = card_path_for(weights_path_for(weights) if is_index(weights) else weights)
    if not path.is_file():
        return None, None, None
    return _read_card(path), path, sha256_file(path)


# --- the Hugging Face hub ------------------------------------------------------------------------------------


def _hub_offline() -> bool:
    import huggingface_hub.constants as constants

    return bool(constants.HF_HUB_OFFLINE)


def _entry_missing(error: Exception) -> bool:
    """The hub answered that the file is not in the repository; not: the hub could not be reached (which
    huggingface-hub reports as ``LocalEntryNotFoundError``, a subclass), nor an authentication failure."""
    from huggingface_hub.errors import EntryNotFoundError, LocalEntryNotFoundError

    return isinstance(error, EntryNotFoundError) and not isinstance(error, LocalEntryNotFoundError)


def _require_safetensors(name: str, where: str) -> None:
    """Checked before anything is downloaded: pickled checkpoints can run code."""
    if PurePosixPath(name).suffix != ".safetensors":
        raise WeightsError(f"{where}: only .safetensors weights are accepted (pickled checkpoints can run code)")


def _hub_download(repo_id: str, filename: str, *, cached_only: bool, missing_ok: bool = False) -> Path | None:
    """``filename`` from the cache, or (``cached_only`` false and online) downloaded; None when not cached and
    not to be (or cannot be) downloaded, and, with ``missing_ok``, when the hub says the repository has no such
    file. Other failures are one-line WeightsErrors."""
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    try:
        return Path(hf_hub_download(repo_id=repo_id, filename=filename, local_files_only=True))
    except LocalEntryNotFoundError:
        pass
    except Exception as error:  # a broken cache entry: one line for the user
        raise WeightsError(f"{filename}: unusable in the Hugging Face cache ({type(error).__name__})") from None
    if cached_only or _hub_offline():
        return None
    try:
        return Path(hf_hub_download(repo_id=repo_id, filename=filename))
    except Exception as error:  # network, auth, missing repo or file: one line for the user
        if missing_ok and _entry_missing(error):
            return None
        raise WeightsUnavailableError(
            f"{filename}: could not fetch from the hub repository {repo_id} ({type(error).__name__}); "
            f"{what_to_do(repo_id)}"
        ) from None


def hub_card_name(filename: str) -> str:
    """The card published beside hub weights: ``sub/x.safetensors`` -> ``sub/x.card.json`` (same subfolder)."""
    return card_path_for(PurePosixPath(filename)).as_posix()


def _cached_as_missing(repo_id: str, filename: str) -> bool:
    """The cache records that the hub said, earlier, that the repository has no such file."""
    from huggingface_hub import _CACHED_NO_EXIST, try_to_load_from_cache

    try:
        return try_to_load_from_cache(repo_id, filename) is _CACHED_NO_EXIST
    except Exception:  # noqa: BLE001 - an unreadable cache records nothing; the download decides
        return False


def _hub_card(
    repo_id: str, filename: str, weights: Path, cached_only: bool
) -> tuple[ModelCard | None, Path | None, str | None]:
    """The card published beside hub weights ``filename`` (no card: uncalibrated). Only the hub saying that the
    card does not exist (or, ``cached_only``, the cache not holding it) means no card; a card that cannot be
    fetched (network, authentication) is a WeightsError, never a silently uncalibrated scan."""
    sibling = _sibling_card(weights)  # a snapshot folder holds every file fetched from that revision
    if sibling[0] is not None:
        return sibling
    name = hub_card_name(filename)
    if _cached_as_missing(repo_id, name):
        return None, None, None
    try:
        path = _hub_download(repo_id, name, cached_only=cached_only, missing_ok=True)
    except WeightsError as error:
        raise type(error)(f"model card of {filename}: {error}") from None
    if path is None:
        return None, None, None  # the repository publishes no card
    return _read_card(path), path, sha256_file(path)


def _from_hub(spec: str) -> ResolvedWeights:
    parts = spec.removeprefix("hf://").split("/", 2)
    if len(parts) != 3 or not all(parts):
        raise WeightsError(f"{spec}: expected hf://OWNER/REPO/FILE.safetensors")
    owner, repo, filename = parts
    _require_safetensors(filename, spec)
    repo_id = f"{owner}/{repo}"
    path = _hub_download(repo_id, filename, cached_only=False)
    if path is None:
        raise WeightsUnavailableError(f"{spec}: not in the local Hugging Face cache and the hub is offline")
    digest = sha256_file(path)
    card, card_path, card_digest = _hub_card(repo_id, filename, path, cached_only=_hub_offline())
    if card is not None:
        _check_card_fits(card, card_path, path, digest)
    return ResolvedWeights(path, "hub", digest, card, card_path, card_digest)


# --- resolution ----------------------------------------------------------------------------------------------


def _shipped_path(folder: Path, name: str) -> Path:
    """The bundled weights ``name``: the file itself, or else its shard index when only that ships."""
    from deepscan.weight_shards import index_path_for

    single = folder / name
    index = index_path_for(single)
    return index if not single.exists() and index.exists() else single


def _verify_if_sharded(path: Path) -> None:
    """A shard index's shards: present, inside its folder, each matching the sha256 the index gives it."""
    from deepscan.weight_shards import is_index, verify_shards

    if is_index(path):
        verify_shards(path)


def _shipped_or_hub(default_name: str, hub_repo: str | None, *, cached_only: bool) -> ResolvedWeights | None:
    """The detector's own weights, bundled, cached or (unless ``cached_only``) downloaded. None: not cached
    and ``cached_only``. Raises when a hub is named but offline and not cached."""
    folder = shipped_weights_dir()
    sums = shipped_checksums(folder)
    card, card_path, card_digest = _shipped_card(folder, default_name, sums)
    path = _shipped_path(folder, default_name)
    if path.exists():
        digest = sha256_file(path)
        if sums.get(path.name) != digest:
            raise IntegrityError(f"{path.name}: shipped weights fail their SHA256SUMS check; reinstall deepscan")
        if card is not None:
            _check_card_fits(card, card_path, path, digest)
        _verify_if_sharded(path)
        return ResolvedWeights(path, "shipped", digest, card, card_path, card_digest)
    hub = card.hub if card is not None and card.hub is not None else None
    if hub is None and hub_repo:
        hub = HubSource(repo_id=hub_repo, filename=default_name)
    if hub is None:
        return ResolvedWeights(None, "none", None)
    _require_safetensors(hub.filename, f"{hub.repo_id}/{hub.filename}")
    path = _hub_download(hub.repo_id, hub.filename, cached_only=cached_only)
    if path is None:
        if cached_only:
            return None
        raise WeightsUnavailableError(
            f"{default_name}: trained weights are neither bundled nor in the Hugging Face cache, and the hub is "
            f"offline (HF_HUB_OFFLINE): {what_to_do(hub.repo_id)}"
        )
    digest = sha256_file(path)
    expected = sums.get(hub.filename)
    if expected is not None and expected != digest:
        raise IntegrityError(f"{hub.filename}: weights from {hub.repo_id} fail the SHA256SUMS check; refusing them")
    if card is None:
        card, card_path, card_digest = _hub_card(hub.repo_id, hub.filename, path,
                                                 cached_only=cached_only or _hub_offline())
    if card is not None:
        _check_card_fits(card, card_path, path, digest)
    return ResolvedWeights(path, "hub", digest, card, card_path, card_digest)


def resolve_weights(
    default_name: str | None, spec: str | Path | None = None, *, hub_repo: str | None = None
) -> ResolvedWeights:
    """The weights to load: ``spec`` when given, else the detector's own (``default_name`` and ``hub_repo``
    from its config), in the order of the module docstring."""
    if spec is None:
        if default_name is None:
            return ResolvedWeights(None, "none", None)
        return _shipped_or_hub(default_name, hub_repo, cached_only=False)
    if str(spec).startswith("hf://"):
        return _from_hub(str(spec))
    from deepscan.weight_shards import INDEX_SUFFIX, is_index

    path = Path(spec)
    if not path.is_file():
        raise WeightsError(f"{path}: weights file not found")
    if path.suffix != ".safetensors" and not is_index(path):
        raise WeightsError(f"{path}: only .safetensors weights (or their {INDEX_SUFFIX} shard index) are accepted "
                           "(pickled checkpoints can run code)")
    digest = sha256_file(path)
    card, card_path, card_digest = _sibling_card(path)
    if card is not None:
        _check_card_fits(card, card_path, path, digest)
    _verify_if_sharded(path)
    return ResolvedWeights(path, "file", digest, card, card_path, card_digest)


def resolve_detector_weights(config: DetectorConfig, spec: str | Path | None = None) -> ResolvedWeights:
    return resolve_weights(config.weights, spec, hub_repo=config.hub_repo)


# The weights states of ``weights_status`` that need no download: a detector whose weights are at hand.
WEIGHTS_AT_HAND = ("shipped", "cached")


def weights_status(config: DetectorConfig) -> str:
    """Where a detector's own weights are, without downloading anything: "shipped", "cached" (Hugging Face
    cache), "on the hub" (fetched on first use, when online), "untrained", or "unusable: REASON"."""
    if not config.weights:
        return "untrained"
    try:
        resolved = _shipped_or_hub(config.weights, config.hub_repo, cached_only=True)
    except WeightsError as error:
        return f"unusable: {error}"
    if resolved is None:
        return "on the hub"
    return {"shipped": "shipped", "hub": "cached"}.get(resolved.source, "untrained")


# --- loading -------------------------------------------------------------------------------------------------


def load_weights(detector: Detector, weights: ResolvedWeights) -> None:
    """Load a state dict into ``detector``; every tensor must match by name and shape. Floating-point tensors
    are cast to the detector's own dtype (fp16 files into a float32 detector)."""
    if weights.path is None:
        return
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    from deepscan.weight_shards import is_index, load_sharded

    try:
        # A shard index: every shard verified against the sha256 the index gives it, and merged.
        state = load_sharded(weights.path)[0] if is_index(weights.path) else load_file(str(weights.path))
    except (SafetensorError, OSError) as error:
        raise WeightsError(f"{weights.path.name}: not a readable safetensors file ({error})") from None
    own = detector.state_dict()
    missing = [name for name in own if name not in state and not detector.is_training_only(name)]
    unexpected = [name for name in state if name not in own]
    misshapen = [name for name in own if name in state and state[name].shape != own[name].shape]
    if missing or unexpected or misshapen:
        # A shape mismatch says the most (another build: backbone, width, input size): named first, with both shapes.
        if misshapen:
            name = misshapen[0]
            detail = (f"shape mismatch in {name}: {list(state[name].shape)} in the file, "
                      f"{list(own[name].shape)} in the detector")
        elif missing:
            detail = f"tensor {missing[0]} is missing"
        else:
            detail = f"tensor {unexpected[0]} is not the detector's"
        raise WeightsError(
            f"{weights.path.name}: does not fit detector {detector.config.name!r}: {detail} ({len(missing)} missing, "
            f"{len(unexpected)} unexpected, {len(misshapen)} misshapen tensors)"
        )
    for name, tensor in state.items():
        target = own[name]
        if tensor.is_floating_point() and target.is_floating_point() and tensor.dtype != target.dtype:
            state[name] = tensor.to(target.dtype)
    detector.load_state_dict(state, strict=False)


def shipped_build(config: DetectorConfig) -> dict:
    """The detector kwargs and input size the shipped weights of ``config`` were trained with (from their header)."""
    path = _shipped_path(shipped_weights_dir(), config.weights)
    metadata = weights_metadata(ResolvedWeights(path, "shipped", None))
    build = {"kwargs": json.loads(metadata.get("detector_kwargs", "{}"))}
    if "input_size" in metadata:
        build["input_size"] = int(metadata["input_size"])
    return build


def weights_metadata(weights: ResolvedWeights) -> dict[str, str]:
    """The safetensors header's metadata: which detector, built with which kwargs, at which input size."""
    if weights.path is None:
        return {}
    from safetensors import SafetensorError, safe_open

    from deepscan.weight_shards import is_index, read_index

    if is_index(weights.path):
        return read_index(weights.path).metadata
    try:
        with safe_open(str(weights.path), "pt") as handle:
            return dict(handle.metadata() or {})
    except (SafetensorError, OSError) as error:
        raise WeightsError(f"{weights.path.name}: not a readable safetensors file ({error})") from None


# Detector kwargs that say where starting weights come from, not what the network is: taken from a stranger's
# weights header or model card they would make timm (or the detector) download or read files while building.
LOADING_KWARGS = frozenset({"pretrained", "pretrained_path", "pretrained_cfg", "pretrained_cfg_overlay",
                            "checkpoint_path", "vgg_weights", "cache_dir"})


def _is_loading_kwarg(key: str) -> bool:
    return key in LOADING_KWARGS or "pretrained" in key or "checkpoint" in key or key.endswith(("_path", "_url"))


def _weights_name(resolved: ResolvedWeights) -> str:
    return resolved.path.name if resolved.path is not None else "weights"


def _stranger_settings(resolved: ResolvedWeights, metadata: dict[str, str]) -> tuple[dict, int | None]:
    """The architecture kwargs and input size the weights were trained with (header metadata first, else the
    model card), checked: a JSON object of architecture settings only, and a size in (0, MAX_INPUT_SIZE]."""
    from deepscan.model_card import MAX_INPUT_SIZE

    name = _weights_name(resolved)
    card_detector = resolved.card.detector if resolved.card else None
    if "detector_kwargs" in metadata:
        where = "its header's detector_kwargs"
        try:
            kwargs = json.loads(metadata["detector_kwargs"])
        except (ValueError, RecursionError):
            raise WeightsError(f"{name}: {where} is not valid JSON") from None
    else:
        where = "its model card's architecture_kwargs"
        kwargs = (card_detector.architecture_kwargs if card_detector else None) or {}
    if not isinstance(kwargs, dict):
        raise WeightsError(f"{name}: {where} is not a JSON object of detector settings")
    # Off (false, null) they load nothing and are every detector's default: dropped. On, they are refused.
    loading = sorted(str(key) for key, value in kwargs.items() if _is_loading_kwarg(str(key)) and value)
    kwargs = {key: value for key, value in kwargs.items() if not _is_loading_kwarg(str(key))}
    if loading:
        raise WeightsError(
            f"{name}: {where} sets {', '.join(loading)}, which would load or download other weights while building "
            "the detector; refused"
        )
    raw_size = metadata.get("input_size") or (card_detector.input_size if card_detector else None)
    size = None
    if raw_size is not None:
        try:
            size = int(str(raw_size).strip())
        except ValueError:
            raise WeightsError(f"{name}: input size {str(raw_size)[:40]!r} is not a whole number of pixels") from None
        if not 0 < size <= MAX_INPUT_SIZE:
            raise WeightsError(f"{name}: input size {size} px is outside 1-{MAX_INPUT_SIZE} px")
    return kwargs, size


def build_detector(
    method: str, spec: str | Path | None = None, *, resolved: ResolvedWeights | None = None
) -> tuple[Detector, ResolvedWeights]:
    """The detector ``method`` as its weights were trained: architecture kwargs and input size come from the
    weights' metadata (written by ``deepscan train``), else from their model card, so a recipe's backbone or
    input size needs no flag. Those settings come from strangers: kwargs that would load other weights
    (``pretrained``, paths) are refused, and anything that goes wrong building the detector from them is a
    one-line WeightsError."""
    from deepscan.detectors import create_detector, get_config

    if resolved is None:
        resolved = resolve_detector_weights(get_config(method), spec)
    metadata = weights_metadata(resolved)
    trained_for = metadata.get("detector") or (resolved.card.detector.name if resolved.card else None)
    if trained_for and trained_for != method:
        raise WeightsError(f"{_weights_name(resolved)}: weights of detector {trained_for!r}, not {method!r} "
                           f"(use --method {trained_for})")
    kwargs, input_size = _stranger_settings(resolved, metadata)
    if kwargs:
        try:
            detector = create_detector(method, **kwargs)
        except Exception as error:  # noqa: BLE001 - a stranger's settings: whatever breaks is one line
            detail = " ".join(str(error).split())[:200]
            raise WeightsError(
                f"{_weights_name(resolved)}: its detector settings do not build {method!r} "
                f"({type(error).__name__}: {detail})"
            ) from None
    else:
        detector = create_detector(method)
    if input_size is not None:
        detector.config = replace(detector.config, input_size=input_size)
    load_weights(detector, resolved)
    return detector, resolved


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
    shards of at most that size and their index ``<path>.index.json`` (see ``deepscan.weight_shards``), whose
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
        from deepscan.weight_shards import index_path_for, save_sharded

        return save_sharded(state, index_path_for(Path(path)), header, max_shard_mib)
    atomic_write(path, save(state, metadata=header))
    return sha256_file(path)

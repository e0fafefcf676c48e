"""Find, verify and load detector weights, with their model card. Safetensors only: weights come from strangers.

One function, :func:`resolve_weights`, resolves every weights spec:

- ``--weights PATH``: a ``.safetensors`` file, or the index of one split into shards
  (``<stem>.safetensors.index.json``, :mod:`deepscan.weights.shards`: every shard checked against the sha256 the
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

This package's ``__init__`` is the resolution (where weights come from) and the one place the rest of deepscan
imports weights from. The parts: ``errors`` (errors and their words), ``resolved`` (:class:`ResolvedWeights`),
``checks`` (sha256 and model card checks), ``hub`` (the Hugging Face hub), ``files`` (reading and writing
safetensors), ``build`` (a detector built as its weights were trained) and ``shards`` (sharded weights, with
``python -m deepscan.weights split|join|check``).
"""

from __future__ import annotations

import importlib.resources
import json
from pathlib import Path
from typing import TYPE_CHECKING

from deepscan.model_card import HubSource, ModelCard
from deepscan.runtime import sha256_file
from deepscan.weights.build import LOADING_KWARGS, build_detector
from deepscan.weights.checks import (
    check_card_fits,
    parse_checksums,
    require_safetensors,
    shipped_card,
    sibling_card,
    verify_if_sharded,
)
from deepscan.weights.errors import (
    IntegrityError,
    WeightsError,
    WeightsUnavailableError,
    untrained_warning,
    what_to_do,
)
from deepscan.weights.files import load_weights, save_weights, weights_metadata
from deepscan.weights.hub import HUB_PREFIX, from_hub, hub_card, hub_card_name, hub_download, hub_offline
from deepscan.weights.resolved import ResolvedWeights
from deepscan.weights.shards import INDEX_SUFFIX, index_path_for, is_index

if TYPE_CHECKING:
    from deepscan.detectors.base import DetectorConfig

__all__ = [
    "LOADING_KWARGS",
    "WEIGHTS_AT_HAND",
    "IntegrityError",
    "ResolvedWeights",
    "WeightsError",
    "WeightsUnavailableError",
    "build_detector",
    "hub_card_name",
    "load_weights",
    "resolve_detector_weights",
    "resolve_weights",
    "save_weights",
    "sha256_file",
    "shipped_build",
    "shipped_checksums",
    "shipped_weights_dir",
    "untrained_warning",
    "weights_metadata",
    "weights_status",
    "what_to_do",
]


def shipped_weights_dir() -> Path:
    return Path(str(importlib.resources.files("deepscan.shipped_weights")))


def shipped_checksums(folder: Path | None = None) -> dict[str, str]:
    """``SHA256SUMS`` as {file name: sha256} (``sha256sum`` format)."""
    sums = (folder or shipped_weights_dir()) / "SHA256SUMS"
    return parse_checksums(sums.read_text()) if sums.exists() else {}


def _shipped_path(folder: Path, name: str) -> Path:
    """The bundled weights ``name``: the file itself, or else its shard index when only that ships."""
    single = folder / name
    index = index_path_for(single)
    return index if not single.exists() and index.exists() else single


def _bundled(path: Path, sums: dict[str, str], card: ModelCard | None, card_path: Path,
             card_digest: str | None) -> ResolvedWeights:
    """The bundled weights at ``path``, checked against ``SHA256SUMS`` and their bundled card."""
    digest = sha256_file(path)
    if sums.get(path.name) != digest:
        raise IntegrityError(f"{path.name}: shipped weights fail their SHA256SUMS check; reinstall deepscan")
    if card is not None:
        check_card_fits(card, card_path, path, digest)
    verify_if_sharded(path)
    return ResolvedWeights(path, "shipped", digest, card, card_path, card_digest)


def _own_from_hub(hub: HubSource, default_name: str, sums: dict[str, str], bundled_card: tuple, *,
                  cached_only: bool) -> ResolvedWeights | None:
    """The detector's own weights from the hub repository ``hub`` names: cached, or (unless ``cached_only``)
    downloaded, checked against ``SHA256SUMS`` when it lists them and against the bundled card, else the hub's.
    None: not cached and ``cached_only``."""
    require_safetensors(hub.filename, f"{hub.repo_id}/{hub.filename}")
    path = hub_download(hub.repo_id, hub.filename, cached_only=cached_only)
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
    card, card_path, card_digest = bundled_card
    if card is None:
        card, card_path, card_digest = hub_card(hub.repo_id, hub.filename, path,
                                                cached_only=cached_only or hub_offline())
    if card is not None:
        check_card_fits(card, card_path, path, digest)
    return ResolvedWeights(path, "hub", digest, card, card_path, card_digest)


def _shipped_or_hub(default_name: str, hub_repo: str | None, *, cached_only: bool) -> ResolvedWeights | None:
    """The detector's own weights, bundled, cached or (unless ``cached_only``) downloaded. None: not cached
    and ``cached_only``. Raises when a hub is named but offline and not cached."""
    folder = shipped_weights_dir()
    sums = shipped_checksums(folder)
    card, card_path, card_digest = shipped_card(folder, default_name, sums)
    path = _shipped_path(folder, default_name)
    if path.exists():
        return _bundled(path, sums, card, card_path, card_digest)
    hub = card.hub if card is not None and card.hub is not None else None
    if hub is None and hub_repo:
        hub = HubSource(repo_id=hub_repo, filename=default_name)
    if hub is None:
        return ResolvedWeights(None, "none", None)
    return _own_from_hub(hub, default_name, sums, (card, card_path, card_digest), cached_only=cached_only)


def _from_file(path: Path) -> ResolvedWeights:
    """``--weights PATH``: a safetensors file or a shard index, checked against the card beside it."""
    if not path.is_file():
        raise WeightsError(f"{path}: weights file not found")
    if path.suffix != ".safetensors" and not is_index(path):
        raise WeightsError(f"{path}: only .safetensors weights (or their {INDEX_SUFFIX} shard index) are accepted "
                           "(pickled checkpoints can run code)")
    digest = sha256_file(path)
    card, card_path, card_digest = sibling_card(path)
    if card is not None:
        check_card_fits(card, card_path, path, digest)
    verify_if_sharded(path)
    return ResolvedWeights(path, "file", digest, card, card_path, card_digest)


def resolve_weights(
    default_name: str | None, spec: str | Path | None = None, *, hub_repo: str | None = None
) -> ResolvedWeights:
    """The weights to load: ``spec`` when given, else the detector's own (``default_name`` and ``hub_repo``
    from its config), in the order of the module docstring."""
    if spec is None:
        if default_name is None:
            return ResolvedWeights(None, "none", None)
        return _shipped_or_hub(default_name, hub_repo, cached_only=False)
    if str(spec).startswith(HUB_PREFIX):
        return from_hub(str(spec))
    return _from_file(Path(spec))


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


def shipped_build(config: DetectorConfig) -> dict:
    """The detector kwargs and input size the shipped weights of ``config`` were trained with (from their header)."""
    path = _shipped_path(shipped_weights_dir(), config.weights)
    metadata = weights_metadata(ResolvedWeights(path, "shipped", None))
    build = {"kwargs": json.loads(metadata.get("detector_kwargs", "{}"))}
    if "input_size" in metadata:
        build["input_size"] = int(metadata["input_size"])
    return build

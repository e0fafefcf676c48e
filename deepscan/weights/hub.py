"""Weights on the Hugging Face hub: fetched with huggingface-hub (its cache first; offline, only the cache), with
the model card published beside them.

``--weights hf://OWNER/REPO/[SUBFOLDER/]FILE.safetensors`` names such weights; its card is
``[SUBFOLDER/]<stem>.card.json`` from the same repository when the repository has one (the hub saying the file
does not exist, or, offline, the cache not holding it). Any other failure to fetch the card (network,
authentication) is an error: a card silently dropped would drop the weights' calibration.
"""

from __future__ import annotations

from pathlib import Path, PurePosixPath

from deepscan.model_card import card_path_for
from deepscan.runtime import sha256_file
from deepscan.weights.checks import FoundCard, check_card_fits, read_card, require_safetensors, sibling_card
from deepscan.weights.errors import WeightsError, WeightsUnavailableError, what_to_do
from deepscan.weights.resolved import ResolvedWeights

HUB_PREFIX = "hf://"


def hub_offline() -> bool:
    import huggingface_hub.constants as constants

    return bool(constants.HF_HUB_OFFLINE)


def _entry_missing(error: Exception) -> bool:
    """The hub answered that the file is not in the repository; not: the hub could not be reached (which
    huggingface-hub reports as ``LocalEntryNotFoundError``, a subclass), nor an authentication failure."""
    from huggingface_hub.errors import EntryNotFoundError, LocalEntryNotFoundError

    return isinstance(error, EntryNotFoundError) and not isinstance(error, LocalEntryNotFoundError)


def hub_download(repo_id: str, filename: str, *, cached_only: bool, missing_ok: bool = False) -> Path | None:
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
    if cached_only or hub_offline():
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


def hub_card(repo_id: str, filename: str, weights: Path, cached_only: bool) -> FoundCard:
    """The card published beside hub weights ``filename`` (no card: uncalibrated). Only the hub saying that the
    card does not exist (or, ``cached_only``, the cache not holding it) means no card; a card that cannot be
    fetched (network, authentication) is a WeightsError, never a silently uncalibrated scan."""
    sibling = sibling_card(weights)  # a snapshot folder holds every file fetched from that revision
    if sibling[0] is not None:
        return sibling
    name = hub_card_name(filename)
    if _cached_as_missing(repo_id, name):
        return None, None, None
    try:
        path = hub_download(repo_id, name, cached_only=cached_only, missing_ok=True)
    except WeightsError as error:
        raise type(error)(f"model card of {filename}: {error}") from None
    if path is None:
        return None, None, None  # the repository publishes no card
    return read_card(path), path, sha256_file(path)


def from_hub(spec: str) -> ResolvedWeights:
    """The weights ``hf://OWNER/REPO/FILE.safetensors`` names, and their card (see the module docstring)."""
    parts = spec.removeprefix(HUB_PREFIX).split("/", 2)
    if len(parts) != 3 or not all(parts):
        raise WeightsError(f"{spec}: expected hf://OWNER/REPO/FILE.safetensors")
    owner, repo, filename = parts
    require_safetensors(filename, spec)
    repo_id = f"{owner}/{repo}"
    path = hub_download(repo_id, filename, cached_only=False)
    if path is None:
        raise WeightsUnavailableError(f"{spec}: not in the local Hugging Face cache and the hub is offline")
    digest = sha256_file(path)
    card, card_path, card_digest = hub_card(repo_id, filename, path, cached_only=hub_offline())
    if card is not None:
        check_card_fits(card, card_path, path, digest)
    return ResolvedWeights(path, "hub", digest, card, card_path, card_digest)

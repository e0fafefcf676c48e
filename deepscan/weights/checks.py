"""Checks weights must pass before they are loaded: the file format, the model card's own checks, the card fitting
the weights (its ``weights.sha256``), the bundled ``SHA256SUMS``, and every shard of a shard index."""

from __future__ import annotations

from pathlib import Path, PurePosixPath

from deepscan.calibration import Calibration, CalibrationError
from deepscan.model_card import ModelCard, ModelCardError, card_path_for, read_model_card
from deepscan.runtime import sha256_file
from deepscan.weights.errors import IntegrityError, WeightsError
from deepscan.weights.shards import is_index, verify_shards, weights_path_for

# A model card found for some weights: (card, its path, its sha256); (None, ..., None) when there is none.
FoundCard = tuple[ModelCard | None, Path | None, str | None]


def parse_checksums(text: str) -> dict[str, str]:
    """``SHA256SUMS`` text (``sha256sum`` format) as {file name: sha256}."""
    entries = {}
    for line in text.splitlines():
        if line.strip():
            digest, name = line.split(maxsplit=1)
            entries[name.lstrip("*")] = digest.lower()  # hex digits in either case mean the same digest
    return entries


def require_safetensors(name: str, where: str) -> None:
    """Checked before anything is downloaded: pickled checkpoints can run code."""
    if PurePosixPath(name).suffix != ".safetensors":
        raise WeightsError(f"{where}: only .safetensors weights are accepted (pickled checkpoints can run code)")


def read_card(path: Path) -> ModelCard:
    """The model card at ``path``, whose calibration check must hold before any score is reported."""
    try:
        card = read_model_card(path)
        Calibration.from_card(card.calibration)  # its check must hold before any score is reported
    except (ModelCardError, CalibrationError) as error:
        message = str(error)
        kind = IntegrityError if isinstance(error, CalibrationError) else WeightsError
        raise kind(message if message.startswith(path.name) else f"{path.name}: {message}") from None
    return card


def check_card_fits(card: ModelCard, card_path: Path, weights: Path, digest: str) -> None:
    """The card names these weights: its ``weights.sha256`` is ``digest``."""
    if card.weights.sha256.lower() != digest.lower():
        raise IntegrityError(
            f"{weights.name}: sha256 {digest[:12]}... differs from its model card {card_path.name} "
            f"({card.weights.sha256[:12]}...): the card belongs to other weights, or the file was altered"
        )


def shipped_card(folder: Path, name: str, sums: dict[str, str]) -> tuple[ModelCard | None, Path, str | None]:
    """The bundled card for weights ``name``, verified against SHA256SUMS; (None, path, None) when none ships."""
    path = card_path_for(folder / name)
    if not path.exists():
        return None, path, None
    digest = sha256_file(path)
    if sums.get(path.name) != digest:
        raise IntegrityError(f"{path.name}: shipped model card fails its SHA256SUMS check; reinstall deepscan")
    return read_card(path), path, digest


def sibling_card(weights: Path) -> FoundCard:
    """The card beside ``weights`` (of a shard index: beside the single file it stands for), when there is one."""
    path = card_path_for(weights_path_for(weights) if is_index(weights) else weights)
    if not path.is_file():
        return None, None, None
    return read_card(path), path, sha256_file(path)


def verify_if_sharded(path: Path) -> None:
    """A shard index's shards: present, inside its folder, each matching the sha256 the index gives it."""
    if is_index(path):
        verify_shards(path)

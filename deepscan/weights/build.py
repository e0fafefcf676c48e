"""A detector built as its weights were trained: the architecture kwargs and input size recorded in the weights'
header (written by ``deepscan train``), else in their model card. Those settings come from strangers: kwargs that
would load other weights while building are refused, and so is an input size out of bounds."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

from deepscan.model_card import MAX_INPUT_SIZE
from deepscan.weights.errors import WeightsError
from deepscan.weights.files import load_weights, weights_metadata
from deepscan.weights.resolved import ResolvedWeights

if TYPE_CHECKING:
    from deepscan.detectors.base import Detector

# Detector kwargs that say where starting weights come from, not what the network is: taken from a stranger's
# weights header or model card they would make timm (or the detector) download or read files while building.
LOADING_KWARGS = frozenset({"pretrained", "pretrained_path", "pretrained_cfg", "pretrained_cfg_overlay",
                            "checkpoint_path", "vgg_weights", "cache_dir"})


def _is_loading_kwarg(key: str) -> bool:
    return key in LOADING_KWARGS or "pretrained" in key or "checkpoint" in key or key.endswith(("_path", "_url"))


def _weights_name(resolved: ResolvedWeights) -> str:
    return resolved.path.name if resolved.path is not None else "weights"


def _stranger_kwargs(resolved: ResolvedWeights, metadata: dict[str, str]) -> dict:
    """The architecture kwargs the weights were trained with (header metadata first, else the model card),
    checked: a JSON object of architecture settings only."""
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
    if loading:
        raise WeightsError(
            f"{name}: {where} sets {', '.join(loading)}, which would load or download other weights while building "
            "the detector; refused"
        )
    return {key: value for key, value in kwargs.items() if not _is_loading_kwarg(str(key))}


def _stranger_input_size(resolved: ResolvedWeights, metadata: dict[str, str]) -> int | None:
    """The input size the weights were trained at (header metadata first, else the model card), checked: a whole
    number in (0, MAX_INPUT_SIZE]."""
    name = _weights_name(resolved)
    card_detector = resolved.card.detector if resolved.card else None
    raw_size = metadata.get("input_size") or (card_detector.input_size if card_detector else None)
    if raw_size is None:
        return None
    try:
        size = int(str(raw_size).strip())
    except ValueError:
        raise WeightsError(f"{name}: input size {str(raw_size)[:40]!r} is not a whole number of pixels") from None
    if not 0 < size <= MAX_INPUT_SIZE:
        raise WeightsError(f"{name}: input size {size} px is outside 1-{MAX_INPUT_SIZE} px")
    return size


def _create(method: str, kwargs: dict, resolved: ResolvedWeights) -> Detector:
    from deepscan.detectors import create_detector

    if not kwargs:
        return create_detector(method)
    try:
        return create_detector(method, **kwargs)
    except Exception as error:  # noqa: BLE001 - a stranger's settings: whatever breaks is one line
        detail = " ".join(str(error).split())[:200]
        raise WeightsError(
            f"{_weights_name(resolved)}: its detector settings do not build {method!r} "
            f"({type(error).__name__}: {detail})"
        ) from None


def build_detector(
    method: str, spec: str | Path | None = None, *, resolved: ResolvedWeights | None = None
) -> tuple[Detector, ResolvedWeights]:
    """The detector ``method`` as its weights were trained: architecture kwargs and input size come from the
    weights' metadata (written by ``deepscan train``), else from their model card, so a recipe's backbone or
    input size needs no flag. Those settings come from strangers: kwargs that would load other weights
    (``pretrained``, paths) are refused, and anything that goes wrong building the detector from them is a
    one-line WeightsError. Without ``resolved``, the weights ``spec`` names are resolved
    (:func:`deepscan.weights.resolve_detector_weights`)."""
    if resolved is None:
        from deepscan.detectors import get_config
        from deepscan.weights import resolve_detector_weights  # the resolution imports this module

        resolved = resolve_detector_weights(get_config(method), spec)
    metadata = weights_metadata(resolved)
    trained_for = metadata.get("detector") or (resolved.card.detector.name if resolved.card else None)
    if trained_for and trained_for != method:
        raise WeightsError(f"{_weights_name(resolved)}: weights of detector {trained_for!r}, not {method!r} "
                           f"(use --method {trained_for})")
    kwargs = _stranger_kwargs(resolved, metadata)
    input_size = _stranger_input_size(resolved, metadata)
    detector = _create(method, kwargs, resolved)
    if input_size is not None:
        detector.config = replace(detector.config, input_size=input_size)
    load_weights(detector, resolved)
    return detector, resolved

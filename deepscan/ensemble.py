"""``--method ensemble``: every detector with trained weights, on the same faces, their calibrated P(fake) averaged.

The rule, stated once:

- members: every registered detector whose own weights resolve as trained (bundled, in the Hugging Face cache,
  or fetched from the hub when online), or exactly those named by ``weights/ensemble.card.json``. A detector is
  left out (and the scan says so) only when its weights cannot be had here and now; weights or a card that fail
  an integrity check (``SHA256SUMS``, the card's sha256, its calibration check) stop the ensemble, as anything
  else wrong with a member's weights does;
- per face, P(fake) is the mean of the members' calibrated P(fake), each member scoring its own crop of the
  same face square at its own input size;
- a track is fake when the median of that mean reaches 0.5, or the threshold the ensemble card chose on
  validation for its members. Calibrated probabilities share one scale, so their mean is a probability too and
  0.5 means "more likely forged than not"; the members' own thresholds are not averaged, because each was chosen
  for its own score distribution, and their mean has no such meaning for the mean score;
- each member's own track score and label (at its own threshold) and the members' agreement with the ensemble
  are reported beside it;
- ``--without NAME`` leaves a member out by the user's choice (a slow one, or one distrusted for a case). The
  ensemble card's threshold was chosen for the mean of its own members, so an ensemble without one of them
  falls back to 0.5 and says so.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from deepscan.calibration import DEFAULT_THRESHOLD
from deepscan.errors import DeepscanError
from deepscan.model_card import EnsembleCard, ModelCardError, read_ensemble_card
from deepscan.runtime import sha256_file
from deepscan.weights import (
    WEIGHTS_AT_HAND,
    ResolvedWeights,
    WeightsError,
    WeightsUnavailableError,
    resolve_detector_weights,
    what_to_do,
)

ENSEMBLE = "ensemble"
ENSEMBLE_CARD = "ensemble.card.json"
ENSEMBLE_PAPER = "mean of the calibrated P(fake) of every detector with trained weights (deepscan)"


class EnsembleError(DeepscanError):
    """An ensemble that cannot be formed; the message is one line for the user."""


@dataclass(frozen=True)
class EnsembleConfig:
    """What a report says of the ensemble where it says which detector ran."""

    name: str = ENSEMBLE
    paper: str = ENSEMBLE_PAPER
    summary: str = (
        "The ensemble averages the calibrated P(fake) of every detector with trained weights, each scoring its "
        "own crop of the same face; each member's own score and the members' agreement are reported beside it."
    )


@dataclass(frozen=True)
class EnsembleWeights:
    """The ensemble's weights are its members' (listed in the report's decision section)."""

    members: int

    trained = True

    def custody(self) -> dict:
        return {"source": f"ensemble of {self.members}", "path": None, "sha256": None, "trained": True}


@dataclass(frozen=True)
class EnsemblePlan:
    members: list[tuple[str, ResolvedWeights]]
    threshold: float
    threshold_source: str  # "ensemble card" or "default"
    skipped: list[str] = field(default_factory=list)  # one line each: a detector left out, and why


def ensemble_card() -> EnsembleCard | None:
    """The bundled ensemble card, verified against SHA256SUMS; None when none ships."""
    from deepscan.weights import shipped_checksums, shipped_weights_dir  # looked up now: tests move the folder

    folder = shipped_weights_dir()
    path = folder / ENSEMBLE_CARD
    if not path.exists():
        return None
    if shipped_checksums(folder).get(ENSEMBLE_CARD) != sha256_file(path):
        raise EnsembleError(f"{ENSEMBLE_CARD}: fails its SHA256SUMS check; reinstall deepscan")
    try:
        return read_ensemble_card(path)
    except ModelCardError as error:
        raise EnsembleError(str(error)) from None


def _candidates(card: EnsembleCard | None) -> list[str]:
    from deepscan.detectors import UnknownDetectorError, get_config, list_detectors

    if card is None or card.members is None:
        return list_detectors()
    for name in card.members:
        try:
            get_config(name)
        except UnknownDetectorError as error:
            raise EnsembleError(f"{ENSEMBLE_CARD}: {error}") from None
    return list(card.members)


def _check_without(without: list[str]) -> None:
    from deepscan.detectors import UnknownDetectorError, get_config

    for name in without:
        try:
            get_config(name)
        except UnknownDetectorError as error:
            raise EnsembleError(f"--without: {error}") from None


def plan_ensemble(without: list[str] | tuple[str, ...] = ()) -> EnsemblePlan:
    """Which detectors the ensemble uses, with their weights, and its threshold; ``without``: detectors the user
    leaves out."""
    from deepscan.detectors import get_config

    _check_without(list(without))
    card = ensemble_card()
    members, skipped = [], []
    for name in _candidates(card):
        if name in without:
            skipped.append(f"{name}: left out by --without")
            continue
        try:
            resolved = resolve_detector_weights(get_config(name))
        except WeightsUnavailableError as error:  # not to be had here and now: left out, unless the card names it
            if card is not None and card.members is not None:
                raise EnsembleError(f"ensemble member {name}: {error}") from None
            skipped.append(f"{name}: {error}")
            continue
        except WeightsError as error:  # altered weights or card, or unusable ones: never silently left out
            raise EnsembleError(f"ensemble member {name}: {error}") from None
        if resolved.trained:
            members.append((name, resolved))
        elif card is not None and card.members is not None:
            raise EnsembleError(f"{ENSEMBLE_CARD} lists {name}, which has no trained weights here; {what_to_do()}")
    if not members:
        if without:
            raise EnsembleError(f"--method ensemble --without {' '.join(without)}: no member with trained weights "
                                "is left")
        raise EnsembleError(
            "--method ensemble: no detector has trained weights (bundled, cached or on the hub); "
            "train one with `deepscan train`, or scan with --method NAME --weights FILE"
        )
    if card is not None and card.members is not None and any(name in without for name in card.members):
        return EnsemblePlan(members, DEFAULT_THRESHOLD, "default: --without changed the members the ensemble "
                            "card's threshold was chosen for", skipped)
    if card is not None:
        return EnsemblePlan(members, card.calibration.threshold, "ensemble card", skipped)
    return EnsemblePlan(members, DEFAULT_THRESHOLD, "default", skipped)


def likely_members(statuses: dict[str, str]) -> list[str]:
    """The detectors the ensemble would use, from their weights' ``weights_status`` (nothing is downloaded):
    those whose weights are at hand, and those on the hub when it is reachable."""
    import huggingface_hub.constants as constants

    try:
        names = _candidates(ensemble_card())
    except EnsembleError:
        return []
    usable = WEIGHTS_AT_HAND if constants.HF_HUB_OFFLINE else (*WEIGHTS_AT_HAND, "on the hub")
    return [name for name in names if statuses.get(name) in usable]

"""The model card beside a weights file, ``<name>.card.json``: the parts deepscan reads when it scans.

``deepscan train`` writes the card (schema ``deepscan.model-card``: detector, weights, recipe, data, validation,
...); calibrating the weights adds ``calibration``, ``reliability`` and, for weights hosted on the Hugging Face
hub, ``hub``. Only what the scanner uses is modelled here. Every other key (``metrics``, ``recipe``, ``data``,
...) is ignored, so that cards can grow without breaking scans.

The ensemble's card (``weights/ensemble.card.json``) is smaller: an optional member list and the threshold on
the mean calibrated P(fake).

Cards come from strangers: every number the scanner uses must be finite and in its range (a calibration scale
above 0, an input size up to 1024 px), a Platt calibration must carry its check, and JSON's non-standard
``NaN`` / ``Infinity`` are refused anywhere in a card.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from deepscan.errors import DeepscanError

MODEL_CARD_SCHEMA = "deepscan.model-card"
ENSEMBLE_CARD_SCHEMA = "deepscan.ensemble-card"
CARD_SUFFIX = ".card.json"
MAX_INPUT_SIZE = 1024  # px: no detector takes more, and a stranger's larger size would only exhaust memory

Finite = Annotated[float, Field(allow_inf_nan=False)]
Probability = Annotated[float, Field(ge=0.0, le=1.0, allow_inf_nan=False)]


class ModelCardError(DeepscanError, ValueError):
    """A card that cannot be read; the message is one line for the user."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True, populate_by_name=True)


class CardDetector(_Section):
    name: str
    input_size: int | None = Field(default=None, gt=0, le=MAX_INPUT_SIZE)
    architecture_kwargs: dict | None = None


class CardWeights(_Section):
    file: str
    sha256: str = Field(pattern=r"^[0-9a-fA-F]{64}$")


class HubSource(_Section):
    repo_id: str
    filename: str


class CalibrationCheck(_Section):
    logits: list[Finite] = Field(min_length=1)
    probabilities: list[Probability] = Field(min_length=1)

    @model_validator(mode="after")
    def _same_length(self) -> "CalibrationCheck":
        if len(self.logits) != len(self.probabilities):
            raise ValueError(f"{len(self.logits)} logits but {len(self.probabilities)} probabilities")
        return self


class CalibrationSection(_Section):
    method: Literal["platt"]
    scale: float = Field(gt=0.0, allow_inf_nan=False)  # > 0: a calibration must not reverse the ranking
    bias: Finite
    threshold: Probability
    threshold_rule: str = ""
    fitted_on: str = ""
    val_faces: int | None = None
    check: CalibrationCheck | None = None

    @model_validator(mode="after")
    def _platt_is_checked(self) -> "CalibrationSection":
        if self.method == "platt" and self.check is None:
            raise ValueError("a platt calibration needs its check (stored logits and the probabilities they map to)")
        return self


class ReliabilitySection(_Section):
    min_face_px: float = Field(default=0.0, ge=0.0, allow_inf_nan=False)
    min_sharpness: float = Field(default=0.0, ge=0.0, allow_inf_nan=False)
    text: str = ""


class ModelCard(_Section):
    card_schema: Literal["deepscan.model-card"] = Field(alias="schema")
    detector: CardDetector
    weights: CardWeights
    hub: HubSource | None = None
    calibration: CalibrationSection | None = None
    reliability: ReliabilitySection | None = None


class EnsembleThreshold(_Section):
    threshold: Probability
    threshold_rule: str = ""


class EnsembleCard(_Section):
    card_schema: Literal["deepscan.ensemble-card"] = Field(alias="schema")
    members: list[str] | None = None  # the detectors the threshold was chosen for; None: every trained one
    calibration: EnsembleThreshold

    @model_validator(mode="after")
    def _members_name_one_set(self) -> "EnsembleCard":
        # The threshold was chosen for one set of members: an empty list names none, a repeated name would
        # weigh that member twice in the mean.
        if self.members is not None:
            if not self.members or not all(name.strip() for name in self.members):
                raise ValueError("members must name at least one detector, by a non-empty name")
            repeated = sorted({name for name in self.members if self.members.count(name) > 1})
            if repeated:
                raise ValueError(f"members lists {', '.join(repeated)} more than once")
        return self


def card_path_for(weights: Path) -> Path:
    """``faclue.safetensors`` -> ``faclue.card.json`` in the same folder."""
    return weights.with_name(weights.stem + CARD_SUFFIX)


class _NonFinite(ValueError):
    pass


def _refuse_constant(name: str):
    raise _NonFinite(name)


def _read(path: Path, model: type[BaseModel]):
    try:
        data = json.loads(path.read_text(encoding="utf-8"), parse_constant=_refuse_constant)
    except (OSError, UnicodeDecodeError) as error:
        raise ModelCardError(f"{path.name}: cannot be read ({error})") from None
    except json.JSONDecodeError as error:
        raise ModelCardError(f"{path.name}: not valid JSON (line {error.lineno}: {error.msg})") from None
    except _NonFinite as error:
        raise ModelCardError(f"{path.name}: not valid JSON ({error} is not a number JSON allows)") from None
    except RecursionError:
        raise ModelCardError(f"{path.name}: not valid JSON (nested too deeply)") from None
    try:
        return model.model_validate(data)
    except ValidationError as error:
        first = error.errors()[0]
        where = ".".join(str(part) for part in first["loc"]) or "card"
        raise ModelCardError(f"{path.name}: not a usable model card ({where}: {first['msg']})") from None


def read_model_card(path: Path) -> ModelCard:
    return _read(path, ModelCard)


def read_ensemble_card(path: Path) -> EnsembleCard:
    return _read(path, EnsembleCard)

"""The model card beside a weights file, ``<name>.card.json``: the parts deepscan reads when it scans.

``deepscan train`` writes the card (schema ``deepscan.model-card``: detector, weights, recipe, data, validation,
...); calibrating the weights adds ``calibration``, ``reliability`` and, for weights hosted on the Hugging Face
hub, ``hub``. Only what the scanner uses is modelled here. Every other key (``metrics``, ``recipe``, ``data``,
...) is ignored, so that cards can grow without breaking scans.

The ensemble's card (``weights/ensemble.card.json``) is smaller: an optional member list and the threshold on
the mean calibrated P(fake).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

MODEL_CARD_SCHEMA = "deepscan.model-card"
ENSEMBLE_CARD_SCHEMA = "deepscan.ensemble-card"
CARD_SUFFIX = ".card.json"


class ModelCardError(ValueError):
    """A card that cannot be read; the message is one line for the user."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True, populate_by_name=True)


class CardDetector(_Section):
    name: str
    input_size: int | None = None
    architecture_kwargs: dict | None = None


class CardWeights(_Section):
    file: str
    sha256: str


class HubSource(_Section):
    repo_id: str
    filename: str


class CalibrationCheck(_Section):
    logits: list[float]
    probabilities: list[float]

    @model_validator(mode="after")
    def _same_length(self) -> "CalibrationCheck":
        if len(self.logits) != len(self.probabilities):
            raise ValueError(f"{len(self.logits)} logits but {len(self.probabilities)} probabilities")
        return self


class CalibrationSection(_Section):
    method: Literal["platt"]
    scale: float
    bias: float
    threshold: float = Field(ge=0.0, le=1.0)
    threshold_rule: str = ""
    fitted_on: str = ""
    val_faces: int | None = None
    check: CalibrationCheck | None = None


class ReliabilitySection(_Section):
    min_face_px: float = Field(default=0.0, ge=0.0)
    min_sharpness: float = Field(default=0.0, ge=0.0)
    text: str = ""


class ModelCard(_Section):
    card_schema: Literal["deepscan.model-card"] = Field(alias="schema")
    detector: CardDetector
    weights: CardWeights
    hub: HubSource | None = None
    calibration: CalibrationSection | None = None
    reliability: ReliabilitySection | None = None


class EnsembleThreshold(_Section):
    threshold: float = Field(ge=0.0, le=1.0)
    threshold_rule: str = ""


class EnsembleCard(_Section):
    card_schema: Literal["deepscan.ensemble-card"] = Field(alias="schema")
    members: list[str] | None = None  # the detectors the threshold was chosen for; None: every trained one
    calibration: EnsembleThreshold


def card_path_for(weights: Path) -> Path:
    """``faclue.safetensors`` -> ``faclue.card.json`` in the same folder."""
    return weights.with_name(weights.stem + CARD_SUFFIX)


def _read(path: Path, model: type[BaseModel]):
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as error:
        raise ModelCardError(f"{path.name}: cannot be read ({error})") from None
    except json.JSONDecodeError as error:
        raise ModelCardError(f"{path.name}: not valid JSON (line {error.lineno}: {error.msg})") from None
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

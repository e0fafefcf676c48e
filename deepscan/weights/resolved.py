"""Resolved weights: which file a detector loads, where it came from, and the model card that travels with it."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from deepscan.calibration import Calibration
from deepscan.model_card import ModelCard
from deepscan.reliability import ReliableRange


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

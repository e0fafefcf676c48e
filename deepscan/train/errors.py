"""The two ways a training run ends early: a problem the user can fix, and a stop on request.

Defined apart from the trainer so that every part of a run (setup, data, optimisation, checkpoints, the epoch loop)
can raise them without importing the trainer that drives it.
"""

from __future__ import annotations

from pathlib import Path

from deepscan.errors import DeepscanError


class TrainingError(DeepscanError):
    """A problem the user can fix; one line."""


class TrainingInterrupted(Exception):
    """Training stopped on request after writing a checkpoint; ``--resume`` continues it."""

    def __init__(self, checkpoint: Path, epoch: int, step: int):
        super().__init__(f"interrupted at epoch {epoch + 1}, step {step}: checkpoint written to {checkpoint}")
        self.checkpoint, self.epoch, self.step = checkpoint, epoch, step

"""``checkpoint.pt``: what ``--resume`` continues a run from, exactly.

A checkpoint holds the model, the optimisers and schedulers, the RNG states of every process, the position (the
next step to run) with the sums of an epoch cut short, and the history so far. It is written by the main process
to a temporary file, flushed to disk and renamed over the old one, so that a kill at any moment leaves the old
checkpoint or the new one, never a mix. A run resumes only with the recipe it started with (up to the keys in
``RESUMABLE_CHANGES``) and the same number of processes: anything else would not continue it exactly.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import torch

from deepscan.runtime import atomic_write
from deepscan.train.distributed import DistributedContext, average_buffers, gather_objects
from deepscan.train.errors import TrainingError
from deepscan.train.optimisation import Optimisation

CHECKPOINT_NAME = "checkpoint.pt"
CHECKPOINT_FORMAT = "deepscan.train-checkpoint"
# Keys that may change between a run and its resumption without changing what it computes (epochs may grow, and
# so may the time budget; the device and the memory layout change only rounding: a run started on the CPU may go
# on on a lent GPU).
RESUMABLE_CHANGES = ("epochs", "num_workers", "device", "max_minutes", "channels_last")


@dataclass
class RunPosition:
    """Where a run stands: ``epoch`` and ``step`` of the next step to run, the sums of the epoch in progress when
    it was cut short (``partial``), and what the finished epochs left (history, best epoch, time spent)."""

    epoch: int = 0
    step: int = 0
    partial: dict = field(default_factory=dict)
    history: list[dict] = field(default_factory=list)
    best: dict | None = None
    elapsed_s: float = 0.0


def check_run_folder(output: Path, resume: bool) -> None:
    """A run folder is never overwritten, and ``--resume`` needs a checkpoint to resume from."""
    checkpoint = output / CHECKPOINT_NAME
    if checkpoint.exists() and not resume:
        raise TrainingError(
            f"{output}: already holds a training run; pass --resume to continue it, or choose another --output"
        )
    if resume and not checkpoint.exists():
        raise TrainingError(f"--resume: no {CHECKPOINT_NAME} in {output} to resume from")


class Checkpoints:
    """Save and restore a run's checkpoint in ``folder``; ``recipe_sha256`` is the recipe's hash without the keys
    a resumption may change."""

    def __init__(self, folder: Path, recipe_sha256: str, context: DistributedContext, device: torch.device):
        self.path = folder / CHECKPOINT_NAME
        self.recipe_sha256 = recipe_sha256
        self.context = context
        self.device = device

    def _rng_states(self) -> dict:
        states = {"torch": torch.get_rng_state()}
        if self.device.type == "cuda":
            states["cuda"] = torch.cuda.get_rng_state(self.device)
        return states

    def save(self, detector: torch.nn.Module, optimisation: Optimisation, position: RunPosition) -> None:
        """Every process takes part (buffers are averaged, RNG states gathered); the main process writes."""
        average_buffers(detector, self.context)
        rng = gather_objects(self._rng_states(), self.context)
        if not self.context.is_main:
            return
        optimizers, schedulers = optimisation.state_dicts()
        state = {
            "format": CHECKPOINT_FORMAT,
            "version": 1,
            "recipe_sha256": self.recipe_sha256,
            "epoch": position.epoch,
            "step": position.step,
            "world_size": self.context.world_size,
            "model": {name: tensor.detach().cpu() for name, tensor in detector.state_dict().items()},
            "optimizers": optimizers,
            "schedulers": schedulers,
            "rng": rng,
            "partial_epoch": position.partial or {},
            "history": json.dumps(position.history),
            "best": json.dumps(position.best),
            "elapsed_s": position.elapsed_s,
        }
        atomic_write(self.path, lambda handle: torch.save(state, handle))

    def load(self, detector: torch.nn.Module, optimisation: Optimisation) -> RunPosition:
        """Restore the model, optimisers, schedulers and this process's RNG states; returns where to go on."""
        state = self._read()
        detector.load_state_dict(state["model"])
        optimisation.load_state_dicts(state["optimizers"], state["schedulers"])
        own = state["rng"][self.context.rank]
        torch.set_rng_state(own["torch"])
        if "cuda" in own and self.device.type == "cuda":
            torch.cuda.set_rng_state(own["cuda"], self.device)
        return RunPosition(
            epoch=int(state["epoch"]),
            step=int(state["step"]),
            partial=dict(state["partial_epoch"]),
            history=json.loads(state["history"]),
            best=json.loads(state["best"]),
            elapsed_s=float(state["elapsed_s"]),
        )

    def _read(self) -> dict:
        """The checkpoint, refused in one line when damaged, foreign, or from another recipe or process count."""
        try:
            state = torch.load(self.path, map_location="cpu", weights_only=True)
        except Exception as error:  # noqa: BLE001 - a damaged checkpoint is one problem for the user
            raise TrainingError(f"{self.path}: unreadable checkpoint ({type(error).__name__})") from None
        if state.get("format") != CHECKPOINT_FORMAT:
            raise TrainingError(f"{self.path}: not a deepscan training checkpoint")
        if state["recipe_sha256"] != self.recipe_sha256:
            raise TrainingError(
                f"--resume: the recipe differs from the one this run started with (only {', '.join(RESUMABLE_CHANGES)} "
                "may change); use another --output for a new run"
            )
        if state["world_size"] != self.context.world_size:
            raise TrainingError(
                f"--resume: the run used {state['world_size']} processes, this one {self.context.world_size}; "
                "resume with the same number to continue exactly"
            )
        return state

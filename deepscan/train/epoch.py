"""One epoch: its training steps, stopping cleanly at a step boundary, then the validation pass.

Every epoch's batches are planned from the seed (``datasets.plan_epoch``) and each sample is drawn from its own
seed, so that an epoch resumed at step N runs exactly the steps the uninterrupted epoch would have run from N.
Ctrl-C or SIGTERM (:class:`StopRequest`) end the epoch after the step in progress; the recipe's time budget ends
it too, and the cut epoch is validated as any other. The time spent is read here, on one clock, for both.
"""

from __future__ import annotations

import math
import signal
import threading
import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch

from deepscan.train.data_preparation import TrainingData, face_loader
from deepscan.train.datasets import plan_epoch
from deepscan.train.detector_setup import autocast, tensor_layout
from deepscan.train.distributed import DistributedContext, any_process, gather_objects
from deepscan.train.errors import TrainingError
from deepscan.train.progress import EpochStart, StepDone, TrainingProgress
from deepscan.train.recipe import Recipe
from deepscan.train.validation import validation_metrics


class StopRequest:
    """Ctrl-C / SIGTERM set a flag that the loop reads at step boundaries; a second Ctrl-C stops at once."""

    def __init__(self):
        self.requested = False
        self._previous: dict = {}

    def _handle(self, signum, _frame) -> None:
        if self.requested and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.requested = True

    def __enter__(self) -> "StopRequest":
        if threading.current_thread() is threading.main_thread():
            for signum in (signal.SIGINT, signal.SIGTERM):
                self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)


@dataclass
class EpochSums:
    """An epoch's running totals. An epoch cut short by Ctrl-C carries them (:meth:`partial`) into its checkpoint,
    so that once resumed it reports what the uninterrupted epoch would have: its time included."""

    loss: float = 0.0
    steps: int = 0
    faces: int = 0
    seconds: float = 0.0
    terms: dict[str, float] = field(default_factory=dict)
    next_step: int = 0  # the epoch's next step to run
    cut_by_time: bool = False  # the time budget ended the epoch early

    @classmethod
    def resumed(cls, partial: dict) -> "EpochSums":
        """The sums an interrupted epoch had reached (empty: a fresh epoch)."""
        sums = cls(**{key: partial[key] for key in ("loss", "steps", "faces", "seconds") if key in partial})
        sums.terms = dict(partial.get("terms", {}))
        return sums

    def partial(self) -> dict:
        return {"loss": self.loss, "steps": self.steps, "faces": self.faces, "seconds": self.seconds,
                "terms": self.terms}

    def add_step(self, loss: float, faces: int, terms: dict) -> None:
        self.loss += loss
        self.steps += 1
        self.faces += faces
        for key, value in terms.items():
            self.terms[key] = self.terms.get(key, 0.0) + float(value)

    def mean_loss(self) -> float:
        return self.loss / max(self.steps, 1)

    def mean_terms(self) -> dict[str, float]:
        return {key: value / max(self.steps, 1) for key, value in self.terms.items()}


class EpochRunner:
    """Trains ``detector`` one epoch at a time on ``data`` and validates it; the optimisers it steps are
    ``step_optimizers`` (``Optimisation.step_optimizers``)."""

    def __init__(self, recipe: Recipe, context: DistributedContext, device: torch.device,
                 autocast_dtype: torch.dtype | None, detector: torch.nn.Module, step_optimizers: dict,
                 data: TrainingData, progress: TrainingProgress):
        self.recipe, self.context, self.device, self.autocast_dtype = recipe, context, device, autocast_dtype
        self.detector, self.step_optimizers, self.data, self.progress = detector, step_optimizers, data, progress
        self.layout = tensor_layout(recipe)

    def train(self, epoch: int, start_step: int, partial: dict, stop: StopRequest,
              budget_spent: Callable[[float], bool]) -> tuple[EpochSums, bool]:
        """Run the epoch's steps from ``start_step``; returns its sums and whether a stop request cut it short.
        ``budget_spent(seconds)``: the time budget is spent once this epoch has taken ``seconds``."""
        batches, steps = self._my_batches(epoch, start_step)
        sums = EpochSums.resumed(partial)
        sums.next_step = start_step
        self.detector.train()
        self.progress.on_epoch_start(EpochStart(epoch, self.recipe.epochs, steps, start_step))
        try:
            stopped = self._steps(epoch, start_step, steps, batches, sums, stop, budget_spent)
        finally:
            self.progress.on_epoch_steps_end()
        if self.context.enabled and not stopped:
            self._average_over_processes(sums)
        return sums, stopped

    def _my_batches(self, epoch: int, start_step: int) -> tuple[list[list], int]:
        """This process's share of each of the epoch's batches from ``start_step`` on, and the epoch's step count."""
        recipe = self.recipe
        plan = plan_epoch(
            self.data.train_set.labels,
            self.data.train_weights,
            recipe.batch_size,
            epoch,
            recipe.seed,
            balanced=recipe.sampler == "balanced",
            num_batches=recipe.steps_per_epoch,
        )
        rank, world = self.context.rank, self.context.world_size
        if recipe.batch_size % world or recipe.batch_size // world < 2:
            raise TrainingError(
                f"batch_size: {recipe.batch_size} must split evenly over {world} processes, at least 2 faces each "
                "(batch normalisation needs 2)"
            )
        return [batch[rank::world] for batch in plan.batches][start_step:], len(plan)

    def _steps(self, epoch: int, step: int, steps: int, batches: list[list], sums: EpochSums, stop: StopRequest,
               budget_spent: Callable[[float], bool]) -> bool:
        """The optimisation steps, timed into ``sums``; returns True when a stop request ended them before the
        epoch's last."""
        recipe, world = self.recipe, self.context.world_size
        began = time.perf_counter()
        stopped = False
        for x, y in face_loader(self.data.train_set, batches, recipe, self.device):
            x = x.to(self.device, non_blocking=True, memory_format=self.layout)
            y = y.to(self.device, non_blocking=True)
            with autocast(self.device, self.autocast_dtype):
                out = self.detector.training_step(x, y, self.step_optimizers, progress=(epoch + step / steps) / recipe.epochs)
            loss = float(out.loss.detach())
            if not math.isfinite(loss):
                raise TrainingError(f"the loss became {loss} at epoch {epoch + 1}, step {step + 1}: lower optim.lr?")
            step += 1
            sums.next_step = step
            sums.add_step(loss, len(y) * world, out.terms)
            seconds = sums.seconds + time.perf_counter() - began
            rate = sums.faces / seconds if seconds > 0 else 0.0
            self.progress.on_step(StepDone(epoch, recipe.epochs, step, steps, sums.mean_loss(), rate))
            if any_process(self.context, stop.requested, self.device) and step < steps:
                stopped = True
                break
            if any_process(self.context, budget_spent(seconds), self.device):
                sums.cut_by_time = True  # this epoch ends here, is validated, and the run finishes
                break
        sums.seconds += time.perf_counter() - began
        return stopped

    def _average_over_processes(self, sums: EpochSums) -> None:
        """Every process ran the same number of steps on its share of each batch: report their mean loss."""
        parts = gather_objects({"loss": sums.loss, "terms": sums.terms}, self.context)
        sums.loss = sum(part["loss"] for part in parts) / len(parts)
        sums.terms = {key: sum(part["terms"].get(key, 0.0) for part in parts) / len(parts) for key in sums.terms}

    def validate(self) -> tuple[dict, float]:
        """The validation metrics (``validation.validation_metrics``, over every process's share) and the seconds
        they took."""
        began = time.perf_counter()
        metrics = self._validation_metrics()
        return metrics, time.perf_counter() - began

    @torch.no_grad()
    def _validation_metrics(self) -> dict:
        val_set = self.data.val_set
        if not len(val_set):
            return {}
        rank, world, size = self.context.rank, self.context.world_size, self.recipe.batch_size
        indices = list(range(rank, len(val_set), world))
        batches = [[(i, 0) for i in indices[k : k + size]] for k in range(0, len(indices), size)]
        self.detector.eval()
        found: list[tuple[int, float, float]] = []
        position = 0
        for x, y in face_loader(val_set, batches, self.recipe, self.device):
            with autocast(self.device, self.autocast_dtype):
                logits = self.detector(x.to(self.device, memory_format=self.layout)).float().cpu()
            for logit, label in zip(logits.tolist(), y.tolist()):
                found.append((indices[position], logit, label))
                position += 1
        merged = sorted(item for part in gather_objects(found, self.context) for item in part)
        logits = np.array([logit for _, logit, _ in merged], dtype=np.float64)
        labels = np.array([label for _, _, label in merged], dtype=np.float64)
        if not np.isfinite(logits).all():
            raise TrainingError("validation scores are not finite (training diverged?): lower optim.lr")
        return validation_metrics(logits, labels)

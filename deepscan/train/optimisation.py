"""How a detector's weights are moved: one optimiser and one learning-rate schedule per parameter group.

A detector names its parameter groups (``Detector.parameter_groups``; RALF has a generator and a discriminator);
each gets the recipe's ``optim``, changed by its ``optim_groups`` entry, and the recipe's ``schedule``. Under
torchrun the detector steps gradient-averaging wrappers of the optimisers (``AveragingOptimizer``), which keep
the replicas identical; the optimisers themselves are what checkpoints hold.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from deepscan.train.distributed import AveragingOptimizer, DistributedContext
from deepscan.train.errors import TrainingError
from deepscan.train.recipe import OptimizerSpec, Recipe, ScheduleSpec


def build_optimizer(params: list, spec: OptimizerSpec) -> torch.optim.Optimizer:
    if spec.name == "sgd":
        return torch.optim.SGD(params, lr=spec.lr, momentum=spec.momentum, weight_decay=spec.weight_decay,
                               nesterov=spec.nesterov and spec.momentum > 0)
    if spec.name == "adamw":
        return torch.optim.AdamW(params, lr=spec.lr, betas=spec.betas, weight_decay=spec.weight_decay)
    return torch.optim.Adam(params, lr=spec.lr, betas=spec.betas, weight_decay=spec.weight_decay)


def group_optimizer_spec(recipe: Recipe, group: str) -> OptimizerSpec:
    """The recipe's ``optim`` with the group's ``optim_groups`` entry laid over it (keys it leaves out stay)."""
    override = recipe.optim_groups.get(group)
    if override is None:
        return recipe.optim
    changes = {key: value for key, value in override.model_dump().items() if value is not None}
    return recipe.optim.model_copy(update=changes)


def build_scheduler(optimizer: torch.optim.Optimizer, spec: ScheduleSpec, epochs: int):
    if spec.name == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=epochs, eta_min=spec.min_lr)
    if spec.name == "step":
        return torch.optim.lr_scheduler.StepLR(optimizer, step_size=spec.step_epochs, gamma=spec.gamma)
    if spec.name == "plateau":
        return torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, mode="min", factor=spec.factor, patience=spec.patience)
    return None


@dataclass
class Optimisation:
    """The optimisers and schedulers of a run, by parameter group. ``step_optimizers`` are what the detector's
    ``training_step`` steps: the optimisers themselves, or under torchrun their gradient-averaging wrappers."""

    optimizers: dict[str, torch.optim.Optimizer]
    schedulers: dict[str, object]  # an LR scheduler, or None for a constant learning rate
    step_optimizers: dict[str, object]

    @classmethod
    def build(cls, detector: torch.nn.Module, recipe: Recipe, context: DistributedContext) -> "Optimisation":
        groups = detector.parameter_groups()
        unknown = sorted(set(recipe.optim_groups) - set(groups))
        if unknown:
            raise TrainingError(
                f"optim_groups.{unknown[0]}: detector {recipe.detector.name!r} has no parameter group "
                f"{unknown[0]!r} (it has: {', '.join(groups)})"
            )
        optimizers = {name: build_optimizer(params, group_optimizer_spec(recipe, name)) for name, params in groups.items()}
        schedulers = {name: build_scheduler(opt, recipe.schedule, recipe.epochs) for name, opt in optimizers.items()}
        if context.enabled:
            stepped = {name: AveragingOptimizer(opt, context.world_size) for name, opt in optimizers.items()}
        else:
            stepped = dict(optimizers)
        return cls(optimizers, schedulers, stepped)

    def end_epoch(self, val: dict) -> None:
        """Advance every schedule by one epoch; a plateau schedule reads the validation loss (and waits without
        validation data)."""
        for scheduler in self.schedulers.values():
            if isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
                if val:
                    scheduler.step(val["loss"])
            elif scheduler is not None:
                scheduler.step()

    def schedule_epochs(self) -> int | None:
        """The number of epochs a cosine schedule was planned for (kept from the checkpoint on ``--resume``, even
        when the recipe's ``epochs`` changed), else None: no other schedule depends on it."""
        for scheduler in self.schedulers.values():
            if isinstance(scheduler, torch.optim.lr_scheduler.CosineAnnealingLR):
                return int(scheduler.T_max)
        return None

    def learning_rates(self) -> dict[str, float]:
        """Each group's learning rate now (for the epoch's metrics)."""
        return {name: opt.param_groups[0]["lr"] for name, opt in self.optimizers.items()}

    def state_dicts(self) -> tuple[dict, dict]:
        """(optimiser states, scheduler states) by group, for a checkpoint."""
        return (
            {name: opt.state_dict() for name, opt in self.optimizers.items()},
            {name: s.state_dict() for name, s in self.schedulers.items() if s is not None},
        )

    def load_state_dicts(self, optimizers: dict, schedulers: dict) -> None:
        for name, optimizer in self.optimizers.items():
            optimizer.load_state_dict(optimizers[name])
        for name, scheduler in self.schedulers.items():
            if scheduler is not None:
                scheduler.load_state_dict(schedulers[name])

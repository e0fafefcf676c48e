"""One training loop for every registered detector, through the detector interface.

The detector supplies its loss and its optimisation step (``Detector.training_step``; RALF steps two
optimisers), its parameter groups (one optimiser each) and the constraint hook it re-applies after each step.
The run supplies the rest, each part in its own module: the detector and its starting weights, device and
bfloat16 autocast (``detector_setup``: on CUDA by default, on the CPU when asked, to rehearse a GPU run; the
frequency transforms stay float32), data and augmentation from the recipe (``data_preparation``), optimisers and
schedules per group (``optimisation``), the epoch's steps and validation with an optional time budget
(``epoch``, ``validation``: the best checkpoint is chosen on the validation split), checkpoints from which
``--resume`` continues exactly (``checkpoint``), metrics to ``metrics.jsonl`` and ``curves.png`` (``run_log``),
and the final weights as one file or as float16 shards (``weights_output``) with their model card (``card``).
This module drives them, epoch after epoch, and reports to the caller's ``TrainingProgress`` (``progress``).

Nothing is lost when training stops:
- after every epoch, ``checkpoint.pt`` (model, optimisers, schedulers, RNG states of every process, epoch and
  history) is written to a temporary file, flushed to disk and renamed over the old one;
- Ctrl-C (or SIGTERM) finishes the current step, writes a checkpoint at that step and exits; a second Ctrl-C
  stops at once. A crash loses at most the epoch in progress;
- the data order is planned from the seed (``datasets.plan_epoch``) and each sample is drawn from its own
  seed, so a resumed run continues with exactly the batches, augmentations and dropout masks that the
  uninterrupted run would have had, and ends with the same weights.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import torch

from deepscan.runtime import atomic_write, select_device
from deepscan.train import card
from deepscan.train.checkpoint import RESUMABLE_CHANGES, Checkpoints, RunPosition, check_run_folder
from deepscan.train.data_preparation import FacePreparation, TrainingData
from deepscan.train.detector_setup import (
    build_detector,
    prepare_training_only_networks,
    tensor_layout,
    training_autocast_dtype,
    training_device,
)
from deepscan.train.distributed import DistributedContext, any_process, average_buffers, barrier, check_replicas_agree
from deepscan.train.epoch import EpochRunner, EpochSums, StopRequest
from deepscan.train.errors import TrainingError, TrainingInterrupted
from deepscan.train.optimisation import Optimisation
from deepscan.train.progress import EpochSummary, TrainingProgress
from deepscan.train.recipe import Recipe, recipe_hash, recipe_to_dict
from deepscan.train.run_log import write_run_log
from deepscan.train.validation import selection_key, selection_value
from deepscan.train.weights_output import has_best, save_best, weights_metadata, write_final_weights


@dataclass
class TrainOptions:
    """How to run a recipe (what the recipe cannot say: where the run goes, whether it resumes, who is told)."""

    output: Path
    resume: bool = False
    prepare_only: bool = False
    recipe_origin: str = ""
    # Told what the run does (on the main process); the default shows nothing.
    progress: TrainingProgress = field(default_factory=TrainingProgress)
    # The final weights as float16 safetensors shards of at most this many MiB with their index
    # (``<name>.safetensors.index.json``, deepscan.weights.shards), for channels that cap file sizes; None: one file.
    shard_mib: float | None = None


@dataclass
class TrainResult:
    """What a run left: the final weights and model card (None on processes other than the main one, and with
    ``prepare_only``), the epochs completed, the best epoch, the history and the extraction counts."""

    weights: Path | None
    model_card: Path | None
    epochs_completed: int
    best: dict | None
    history: list[dict] = field(default_factory=list)
    extraction: dict = field(default_factory=dict)


class Trainer:
    """One run of a recipe: set up (fresh or from a checkpoint), train epoch after epoch, finish with the final
    weights and their card. ``prepare_data`` alone (with ``detector_config`` set) gives the run's datasets, as
    ``deepscan.train.shipping`` uses it."""

    def __init__(self, recipe: Recipe, options: TrainOptions, context: DistributedContext):
        self.recipe = recipe
        self.options = options
        self.context = context
        self.progress = options.progress if context.is_main else TrainingProgress()
        self.output = Path(options.output)
        self.device = training_device(recipe.device, context)
        self.recipe_sha256 = recipe_hash(recipe)
        self.checkpoints = Checkpoints(self.output, recipe_hash(recipe, ignore=RESUMABLE_CHANGES), context, self.device)
        self.checkpoint_path = self.checkpoints.path
        self.history: list[dict] = []
        self.best: dict | None = None
        self.elapsed_s = 0.0
        self.extraction: dict = {}
        self.warned: set[str] = set()
        self.precision = recipe.precision or ("auto" if recipe.amp else "fp32")
        self.autocast_dtype = training_autocast_dtype(self.precision, self.device)  # an impossible one fails here
        self.out_of_time = False

    def warn_once(self, key: str, message: str) -> None:
        if key not in self.warned:
            self.warned.add(key)
            self.progress.on_warning(message)

    # --- setup ----------------------------------------------------------------------------------------------
    def prepare_data(self) -> None:
        """Extract the faces into the cache; unless ``prepare_only``, build the datasets (``train_set``,
        ``val_set``, ...). Needs ``detector_config`` (for the default input size)."""
        self.input_size = self.recipe.input_size or self.detector_config.input_size
        preparation = FacePreparation(self.recipe, self.input_size, self.context, self.progress)
        self.extraction = preparation.extract()
        if self.options.prepare_only:
            return
        self.data: TrainingData = preparation.datasets()
        self.train_set, self.val_set = self.data.train_set, self.data.val_set
        self.summaries, self.val_split = self.data.summaries, self.data.val_split

    def setup_model(self) -> None:
        from deepscan.detectors import get_config

        torch.manual_seed(self.recipe.seed)  # the same initial weights on every process
        self.detector, self.start = build_detector(self.recipe)  # first: it names an unknown detector in one line
        self.detector_config = get_config(self.recipe.detector.name)
        prepare_training_only_networks(self.detector, self.recipe, self.options.recipe_origin, self.start)
        self.detector.to(self.device, memory_format=tensor_layout(self.recipe))
        if self.device.type == "cuda":
            # Training batches keep one shape, so cuDNN's search for the fastest convolution of each shape pays for
            # itself within the first steps.
            torch.backends.cudnn.benchmark = True
        self.optimisation = Optimisation.build(self.detector, self.recipe, self.context)
        # Different dropout masks per process from here on (the data differs too).
        torch.manual_seed(self.recipe.seed * 1000 + self.context.rank + 1)

    def _start(self) -> RunPosition:
        """Set the run up, fresh or resumed; returns where its training begins."""
        if self.context.is_main:
            check_run_folder(self.output, self.options.resume)
        barrier(self.context)
        self.setup_model()
        self.prepare_data()
        self.output.mkdir(parents=True, exist_ok=True)
        if not self.options.resume:
            if self.context.is_main:
                atomic_write(self.output / "recipe.json", json.dumps(recipe_to_dict(self.recipe), indent=2))
            return RunPosition()
        position = self.checkpoints.load(self.detector, self.optimisation)
        self.history, self.best, self.elapsed_s = position.history, position.best, position.elapsed_s
        self.progress.on_message(
            f"resuming at epoch {position.epoch + 1}, step {position.step} from {self.checkpoint_path}"
        )
        planned = self.optimisation.schedule_epochs()
        if planned is not None and planned != self.recipe.epochs:
            self.progress.on_message(
                f"epochs is {self.recipe.epochs} now, but the cosine schedule was planned for {planned} and keeps "
                "that plan (the model card records both)"
            )
        return position

    def save_checkpoint(self, epoch: int, step: int, partial: dict | None) -> None:
        """Position ``epoch``/``step``: the next step to run. Written by rank 0, atomically."""
        position = RunPosition(epoch, step, partial or {}, self.history, self.best, self.elapsed_s)
        self.checkpoints.save(self.detector, self.optimisation, position)

    def _time_spent(self, epoch_seconds: float) -> bool:
        """The recipe's time budget is spent (training and validation so far, this epoch's ``epoch_seconds`` too)."""
        budget = self.recipe.max_minutes
        return budget is not None and self.elapsed_s + epoch_seconds >= 60.0 * budget

    # --- the run --------------------------------------------------------------------------------------------
    def run(self) -> TrainResult:
        started_at = datetime.now(timezone.utc)
        if self.options.prepare_only:
            return self._prepare_only()
        position = self._start()
        epochs = EpochRunner(self.recipe, self.context, self.device, self.autocast_dtype, self.detector,
                             self.optimisation.step_optimizers, self.data, self.progress)
        epoch = self._train_epochs(epochs, position)
        check_replicas_agree(self.detector, self.context)
        weights, card_path = self.finish(started_at)
        return TrainResult(weights, card_path, epoch, self.best, self.history, self.extraction)

    def _prepare_only(self) -> TrainResult:
        from deepscan.detectors import UnknownDetectorError, get_config

        try:
            self.detector_config = get_config(self.recipe.detector.name)
        except UnknownDetectorError as error:
            raise TrainingError(f"detector.name: {error}") from None
        self.prepare_data()
        return TrainResult(None, None, 0, None, extraction=self.extraction)

    def _train_epochs(self, epochs: EpochRunner, position: RunPosition) -> int:
        """Train from ``position`` until the last epoch, the time budget or a stop request; returns the number of
        epochs completed. Raises TrainingInterrupted after writing the checkpoint a stop request asks for."""
        recipe, context, device = self.recipe, self.context, self.device
        epoch, step, partial = position.epoch, position.step, position.partial
        with StopRequest() as stop:
            while epoch < recipe.epochs:
                if self.history and any_process(context, self._time_spent(0.0), device):
                    self.out_of_time = True  # resumed with its time budget already spent: nothing more to train
                    break
                sums, stopped = epochs.train(epoch, step, partial, stop, self._time_spent)
                if stopped:
                    # The partial sums (time included) carry over, and count when the epoch completes.
                    self.save_checkpoint(epoch, sums.next_step, sums.partial())
                    raise TrainingInterrupted(self.checkpoint_path, epoch, sums.next_step)
                self._complete_epoch(epochs, epoch, sums)
                epoch, step, partial = epoch + 1, 0, {}
                if any_process(context, stop.requested, device) and epoch < recipe.epochs:
                    raise TrainingInterrupted(self.checkpoint_path, epoch, 0)
                if self.out_of_time or any_process(context, self._time_spent(0.0), device):
                    self.out_of_time = True
                    if epoch < recipe.epochs:
                        self.progress.on_message(f"time budget of {recipe.max_minutes:g} min spent after {epoch} "
                                                 "epochs: finishing with the best weights so far")
                    break
        return epoch

    def _complete_epoch(self, epochs: EpochRunner, epoch: int, sums: EpochSums) -> None:
        """Validate the trained epoch, keep its weights if they are the best, and write its checkpoint and log."""
        self.out_of_time = self.out_of_time or sums.cut_by_time
        average_buffers(self.detector, self.context)
        val, val_seconds = epochs.validate()
        self.optimisation.end_epoch(val)
        self.elapsed_s += sums.seconds + val_seconds
        entry = self._history_entry(epoch, sums, val, val_seconds)
        improved = self._keep_if_best(epoch, val)
        entry["best"] = improved
        self.history.append(entry)
        self.save_checkpoint(epoch + 1, 0, None)
        if self.context.is_main:
            write_run_log(self.history, self.output)
            self.progress.on_epoch_end(EpochSummary(epoch, self.recipe.epochs, entry["train"]["loss"], val,
                                                    sums.seconds, val_seconds, improved))

    def _history_entry(self, epoch: int, sums: EpochSums, val: dict, val_seconds: float) -> dict:
        """The epoch's line of ``metrics.jsonl`` (``best`` is added once selection has run)."""
        entry = {
            "epoch": epoch + 1,
            "train": {
                "loss": sums.mean_loss(),
                "terms": sums.mean_terms(),
                "steps": sums.steps,
                "faces": sums.faces,
                "seconds": sums.seconds,
                "faces_per_s": sums.faces / sums.seconds if sums.seconds > 0 else None,
            },
            "val": val,
            "val_seconds": val_seconds,
            "lr": self.optimisation.learning_rates(),
        }
        if self.out_of_time:
            entry["cut_by_time_budget"] = True
        return entry

    def _keep_if_best(self, epoch: int, val: dict) -> bool:
        """Whether the epoch is the best so far on the recipe's ``select_on``; its weights are saved if so."""
        key = selection_key(val, self.recipe.select_on)
        if key != self.recipe.select_on:
            self.warn_once("auc", "validation holds only one class, so AUC is undefined: choosing on validation loss")
        value = selection_value(val, key)
        improved = value is not None and (self.best is None or value > self.best["value"])
        if not improved:
            return False
        self.best = {"epoch": epoch + 1, "value": value, "val": val}
        if self.context.is_main:
            save_best(self.detector, self.output, self._weights_metadata(epoch))  # atomically
        return True

    def _weights_metadata(self, epoch: int) -> dict[str, str]:
        return weights_metadata(self.recipe, self.input_size, epoch, self.recipe_sha256)

    def finish(self, started_at: datetime) -> tuple[Path | None, Path | None]:
        """Write the final weights and their model card (main process); returns their paths."""
        if not self.context.is_main:
            return None, None
        recipe, name = self.recipe, self.recipe.detector.name
        from_best = has_best(self.output, self.best)
        weights, weights_section = write_final_weights(
            self.detector, self.output, name, from_best, self.options.shard_mib,
            self._weights_metadata(len(self.history) - 1),
        )
        sections = {
            "detector": card.detector_section(recipe, self.detector_config, self.input_size,
                                              self.detector.count_parameters()),
            "weights": weights_section,
            "start": self.start,
            "recipe": card.recipe_section(recipe, self.recipe_sha256, self.options.recipe_origin),
            "data": card.data_section(recipe, self.data),
            "validation": card.validation_section(self.best, from_best, recipe.select_on, len(self.history)),
            "training": card.training_section(
                self.history, self.elapsed_s, world_size=self.context.world_size, device=self.device,
                precision=self.precision, autocast_dtype=self.autocast_dtype, max_minutes=recipe.max_minutes,
                out_of_time=self.out_of_time, started_at=started_at,
                schedule_epochs=self.optimisation.schedule_epochs(),
            ),
            "software": card.software_section(),
        }
        return weights, card.write_card(self.output, name, sections)


def train(recipe: Recipe, options: TrainOptions, context: DistributedContext | None = None) -> TrainResult:
    """Run (or resume) a training run; see the module docstring. Raises TrainingInterrupted after Ctrl-C."""
    from deepscan.train.distributed import init_distributed

    if context is None:
        context = init_distributed(select_device(recipe.device, setting="device:"))
    return Trainer(recipe, options, context).run()

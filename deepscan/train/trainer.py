"""One training loop for every registered detector, through the detector interface.

The detector supplies its loss and its optimisation step (``Detector.training_step``; RALF steps two
optimisers), its parameter groups (one optimiser each) and the constraint hook it re-applies after each step.
The loop supplies the rest: data and augmentation from the recipe, optimisers and schedules per group, bfloat16
autocast (``precision``: on CUDA by default, on the CPU when asked, to rehearse a GPU run; the frequency
transforms stay float32), an optional time budget (``max_minutes``), validation each epoch with the best
checkpoint chosen on the validation split, metrics to ``metrics.jsonl`` and ``curves.png``, checkpoints from
which ``--resume`` continues exactly, and the final weights as one file or as float16 shards (``shard_mib``).

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

import contextlib
import json
import math
import platform
import shutil
import signal
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from deepscan.errors import DeepscanError
from deepscan.runtime import atomic_write, select_device, sha256_file
from deepscan.data.sources import DataError
from deepscan.train.datasets import (
    FaceDataset,
    collect_faces,
    extract_faces,
    list_sources,
    make_entries,
    plan_epoch,
)
from deepscan.train.distributed import (
    AveragingOptimizer,
    DistributedContext,
    any_process,
    average_buffers,
    barrier,
    check_replicas_agree,
    gather_objects,
)
from deepscan.train.recipe import OptimizerSpec, Recipe, ScheduleSpec, recipe_hash, recipe_to_dict

CHECKPOINT_NAME = "checkpoint.pt"
CHECKPOINT_FORMAT = "deepscan.train-checkpoint"
BEST_WEIGHTS_NAME = "best.safetensors"
MODEL_CARD_SCHEMA = "deepscan.model-card"
# Keys that may change between a run and its resumption without changing what it computes (epochs may grow, and
# so may the time budget).
RESUMABLE_CHANGES = ("epochs", "num_workers", "device", "max_minutes")
# Detector kwargs that say where starting weights come from, not what the network is; RALF's perceptual network
# (eq. 6) is training-only and never part of the saved weights.
_LOADING_KWARGS = ("pretrained", "pretrained_path", "checkpoint_path", "perceptual", "perceptual_path")


class TrainingError(DeepscanError):
    """A problem the user can fix; one line."""


class TrainingInterrupted(Exception):
    """Training stopped on request after writing a checkpoint; ``--resume`` continues it."""

    def __init__(self, checkpoint: Path, epoch: int, step: int):
        super().__init__(f"interrupted at epoch {epoch + 1}, step {step}: checkpoint written to {checkpoint}")
        self.checkpoint, self.epoch, self.step = checkpoint, epoch, step


@dataclass
class TrainOptions:
    output: Path
    resume: bool = False
    prepare_only: bool = False
    recipe_origin: str = ""
    console: object | None = None  # a rich Console (stderr); None: quiet
    # Called after every optimisation step with (epoch, step in epoch); tests use it to interrupt a run.
    on_step: Callable[[int, int], None] | None = None
    log_every: int = 0  # plain progress line every N steps when the console is not a terminal (0: 5 per epoch)
    # The final weights as float16 safetensors shards of at most this many MiB with their index
    # (``<name>.safetensors.index.json``, deepscan.weight_shards), for channels that cap file sizes; None: one file.
    shard_mib: float | None = None


@dataclass
class TrainResult:
    weights: Path | None
    model_card: Path | None
    epochs_completed: int
    best: dict | None
    history: list[dict] = field(default_factory=list)
    extraction: dict = field(default_factory=dict)


# --- building blocks ----------------------------------------------------------------------------------------


def training_device(requested: str, context: DistributedContext) -> torch.device:
    """The recipe's ``device`` (:func:`deepscan.runtime.select_device`); under torchrun, this process's GPU."""
    kind = select_device(requested, setting="device:")
    if kind == "cuda" and context.enabled:
        torch.cuda.set_device(context.local_rank)
        return torch.device("cuda", context.local_rank)
    return torch.device(kind)


def training_autocast_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    """What the recipe's ``precision`` autocasts to on ``device`` (None: float32). ``auto``: bfloat16 on a CUDA GPU
    that supports it; ``bf16``: bfloat16 on any device (on the CPU, to rehearse a GPU run's numerics)."""
    if precision == "fp32":
        return None
    if device.type == "cuda" and not torch.cuda.is_bf16_supported():
        if precision == "bf16":
            raise TrainingError("precision: bf16 asked for, but this GPU does not support bfloat16 (use fp32)")
        return None
    return torch.bfloat16 if precision == "bf16" or device.type == "cuda" else None


def architecture_kwargs(kwargs: dict) -> dict:
    """The detector kwargs that shape the network (what is needed to rebuild it for the saved weights)."""
    return {key: value for key, value in kwargs.items() if key not in _LOADING_KWARGS}


def build_detector(recipe: Recipe) -> tuple[torch.nn.Module, dict]:
    """The detector with its starting weights: random, pretrained trunk(s), then ``init`` (whole detector)."""
    from deepscan.detectors import UnknownDetectorError, create_detector, get_config
    from deepscan.detectors.pretrained import apply_pretrained
    from deepscan.weights import WeightsError, load_weights, resolve_weights

    try:
        config = get_config(recipe.detector.name)
    except UnknownDetectorError as error:
        raise TrainingError(f"detector.name: {error}") from None
    try:
        detector = create_detector(recipe.detector.name, **recipe.detector.kwargs)
    except TypeError as error:
        raise TrainingError(f"detector.kwargs: {error}") from None
    except (OSError, RuntimeError) as error:
        if not recipe.detector.kwargs.get("pretrained"):
            raise
        # timm fetches ImageNet weights from the Hugging Face hub; offline or unreachable, that fails.
        raise TrainingError(
            f"detector.kwargs.pretrained: the backbone's ImageNet weights could not be fetched ({type(error).__name__}); "
            "set pretrained: false, or start from a local checkpoint with a `pretrained:` section"
        ) from None
    start: dict = {"pretrained": None, "init": None}
    if recipe.pretrained is not None:
        start["pretrained"] = apply_pretrained(detector, recipe.pretrained)
    if recipe.init is not None:
        try:
            if recipe.init == "shipped":
                resolved = resolve_weights(config.weights)
                if not resolved.trained:
                    raise TrainingError(f"init: detector {config.name!r} ships no weights to start from")
            else:
                resolved = resolve_weights(None, recipe.init)
            load_weights(detector, resolved)
        except WeightsError as error:
            raise TrainingError(f"init: {error}") from None
        start["init"] = {"spec": recipe.init, "source": resolved.source, "sha256": resolved.sha256}
    return detector, start


def build_optimizer(params: list, spec: OptimizerSpec) -> torch.optim.Optimizer:
    if spec.name == "sgd":
        return torch.optim.SGD(params, lr=spec.lr, momentum=spec.momentum, weight_decay=spec.weight_decay,
                               nesterov=spec.nesterov and spec.momentum > 0)
    if spec.name == "adamw":
        return torch.optim.AdamW(params, lr=spec.lr, betas=spec.betas, weight_decay=spec.weight_decay)
    return torch.optim.Adam(params, lr=spec.lr, betas=spec.betas, weight_decay=spec.weight_decay)


def group_optimizer_spec(recipe: Recipe, group: str) -> OptimizerSpec:
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


def validation_metrics(logits: np.ndarray, labels: np.ndarray) -> dict:
    from scipy.special import expit
    from sklearn.metrics import roc_auc_score

    if not len(labels):
        return {}
    probabilities = expit(logits)
    # Binary cross-entropy on logits, written stably.
    loss = float(np.mean(np.maximum(logits, 0) - logits * labels + np.log1p(np.exp(-np.abs(logits)))))
    predicted = probabilities >= 0.5
    metrics = {
        "loss": loss,
        "acc": float(np.mean(predicted == labels.astype(bool))),
        "faces": int(len(labels)),
        "real_faces": int(np.sum(labels == 0)),
        "fake_faces": int(np.sum(labels == 1)),
    }
    if metrics["real_faces"]:
        metrics["real_acc"] = float(np.mean(~predicted[labels == 0]))
    if metrics["fake_faces"]:
        metrics["fake_acc"] = float(np.mean(predicted[labels == 1]))
    metrics["auc"] = float(roc_auc_score(labels, probabilities)) if metrics["real_faces"] and metrics["fake_faces"] else None
    return metrics


def _ignore_interrupts_in_worker(_worker_id: int) -> None:
    # Ctrl-C reaches the whole process group: workers ignore it and the main process stops at a step boundary.
    signal.signal(signal.SIGINT, signal.SIG_IGN)


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


def save_curves(history: list[dict], path: Path) -> None:
    """Training and validation loss, and validation AUC and accuracy, per epoch."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    epochs = [entry["epoch"] for entry in history]
    figure = Figure(figsize=(10, 4), dpi=100)
    FigureCanvasAgg(figure)
    losses, scores = figure.subplots(1, 2)
    losses.plot(epochs, [entry["train"]["loss"] for entry in history], "o-", label="train loss")
    val_loss = [entry["val"].get("loss", np.nan) for entry in history]
    if np.isfinite(val_loss).any():
        losses.plot(epochs, val_loss, "o-", label="val BCE")
    losses.set_xlabel("epoch")
    losses.set_title("loss")
    losses.legend()
    for key, label in (("auc", "val AUC"), ("acc", "val accuracy"), ("real_acc", "val real accuracy")):
        values = [entry["val"].get(key) for entry in history]
        if any(value is not None for value in values):
            scores.plot(epochs, [np.nan if value is None else value for value in values], "o-", label=label)
    scores.set_ylim(0.0, 1.02)
    scores.set_xlabel("epoch")
    scores.set_title("validation")
    if scores.lines:
        scores.legend(loc="lower right")
    figure.tight_layout()
    atomic_write(path, lambda handle: figure.savefig(handle, format="png"))


# --- the trainer --------------------------------------------------------------------------------------------


class Trainer:
    def __init__(self, recipe: Recipe, options: TrainOptions, context: DistributedContext):
        self.recipe = recipe
        self.options = options
        self.context = context
        self.console = options.console if context.is_main else None
        self.output = Path(options.output)
        self.checkpoint_path = self.output / CHECKPOINT_NAME
        self.device = training_device(recipe.device, context)
        self.recipe_sha256 = recipe_hash(recipe)
        self.resume_sha256 = recipe_hash(recipe, ignore=RESUMABLE_CHANGES)
        self.history: list[dict] = []
        self.best: dict | None = None
        self.elapsed_s = 0.0
        self.extraction: dict = {}
        self.warned: set[str] = set()
        self.precision = recipe.precision or ("auto" if recipe.amp else "fp32")
        self.autocast_dtype = training_autocast_dtype(self.precision, self.device)  # an impossible one fails here
        self.out_of_time = False

    # --- output ---------------------------------------------------------------------------------------------
    def say(self, message: str) -> None:
        if self.console is not None:
            self.console.print(message, highlight=False)

    def warn_once(self, key: str, message: str) -> None:
        if key not in self.warned:
            self.warned.add(key)
            self.say(f"[yellow]warning:[/] {message}")

    # --- setup ----------------------------------------------------------------------------------------------
    def check_output(self) -> None:
        if self.checkpoint_path.exists() and not self.options.resume:
            raise TrainingError(
                f"{self.output}: already holds a training run; pass --resume to continue it, or choose another --output"
            )
        if self.options.resume and not self.checkpoint_path.exists():
            raise TrainingError(f"--resume: no {CHECKPOINT_NAME} in {self.output} to resume from")

    def prepare_data(self) -> None:
        from deepscan.data.face_cache import ExtractionParams, FaceCache
        from deepscan.data.framing import extraction_params
        from deepscan.train.augment import FaceAugmenter

        recipe, spec = self.recipe, self.recipe.data
        self.input_size = recipe.input_size or self.detector_config.input_size

        def params_for(item) -> ExtractionParams:
            return extraction_params(
                item,
                input_size=self.input_size,
                margin=spec.face.margin,
                cache_margin=spec.face.cache_margin,
                frames_per_video=spec.face.frames_per_video,
                faces_per_frame=spec.face.faces_per_frame,
                min_score=spec.face.min_score,
            )

        cache = FaceCache(spec.face.cache_dir)
        listed = list_sources(spec)
        with self._progress_bar("extracting faces") as progress:
            self.extraction = extract_faces(listed, params_for, cache, (self.context.rank, self.context.world_size), progress)
        barrier(self.context)
        if self.context.enabled:
            totals = gather_objects(self.extraction, self.context)
            self.extraction = {key: sum(part[key] for part in totals) for key in totals[0]}
        bundled = sum(item.kind == "face" for part in listed.values() for _, items in part for item in items)
        media = self.extraction["extracted"] + self.extraction["reused"] + self.extraction["failed"]
        if media or not bundled:
            self.say(
                f"faces: {self.extraction['faces']} from {self.extraction['extracted'] + self.extraction['reused']} "
                f"files ({self.extraction['reused']} from the cache {cache.root}, {self.extraction['failed']} "
                f"unreadable, {self.extraction['faceless']} without a face)"
            )
        if bundled:
            self.say(f"faces: {bundled} from face bundles (extracted already)")
        if self.options.prepare_only:
            return
        prepared = collect_faces(listed, spec, params_for, cache, recipe.seed)
        self.summaries = prepared.summaries
        sbi_ratio = spec.sbi.ratio if spec.sbi is not None and spec.sbi.enabled else None
        sbi_spec = spec.sbi if sbi_ratio else None
        try:
            augmenter = FaceAugmenter(recipe.augment, self.input_size, spec.face.margin, spec.face.cache_margin)
        except ValueError as error:
            raise TrainingError(str(error)) from None
        train_entries = make_entries(prepared.train_faces, sbi_ratio, recipe.seed)
        val_entries = make_entries(prepared.val_faces, 1.0 if sbi_ratio else None, recipe.seed + 1)
        self.train_set = FaceDataset(prepared.train_faces, train_entries, augmenter, sbi_spec, train=True, seed=recipe.seed)
        self.val_set = FaceDataset(prepared.val_faces, val_entries, augmenter, sbi_spec, train=False, seed=recipe.seed)
        face_weights = prepared.train_weights
        self.train_weights = [face_weights[entry.face] for entry in train_entries]
        labels = self.train_set.labels
        if not labels:
            raise DataError("no training face: no face was found in the training data")
        if len(set(labels)) < 2:
            kind = "fake" if labels[0] == 0 else "real"
            raise DataError(f"the training data holds no {kind} face (real-only data needs data.sbi for pseudo-fakes)")
        self.val_split = "recipe val sources" if spec.val else f"{spec.val_fraction:.0%} of the training groups, held out"
        val_labels = self.val_set.labels
        self.say(
            f"training: {labels.count(0)} real, {labels.count(1)} fake "
            f"({sum(e.pseudo_fake for e in train_entries)} SBI) | validation: {val_labels.count(0)} real, "
            f"{val_labels.count(1)} fake ({self.val_split})"
        )
        if not val_labels:
            self.warn_once("no-val", "no validation faces: the last epoch's weights are kept (no best-model selection)")

    def setup_model(self) -> None:
        from deepscan.detectors import get_config

        torch.manual_seed(self.recipe.seed)  # the same initial weights on every process
        self.detector, self.start = build_detector(self.recipe)  # first: it names an unknown detector in one line
        self.detector_config = get_config(self.recipe.detector.name)
        self.prepare_training_only_networks()
        self.detector.to(self.device)
        groups = self.detector.parameter_groups()
        unknown = sorted(set(self.recipe.optim_groups) - set(groups))
        if unknown:
            raise TrainingError(
                f"optim_groups.{unknown[0]}: detector {self.recipe.detector.name!r} has no parameter group "
                f"{unknown[0]!r} (it has: {', '.join(groups)})"
            )
        self.optimizers = {name: build_optimizer(params, group_optimizer_spec(self.recipe, name)) for name, params in groups.items()}
        self.schedulers = {name: build_scheduler(opt, self.recipe.schedule, self.recipe.epochs) for name, opt in self.optimizers.items()}
        if self.context.enabled:
            self.step_optimizers = {name: AveragingOptimizer(opt, self.context.world_size) for name, opt in self.optimizers.items()}
        else:
            self.step_optimizers = dict(self.optimizers)
        # Different dropout masks per process from here on (the data differs too).
        torch.manual_seed(self.recipe.seed * 1000 + self.context.rank + 1)

    def prepare_training_only_networks(self) -> None:
        """Frozen networks a detector's loss needs besides its weights (RALF: the perceptual network of eq. 6).

        They are not in the checkpoint, so they are built here, at setup, from the run's seed (before --resume
        restores any RNG state; the detector builds them without drawing from the global RNG): a resumed run gets
        the very network the uninterrupted one had. Missing ImageNet weights stop the run here, in one line,
        rather than at the first step.
        """
        prepare = getattr(self.detector, "prepare_training", None)
        if prepare is None:
            return
        origin = Path(self.options.recipe_origin) if self.options.recipe_origin else None
        base_dir = origin.resolve().parent if origin is not None and origin.is_file() else None  # recipe-relative paths
        try:
            self.start["perceptual"] = prepare(seed=self.recipe.seed, base_dir=base_dir)
        except ValueError as error:
            raise TrainingError(f"detector.kwargs.perceptual: {error}") from None

    # --- checkpoints ----------------------------------------------------------------------------------------
    def rng_states(self) -> dict:
        states = {"torch": torch.get_rng_state()}
        if self.device.type == "cuda":
            states["cuda"] = torch.cuda.get_rng_state(self.device)
        return states

    def save_checkpoint(self, epoch: int, step: int, partial: dict | None) -> None:
        """Position ``epoch``/``step``: the next step to run. Written by rank 0, atomically."""
        average_buffers(self.detector, self.context)
        rng = gather_objects(self.rng_states(), self.context)
        if not self.context.is_main:
            return
        state = {
            "format": CHECKPOINT_FORMAT,
            "version": 1,
            "recipe_sha256": self.resume_sha256,
            "epoch": epoch,
            "step": step,
            "world_size": self.context.world_size,
            "model": {name: tensor.detach().cpu() for name, tensor in self.detector.state_dict().items()},
            "optimizers": {name: opt.state_dict() for name, opt in self.optimizers.items()},
            "schedulers": {name: s.state_dict() for name, s in self.schedulers.items() if s is not None},
            "rng": rng,
            "partial_epoch": partial or {},
            "history": json.dumps(self.history),
            "best": json.dumps(self.best),
            "elapsed_s": self.elapsed_s,
        }
        atomic_write(self.checkpoint_path, lambda handle: torch.save(state, handle))

    def load_checkpoint(self) -> tuple[int, int, dict]:
        try:
            state = torch.load(self.checkpoint_path, map_location="cpu", weights_only=True)
        except Exception as error:  # noqa: BLE001 - a damaged checkpoint is one problem for the user
            raise TrainingError(f"{self.checkpoint_path}: unreadable checkpoint ({type(error).__name__})") from None
        if state.get("format") != CHECKPOINT_FORMAT:
            raise TrainingError(f"{self.checkpoint_path}: not a deepscan training checkpoint")
        if state["recipe_sha256"] != self.resume_sha256:
            raise TrainingError(
                f"--resume: the recipe differs from the one this run started with (only {', '.join(RESUMABLE_CHANGES)} "
                "may change); use another --output for a new run"
            )
        if state["world_size"] != self.context.world_size:
            raise TrainingError(
                f"--resume: the run used {state['world_size']} processes, this one {self.context.world_size}; "
                "resume with the same number to continue exactly"
            )
        self.detector.load_state_dict(state["model"])
        for name, optimizer in self.optimizers.items():
            optimizer.load_state_dict(state["optimizers"][name])
        for name, scheduler in self.schedulers.items():
            if scheduler is not None:
                scheduler.load_state_dict(state["schedulers"][name])
        own = state["rng"][self.context.rank]
        torch.set_rng_state(own["torch"])
        if "cuda" in own and self.device.type == "cuda":
            torch.cuda.set_rng_state(own["cuda"], self.device)
        self.history = json.loads(state["history"])
        self.best = json.loads(state["best"])
        self.elapsed_s = float(state["elapsed_s"])
        return int(state["epoch"]), int(state["step"]), dict(state["partial_epoch"])

    # --- loops ----------------------------------------------------------------------------------------------
    @contextlib.contextmanager
    def _progress_bar(self, description: str):
        """Yields ``start(total) -> tick(**fields)``; a rich bar on a terminal, nothing otherwise."""
        console = self.console
        if console is None or not getattr(console, "is_terminal", False):
            yield None
            return
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        with Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[info]}"),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=console,
            transient=True,
        ) as progress:

            def start(total: int):
                task = progress.add_task(description, total=total, info="")

                def tick(**fields):
                    progress.update(task, advance=1, info=fields.get("info", ""))

                return tick

            yield start

    def _loader(self, dataset, batches: list[list]):
        from torch.utils.data import DataLoader

        workers = self.recipe.num_workers
        return DataLoader(
            dataset,
            batch_sampler=batches,
            num_workers=workers,
            worker_init_fn=_ignore_interrupts_in_worker if workers else None,
            # A private generator: the DataLoader must not draw from the global RNG that dropout uses.
            generator=torch.Generator().manual_seed(self.recipe.seed),
            pin_memory=self.device.type == "cuda",
        )

    def _autocast(self):
        if self.autocast_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.autocast_dtype)

    def _time_spent(self, epoch_seconds: float) -> bool:
        """The recipe's time budget is spent (training and validation so far, this epoch's ``epoch_seconds`` too)."""
        budget = self.recipe.max_minutes
        return budget is not None and self.elapsed_s + epoch_seconds >= 60.0 * budget

    def train_epoch(self, epoch: int, start_step: int, partial: dict, stop: StopRequest) -> tuple[dict, bool]:
        recipe = self.recipe
        plan = plan_epoch(
            self.train_set.labels,
            self.train_weights,
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
        steps = len(plan)
        mine = [batch[rank::world] for batch in plan.batches][start_step:]
        sums = {"loss": 0.0, "steps": 0, "faces": 0, "seconds": 0.0, "terms": {}}
        sums.update(partial)
        sums["terms"] = dict(sums.get("terms", {}))
        self.detector.train()
        log_every = self.options.log_every or max(1, steps // 5)
        stopped = False
        with self._progress_bar(f"epoch {epoch + 1}/{recipe.epochs}") as progress:
            tick = progress(steps) if progress else None
            if tick:
                for _ in range(start_step):
                    tick()
            began = time.perf_counter()
            step = start_step
            for x, y in self._loader(self.train_set, mine):
                x = x.to(self.device, non_blocking=True)
                y = y.to(self.device, non_blocking=True)
                with self._autocast():
                    out = self.detector.training_step(x, y, self.step_optimizers, progress=(epoch + step / steps) / recipe.epochs)
                loss = float(out.loss.detach())
                if not math.isfinite(loss):
                    raise TrainingError(f"the loss became {loss} at epoch {epoch + 1}, step {step + 1}: lower optim.lr?")
                step += 1
                sums["loss"] += loss
                sums["steps"] += 1
                sums["faces"] += len(y) * world
                for key, value in out.terms.items():
                    sums["terms"][key] = sums["terms"].get(key, 0.0) + float(value)
                seconds = sums["seconds"] + time.perf_counter() - began
                rate = sums["faces"] / seconds if seconds > 0 else 0.0
                speed = f"{rate:.1f} faces/s" if rate >= 1 else f"{1 / rate:.1f} s/face" if rate > 0 else ""
                info = f"loss {sums['loss'] / sums['steps']:.4f} | {speed}"
                if tick:
                    tick(info=info)
                elif self.console is not None and (step % log_every == 0 or step == steps):
                    self.say(f"epoch {epoch + 1}/{recipe.epochs} step {step}/{steps} {info}")
                if self.options.on_step is not None:
                    self.options.on_step(epoch, step)
                if any_process(self.context, stop.requested, self.device) and step < steps:
                    stopped = True
                    break
                if any_process(self.context, self._time_spent(seconds), self.device):
                    self.out_of_time = True  # this epoch ends here, is validated, and the run finishes
                    break
            sums["seconds"] += time.perf_counter() - began
        sums["next_step"] = step
        if self.context.enabled and not stopped:
            # Every process ran the same number of steps on its share of each batch: report their mean loss.
            parts = gather_objects({"loss": sums["loss"], "terms": sums["terms"]}, self.context)
            sums["loss"] = sum(part["loss"] for part in parts) / len(parts)
            sums["terms"] = {key: sum(part["terms"].get(key, 0.0) for part in parts) / len(parts) for key in sums["terms"]}
        return sums, stopped

    @torch.no_grad()
    def validate(self) -> dict:
        if not len(self.val_set):
            return {}
        rank, world = self.context.rank, self.context.world_size
        indices = list(range(rank, len(self.val_set), world))
        batches = [[(i, 0) for i in indices[k : k + self.recipe.batch_size]] for k in range(0, len(indices), self.recipe.batch_size)]
        self.detector.eval()
        found: list[tuple[int, float, float]] = []
        position = 0
        for x, y in self._loader(self.val_set, batches):
            with self._autocast():
                logits = self.detector(x.to(self.device)).float().cpu()
            for logit, label in zip(logits.tolist(), y.tolist()):
                found.append((indices[position], logit, label))
                position += 1
        merged = sorted(item for part in gather_objects(found, self.context) for item in part)
        logits = np.array([logit for _, logit, _ in merged], dtype=np.float64)
        labels = np.array([label for _, _, label in merged], dtype=np.float64)
        if not np.isfinite(logits).all():
            raise TrainingError("validation scores are not finite (training diverged?): lower optim.lr")
        return validation_metrics(logits, labels)

    def _selection_value(self, val: dict) -> float | None:
        key = self.recipe.select_on
        if key == "val_auc" and val.get("auc") is None and val:
            self.warn_once("auc", "validation holds only one class, so AUC is undefined: choosing on validation loss")
            key = "val_loss"
        value = val.get(key.removeprefix("val_"))
        if value is None:
            return None
        return -value if key == "val_loss" else value

    def save_best(self, epoch: int, val: dict) -> None:
        if not self.context.is_main:
            return
        from deepscan.weights import save_weights

        save_weights(self.detector, self.output / BEST_WEIGHTS_NAME, self.weights_metadata(epoch))  # atomically

    def weights_metadata(self, epoch: int) -> dict[str, str]:
        from deepscan import __version__

        return {
            "format": "deepscan.detector-weights",
            "detector_kwargs": json.dumps(architecture_kwargs(self.recipe.detector.kwargs), sort_keys=True),
            "input_size": str(self.input_size),
            "epoch": str(epoch + 1),
            "recipe_sha256": self.recipe_sha256,
            "deepscan_version": __version__,
        }

    def write_metrics(self) -> None:
        lines = "".join(json.dumps(entry) + "\n" for entry in self.history)
        atomic_write(self.output / "metrics.jsonl", lines)
        save_curves(self.history, self.output / "curves.png")

    # --- the run --------------------------------------------------------------------------------------------
    def run(self) -> TrainResult:
        started_at = datetime.now(timezone.utc)
        if self.options.prepare_only:
            from deepscan.detectors import UnknownDetectorError, get_config

            try:
                self.detector_config = get_config(self.recipe.detector.name)
            except UnknownDetectorError as error:
                raise TrainingError(f"detector.name: {error}") from None
            self.prepare_data()
            return TrainResult(None, None, 0, None, extraction=self.extraction)
        if self.context.is_main:
            self.check_output()
        barrier(self.context)
        self.setup_model()
        self.prepare_data()
        self.output.mkdir(parents=True, exist_ok=True)
        epoch, step, partial = 0, 0, {}
        if self.options.resume:
            epoch, step, partial = self.load_checkpoint()
            self.say(f"resuming at epoch {epoch + 1}, step {step} from {self.checkpoint_path}")
        elif self.context.is_main:
            atomic_write(self.output / "recipe.json", json.dumps(recipe_to_dict(self.recipe), indent=2))
        recipe = self.recipe
        with StopRequest() as stop:
            while epoch < recipe.epochs:
                if self.history and any_process(self.context, self._time_spent(0.0), self.device):
                    self.out_of_time = True  # resumed with its time budget already spent: nothing more to train
                    break
                sums, stopped = self.train_epoch(epoch, step, partial, stop)
                if stopped:
                    # The partial sums (time included) carry over, and count when the epoch completes.
                    partial = {key: sums[key] for key in ("loss", "steps", "faces", "seconds", "terms")}
                    self.save_checkpoint(epoch, sums["next_step"], partial)
                    raise TrainingInterrupted(self.checkpoint_path, epoch, sums["next_step"])
                average_buffers(self.detector, self.context)
                val_started = time.perf_counter()
                val = self.validate()
                val_seconds = time.perf_counter() - val_started
                for scheduler in self.schedulers.values():
                    if isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
                        if val:
                            scheduler.step(val["loss"])
                    elif scheduler is not None:
                        scheduler.step()
                self.elapsed_s += sums["seconds"] + val_seconds
                entry = {
                    "epoch": epoch + 1,
                    "train": {
                        "loss": sums["loss"] / max(sums["steps"], 1),
                        "terms": {key: value / max(sums["steps"], 1) for key, value in sums["terms"].items()},
                        "steps": sums["steps"],
                        "faces": sums["faces"],
                        "seconds": sums["seconds"],
                        "faces_per_s": sums["faces"] / sums["seconds"] if sums["seconds"] > 0 else None,
                    },
                    "val": val,
                    "val_seconds": val_seconds,
                    "lr": {name: opt.param_groups[0]["lr"] for name, opt in self.optimizers.items()},
                }
                if self.out_of_time:
                    entry["cut_by_time_budget"] = True
                value = self._selection_value(val)
                improved = value is not None and (self.best is None or value > self.best["value"])
                if improved:
                    self.best = {"epoch": epoch + 1, "value": value, "val": val}
                    self.save_best(epoch, val)
                entry["best"] = improved
                self.history.append(entry)
                epoch, step, partial = epoch + 1, 0, {}
                self.save_checkpoint(epoch, 0, None)
                if self.context.is_main:
                    self.write_metrics()
                    auc = val.get("auc")
                    self.say(
                        f"epoch {epoch}/{recipe.epochs}: train loss {entry['train']['loss']:.4f}"
                        + (f" | val loss {val['loss']:.4f} acc {val['acc']:.3f}" if val else "")
                        + (f" auc {auc:.3f}" if auc is not None else "")
                        + f" | {sums['seconds']:.0f} s train, {val_seconds:.0f} s val"
                        + (" | best so far" if improved else "")
                    )
                if any_process(self.context, stop.requested, self.device) and epoch < recipe.epochs:
                    raise TrainingInterrupted(self.checkpoint_path, epoch, 0)
                if self.out_of_time or any_process(self.context, self._time_spent(0.0), self.device):
                    self.out_of_time = True
                    if epoch < recipe.epochs:
                        self.say(f"time budget of {recipe.max_minutes:g} min spent after {epoch} epochs: "
                                 "finishing with the best weights so far")
                    break
        check_replicas_agree(self.detector, self.context)
        weights, card = self.finish(started_at)
        return TrainResult(weights, card, epoch, self.best, self.history, self.extraction)

    def finish(self, started_at: datetime) -> tuple[Path | None, Path | None]:
        if not self.context.is_main:
            return None, None
        from deepscan import __version__

        name = self.recipe.detector.name
        weights, weights_section = self.write_final_weights(name)
        if self.best is not None and (self.output / BEST_WEIGHTS_NAME).exists():
            selected = {"epoch": self.best["epoch"], "select_on": self.recipe.select_on, "metrics": self.best["val"]}
        else:
            selected = {"epoch": len(self.history), "select_on": "last epoch (no validation data)", "metrics": {}}
        config = self.detector_config
        card = {
            "schema": MODEL_CARD_SCHEMA,
            "schema_version": 1,
            "detector": {
                "name": name,
                "paper": config.paper,
                "kwargs": self.recipe.detector.kwargs,
                "architecture_kwargs": architecture_kwargs(self.recipe.detector.kwargs),
                "input_size": self.input_size,
                "mean": list(config.mean),
                "std": list(config.std),
                "parameters": self.detector.count_parameters(),
            },
            "weights": weights_section,
            "start": self.start,
            "recipe": {"sha256": self.recipe_sha256, "origin": self.options.recipe_origin, "content": recipe_to_dict(self.recipe)},
            "data": {
                "train": [summary.as_dict() for summary in self.summaries["train"]],
                "val": [summary.as_dict() for summary in self.summaries.get("val", [])],
                "val_split": self.val_split,
                "train_entries": len(self.train_set),
                "val_entries": len(self.val_set),
                "pseudo_fakes": recipe_to_dict(self.recipe)["data"]["sbi"],
                "face": recipe_to_dict(self.recipe)["data"]["face"],
                "augment": recipe_to_dict(self.recipe)["augment"],
            },
            "validation": selected,
            "training": {
                "epochs": len(self.history),
                "seconds": round(self.elapsed_s, 1),
                "seconds_per_epoch": [round(entry["train"]["seconds"], 1) for entry in self.history],
                "world_size": self.context.world_size,
                "device": str(self.device),
                "precision": self.precision,
                "autocast": str(self.autocast_dtype).removeprefix("torch.") if self.autocast_dtype else None,
                "max_minutes": self.recipe.max_minutes,
                "stopped_by_time_budget": self.out_of_time,
                "started_at": started_at.isoformat(timespec="seconds"),
                "finished_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            },
            "software": {
                "deepscan": __version__,
                "torch": torch.__version__,
                "python": platform.python_version(),
            },
        }
        card_path = self.output / f"{name}.card.json"
        atomic_write(card_path, json.dumps(card, indent=2, default=str))
        return weights, card_path


    def write_final_weights(self, name: str) -> tuple[Path, dict]:
        """The run's final weights (the best checkpoint, else the last epoch's), whole or not at all: one file, or
        with ``shard_mib`` float16 shards and their index; returns the path to give ``--weights`` and the card's
        ``weights`` section."""
        from deepscan.weight_shards import index_path_for, read_index, split_file
        from deepscan.weights import save_weights

        single = self.output / f"{name}.safetensors"
        best = self.output / BEST_WEIGHTS_NAME
        has_best = self.best is not None and best.exists()
        shard_mib = self.options.shard_mib
        if shard_mib is None:
            if has_best:
                with open(best, "rb") as source:
                    atomic_write(single, lambda handle: shutil.copyfileobj(source, handle))
            else:
                save_weights(self.detector, single, self.weights_metadata(len(self.history) - 1))
            return single, {"file": single.name, "sha256": sha256_file(single), "format": "safetensors"}
        index = index_path_for(single)
        if has_best:
            digest = split_file(best, index, shard_mib, fp16=True)
        else:
            digest = save_weights(self.detector, single, self.weights_metadata(len(self.history) - 1),
                                  max_shard_mib=shard_mib, half=True)
        shards = [shard.file for shard in read_index(index).shards]
        return index, {"file": index.name, "sha256": digest, "format": "safetensors shards", "dtype": "float16",
                       "max_shard_mib": shard_mib, "shards": shards}


def train(recipe: Recipe, options: TrainOptions, context: DistributedContext | None = None) -> TrainResult:
    """Run (or resume) a training run; see the module docstring. Raises TrainingInterrupted after Ctrl-C."""
    from deepscan.train.distributed import init_distributed

    if context is None:
        context = init_distributed(select_device(recipe.device, setting="device:"))
    return Trainer(recipe, options, context).run()

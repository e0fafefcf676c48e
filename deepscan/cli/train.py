"""`deepscan train`: the Typer command, and how a run looks on the console.

What the command decides (the recipe's changes, the run folder, the process group) is in
``deepscan.train.launch``, and the run itself in ``deepscan.train.trainer``, which reports through a
``TrainingProgress``. This module shows those reports: a bar on a terminal, plain lines in a log file.

Exit codes (``deepscan.errors``): 0 done; 2 a recipe, data, weights or usage problem (a ``DeepscanError``, raised
to the command line, which says it in one line); 130 interrupted after writing a checkpoint (``--resume``
continues it).
"""

from __future__ import annotations

import contextlib
import logging
from pathlib import Path
from typing import Iterator, List, Optional

import typer

from deepscan.cli.app import app
from deepscan.cli.console import err
from deepscan.errors import EXIT_INTERRUPTED, EXIT_OK
from deepscan.train.progress import EpochStart, EpochSummary, StepDone, TrainingProgress


class ConsoleProgress(TrainingProgress):
    """A run on a rich ``console``. On a terminal, a transient bar per phase (face extraction, each epoch's
    steps); elsewhere (a log file, a run under ``nohup``) no bar, and a plain line every ``log_every`` steps of an
    epoch (0: five lines per epoch) and at its last step. Messages, warnings and epoch summaries are one line each
    either way."""

    def __init__(self, console, log_every: int = 0):
        self.console = console
        self.log_every = log_every
        self._bar = None  # the rich Progress of the phase in progress, on a terminal
        self._task = None

    def on_message(self, text: str) -> None:
        self.console.print(text, highlight=False)

    def on_warning(self, text: str) -> None:
        self.console.print(f"[yellow]warning:[/] {text}", highlight=False)

    def on_extraction_start(self, files: int) -> None:
        self._open_bar("extracting faces", files)

    def on_file_extracted(self) -> None:
        self._advance("")

    def on_extraction_end(self) -> None:
        self._close_bar()

    def on_epoch_start(self, start: EpochStart) -> None:
        self._open_bar(start.description, start.steps, start.done)

    def on_step(self, step: StepDone) -> None:
        if self._bar is not None:
            self._advance(step.info())
            return
        every = self.log_every or max(1, step.steps // 5)
        if step.step % every == 0 or step.step == step.steps:
            self.on_message(step.line())

    def on_epoch_steps_end(self) -> None:
        self._close_bar()

    def on_epoch_end(self, summary: EpochSummary) -> None:
        self.on_message(summary.line())

    def _open_bar(self, description: str, total: int, done: int = 0) -> None:
        if not getattr(self.console, "is_terminal", False):
            return
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        self._bar = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[info]}"),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=self.console,
            transient=True,
        )
        self._bar.start()
        self._task = self._bar.add_task(description, total=total, info="")
        for _ in range(done):
            self._advance("")

    def _advance(self, info: str) -> None:
        if self._bar is not None:
            self._bar.update(self._task, advance=1, info=info)

    def _close_bar(self) -> None:
        if self._bar is not None:
            self._bar.stop()
            self._bar = self._task = None


class _WarningsToProgress(logging.Handler):
    """Library warnings (an unreadable video, a missing VGG19) as one warning line each, like the run's own."""

    def __init__(self, progress: TrainingProgress):
        super().__init__(level=logging.WARNING)
        self.progress = progress

    def emit(self, record: logging.LogRecord) -> None:
        self.progress.on_warning(record.getMessage())


@contextlib.contextmanager
def _library_warnings(progress: TrainingProgress, shown: bool) -> Iterator[None]:
    """Show the ``deepscan`` loggers' warnings through ``progress`` while the run lasts (``shown``: main process)."""
    handler = _WarningsToProgress(progress)
    library_log = logging.getLogger("deepscan")
    if shown:
        library_log.addHandler(handler)
    try:
        yield
    finally:
        library_log.removeHandler(handler)


def run_train(recipe_path: Path, overrides: list[str], output: Path | None, init: str | None, resume: bool,
              prepare_only: bool, device: str | None, console, shard_mib: float | None = None) -> int:
    """Load the recipe, train, and report on ``console`` (a rich Console, stderr); returns the exit code. A recipe,
    data or weights problem raises a ``DeepscanError`` (one line). ``shard_mib``: the final weights as float16
    shards of at most that many MiB with their index (``TrainOptions.shard_mib``)."""
    from deepscan.train import launch, trainer
    from deepscan.train.errors import TrainingInterrupted

    recipe = launch.load_command_recipe(recipe_path, overrides, init, device)
    progress = ConsoleProgress(console)
    with launch.process_group(recipe) as context, _library_warnings(progress, context.is_main):
        options = trainer.TrainOptions(
            output=Path(output) if output is not None else launch.default_output(recipe_path),
            resume=resume,
            prepare_only=prepare_only,
            recipe_origin=str(recipe_path),
            progress=progress,
            shard_mib=shard_mib,
        )
        try:
            result = trainer.train(recipe, options, context)
        except TrainingInterrupted as stopped:
            if context.is_main:
                console.print(f"[yellow]{stopped}[/]; continue with --resume", highlight=False)
            return EXIT_INTERRUPTED
    if context.is_main and not prepare_only:
        console.print(f"weights: {result.weights} (chosen: {launch.chosen_weights(result.best, recipe.select_on)})",
                      highlight=False)
        console.print(f"model card: {result.model_card}", highlight=False)
        console.print(f"scan with: deepscan scan MEDIA --method {recipe.detector.name} --weights {result.weights}",
                      highlight=False)
    return EXIT_OK


@app.command(
    epilog=(
        "Examples:\n\n"
        "  deepscan train recipes/demo-faclue.yaml\n\n"
        "  deepscan train recipes/demo-faclue.yaml --set optim.lr=1e-4 --set epochs=3 -o runs/quick\n\n"
        "  deepscan train my-cameras.yaml --init shipped   (fine-tune the shipped detector)\n\n"
        "  deepscan train recipes/faclue.yaml -o runs/ff --resume\n\n"
        "  torchrun --nproc_per_node=4 -m deepscan train recipes/faclue.yaml"
    )
)
def train(
    recipe: Path = typer.Argument(..., help="Training recipe (YAML), e.g. recipes/demo-faclue.yaml."),
    overrides: List[str] = typer.Option([], "--set", help="Override a recipe key: --set optim.lr=1e-4 (repeatable)."),
    output: Optional[Path] = typer.Option(None, "--output", "-o", help="Run folder. Default: runs/<recipe name>."),
    init: Optional[str] = typer.Option(
        None, help="Start from these weights: a .safetensors path, hf://OWNER/REPO/FILE, or 'shipped'."
    ),
    resume: bool = typer.Option(False, "--resume", help="Continue the run in --output from its last checkpoint."),
    prepare_only: bool = typer.Option(False, "--prepare-only", help="Only extract the faces into the cache."),
    device: Optional[str] = typer.Option(None, help="auto, cpu or cuda (default: the recipe's)."),
    shard_mib: Optional[float] = typer.Option(
        None, "--shard-mib", min=1.0,
        help="Write the final weights as float16 safetensors shards of at most this many MiB, with an index.",
    ),
) -> None:
    """Train a detector from a recipe: weights (safetensors) and a model card that `scan --weights` loads."""
    raise typer.Exit(run_train(recipe, overrides, output, init, resume, prepare_only, device, err,
                               shard_mib=shard_mib))

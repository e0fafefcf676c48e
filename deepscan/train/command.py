"""What `deepscan train` does, behind the thin Typer command in ``deepscan/cli/train.py``.

Exit codes (``deepscan.errors``): 0 done; 2 a recipe, data, weights or usage problem (a ``DeepscanError``, raised
to the command line, which says it in one line); 130 interrupted after writing a checkpoint (``--resume``
continues it).
"""

from __future__ import annotations

import logging
from pathlib import Path

from deepscan.errors import EXIT_INTERRUPTED, EXIT_OK


class _ConsoleLogHandler(logging.Handler):
    """Library warnings (an unreadable video, a missing VGG19) as one dim line each on the console."""

    def __init__(self, console):
        super().__init__(level=logging.WARNING)
        self.console = console

    def emit(self, record: logging.LogRecord) -> None:
        self.console.print(f"[yellow]warning:[/] {record.getMessage()}", highlight=False)


def default_output(recipe_path: Path) -> Path:
    return Path("runs") / recipe_path.stem


def run_train(
    recipe_path: Path,
    overrides: list[str],
    output: Path | None,
    init: str | None,
    resume: bool,
    prepare_only: bool,
    device: str | None,
    console,
    shard_mib: float | None = None,
) -> int:
    """Load the recipe, train, and report; returns the exit code. ``console`` is a rich Console (stderr). A recipe,
    data or weights problem raises a ``DeepscanError`` (one line). ``shard_mib``: the final weights as float16
    shards of at most that many MiB with their index (``TrainOptions.shard_mib``)."""
    from deepscan.runtime import select_device
    from deepscan.train.distributed import init_distributed, shutdown
    from deepscan.train.recipe import load_recipe
    from deepscan.train.trainer import TrainingInterrupted, TrainOptions, train

    extra = list(overrides)
    if init is not None:
        # --init is typed at the shell: a relative path is relative to the working directory, not the recipe.
        is_path = init != "shipped" and not init.startswith("hf://")
        extra.append(f"init={Path(init).resolve() if is_path else init}")
    if device is not None:
        extra.append(f"device={device}")
    recipe = load_recipe(recipe_path, extra)
    context = init_distributed(select_device(recipe.device, setting="device:"))
    handler = _ConsoleLogHandler(console)
    library_log = logging.getLogger("deepscan")
    if context.is_main:
        library_log.addHandler(handler)
    options = TrainOptions(
        output=Path(output) if output is not None else default_output(recipe_path),
        resume=resume,
        prepare_only=prepare_only,
        recipe_origin=str(recipe_path),
        console=console if context.is_main else None,
        shard_mib=shard_mib,
    )
    try:
        result = train(recipe, options, context)
    except TrainingInterrupted as stopped:
        if context.is_main:
            console.print(f"[yellow]{stopped}[/]; continue with --resume", highlight=False)
        return EXIT_INTERRUPTED
    finally:
        library_log.removeHandler(handler)
        shutdown(context)
    if context.is_main and not prepare_only:
        best = result.best
        chosen = f"epoch {best['epoch']} (val {recipe.select_on.removeprefix('val_')} {abs(best['value']):.4f})" if best else "the last epoch"
        console.print(f"weights: {result.weights} (chosen: {chosen})", highlight=False)
        console.print(f"model card: {result.model_card}", highlight=False)
        console.print(f"scan with: deepscan scan MEDIA --method {recipe.detector.name} --weights {result.weights}", highlight=False)
    return EXIT_OK

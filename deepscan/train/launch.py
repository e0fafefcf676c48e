"""A run as `deepscan train` starts it, without the command line: the recipe with the command's changes, the run
folder's default, the process group that torchrun set up, and the account of which weights a run kept.

The Typer command (``deepscan/cli/train.py``) only reads its options, shows the run and maps its end to an exit
code; what it decides lives here, where a test reaches it without a terminal.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Iterator

from deepscan.train.distributed import DistributedContext
from deepscan.train.recipe import Recipe


def default_output(recipe_path: Path) -> Path:
    """Where a run goes without ``--output``: ``runs/<recipe name>``."""
    return Path("runs") / recipe_path.stem


def command_changes(overrides: list[str], init: str | None, device: str | None) -> list[str]:
    """The recipe changes the command asks for: each ``--set``, then ``--init`` and ``--device`` as recipe keys.
    ``--init`` is typed at the shell: a relative path is relative to the working directory, not to the recipe."""
    changes = list(overrides)
    if init is not None:
        is_path = init != "shipped" and not init.startswith("hf://")
        changes.append(f"init={Path(init).resolve() if is_path else init}")
    if device is not None:
        changes.append(f"device={device}")
    return changes


def load_command_recipe(recipe_path: Path, overrides: list[str], init: str | None, device: str | None) -> Recipe:
    """The recipe at ``recipe_path`` with the command's changes (a problem with either raises RecipeError)."""
    from deepscan.train.recipe import load_recipe

    return load_recipe(recipe_path, command_changes(overrides, init, device))


@contextlib.contextmanager
def process_group(recipe: Recipe) -> Iterator[DistributedContext]:
    """This process's place in the run: under torchrun, the process group joined for the run and left after it;
    alone, a context of one."""
    from deepscan.runtime import select_device
    from deepscan.train.distributed import barrier, init_distributed, shutdown

    context = init_distributed(select_device(recipe.device, setting="device:"))
    try:
        yield context
        # A run that ends without an error (finished, or stopped at a step every process agreed on) ends together:
        # the other processes wait while the main one writes the weights and the card. One that left first has
        # aborted at exit now and then (SIGABRT, "terminate called without an active exception"), and torchrun
        # then stops the main process, whatever it was writing.
        barrier(context)
    finally:
        shutdown(context)


def chosen_weights(best: dict | None, select_on: str) -> str:
    """Which epoch's weights a run kept, in words: ``epoch 3 (val auc 0.7280)``, or ``the last epoch`` when no
    validation chose one."""
    if not best:
        return "the last epoch"
    return f"epoch {best['epoch']} (val {select_on.removeprefix('val_')} {abs(best['value']):.4f})"

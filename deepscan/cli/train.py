"""`deepscan train`: a thin command over deepscan.train.command."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from deepscan.cli.app import app
from deepscan.cli.console import err


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
    from deepscan.train.command import run_train

    raise typer.Exit(run_train(recipe, overrides, output, init, resume, prepare_only, device, err,
                               shard_mib=shard_mib))

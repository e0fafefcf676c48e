"""`deepscan export`: a detector exported for ONNX Runtime or OpenVINO ahead of a scan, into deepscan's cache."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.markup import escape

from deepscan.cli.app import app
from deepscan.cli.console import out


@app.command(
    epilog=(
        "Examples:\n\n"
        "  deepscan export --format openvino\n\n"
        "  deepscan export --format onnx --method sficonv -o exported/sficonv\n\n"
        "  deepscan export --format openvino --weights runs/demo-faclue/faclue.safetensors"
    )
)
def export(
    fmt: str = typer.Option(..., "--format", "-f", help="onnx or openvino."),
    method: str = typer.Option("faclue", "--method", "-m", help="Detector (see `deepscan models`)."),
    weights: Optional[str] = typer.Option(
        None, help="Weights: a .safetensors path or hf://OWNER/REPO/FILE. Default: the detector's own."
    ),
    output: Optional[Path] = typer.Option(
        None, "--output", "-o", help="Also copy the exported files (and their manifest) into this folder."
    ),
) -> None:
    """Export a detector for a faster CPU runtime, checked against PyTorch's scores and cached per weights, so that
    the first scan does not pay for it."""
    from deepscan.runtimes import export_runtime

    path = export_runtime(method, weights, fmt, output)  # DeepscanErrors end as one line in deepscan.cli.app
    out.print(f"{fmt}: {escape(str(path))}")

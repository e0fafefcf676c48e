"""`deepscan models`: the registered detectors, their papers and where their trained weights are."""

from __future__ import annotations

import json

import typer
from rich.table import Table
from rich.text import Text

from deepscan.cli.app import app
from deepscan.cli.console import out


@app.command(epilog="Examples:\n\n  deepscan models\n\n  deepscan models --json")
def models(as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table.")) -> None:
    """List the registered detectors (and the ensemble): paper, input size, parameters, where trained weights are."""
    from deepscan.catalog import catalog

    rows = catalog()
    if as_json:
        print(json.dumps(rows, indent=2))
        return
    out.print(_table(rows))


def _table(rows: list[dict]) -> Table:
    table = Table(title="registered detectors", title_justify="left")
    # Every column but the paper keeps its full width; the paper's title gives way (full titles: `--json`).
    table.add_column("name", no_wrap=True, min_width=max(len(row["name"]) for row in rows))
    table.add_column("paper", overflow="ellipsis", ratio=1)
    table.add_column("input", justify="right", no_wrap=True, min_width=7)
    table.add_column("parameters", justify="right", no_wrap=True, min_width=10)
    table.add_column("GFLOP/face", justify="right", no_wrap=True, min_width=10)
    table.add_column("weights", overflow="fold", min_width=9)
    default = next((row["name"] for row in rows if row.get("default")), None)
    if default:
        table.caption = f"without --method, scan and explain use {default}"
        table.caption_justify = "left"
    for row in rows:
        status = row["weights"]
        colour = "green" if row["weights_available"] else "yellow" if status == "on the hub" else "magenta"
        table.add_row(
            row["name"],
            Text(row["paper"], no_wrap=True, overflow="ellipsis"),
            f"{row['input_size']}x{row['input_size']}" if row["input_size"] else "per member",
            f"{row['parameters'] / 1e6:.2f} M",
            f"{row['gflops_per_face']:g}" if row["gflops_per_face"] else "-",
            Text(status, style=colour),
        )
    return table

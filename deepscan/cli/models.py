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
    import torch

    from deepscan.detectors import create_detector, get_config, list_detectors
    from deepscan.ensemble import ENSEMBLE, ENSEMBLE_PAPER, likely_members
    from deepscan.weights import WEIGHTS_AT_HAND, shipped_build, weights_status

    rows = []
    for name in list_detectors():
        config = get_config(name)
        status = weights_status(config)  # never downloads: listing must stay quick and offline
        # Shipped weights may be of another build than the paper default (backbone, input size): list that build.
        built = shipped_build(config) if status == "shipped" else {}
        with torch.device("meta"):  # shapes only: counting needs no memory and no initialisation
            parameters = create_detector(name, **built.get("kwargs", {})).count_parameters()
        input_size = built.get("input_size", config.input_size)
        rows.append(
            {
                "name": name,
                "paper": config.paper,
                "input_size": input_size,
                "parameters": parameters,
                # Counted at the config's input size; convolutional cost grows with the pixels of another build's.
                "gflops_per_face": (round(config.gflops * (input_size / config.input_size) ** 2, 2)
                                    if config.gflops else None),
                "weights_available": status in WEIGHTS_AT_HAND,
                "weights": status,
            }
        )
    members = likely_members({row["name"]: row["weights"] for row in rows})
    rows.append(
        {
            "name": ENSEMBLE,
            "paper": ENSEMBLE_PAPER,
            "input_size": None,  # each member at its own
            "parameters": sum(row["parameters"] for row in rows if row["name"] in members),
            "gflops_per_face": (round(sum(row["gflops_per_face"] for row in rows if row["name"] in members), 2)
                                if members and all(row["gflops_per_face"] for row in rows if row["name"] in members)
                                else None),
            "weights_available": bool(members),
            "weights": f"members: {', '.join(members)}" if members else "no member: no detector has trained weights",
            "members": members,
        }
    )
    if as_json:
        print(json.dumps(rows, indent=2))
        return
    table = Table(title="registered detectors", title_justify="left")
    # Every column but the paper keeps its full width; the paper's title gives way (full titles: `--json`).
    table.add_column("name", no_wrap=True, min_width=max(len(row["name"]) for row in rows))
    table.add_column("paper", overflow="ellipsis", ratio=1)
    table.add_column("input", justify="right", no_wrap=True, min_width=7)
    table.add_column("parameters", justify="right", no_wrap=True, min_width=10)
    table.add_column("GFLOP/face", justify="right", no_wrap=True, min_width=10)
    table.add_column("weights", overflow="fold", min_width=9)
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
    out.print(table)

"""The command line's two consoles and its one way to stop with an error: one line on stderr, an exit code."""

from __future__ import annotations

import typer
from rich.console import Console
from rich.markup import escape

from deepscan.errors import EXIT_USAGE

out = Console()
err = Console(stderr=True, soft_wrap=True)  # one message, one line: never wrapped


def fail(message: str, code: int = EXIT_USAGE) -> None:
    err.print(f"[bold red]error:[/] {escape(message)}", highlight=False)
    raise typer.Exit(code)


VERDICT_STYLE = {
    "fake": "bold red",
    "real": "bold green",
    "inconclusive": "bold dark_orange",
    "no face": "yellow",
    "untrained": "magenta",
}

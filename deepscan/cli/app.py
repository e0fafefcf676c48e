"""The Typer application: every command runs through one group that turns a DeepscanError into one line.

Heavy imports (torch, timm, mediapipe) happen inside the commands so that ``deepscan --help`` is quick. A problem
the user can fix is a ``DeepscanError`` wherever it is raised: the commands let it through, and it ends here, in
one place, as one line and its exit code (``deepscan.errors``).
"""

from __future__ import annotations

import os
import sys

import typer
from typer.core import TyperGroup

from deepscan.cli.console import err, fail
from deepscan.errors import EXIT_INTERNAL, EXIT_INTERRUPTED, DeepscanError

class _Commands(TyperGroup):
    """Every command runs through here: a :class:`DeepscanError` from any of them ends as one line on stderr and
    the error's exit code (for ``main()``, ``python -m deepscan`` and a test's ``CliRunner`` alike)."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except DeepscanError as error:
            fail(str(error), error.exit_code)


app = typer.Typer(
    name="deepscan",
    help="Tell whether the faces in a video or image were forged, and show why.",
    cls=_Commands,
    no_args_is_help=True,
    rich_markup_mode="rich",
    context_settings={"help_option_names": ["-h", "--help"]},
    pretty_exceptions_enable=False,
)


@app.callback(invoke_without_command=True)
def _root(
    version: bool = typer.Option(False, "--version", help="Print the version and exit.", is_eager=True),
) -> None:
    if version:
        from deepscan import __version__

        print(f"deepscan {__version__}")
        raise typer.Exit()


def main() -> None:
    """Console entry point: one-line errors instead of tracebacks (DEEPSCAN_DEBUG=1 shows them)."""
    try:
        app()
    except KeyboardInterrupt:
        err.print("interrupted")
        sys.exit(EXIT_INTERRUPTED)
    except Exception as error:  # noqa: BLE001 - the last line of defence for the user
        if os.environ.get("DEEPSCAN_DEBUG"):
            raise
        err.print(f"[bold red]internal error:[/] {type(error).__name__}: {error} (DEEPSCAN_DEBUG=1 for details)")
        sys.exit(EXIT_INTERNAL)

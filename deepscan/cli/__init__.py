"""The command line: thin Typer commands over the library, rendered with rich.

One module per command (``scan``, ``explain``, ``train``, ``evaluate``, ``models``, ``export``), each registering itself on
the one application of :mod:`deepscan.cli.app`; importing them here, in this order, is what lists the commands in
``deepscan --help``. Heavy imports (torch, timm, mediapipe) happen inside the commands so that ``--help`` is quick.
"""

# isort: off  (the order of these imports is the order of the commands in --help)
from deepscan.cli import scan, explain, train, evaluate, models, export  # noqa: F401  (each registers its command)
from deepscan.cli.app import app, main

__all__ = ["app", "main"]

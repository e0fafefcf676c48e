"""One figure style for every deepscan figure: drawn on Figure objects (never pyplot, never a process-wide
``matplotlib.use``), in the colour-blind-safe palette of deepscan.report.plots; the training curves use it too."""

from __future__ import annotations

import ast
import io
import json
from pathlib import Path

from matplotlib.colors import to_hex
from PIL import Image

import deepscan
from deepscan.report.plots import OKABE_ITO
from deepscan.train.run_log import curves_figure, write_run_log

PACKAGE = Path(deepscan.__file__).resolve().parent

HISTORY = [
    {"epoch": epoch, "train": {"loss": loss}, "val": {"loss": loss + 0.1, "acc": acc, "auc": auc, "real_acc": acc}}
    for epoch, loss, acc, auc in ((1, 0.69, 0.55, 0.6), (2, 0.6, 0.62, 0.7), (3, 0.5, 0.7, 0.8))
]


def test_no_module_uses_pyplot_or_chooses_a_backend_for_the_process():
    for path in sorted(PACKAGE.rglob("*.py")):
        tree = ast.parse(path.read_text(), str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                assert not any(alias.name == "matplotlib.pyplot" for alias in node.names), f"{path}:{node.lineno}"
            elif isinstance(node, ast.ImportFrom):
                assert node.module != "matplotlib.pyplot", f"{path}:{node.lineno}"
                assert not (node.module == "matplotlib" and any(a.name == "pyplot" for a in node.names)), path
            elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "use":
                owner = node.func.value
                assert not (isinstance(owner, ast.Name) and owner.id in ("matplotlib", "mpl")), f"{path}:{node.lineno}"


def test_training_curves_are_drawn_in_the_palette_and_written_with_the_metrics(tmp_path):
    figure = curves_figure(HISTORY)
    colours = {to_hex(line.get_color()).upper() for axes in figure.axes for line in axes.lines}
    assert colours and colours <= set(OKABE_ITO)
    assert [line.get_label() for line in figure.axes[1].lines] == ["val AUC", "val accuracy", "val real accuracy"]
    write_run_log(HISTORY, tmp_path)
    assert [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()] == HISTORY
    with Image.open(io.BytesIO((tmp_path / "curves.png").read_bytes())) as image:
        assert image.size == (1000, 400)  # 10 x 4 inches at 100 dpi, as before

"""How a training run is shown: the trainer reports events and imports no terminal library; `deepscan train` shows
them as a bar on a terminal and as the plain lines a log file (a run under nohup) has always had."""

from __future__ import annotations

import ast
import io
from pathlib import Path

from rich.console import Console

import deepscan
from deepscan.cli.train import ConsoleProgress
from deepscan.train.progress import EpochStart, EpochSummary, StepDone

TRAIN_PACKAGE = Path(deepscan.__file__).resolve().parent / "train"

VAL = {"loss": 0.6214, "acc": 0.641, "auc": 0.728, "faces": 1197}


def _plain_console() -> tuple[Console, io.StringIO]:
    """A console writing to a file, as stderr is under nohup: not a terminal."""
    buffer = io.StringIO()
    return Console(file=buffer, soft_wrap=True, width=100), buffer


def _step(step: int, steps: int = 150, rate: float = 6.0, loss: float = 0.6782) -> StepDone:
    return StepDone(epoch=0, epochs=10, step=step, steps=steps, mean_loss=loss, faces_per_s=rate)


def test_the_train_package_imports_no_terminal_library():
    for path in sorted(TRAIN_PACKAGE.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            else:
                continue
            assert not any(name.split(".")[0] == "rich" for name in names), f"{path.name}:{node.lineno} imports rich"


def test_the_lines_keep_the_format_of_existing_logs():
    # Lines as a log written before the progress events existed has them.
    assert _step(90).line() == "epoch 1/10 step 90/150 loss 0.6782 | 6.0 faces/s"
    summary = EpochSummary(epoch=0, epochs=10, train_loss=0.6640, val=VAL, train_seconds=747.2, val_seconds=71.4,
                           best=True)
    assert summary.line() == (
        "epoch 1/10: train loss 0.6640 | val loss 0.6214 acc 0.641 auc 0.728 | 747 s train, 71 s val | best so far"
    )
    # Slow runs say seconds per face; no validation data, no AUC: those parts are left out.
    assert _step(1, rate=0.25).info() == "loss 0.6782 | 4.0 s/face"
    assert _step(1, rate=0.0).info() == "loss 0.6782 | "
    quiet = EpochSummary(epoch=2, epochs=3, train_loss=0.5, val={}, train_seconds=3.0, val_seconds=0.0, best=False)
    assert quiet.line() == "epoch 3/3: train loss 0.5000 | 3 s train, 0 s val"
    no_auc = EpochSummary(epoch=0, epochs=1, train_loss=0.5, val={"loss": 0.7, "acc": 1.0, "auc": None},
                          train_seconds=1.0, val_seconds=1.0, best=True)
    assert no_auc.line() == "epoch 1/1: train loss 0.5000 | val loss 0.7000 acc 1.000 | 1 s train, 1 s val | best so far"


def test_a_log_file_gets_five_step_lines_per_epoch_and_no_bar():
    console, buffer = _plain_console()
    progress = ConsoleProgress(console)
    progress.on_message("faces: 12 from 12 files")
    progress.on_extraction_start(3)
    for _ in range(3):
        progress.on_file_extracted()
    progress.on_extraction_end()
    progress.on_epoch_start(EpochStart(epoch=0, epochs=10, steps=150))
    for step in range(1, 151):
        progress.on_step(_step(step))
    progress.on_epoch_steps_end()
    progress.on_epoch_end(EpochSummary(0, 10, 0.6640, VAL, 747.0, 71.0, True))
    progress.on_warning("no validation faces")
    assert buffer.getvalue().splitlines() == [
        "faces: 12 from 12 files",
        *(f"epoch 1/10 step {step}/150 loss 0.6782 | 6.0 faces/s" for step in (30, 60, 90, 120, 150)),
        "epoch 1/10: train loss 0.6640 | val loss 0.6214 acc 0.641 auc 0.728 | 747 s train, 71 s val | best so far",
        "warning: no validation faces",
    ]


def test_a_short_epoch_logs_every_step_and_log_every_sets_the_pace():
    console, buffer = _plain_console()
    progress = ConsoleProgress(console)
    for step in (1, 2, 3):
        progress.on_step(_step(step, steps=3))
    assert [line.split(" loss")[0] for line in buffer.getvalue().splitlines()] == [
        "epoch 1/10 step 1/3", "epoch 1/10 step 2/3", "epoch 1/10 step 3/3"]
    console, buffer = _plain_console()
    progress = ConsoleProgress(console, log_every=3)
    for step in range(1, 8):
        progress.on_step(_step(step, steps=7))
    assert [line.split(" loss")[0] for line in buffer.getvalue().splitlines()] == [
        "epoch 1/10 step 3/7", "epoch 1/10 step 6/7", "epoch 1/10 step 7/7"]


def test_a_terminal_gets_a_bar_that_ends_with_its_phase_instead_of_step_lines():
    buffer = io.StringIO()
    progress = ConsoleProgress(Console(file=buffer, force_terminal=True, width=100))
    progress.on_epoch_start(EpochStart(epoch=1, epochs=10, steps=150, done=20))  # a resumed epoch
    assert progress._bar is not None and progress._bar.tasks[0].completed == 20
    for step in range(21, 151):
        progress.on_step(_step(step))
    assert progress._bar.tasks[0].completed == 150
    progress.on_epoch_steps_end()
    assert progress._bar is None
    assert "step 150/150" not in buffer.getvalue()

"""What a training run tells its caller while it runs, and the lines in which a caller shows it.

The trainer never prints and imports no terminal library: it reports to a :class:`TrainingProgress`, and the caller
decides how a run looks. `deepscan train` draws a bar on a terminal and writes plain lines to a log file (a run
under ``nohup``); a test records the events, or stops the run at a chosen step; a library caller passes nothing
and the run is quiet. The line formats live here, beside the events they describe, so that every caller writes
the lines that users, and the scripts that read their logs, know.

Epochs are counted from 0 in the events, as the run counts them; the lines show them counted from 1.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class EpochStart:
    """An epoch's training steps begin (a resumed epoch begins with ``done`` of them done already)."""

    epoch: int
    epochs: int
    steps: int
    done: int = 0

    @property
    def description(self) -> str:
        return f"epoch {self.epoch + 1}/{self.epochs}"


@dataclass(frozen=True)
class StepDone:
    """One optimisation step done: ``step`` steps of the epoch's ``steps`` (this one included), with the epoch's
    mean loss and speed so far."""

    epoch: int
    epochs: int
    step: int
    steps: int
    mean_loss: float
    faces_per_s: float

    def info(self) -> str:
        """``loss 0.6782 | 6.0 faces/s``: what a progress bar shows beside its count."""
        rate = self.faces_per_s
        speed = f"{rate:.1f} faces/s" if rate >= 1 else f"{1 / rate:.1f} s/face" if rate > 0 else ""
        return f"loss {self.mean_loss:.4f} | {speed}"

    def line(self) -> str:
        """``epoch 1/10 step 90/150 loss 0.6782 | 6.0 faces/s``: the plain line a log gets instead of a bar."""
        return f"epoch {self.epoch + 1}/{self.epochs} step {self.step}/{self.steps} {self.info()}"


@dataclass(frozen=True)
class EpochSummary:
    """An epoch trained and validated. ``val`` holds the validation metrics (empty without validation data);
    ``best``: the epoch is the best so far on the recipe's ``select_on``."""

    epoch: int
    epochs: int
    train_loss: float
    val: dict
    train_seconds: float
    val_seconds: float
    best: bool

    def line(self) -> str:
        """``epoch 1/10: train loss 0.6640 | val loss 0.6214 acc 0.641 auc 0.728 | 747 s train, 71 s val | best so
        far``."""
        val, auc = self.val, self.val.get("auc")
        return (
            f"epoch {self.epoch + 1}/{self.epochs}: train loss {self.train_loss:.4f}"
            + (f" | val loss {val['loss']:.4f} acc {val['acc']:.3f}" if val else "")
            + (f" auc {auc:.3f}" if auc is not None else "")
            + f" | {self.train_seconds:.0f} s train, {self.val_seconds:.0f} s val"
            + (" | best so far" if self.best else "")
        )


class TrainingProgress:
    """Receives a run's events (from the main process only, under torchrun). Every method here does nothing: a
    caller overrides the ones it shows. Each ``..._start`` is followed by its ``..._end``, also when the phase ends
    in an error, so that a caller's bar never outlives its phase."""

    def on_message(self, text: str) -> None:
        """A line for the user: the data found, a resumption, the time budget spent."""

    def on_warning(self, text: str) -> None:
        """Something the user should know that does not stop the run (each is given once)."""

    def on_extraction_start(self, files: int) -> None:
        """Face extraction begins over ``files`` media files (this process's share)."""

    def on_file_extracted(self) -> None:
        """One more file's faces are in the cache."""

    def on_extraction_end(self) -> None:
        """Face extraction is over."""

    def on_epoch_start(self, start: EpochStart) -> None:
        """An epoch's training steps begin."""

    def on_step(self, step: StepDone) -> None:
        """An optimisation step is done; the run checks for Ctrl-C and its time budget right after this."""

    def on_epoch_steps_end(self) -> None:
        """The epoch's training steps are over: validation follows, or the run stops."""

    def on_epoch_end(self, summary: EpochSummary) -> None:
        """The epoch is validated, and its checkpoint and metrics are written."""

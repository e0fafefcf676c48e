"""What an evaluation tells its caller while it runs, and the lines in which a caller shows it.

The evaluation never prints and imports no terminal library: it reports to an :class:`EvaluationProgress`, and the
caller decides how it looks. `deepscan evaluate` draws a bar per phase on a terminal, says the warnings and notes on
stderr and prints the tables on stdout (``deepscan/cli/evaluate.py``); a test records the events; a library caller
passes nothing and the evaluation is quiet (what it measured comes back from
:func:`deepscan.evaluate.evaluation.evaluate`). The line formats live here, beside the events they describe, so that
every caller says what users of `deepscan evaluate` know.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator


@dataclass(frozen=True)
class FacesFound:
    """The faces of one part of the data (``test``, or ``val``) are found: of ``media_files`` files, ``unreadable``
    could not be read and ``faceless`` held no face."""

    part: str
    media_files: int
    unreadable: int
    faceless: int

    def warnings(self) -> list[str]:
        """What the user should know about the files left out (nothing when none was)."""
        said = []
        if self.unreadable:
            said.append(f"{self.unreadable} unreadable file(s) in the {self.part} data were skipped")
        if self.faceless:
            said.append(f"no face in {self.faceless} of {self.media_files} {self.part} file(s): they get no score "
                        "and are left out of every metric (listed in results.json)")
        return said


@dataclass(frozen=True)
class EnsembleScoring:
    """The ensemble is about to be scored: its members, and the threshold its scores are rated at."""

    members: tuple[str, ...]
    threshold: float
    threshold_source: str

    def line(self) -> str:
        return (f"ensemble of {', '.join(self.members)}: scores are the mean of the members' calibrated P(fake), each "
                f"scoring its own input size, as a scan's; the threshold {self.threshold:.4g} "
                f"({self.threshold_source}) is the scan's verdict threshold")


def written_line(folder: Path, files: int) -> str:
    """``wrote 12 files to results (results.json, scores.csv, PNGs)``."""
    return f"wrote {files} files to {folder} (results.json, scores.csv, PNGs)"


class EvaluationProgress:
    """Receives an evaluation's events. Every method here does nothing: a caller overrides the ones it shows. Each
    :meth:`on_phase_start` is followed by its :meth:`on_phase_end`, also when the phase ends in an error, so that a
    caller's bar never outlives its phase."""

    def on_phase_start(self, description: str, total: int | None) -> None:
        """A phase begins: ``finding faces (test)`` (its total not known yet), ``scoring with faclue``,
        ``scoring the ensemble's members`` (``total`` faces to score)."""

    def on_phase_total(self, total: int) -> None:
        """The phase's total is known now (the media files listed)."""

    def on_advance(self, count: int = 1) -> None:
        """``count`` more of the phase's total are done."""

    def on_phase_end(self) -> None:
        """The phase is over."""

    def on_faces_found(self, found: FacesFound) -> None:
        """The faces of one part of the data are found (see :meth:`FacesFound.warnings`)."""

    def on_member_left_out(self, text: str) -> None:
        """An ensemble member is left out, and why (``tiny_b: untrained``)."""

    def on_ensemble(self, scoring: EnsembleScoring) -> None:
        """The ensemble's members and threshold, before it is scored."""

    def on_untrained(self, method: str, text: str) -> None:
        """``method`` has no trained weights: its scores and metrics mean nothing (``text`` says so)."""

    def on_note(self, text: str) -> None:
        """What the numbers mean: a method's calibration, no ``--val`` data, data of one class only."""

    def on_measured(self, summaries: list[dict]) -> None:
        """Every method is measured: its results as results.json holds them (``methods``), in the order asked."""

    def on_written(self, folder: Path, files: list[Path]) -> None:
        """results.json, scores.csv and the PNGs are written into ``folder`` (see :func:`written_line`)."""


@contextlib.contextmanager
def phase(progress: EvaluationProgress, description: str, total: int | None) -> Iterator[None]:
    """``on_phase_start`` now, ``on_phase_end`` whatever happens."""
    progress.on_phase_start(description, total)
    try:
        yield
    finally:
        progress.on_phase_end()

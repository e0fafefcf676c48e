"""One scan's record: its results in the planned order and its JSON report, kept on disk as the scan goes.

The report so far is rewritten after each file, marked partial, so that a scan killed outright (SIGKILL, a crash,
the machine going down) still leaves the results of the files it finished. Once rewriting a report grown large
costs more than a tenth of the scan's time, it is rewritten less often. Files may finish in any order (a cluster
scan); the report always lists them in the order they were planned, as one machine would.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Callable

from deepscan.report.json_report import build_report, utc_now, write_report

# A rewrite may take at most this share of the time since the last one.
REWRITE_SHARE = 0.1


class ScanRecord:
    """``files``: the planned inputs; ``paths``: where the report goes (none: kept in memory only); ``custody``:
    what the report's custody gets besides the scan's own (e.g. ``{"cluster": ...}``), asked for at each write."""

    def __init__(self, files: list[Path], paths: list[Path], *, options, judge, detector_config, weights,
                 custody: Callable[[], dict] | None = None):
        self.files = files
        self.paths = paths
        self.results: list = []
        self.interrupted = False
        self._planned = {str(path): index for index, path in enumerate(files)}
        self._context = dict(options=options, detector_config=detector_config, weights=weights,
                             decision=judge.custody(), files_planned=len(files))
        self._custody = custody
        self._started_at = utc_now()
        self._written_at = 0.0
        self._write_s = 0.0

    def add(self, result) -> None:
        self.results.append(result)
        self.results.sort(key=lambda done: self._planned.get(done.path, len(self._planned)))

    @property
    def complete(self) -> bool:
        """Every planned file scanned to its end."""
        return len(self.results) == len(self.files) and all(result.status == "complete" for result in self.results)

    def report(self, finished: bool) -> dict:
        made = build_report(self.results, started_at=self._started_at, finished_at=utc_now() if finished else None,
                            interrupted=self.interrupted, **self._context)
        if self._custody is not None:
            made["custody"].update(self._custody())
        return made

    def checkpoint(self, force: bool = False) -> list[tuple[Path, OSError]]:
        """Write the report so far to every path, unless the last write was too recent for its cost (``force``:
        write anyway). Returns the paths that could not be written, with why."""
        start = time.perf_counter()
        if not self.paths or (not force and start - self._written_at < self._write_s / REWRITE_SHARE):
            return []
        snapshot = self.report(finished=False)
        failed = []
        for path in self.paths:
            try:
                write_report(snapshot, path)
            except OSError as error:
                failed.append((path, error))
        self._written_at = time.perf_counter()
        self._write_s = self._written_at - start
        return failed

"""The serial scan: one frame at a time in the caller's thread (``ScanOptions(pipeline=False)``).

The reference the pipelined scan (:mod:`deepscan.scan_stages`) is checked against: the same steps of the
:class:`~deepscan.scan.Scanner` (the file's checks, its frames, their faces, scores in batches, the file's
conclusion), in the plainest order.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from deepscan.kept_faces import keep_scored
from deepscan.pipeline import CtrlC
from deepscan.scan_results import FileResult, ScanInterrupted

if TYPE_CHECKING:
    from deepscan.scan import FrameProgress, Scanner


def scan_serially(scanner: Scanner, paths: Iterable[Path], progress: FrameProgress | None,
                  ctrl_c: CtrlC) -> Iterator[FileResult]:
    """Each file's result in turn; Ctrl-C as :meth:`deepscan.scan.Scanner.scan_files` describes."""
    for path in paths:
        ready = _scan_file(scanner, path, progress, ctrl_c)
        if ctrl_c.let_through():  # held while the file was concluded: it is still the file in progress
            raise ScanInterrupted(ready)
        try:
            yield ready
        finally:
            ctrl_c.passing = False


def _scan_file(scanner: Scanner, path: Path, progress: FrameProgress | None, ctrl_c: CtrlC) -> FileResult:
    started = time.perf_counter()
    result = scanner._new_result(path)
    try:
        scanner._check_file(path, result)
        _scan_frames(scanner, path, result, progress, ctrl_c)
    except BaseException as error:  # noqa: BLE001 - settled (or raised again) by _settle
        return scanner._settle(path, result, error, started)
    return scanner._settle(path, result, None, started)


def _scan_frames(scanner: Scanner, path: Path, result: FileResult, progress: FrameProgress | None,
                 ctrl_c: CtrlC) -> None:
    tracker = scanner._start_face_search()
    pending: list = []  # deepscan.scan._Pending: faces waiting for their scores
    batch_size = scanner.batch_size
    try:
        for frame_index, time_s, image in scanner._frames(path, result):
            if ctrl_c.take():
                raise KeyboardInterrupt  # held during the frames before: they are scanned, this one is not
            found = scanner._find_faces(tracker, frame_index, time_s, image)
            result.faces.extend(item.face for item in found)
            pending.extend(found)
            if len(pending) >= batch_size:
                scanner._score(pending, batch_size)
                keep_scored(result, pending)
                pending.clear()
            result.frames_scanned += 1
            if progress is not None:
                progress(path, result)
    finally:
        # Whatever was decoded before a failure (or an interrupt) is still scored and kept.
        scanner._score(pending, batch_size)
        keep_scored(result, pending)

"""Errors raised when a file cannot be read as a video or an image."""

from __future__ import annotations

import os


def _one_line(text: str) -> str:
    # FFmpeg and PIL messages sometimes carry newlines; a user-facing error must stay on one line.
    return " ".join(str(text).split())


class MediaError(Exception):
    """A file deepscan cannot read; ``str()`` is one line naming the file, ready to show a user."""

    def __init__(self, path: str | os.PathLike[str], reason: str) -> None:
        # Both go to Exception.__init__ so that the error pickles (multiprocessing, pytest-xdist).
        super().__init__(path, reason)
        self.path = os.fspath(path)
        self.reason = _one_line(reason)

    def __str__(self) -> str:
        return f"{self.path}: {self.reason}"


class PartialMediaError(MediaError):
    """A video that broke part-way: some frames decoded, then the stream ended or failed early."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        reason: str,
        frames_decoded: int,
        frames_expected: int | None = None,
    ) -> None:
        super().__init__(path, reason)
        self.args = (path, reason, frames_decoded, frames_expected)
        self.frames_decoded = frames_decoded
        self.frames_expected = frames_expected

"""Errors raised when a file cannot be read as a video or an image."""

from __future__ import annotations

import os

from deepscan.errors import EXIT_INCOMPLETE, DeepscanError


def _one_line(text: str) -> str:
    # FFmpeg and PIL messages sometimes carry newlines; a user-facing error must stay on one line.
    return " ".join(str(text).split())


def shown_path(path: str | os.PathLike[str]) -> str:
    """``path`` as a message may show it: a file name may hold a newline (which would split a one-line error),
    terminal escapes, bidirectional overrides that make the name read backwards, or bytes that are not UTF-8.
    Those are written as escapes (``\\n``, ``\\x1b``, ``\\u202e``, ``\\xff``); any other name is shown as it is."""
    text = os.fspath(path)
    if isinstance(text, bytes):
        text = os.fsdecode(text)
    if text.isprintable():
        return text
    return "".join(character if character.isprintable() else _escaped(character) for character in text)


def _escaped(character: str) -> str:
    code = ord(character)
    if 0xDC80 <= code <= 0xDCFF:  # a byte that is not UTF-8, kept by Python's surrogateescape
        return f"\\x{code - 0xDC00:02x}"
    return character.encode("unicode_escape").decode("ascii")


class MediaError(DeepscanError):
    """A file deepscan cannot read; ``str()`` is one line naming the file, ready to show a user."""

    exit_code = EXIT_INCOMPLETE

    def __init__(self, path: str | os.PathLike[str], reason: str) -> None:
        # Both go to Exception.__init__ so that the error pickles (multiprocessing, pytest-xdist).
        super().__init__(path, reason)
        self.path = os.fspath(path)
        self.reason = _one_line(reason)

    def __str__(self) -> str:
        return f"{shown_path(self.path)}: {self.reason}"


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

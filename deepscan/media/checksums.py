"""Each media file's checksum read once per command, however often the command asks for it.

A scan records each file's sha256, and its report's heat maps must come from the very bytes it scanned: asked
again in the same command, :class:`Checksums` gives the digest it read when the file is provably the one it
read. Provably: the same file (device and inode) with the same size, modification and status-change times, which
every write changes. Not remembered, so read again when asked: a file that changed while it was read, or whose
last change is so recent (:data:`RECENT_CHANGE_S`) that a further write could fall in the same tick of a coarse
file-system clock and leave its times as they were.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass

from deepscan.media.files import handle_sha256, open_regular

# A file changed less than this before it was read may change again without its times showing it: FAT keeps
# modification times to 2 s, and other file systems stamp writes with a clock that ticks in milliseconds.
RECENT_CHANGE_S = 2.0


@dataclass(frozen=True)
class _Stamp:
    """What ``stat`` says of a file's content without reading it."""

    size: int
    mtime_ns: int
    ctime_ns: int

    @classmethod
    def of(cls, status: os.stat_result) -> _Stamp:
        return cls(status.st_size, status.st_mtime_ns, status.st_ctime_ns)


@dataclass(frozen=True)
class _Read:
    stamp: _Stamp
    sha256: str
    size: int


class Checksums:
    """The command's memory of the files it hashed: :meth:`sha256` reads a file once (see the module)."""

    def __init__(self) -> None:
        self._read: dict[tuple[int, int], _Read] = {}  # (device, inode) -> what its one read gave

    def sha256(self, path: str | os.PathLike[str]) -> tuple[str, int]:
        """SHA-256 and size in bytes of a regular file (as :func:`deepscan.media.files.file_sha256`, with its
        one-line MediaErrors), read unless this command read it already and it is provably unchanged."""
        known = self._known(path)
        if known is not None:
            return known.sha256, known.size
        with open_regular(path) as handle:
            before = os.fstat(handle.fileno())
            started_ns = time.time_ns()
            digest, size = handle_sha256(handle, path)
            after = os.fstat(handle.fileno())
        last_change_ns = max(after.st_mtime_ns, after.st_ctime_ns)
        if _Stamp.of(before) == _Stamp.of(after) and started_ns - last_change_ns > RECENT_CHANGE_S * 1e9:
            self._read[(after.st_dev, after.st_ino)] = _Read(_Stamp.of(after), digest, size)
        return digest, size

    def _known(self, path: str | os.PathLike[str]) -> _Read | None:
        try:
            status = os.stat(path)
        except OSError:
            return None  # the read says why, in one line
        known = self._read.get((status.st_dev, status.st_ino))
        return known if known is not None and known.stamp == _Stamp.of(status) else None

"""What deepscan will open: regular files only, checked before any decoder sees them.

A named pipe blocks the first read until something writes to it (forever, in an evidence folder), a character
device such as /dev/zero never ends, a socket cannot be read at all, and opening some devices has side effects
(a tape rewinds). So the type is read with ``stat`` before anything is opened, and the file is then opened
without blocking and its type read again from the open descriptor, in case the path was swapped in between.
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path
from typing import BinaryIO

from deepscan.media.errors import MediaError
from deepscan.runtime import sha256_stream

_NOT_REGULAR = (
    (stat.S_ISFIFO, "a named pipe (FIFO)"),
    (stat.S_ISSOCK, "a socket"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
)


def _what(mode: int) -> str:
    return next((name for test, name in _NOT_REGULAR if test(mode)), "a special file")


def _not_regular(path: Path, mode: int) -> MediaError:
    return MediaError(path, f"not a regular file but {_what(mode)}: not opened, reading it could block forever")


def _stat(path: Path) -> os.stat_result:
    try:
        return os.stat(path)
    except FileNotFoundError:
        if os.path.islink(path):
            raise MediaError(path, "broken symbolic link (what it points to does not exist)") from None
        raise MediaError(path, "file not found") from None
    except PermissionError:
        raise MediaError(path, "permission denied (a folder on its path cannot be searched)") from None
    except OSError as error:
        if error.errno == errno.ELOOP:
            raise MediaError(path, "symbolic link loop (following the links never reaches a file)") from None
        raise MediaError(path, f"cannot be read ({error.strerror or error})") from None


def _folder(path: Path) -> MediaError:
    try:
        with os.scandir(path):
            pass
    except PermissionError:
        # Folder walks list a folder they cannot enter, so that what it holds is not skipped in silence.
        return MediaError(path, "folder cannot be read (permission denied): the files in it were not scanned")
    except OSError as error:
        return MediaError(path, f"folder cannot be read ({error.strerror or error}): the files in it were not scanned")
    return MediaError(path, "is a folder, not a file")


def open_regular(path: str | os.PathLike[str]) -> BinaryIO:
    """``path`` opened for binary reading, or MediaError (one line) when it is missing, a folder, a symbolic
    link loop, a pipe, socket or device (never opened), unreadable or empty."""
    path = Path(path)
    mode = _stat(path).st_mode
    if stat.S_ISDIR(mode):
        raise _folder(path)
    if not stat.S_ISREG(mode):
        raise _not_regular(path, mode)
    try:
        descriptor = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except PermissionError:
        raise MediaError(path, "permission denied (the file cannot be read)") from None
    except OSError as error:
        raise MediaError(path, f"cannot be opened ({error.strerror or error})") from None
    handle = os.fdopen(descriptor, "rb")
    try:
        info = os.fstat(descriptor)
        if not stat.S_ISREG(info.st_mode):
            raise _not_regular(path, info.st_mode)
        if info.st_size == 0:
            raise MediaError(path, "empty file (0 bytes)")
    except BaseException:
        handle.close()
        raise
    return handle


def check_regular(path: str | os.PathLike[str]) -> int:
    """Raise MediaError unless ``path`` is a readable, non-empty regular file (see :func:`open_regular`); returns
    its size in bytes."""
    with open_regular(path) as handle:
        return os.fstat(handle.fileno()).st_size


def file_sha256(path: str | os.PathLike[str], chunk_size: int = 1 << 20) -> tuple[str, int]:
    """SHA-256 and size in bytes of a regular file, read through :func:`open_regular` (a pipe or a device is
    refused, never opened)."""
    with open_regular(path) as handle:
        return handle_sha256(handle, path, chunk_size)


def handle_sha256(handle: BinaryIO, path: str | os.PathLike[str], chunk_size: int = 1 << 20) -> tuple[str, int]:
    """SHA-256 and size of what a handle from :func:`open_regular` holds; a failed read is MediaError."""
    try:
        return sha256_stream(handle, chunk_size)
    except OSError as error:
        raise MediaError(path, f"read failed part-way ({error.strerror or error})") from None

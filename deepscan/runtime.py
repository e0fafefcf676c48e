"""The rules every part of deepscan shares, written once: file hashes, the device, whole-file writes, the caches.

- :func:`sha256_file` (and :func:`sha256_stream`, the one hashing loop; media hashing opens its files through
  ``deepscan.media.files``, which refuses pipes and devices, and hashes with it);
- :func:`select_device`: ``auto``, ``cpu`` or ``cuda`` to the device that runs ("cuda" or "cpu");
- :func:`atomic_write`: a whole file written beside its place, synced to disk, renamed over the old one and the
  rename synced: whenever the process or the machine stops, the file is the old one or the new one, complete;
- :func:`cache_root`, :func:`face_cache_dir`, :func:`score_cache_path`: ``$DEEPSCAN_CACHE``, else
  ``$XDG_CACHE_HOME/deepscan``, else ``~/.cache/deepscan``; extracted faces in ``faces/``, scores in
  ``scores.sqlite``.

Imports no heavy library (torch only inside :func:`select_device`): the command line's ``--help`` stays quick.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import threading
from pathlib import Path
from typing import BinaryIO, Callable

from deepscan.errors import DeepscanError

CHUNK = 1 << 20
DEVICES = ("auto", "cpu", "cuda")
FACE_CACHE = "faces"
SCORE_CACHE = "scores.sqlite"


# --- hashes ----------------------------------------------------------------------------------------------------


def sha256_stream(handle: BinaryIO, chunk_size: int = CHUNK) -> tuple[str, int]:
    """SHA-256 (hex) and size in bytes of what ``handle`` holds from where it stands to its end."""
    digest = hashlib.sha256()
    size = 0
    while chunk := handle.read(chunk_size):
        digest.update(chunk)
        size += len(chunk)
    return digest.hexdigest(), size


def sha256_file(path: str | os.PathLike[str], chunk_size: int = CHUNK) -> str:
    """SHA-256 (hex) of the file at ``path``. Media files are hashed by ``deepscan.media.files.file_sha256``,
    which opens regular files only."""
    with open(path, "rb") as handle:
        return sha256_stream(handle, chunk_size)[0]


# --- the device ------------------------------------------------------------------------------------------------


class DeviceError(DeepscanError, ValueError):
    """A device that is unknown, or CUDA asked for where PyTorch sees none; one line for the user."""


def select_device(requested: str, *, setting: str = "--device") -> str:
    """``"cuda"`` or ``"cpu"`` for ``requested`` (``auto``: CUDA when PyTorch sees a device). ``setting`` names
    where the user asked for it, for the message (``--device``; a recipe's ``device:``)."""
    if requested not in DEVICES:
        raise DeviceError(f"unknown device {requested!r} (auto, cpu or cuda)")
    if requested == "cpu":
        return "cpu"
    import torch

    if torch.cuda.is_available():
        return "cuda"
    if requested == "cuda":
        raise DeviceError(f"{setting} cuda asked for, but PyTorch sees no CUDA device")
    return "cpu"


# --- whole-file writes -----------------------------------------------------------------------------------------


def atomic_write(
    path: str | os.PathLike[str],
    content: bytes | str | Callable[[BinaryIO], object],
    *,
    concurrent: bool = False,
) -> None:
    """Write ``content`` (bytes, text as UTF-8, or a function that writes to the binary handle it is given) to
    ``path`` atomically and durably: into a temporary beside it (``os.replace`` cannot cross file systems), synced
    to disk, renamed over ``path``, and the rename synced. Whenever the process stops (Ctrl-C, SIGKILL, a crash)
    or the machine does, ``path`` holds the old file or the new one, complete, never a mix; a write that fails
    leaves the old file and removes its temporary. The folder must exist.

    The temporary is ``.NAME.tmp``, so the next write takes over what a killed one left; with ``concurrent``
    (other processes may write ``path`` at the same time: a shared cache, a report two scans name) each process
    and thread writes its own, named with its process and thread ids."""
    path = Path(path)
    suffix = f".{os.getpid()}-{threading.get_ident()}.tmp" if concurrent else ".tmp"
    temporary = path.with_name(f".{path.name}{suffix}")
    try:
        with open(temporary, "wb") as handle:
            if callable(content):
                content(handle)
            else:
                handle.write(content.encode("utf-8") if isinstance(content, str) else content)
            handle.flush()
            os.fsync(handle.fileno())  # the data is on disk before the name points at it
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            temporary.unlink()
        raise
    _sync_folder(path.parent)


def _sync_folder(folder: Path) -> None:
    # The rename is in the folder's entry: without this a power cut may still bring back the old file.
    try:
        descriptor = os.open(folder, os.O_RDONLY)
    except OSError:
        return  # not every platform opens folders (Windows); the replace itself is still atomic
    try:
        os.fsync(descriptor)
    except OSError:
        pass
    finally:
        os.close(descriptor)


# --- caches ----------------------------------------------------------------------------------------------------


def cache_root() -> Path:
    """Where deepscan keeps what it can compute again: ``$DEEPSCAN_CACHE``, else ``$XDG_CACHE_HOME/deepscan``,
    else ``~/.cache/deepscan``."""
    root = os.environ.get("DEEPSCAN_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "deepscan"
    )
    return Path(root)


def face_cache_dir(root: str | os.PathLike[str] | None = None) -> Path:
    """The extracted faces (``deepscan.data.face_cache``) under ``root`` (default: :func:`cache_root`)."""
    return (Path(root) if root is not None else cache_root()) / FACE_CACHE


def score_cache_path(root: str | os.PathLike[str] | None = None) -> Path:
    """The scores of ``deepscan evaluate`` (SQLite) under ``root`` (default: :func:`cache_root`)."""
    return (Path(root) if root is not None else cache_root()) / SCORE_CACHE

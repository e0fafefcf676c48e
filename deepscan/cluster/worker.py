"""The detector actor's body: one :class:`deepscan.scan.Scanner` held for the whole scan, one file per call.

:class:`NodeScanner` is plain Python (Ray makes it an actor in :mod:`deepscan.cluster.scan`), so that what it does
is what ``Scanner.scan_file`` does, with three things around it:

- it builds its judge from the driver's :class:`~deepscan.cluster.parcel.JudgeParcel` and checks the weights' sha256
  on its own node; a node that fails that refuses every file (:class:`Refused`) instead of scanning with other
  weights;
- it reads a file in place when its node sees the driver's file at the same path (a shared mount: same size and
  modification time), and says so when not (:class:`NotOnNode`), so that the driver sends the bytes instead;
- it records each try in the :class:`TryLedger` before scanning, so that a try cut short by the death of its worker
  (or of its node) is still on record when Ray retries the file elsewhere.
"""

from __future__ import annotations

import os
import shutil
import socket
import stat
import tempfile
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from deepscan.errors import DeepscanError

SHARED_PATH, SENT_BYTES = "shared path", "sent bytes"


@dataclass(frozen=True)
class FileRequest:
    """One file as the driver hands it out."""

    scan: int  # which scan of this ClusterScan it belongs to (the ledger outlives a scan)
    index: int  # its place in the scan's list
    given: str  # the path as the scan was given it: what the report says
    path: str  # the same, absolute: where a node on the shared mount finds it
    size: int | None  # the driver's view of a regular file (None for anything else: the scanner says what it is)
    mtime_ns: int | None

    @classmethod
    def for_path(cls, scan: int, index: int, path: Path) -> "FileRequest":
        try:
            status = os.stat(path)
        except OSError:
            status = None
        regular = status is not None and stat.S_ISREG(status.st_mode)
        return cls(scan, index, str(path), os.path.abspath(path), status.st_size if regular else None,
                   status.st_mtime_ns if regular else None)


@dataclass
class Scanned:
    result: object  # the FileResult, its path the one the scan was given
    attempt: dict  # this try, as recorded in the ledger


@dataclass(frozen=True)
class NotOnNode:
    """This node does not see the driver's file at its path: the driver sends it (not counted as a try)."""

    host: str


@dataclass(frozen=True)
class TriedOut:
    """The file has had every try it may have (each ended by the death of its worker): not scanned again."""


@dataclass(frozen=True)
class Stopped:
    """The scan the file belongs to was stopped (Ctrl-C in the driver) before this try began: not read."""


@dataclass(frozen=True)
class Refused:
    """This actor does not scan (its weights differ, or its scanner could not be built); the file goes elsewhere."""

    reason: str


class TryLedger:
    """Every try of every file, recorded before the file is read: the one record a worker's death cannot erase
    (it lives in its own actor, beside the driver). Ray retries a file whose worker died; the ledger is how the
    driver learns that it did, and where, and what bounds the tries: Ray counts a retry each time it finds the
    actor still restarting (a model takes seconds to load), so its own count says little about how often a file
    was actually read."""

    def __init__(self) -> None:
        self._tries: dict[tuple[int, int], list[dict]] = {}  # (scan, index) -> its tries so far
        self._stopped: set[int] = set()  # scans the driver stopped: no new try of their files begins

    def start(self, scan: int, index: int, record: dict, allowed: int) -> "int | TriedOut | Stopped":
        """Record a new try of the file and return its number; :class:`TriedOut` when it has had ``allowed``
        tries, :class:`Stopped` when its scan was stopped."""
        if scan in self._stopped:
            return Stopped()
        tries = self._tries.setdefault((scan, index), [])
        if len(tries) >= allowed:
            return TriedOut()
        tries.append(dict(record, attempt=len(tries) + 1))
        return len(tries)

    def stop(self, scan: int) -> dict[int, list[dict]]:
        """No try of that scan begins from now on; returns its tries begun so far (:meth:`open_tries`)."""
        self._stopped.add(scan)
        return self.open_tries(scan)

    def settle(self, scan: int, index: int) -> list[dict]:
        """The tries of a file whose answer the driver has (or no longer waits for): returned, and forgotten."""
        return self._tries.pop((scan, index), [])

    def open_tries(self, scan: int) -> dict[int, list[dict]]:
        """The tries of that scan's files not settled yet (what is being scanned now, and what died), by index."""
        return {index: list(tries) for (number, index), tries in self._tries.items() if number == scan}


def one_line(error: BaseException) -> str:
    if isinstance(error, DeepscanError):
        return str(error)
    return " ".join(f"{type(error).__name__}: {error}".split())


def utc_now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


class NodeScanner:
    """See the module docstring. ``ledger_name``: the :class:`TryLedger` actor's name."""

    def __init__(self, parcel, options, ledger_name: str) -> None:
        import ray
        import torch

        context = ray.get_runtime_context()
        self.ledger = ray.get_actor(ledger_name)
        self.where = {
            "node_id": context.get_node_id(),
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "actor_id": context.get_actor_id(),
        }
        self.refusal: str | None = None
        self.scanner = None
        self.verified: list[dict] = []
        assigned = context.get_assigned_resources()
        # Torch would take every core of the node: the actors sharing it would fight over them.
        self.threads = max(1, int(assigned.get("CPU", 1)))
        torch.set_num_threads(self.threads)
        try:
            from deepscan.cluster.parcel import unpack_judge
            from deepscan.scan import Scanner

            judge, self.verified = unpack_judge(parcel, self.where["host"])
            self.scanner = Scanner(None, options, judge=judge)
        except Exception as error:  # noqa: BLE001 - the driver hears why in one line, and scans elsewhere
            if os.environ.get("DEEPSCAN_DEBUG") and not isinstance(error, DeepscanError):
                raise
            self.refusal = one_line(error)

    def ready(self) -> dict:
        """Who this actor is, where, and what it verified; ``refusal`` says why it will not scan."""
        import ray
        import torch

        import deepscan

        return {
            **self.where,
            "device": str(self.scanner.device) if self.scanner else None,
            "threads": self.threads,
            "gpus": len(ray.get_runtime_context().get_accelerator_ids().get("GPU", [])),
            "deepscan": deepscan.__version__,
            "torch": torch.__version__,
            "weights_verified": self.verified,
            "refusal": self.refusal,
        }

    def scan(self, request: FileRequest, content: bytes | None = None, tries_allowed: int = 1):
        """Scan one file: in place when this node sees it, else from ``content`` (its bytes, sent by the driver);
        not when it has had ``tries_allowed`` tries already (:class:`TriedOut`)."""
        import ray

        if self.refusal is not None:
            return Refused(self.refusal)
        if content is None and request.size is not None and not self._sees(request):
            return NotOnNode(self.where["host"])
        access = SHARED_PATH if content is None else SENT_BYTES
        record = {**self.where, "access": access, "started_at": utc_now(),
                  "weights_sha256": {entry["member"]: entry["sha256"] for entry in self.verified}}
        attempt = ray.get(self.ledger.start.remote(request.scan, request.index, record, tries_allowed))
        if not isinstance(attempt, int):  # TriedOut or Stopped
            return attempt
        if content is None:
            result = self._scan(Path(request.path))
        else:
            # The bytes become a file under its own name (media kind is read from the extension) where only this
            # process looks, for as long as the scan of it takes.
            folder = Path(tempfile.mkdtemp(prefix="deepscan-media-"))
            try:
                copy = folder / Path(request.given).name
                copy.write_bytes(content)
                result = self._scan(copy)
            finally:
                shutil.rmtree(folder, ignore_errors=True)
        _as_given(result, request)
        return Scanned(result, dict(record, attempt=attempt))

    def _scan(self, path: Path):
        from deepscan.scan import ScanInterrupted

        try:
            return self.scanner.scan_file(path)
        except ScanInterrupted as stop:  # the task was cancelled (the driver stopped): what was done so far
            return stop.result

    @staticmethod
    def _sees(request: FileRequest) -> bool:
        try:
            status = os.stat(request.path)
        except OSError:
            return False
        return (stat.S_ISREG(status.st_mode) and status.st_size == request.size
                and status.st_mtime_ns == request.mtime_ns)


def _as_given(result, request: FileRequest) -> None:
    """The result names the file as the scan was given it, whatever path this node read it through."""
    from deepscan.media.errors import shown_path

    read_as = result.path
    result.path = request.given
    if result.message and read_as != request.given:
        result.message = result.message.replace(shown_path(read_as), shown_path(request.given))

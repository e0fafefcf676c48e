"""Stages on threads, joined by bounded queues and stopped together: the machinery under the pipelined scan.

Each stage is a function run on a thread of its own that reads one :class:`Channel` and writes the next. Channels
are bounded, so a stage that runs ahead waits for the slower one after it instead of piling up work (and memory).
Threads are enough for parallel work here: the heavy calls the scan's stages make (PyAV decoding, MediaPipe,
torch) release the GIL.

Stopping: :meth:`Pipeline.stop` sets one event; a ``put`` or ``get`` waiting on a channel notices it within
``STOP_CHECK_S`` and raises :class:`Stopped`, which ends the stage's thread quietly. A stage that fails with an
exception it does not handle itself stops the pipeline too, and that exception is raised again to whoever else
reads a channel (the thread that consumes the last one), so that no failure passes silently and no reader waits
forever. :meth:`Pipeline.close` stops and joins every thread: after it no stage touches anything.
"""

from __future__ import annotations

import queue
import threading
from typing import Any, Callable

# How often a waiting put or get looks whether the pipeline was stopped: queue.Queue cannot wake its waiters
# from outside (before Python 3.13's Queue.shutdown). Stopping takes about this plus the longest single call a
# stage makes.
STOP_CHECK_S = 0.1


class Stopped(Exception):
    """The pipeline was stopped: raised from a waiting put or get, to end the stage that waited."""


class Channel:
    """A bounded first-in, first-out queue from one stage to the next."""

    def __init__(self, pipeline: Pipeline, maxsize: int, name: str):
        if maxsize < 1:
            raise ValueError(f"a channel must be bounded (maxsize >= 1), got {maxsize}")
        self.name = name
        self._pipeline = pipeline
        self._queue: queue.Queue = queue.Queue(maxsize)

    @property
    def maxsize(self) -> int:
        return self._queue.maxsize

    def put(self, item: Any) -> None:
        """Add ``item``, waiting while the channel is full; raises once the pipeline is stopped."""
        while True:
            self._pipeline.check()
            try:
                self._queue.put(item, timeout=STOP_CHECK_S)
                return
            except queue.Full:
                continue

    def get(self) -> Any:
        """The oldest item, waiting while there is none; raises once the pipeline is stopped."""
        while True:
            self._pipeline.check()
            try:
                return self._queue.get(timeout=STOP_CHECK_S)
            except queue.Empty:
                continue

    def empty(self) -> bool:
        """Whether nothing is waiting right now (another thread may add an item at any moment)."""
        return self._queue.empty()

    def qsize(self) -> int:
        return self._queue.qsize()


class Pipeline:
    """Threads running stages, their channels, and one stop for them all. Use as a context manager: leaving it
    (normally, by an exception, or by Ctrl-C) stops and joins every thread."""

    def __init__(self, name: str = "pipeline"):
        self.name = name
        self.channels: list[Channel] = []
        self._threads: list[threading.Thread] = []
        self._stopping = threading.Event()
        self._failure: BaseException | None = None
        self._failure_lock = threading.Lock()

    def channel(self, maxsize: int, name: str) -> Channel:
        channel = Channel(self, maxsize, name)
        self.channels.append(channel)
        return channel

    def start(self, name: str, stage: Callable[..., None], *args: Any) -> None:
        """Run ``stage(*args)`` on a thread of its own."""
        # Daemon only as a last resort: close() joins every thread; should a native call ever hang, the process
        # can still exit.
        thread = threading.Thread(target=self._run, args=(stage, args), name=f"{self.name}-{name}", daemon=True)
        self._threads.append(thread)
        thread.start()

    def _run(self, stage: Callable[..., None], args: tuple) -> None:
        try:
            stage(*args)
        except Stopped:
            pass
        except BaseException as error:  # noqa: BLE001 - handed to the consumer, never lost with the thread
            with self._failure_lock:
                if self._failure is None:  # the first failure explains the others
                    self._failure = error
            self._stopping.set()

    def check(self) -> None:
        """Raise if the pipeline was stopped: :class:`Stopped` in a stage's thread; in any other thread the
        failure of a stage that stopped it (else Stopped)."""
        if not self._stopping.is_set():
            return
        if self._failure is not None and threading.current_thread() not in self._threads:
            raise self._failure
        raise Stopped

    @property
    def stopped(self) -> bool:
        return self._stopping.is_set()

    def stop(self) -> None:
        self._stopping.set()

    def close(self) -> None:
        """Stop every stage and wait for its thread to end."""
        self.stop()
        for thread in self._threads:
            if thread is not threading.current_thread():
                thread.join()

    def alive(self) -> list[threading.Thread]:
        return [thread for thread in self._threads if thread.is_alive()]

    def __enter__(self) -> Pipeline:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

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

Ctrl-C: Python raises KeyboardInterrupt in the main thread, at whatever line it runs, and where it lands decides
what it does: inside ``Condition.wait`` as it takes its lock again it becomes ``RuntimeError: release unlocked
lock``; inside ``Thread.join`` (Python 3.11) it leaves a thread that still runs marked as ended; inside a finalizer
it is lost, printed as "Exception ignored"; and between two lines of the caller's bookkeeping it can lose a file's
result. So the caller's thread runs its side of the pipeline under :class:`CtrlC`, which holds a Ctrl-C back (it
only counts it) for the caller to act on at a point of its choosing: a ``get`` or ``put`` waiting in that thread
raises KeyboardInterrupt within ``STOP_CHECK_S``, and :meth:`Pipeline.close` holds it until every thread has ended.
"""

from __future__ import annotations

import queue
import signal
import threading
from types import FrameType
from typing import Any, Callable

# How often a waiting put or get looks whether the pipeline was stopped: queue.Queue cannot wake its waiters
# from outside (before Python 3.13's Queue.shutdown). Stopping takes about this plus the longest single call a
# stage makes.
STOP_CHECK_S = 0.1


class Stopped(Exception):
    """The pipeline was stopped: raised from a waiting put or get, to end the stage that waited."""


class CtrlC:
    """While this block runs, Ctrl-C (SIGINT) on the main thread is held, not raised where it lands: the code in
    the block takes it with :meth:`take` where it can act on it, and one still held at the end is handed on as it
    came (KeyboardInterrupt, in place of a GeneratorExit too; dropped if the block already ends with another
    exception, which ends it all the same).

    ``passing`` lets Ctrl-C through meanwhile (set it around a generator's ``yield``: the consumer's code gets its
    KeyboardInterrupt where it lands, as ever). Blocks nest, the inner one holding. Nothing is held off the main
    thread (which never gets KeyboardInterrupt), nor where SIGINT has a handler of the program's own or none (a
    process started in the background by a shell ignores it).
    """

    def __init__(self) -> None:
        self.presses = 0  # held, not yet taken
        self.passing = False
        self._installed = False
        self._previous: Any = None

    def __enter__(self) -> CtrlC:
        if threading.current_thread() is not threading.main_thread():
            return self
        current = signal.getsignal(signal.SIGINT)
        if current is signal.default_int_handler or isinstance(getattr(current, "__self__", None), CtrlC):
            self._previous = current
            # A Ctrl-C already on its way reaches the handler before this one (signal.signal looks first).
            signal.signal(signal.SIGINT, self._on_ctrl_c)
            self._installed = True
        return self

    def __exit__(self, exc_type: type[BaseException] | None, *exc_info: object) -> None:
        if not self._installed:
            return
        held = self.take()
        self._installed = False  # from here on Ctrl-C goes on to the previous handler
        if signal.getsignal(signal.SIGINT) == self._on_ctrl_c:
            signal.signal(signal.SIGINT, self._previous)
        if held and (exc_type is None or issubclass(exc_type, GeneratorExit)):
            self._previous(signal.SIGINT, None)  # the default raises KeyboardInterrupt; an outer CtrlC holds it

    def _on_ctrl_c(self, signum: int, frame: FrameType | None) -> None:
        # Runs in the main thread between any two of its bytecodes, even with a lock held: it only counts.
        if self.passing or not self._installed:
            self._previous(signum, frame)
        else:
            self.presses += 1

    def take(self) -> int:
        """How many Ctrl-C were held since the last take (0 where none can be)."""
        presses, self.presses = self.presses, 0
        return presses

    def let_through(self) -> bool:
        """Set ``passing``, unless a Ctrl-C is held: then take it and say so (True), still holding."""
        if self.presses:
            self.presses = 0
            return True
        self.passing = True
        return False


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
    (normally, by an exception, or by Ctrl-C) stops and joins every thread.

    ``ctrl_c``: the :class:`CtrlC` that holds Ctrl-C in the caller's thread, if any; a ``get`` or ``put`` waiting
    in that thread takes a Ctrl-C held there and raises KeyboardInterrupt."""

    def __init__(self, name: str = "pipeline", ctrl_c: CtrlC | None = None):
        self.name = name
        self.ctrl_c = ctrl_c or CtrlC()
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
        with CtrlC():  # listed before it runs (check() tells the stages' threads by it), and only if it does
            self._threads.append(thread)
            try:
                thread.start()
            except BaseException:
                self._threads.remove(thread)
                raise

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
        failure of a stage that stopped it (else Stopped), and before that KeyboardInterrupt for a Ctrl-C held
        by ``ctrl_c``."""
        caller = threading.current_thread() not in self._threads
        if caller and self.ctrl_c.take():
            raise KeyboardInterrupt
        if not self._stopping.is_set():
            return
        if self._failure is not None and caller:
            raise self._failure
        raise Stopped

    @property
    def stopped(self) -> bool:
        return self._stopping.is_set()

    def stop(self) -> None:
        self._stopping.set()

    def close(self) -> None:
        """Stop every stage and wait for its thread to end. A Ctrl-C meanwhile is held until they all have (an
        outer :class:`CtrlC` keeps holding it)."""
        self.stop()
        with CtrlC():
            for thread in self._threads:
                if thread is not threading.current_thread():
                    thread.join()

    def alive(self) -> list[threading.Thread]:
        return [thread for thread in self._threads if thread.is_alive()]

    def __enter__(self) -> Pipeline:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

"""A scan spread over a Ray cluster, with the promises of one machine: nothing lost, one report, a chain of custody.

    with ClusterScan(judge, options, ClusterOptions(address="auto")) as cluster:
        for outcome in cluster.scan(files):      # as files finish, in any order
            results.append(outcome.result)        # a FileResult, exactly as Scanner.scan_file gives it
        report["custody"]["cluster"] = cluster.custody()

The driver starts one long-lived detector actor per GPU (or per ``cpus_per_actor`` cores) of every node, each holding
its loaded judge (:class:`~deepscan.cluster.worker.NodeScanner`), and streams the files to them: at most
``files_in_flight_per_actor`` each, so that an actor always has its next file queued, and nothing more is read or
sent than the actors can take. Faces are batched inside each actor, as on one machine.

Faults are Ray's to mend: actors restart when their worker or node dies (``max_restarts``), and the files they held
are retried on the restarted actor, wherever Ray places it (``max_task_retries``). Ray counts a retry each time it
finds the actor still restarting, so the number of tries is bounded where tries are seen: each try is recorded in the
ledger before the file is read, and a file that has had ``tries_per_file`` tries is not read again (the actor answers
:class:`~deepscan.cluster.worker.TriedOut`). The driver reports what the ledger holds: every try of every file, with
its node. A file whose every try died is an ``error`` entry, as a file that cannot be read is on one machine; a file
queued on an actor that was stopped for good before reaching it was never tried, and is handed to another.
"""

from __future__ import annotations

import uuid
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterable, Iterator

from deepscan.cluster.connect import (
    ClusterError,
    Connection,
    alive_nodes,
    import_ray,
    join,
    leave,
    node_summary,
    plan_actors,
)
from deepscan.cluster.worker import (
    FileRequest,
    NodeScanner,
    NotOnNode,
    Refused,
    Scanned,
    TriedOut,
    TryLedger,
    one_line,
)

if TYPE_CHECKING:
    from deepscan.scan import FileResult, Judge, ScanOptions


@dataclass(frozen=True)
class ClusterOptions:
    address: str = "auto"  # "auto", HOST:PORT or ray://HOST:PORT (deepscan.cluster.connect)
    cpus_per_actor: int = 2  # on CPU-only nodes: one actor per this many cores
    tries_per_file: int = 3  # a file whose worker dies is read again, up to this many tries in all
    files_in_flight_per_actor: int = 2  # one being scanned, one waiting: the actor never idles for the driver
    send_limit_bytes: int = 1 << 30  # a file no node sees at its path is sent, up to this size
    local_cpus: int | None = None  # the cores of a local instance that "auto" starts when no cluster runs


@dataclass
class ClusterOutcome:
    index: int  # the file's place in the list given to ``scan``
    result: "FileResult"
    tries: list[dict] = field(default_factory=list)  # every try: node, host, worker, access, start, outcome

    @property
    def node(self) -> dict | None:
        """The try that scanned the file (None when no try finished)."""
        finished = [entry for entry in self.tries if entry.get("outcome") == "scanned"]
        return finished[-1] if finished else None

    def custody(self) -> dict:
        node = self.node
        return {
            "host": node["host"] if node else None,
            "node_id": node["node_id"] if node else None,
            "access": node["access"] if node else None,
            "tries": self.tries,
        }


@dataclass
class _Actor:
    handle: object
    slot: object  # deepscan.cluster.connect.ActorSlot
    in_flight: int = 0
    live: bool = False  # its ready() answered and it did not refuse
    gone: bool = False  # refused or lost for good: sent nothing more


class ClusterScan:
    """See the module docstring. ``notice`` receives one-line notes for the user (an actor refused or lost).

    One ClusterScan may run several scans with the same actors; ``cluster`` (:class:`ClusterOptions`) is read as
    each file is handed out, all but ``address``, ``cpus_per_actor`` and ``local_cpus``, which size the actors when
    they start."""

    def __init__(self, judge: "Judge", options: "ScanOptions", cluster: ClusterOptions | None = None, *,
                 notice: Callable[[str], None] | None = None):
        self.judge = judge
        self.options = options
        self.cluster = cluster or ClusterOptions()
        if self.cluster.tries_per_file < 1 or self.cluster.files_in_flight_per_actor < 1:
            raise ClusterError("tries_per_file and files_in_flight_per_actor must be at least 1")
        self.notice = notice or (lambda line: None)
        self.connection: Connection | None = None
        self.actors: list[_Actor] = []
        self.ledger = None
        self._starting: dict[object, _Actor] = {}  # ready() reference -> the actor it asks
        self._nodes: list[dict] = []
        self._parcel = None
        self._planned = 0
        self._scans = 0  # scans started: each numbers its files' tries apart in the ledger
        self._incarnations: list[dict] = []  # every ready() answer: who scanned, where, with which weights
        self._files: dict[str, dict] = {}  # custody per file, by the path as given
        self._joined: dict = {}  # what was asked and joined: the report needs it after the scan has left

    # --- life cycle ----------------------------------------------------------------------------------------------
    def __enter__(self) -> "ClusterScan":
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def start(self) -> None:
        """Join the cluster and start the actors (without waiting for them: the first ready gets the first file)."""
        ray = import_ray()
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        from deepscan.cluster.parcel import pack_judge

        self.connection = join(self.cluster.address, local_cpus=self.cluster.local_cpus)
        self._joined = self.connection.custody()
        try:
            nodes = alive_nodes()
            slots = plan_actors(nodes, self.options.device, self.cluster.cpus_per_actor)
            self._planned = len(slots)
            self._nodes = [{"node_id": node["NodeID"], **node_summary(node)} for node in nodes]
            # Kept for the scan's life: a restarted actor rebuilds its judge from the same objects.
            self._parcel = pack_judge(self.judge)
            # The ledger holds no model and does no work: no CPU reserved for it. The actors find it by its name
            # (an actor handle among an actor's constructor arguments would not survive every restart).
            ledger_name = f"deepscan-tries-{uuid.uuid4().hex}"
            self.ledger = ray.remote(TryLedger).options(num_cpus=0, name=ledger_name).remote()
            actor_class = ray.remote(NodeScanner)
            for slot in slots:
                handle = actor_class.options(
                    num_cpus=slot.cpus,
                    num_gpus=slot.gpus,
                    # A worker or node that dies brings its actor back (elsewhere, when its node is gone), as often
                    # as it takes; each file's tries are bounded by the ledger, not by the actor's life.
                    max_restarts=-1,
                    # Spread as planned, but a restart may go wherever there is room (soft).
                    scheduling_strategy=NodeAffinitySchedulingStrategy(slot.node_id, soft=True),
                ).remote(self._parcel, self.options, ledger_name)
                actor = _Actor(handle, slot)
                self.actors.append(actor)
                self._starting[self._ask_ready(handle)] = actor
        except BaseException:
            self.close()
            raise
        self.notice(f"{len(slots)} detector actor(s) on {len({s.node_id for s in slots})} node(s) of "
                    f"{self.connection.joined}")

    def close(self) -> None:
        """Stop the actors and the ledger, and leave the cluster (stopping a local instance this scan started)."""
        if self.connection is None:
            return
        import ray
        from ray.exceptions import RayError

        for handle in [actor.handle for actor in self.actors] + ([self.ledger] if self.ledger is not None else []):
            try:
                ray.kill(handle, no_restart=True)
            except RayError:  # already gone with its node, or the session was lost: nothing left to stop
                pass
        self.actors, self._starting, self.ledger, self._parcel = [], {}, None, None
        connection, self.connection = self.connection, None
        leave(connection)

    # --- the scan --------------------------------------------------------------------------------------------------
    def scan(self, paths: Iterable[Path]) -> Iterator[ClusterOutcome]:
        """Scan ``paths`` on the actors; yields each file's outcome as it completes. Ray's errors never escape: a
        file that cannot be scanned is an ``error`` result. Stopping the iteration (Ctrl-C) cancels what is in
        flight; what was yielded stays yielded."""
        import ray

        self._scans += 1
        queue = deque(FileRequest.for_path(self._scans, index, Path(path)) for index, path in enumerate(paths))
        contents: dict[int, object] = {}  # index -> ObjectRef of a file's bytes, while it is in flight
        in_flight: dict[object, tuple[FileRequest, _Actor]] = {}
        self._await_first_actor()
        try:
            while queue or in_flight:
                self._hand_out(queue, in_flight, contents)
                waiting = [*in_flight, *self._starting]
                if not waiting:  # files left, and no actor alive or coming back
                    while queue:
                        request = queue.popleft()
                        yield self._failed(request, [], "not scanned: no detector actor is left on the cluster")
                    return
                (done,), _ = ray.wait(waiting, num_returns=1)
                if done in self._starting:
                    self._on_ready(done)
                    continue
                request, actor = in_flight.pop(done)
                actor.in_flight -= 1
                outcome = self._on_answer(done, request, actor, queue, contents)
                if outcome is not None:
                    contents.pop(request.index, None)
                    yield outcome
        finally:
            # Stopped early (Ctrl-C, or the caller left the loop); after close() the actors are gone already.
            if self.ledger is not None and in_flight:
                self._stop(in_flight)

    def _stop(self, in_flight: dict) -> None:
        """Stop the files in flight: those being scanned are cancelled (the scan keeps what it did), and those
        still queued on an actor answer :class:`~deepscan.cluster.worker.Stopped`, unread, when their turn comes.

        Only calls that have begun are cancelled: cancelling an actor call still queued could leave the actor
        waiting for it in its ordered queue ("Timed out waiting for seq_no ..."), so that every call of the next
        scan on that actor failed after 30 s. (A file whose worker died and whose retry waits for the restarted
        actor counts as begun, and is cancelled as before.) Without the ledger, every call is cancelled."""
        import ray
        from ray.exceptions import RayError

        try:
            begun = ray.get(self.ledger.stop.remote(self._scans))
        except RayError:  # the ledger is gone (its node died): no way to tell, so stop everything as before
            begun = None
        for reference, (request, _actor) in in_flight.items():
            if begun is None or request.index in begun:
                ray.cancel(reference)
            if begun is not None:
                self.ledger.settle.remote(request.scan, request.index)  # no answer will come to settle it

    def _await_first_actor(self) -> None:
        """Wait until one actor can scan; raise ClusterError with the reason when none can (every node refused)."""
        import ray

        while not any(actor.live for actor in self.actors):
            if not self._starting:
                reasons = [entry["refusal"] for entry in self._incarnations if entry.get("refusal")]
                raise ClusterError(reasons[0] if reasons else "no detector actor could start on the cluster")
            (done,), _ = ray.wait(list(self._starting), num_returns=1)
            self._on_ready(done)

    def _hand_out(self, queue: deque, in_flight: dict, contents: dict) -> None:
        limit = self.cluster.files_in_flight_per_actor
        while queue:
            free = [actor for actor in self.actors if actor.live and actor.in_flight < limit]
            if not free:
                return
            actor = min(free, key=lambda candidate: candidate.in_flight)
            request = queue.popleft()
            # Retried through every restart of the actor; the ledger, not Ray's count, bounds the tries.
            reference = actor.handle.scan.options(max_task_retries=-1).remote(
                request, contents.get(request.index), self.cluster.tries_per_file)
            in_flight[reference] = (request, actor)
            actor.in_flight += 1

    @staticmethod
    def _ask_ready(handle):
        # Answered once the actor is up, through any number of restarts; fails only when it is gone for good.
        return handle.ready.options(max_task_retries=-1).remote()

    def _on_ready(self, reference) -> None:
        import ray
        from ray.exceptions import RayError

        actor = self._starting.pop(reference)
        try:
            info = ray.get(reference)
        except RayError as error:
            actor.gone, actor.live = True, False
            self._incarnations.append({"host": actor.slot.host, "refusal": f"lost: {_first_line(error)}"})
            self.notice(f"a detector actor on {actor.slot.host} was lost: {_first_line(error)}")
            return
        self._incarnations.append(info)
        if info["refusal"]:
            actor.gone, actor.live = True, False
            ray.kill(actor.handle, no_restart=True)
            self.notice(f"a detector actor on {info['host']} refused to scan: {info['refusal']}")
        else:
            actor.live = True

    def _recheck(self, actor: _Actor) -> None:
        """After a call to ``actor`` failed in Ray: nothing more for it until its ready() answers again (it is
        back, possibly elsewhere) or fails (it is gone for good)."""
        if actor.live and not actor.gone:
            actor.live = False
            self._starting[self._ask_ready(actor.handle)] = actor

    def _on_answer(self, reference, request: FileRequest, actor: _Actor, queue: deque, contents: dict):
        import ray
        from ray.exceptions import RayError, RayTaskError

        try:
            answer = ray.get(reference)
        except RayTaskError as error:  # the scan itself raised (a bug, or DEEPSCAN_DEBUG): that file's error
            tries = self._tries(request, "raised")
            cause = error.cause if error.cause is not None else error
            return self._failed(request, tries, f"unexpected failure while reading it ({one_line(cause)}); please "
                                                "report it (DEEPSCAN_DEBUG=1 shows where)")
        except RayError as error:  # its actor is gone for good (stopped, or its restarts ran out)
            self._recheck(actor)
            tries = self._tries(request, "worker died")
            if not tries:  # queued on an actor that went before reaching it: never tried, so not a failure
                queue.appendleft(request)
                return None
            return self._tried_out(request, tries, _first_line(error))
        if isinstance(answer, TriedOut):
            return self._tried_out(request, self._tries(request, "worker died"), "")
        if isinstance(answer, Refused):  # an actor restarted on a node that refuses: the file goes elsewhere
            actor.gone, actor.live = True, False
            ray.kill(actor.handle, no_restart=True)
            self.notice(f"a detector actor refused to scan after a restart: {answer.reason}")
            queue.appendleft(request)
            return None
        if isinstance(answer, NotOnNode):
            return self._send(request, answer, queue, contents)
        assert isinstance(answer, Scanned), answer
        if answer.attempt["attempt"] == 1:  # the usual case: nothing to learn from the ledger, only to clear it
            self.ledger.settle.remote(request.scan, request.index)
            earlier = []
        else:  # Ray retried it: the earlier tries are those whose workers died
            earlier = [entry for entry in self._tries(request, "worker died")
                       if entry["attempt"] < answer.attempt["attempt"]]
        tries = [*earlier, dict(answer.attempt, outcome="scanned")]
        return self._outcome(request, answer.result, tries)

    def _tried_out(self, request: FileRequest, tries: list[dict], detail: str):
        where = "; ".join(filter(None, [", ".join(entry["host"] for entry in tries), detail]))
        count = f"{len(tries)} tr{'y' if len(tries) == 1 else 'ies'}"
        return self._failed(request, tries, f"not scanned: its worker died on each of its {count} ({where})")

    def _send(self, request: FileRequest, answer: NotOnNode, queue: deque, contents: dict):
        """The node does not see the file: its bytes go through the object store once (a retry reuses them)."""
        import ray

        from deepscan.media.errors import MediaError, shown_path
        from deepscan.media.files import open_regular

        if request.size > self.cluster.send_limit_bytes:
            return self._failed(request, [], f"not scanned: node {answer.host} does not see it at its path and it is "
                                             f"larger ({request.size} bytes) than the {self.cluster.send_limit_bytes} "
                                             "bytes sent to a node; put the case on a path every node mounts")
        try:
            with open_regular(request.given) as handle:
                content = handle.read()
        except (MediaError, OSError) as error:
            message = str(error) if isinstance(error, MediaError) else f"{shown_path(request.given)}: {error}"
            return self._failed(request, [], message, prefixed=True)
        contents[request.index] = ray.put(content)
        queue.appendleft(request)
        return None

    # --- outcomes and custody --------------------------------------------------------------------------------------
    def _tries(self, request: FileRequest, outcome_of_unfinished: str) -> list[dict]:
        import ray

        tries = ray.get(self.ledger.settle.remote(request.scan, request.index))
        return [dict(entry, outcome=outcome_of_unfinished) for entry in tries]

    def _outcome(self, request: FileRequest, result, tries: list[dict]) -> ClusterOutcome:
        outcome = ClusterOutcome(request.index, result, tries)
        self._files[request.given] = outcome.custody()
        return outcome

    def _failed(self, request: FileRequest, tries: list[dict], reason: str, *, prefixed: bool = False):
        """An ``error`` result, as one machine gives for a file it cannot read."""
        from deepscan.media.errors import shown_path
        from deepscan.media.images import VIDEO_EXTENSIONS
        from deepscan.scan import FileResult

        # As one machine records a file it could not open: a video by its extension, else an image.
        kind = "video" if Path(request.given).suffix.lower() in VIDEO_EXTENSIONS else "image"
        message = reason if prefixed else f"{shown_path(request.given)}: {reason}"
        return self._outcome(request, FileResult(path=request.given, kind=kind, status="error", message=message),
                             tries)

    def open_tries(self) -> dict[int, list[dict]]:
        """The latest scan's tries under way (and those that died, until their file settles), by file index."""
        import ray

        return ray.get(self.ledger.open_tries.remote(self._scans)) if self.ledger is not None else {}

    def custody(self) -> dict:
        """The report's ``custody.cluster``: the engine, what was joined, the nodes, every actor that reported (with
        the weights sha256 it verified on its node), the rules, and per file where and how it was scanned."""
        import ray

        return {
            "engine": "ray",
            "ray_version": ray.__version__,
            **self._joined,
            "nodes": self._nodes,
            "actors_planned": self._planned,
            "actors": self._incarnations,  # those that reported before this was written, restarts included
            "tries_per_file": self.cluster.tries_per_file,
            "send_limit_bytes": self.cluster.send_limit_bytes,
            "files": dict(self._files),
        }


def _first_line(error: BaseException) -> str:
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return lines[0] if lines else type(error).__name__

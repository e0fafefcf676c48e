"""Joining a Ray cluster, and sizing the detector actors to what it holds.

``--ray auto`` joins the cluster this machine belongs to (``RAY_ADDRESS``, or the one ``ray start`` left running
here) and, when none runs, starts a Ray instance on this machine for the scan alone. ``--ray HOST:PORT`` (the head's
GCS port) or ``--ray ray://HOST:PORT`` (Ray Client) joins that cluster. Whatever goes wrong is one line
(:class:`ClusterError`): Ray not installed, an address that is not one, a cluster that does not answer.

Ray itself is imported inside the functions: it is an optional extra (``pip install "deepscan[ray]"``), and the
command line must start quickly without it.
"""

from __future__ import annotations

import logging
import os
import socket
from dataclasses import dataclass

from deepscan.errors import DeepscanError

RAY_EXTRA = 'pip install "deepscan[ray]"'
# Ray keeps retrying a GCS that does not answer for minutes, printing as it goes, and waits for ever on a port where
# something else listens: a probe tells at once whether a gRPC server (as Ray's GCS and Ray Client are) answers.
PROBE_TIMEOUT_S = 5.0
HTTP2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
HTTP2_EMPTY_SETTINGS = bytes([0, 0, 0, 4, 0, 0, 0, 0, 0])  # length 0, type SETTINGS, no flags, stream 0
HTTP2_SETTINGS = 4
DEFAULT_GCS_PORT = 6379
DEFAULT_CLIENT_PORT = 10001
# What Ray prints itself: errors only. Worker output stays on the workers (their log files), so that the scan's
# own lines are not buried; a worker's death still reaches the report through the tries it cost.
RAY_LOGGING = {"logging_level": logging.ERROR, "log_to_driver": False}


class ClusterError(DeepscanError):
    """The cluster cannot be used as asked; the message is one line for the user."""


def import_ray():
    """The ``ray`` module, or a one-line ClusterError saying how to install it."""
    try:
        import ray
    except ImportError:
        raise ClusterError(f"--ray needs Ray, which is not installed here: {RAY_EXTRA}") from None
    return ray


def _host_and_port(address: str) -> tuple[str, int]:
    """``HOST:PORT`` or ``ray://HOST[:PORT]`` split for the reachability probe (IPv6 hosts in brackets)."""
    client = address.startswith("ray://")
    rest = address.removeprefix("ray://").rstrip("/")
    host, separator, port = rest.rpartition(":")
    if not separator or "]" in port:  # no port given (or only an IPv6 host's colons)
        host, port = rest, str(DEFAULT_CLIENT_PORT if client else DEFAULT_GCS_PORT)
    host = host.strip("[]")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ClusterError(f"--ray {address!r}: expected auto, HOST:PORT (the head's GCS port) or ray://HOST:PORT")
    return host, int(port)


def probe(address: str) -> None:
    """Raise ClusterError unless a gRPC server answers at ``address``: HTTP/2's connection preface gets a SETTINGS
    frame back from any gRPC server, and from nothing else likely to listen there."""
    host, port = _host_and_port(address)
    try:
        with socket.create_connection((host, port), timeout=PROBE_TIMEOUT_S) as connection:
            connection.sendall(HTTP2_PREFACE + HTTP2_EMPTY_SETTINGS)
            answer = connection.recv(9)
    except OSError as error:
        reason = error.strerror or type(error).__name__
        raise ClusterError(
            f"no Ray cluster answers at {address} ({reason}): start one with `ray start --head` on its head node, "
            "or use --ray auto"
        ) from None
    if len(answer) < 4 or answer[3] != HTTP2_SETTINGS:
        raise ClusterError(f"what answers at {address} is not a Ray cluster (no gRPC server there): give the head "
                           f"node's GCS port ({DEFAULT_GCS_PORT} by default) or ray://HOST:{DEFAULT_CLIENT_PORT}")


@dataclass(frozen=True)
class Connection:
    """The Ray session a scan runs in: what was asked, what was joined, and whether this scan must leave it."""

    asked: str  # "auto" or the address given
    joined: str  # the running cluster, a local instance started for this scan, or this process's own session
    owned: bool  # this scan connected (or started Ray): it disconnects (and stops what it started) at the end

    def custody(self) -> dict:
        return {"asked": self.asked, "joined": self.joined}


def join(address: str = "auto", *, local_cpus: int | None = None) -> Connection:
    """Connect this process to the cluster ``address`` names (see the module docstring). ``local_cpus`` bounds a
    local instance that ``auto`` starts when no cluster runs (None: every core). A process already connected
    (a test's instance, a notebook) keeps its session, whatever ``address`` says, once that address answers."""
    ray = import_ray()
    if address != "auto":
        probe(address)
    elif os.environ.get("RAY_ADDRESS"):
        probe(os.environ["RAY_ADDRESS"])
    if ray.is_initialized():
        return Connection(address, "this process's Ray session", owned=False)
    try:
        if address != "auto":
            ray.init(address=address, **RAY_LOGGING)
            return Connection(address, f"the cluster at {address}", owned=True)
        try:
            ray.init(address="auto", **RAY_LOGGING)
            return Connection(address, "the running cluster this machine belongs to", owned=True)
        except ConnectionError:  # no cluster runs here: a local instance, for this scan alone
            ray.init(num_cpus=local_cpus, include_dashboard=False, **RAY_LOGGING)
            return Connection(address, "a local Ray instance started for this scan", owned=True)
    except ClusterError:
        raise
    except Exception as error:  # noqa: BLE001 - whatever Ray raises while joining is one line for the user
        first_line = (str(error).strip().splitlines() or [type(error).__name__])[0]
        raise ClusterError(f"cannot join the Ray cluster ({address}): {first_line}") from None


def leave(connection: Connection) -> None:
    """Disconnect, stopping the local instance when this scan started it; a session found open is left open."""
    if connection.owned:
        import ray

        ray.shutdown()


# --- sizing ----------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ActorSlot:
    """Room for one detector actor on one node: the CPUs and GPUs it asks Ray for."""

    node_id: str
    host: str
    cpus: float
    gpus: int


def alive_nodes() -> list[dict]:
    """The cluster's live nodes as Ray lists them (``ray.nodes()``)."""
    import ray

    return [node for node in ray.nodes() if node.get("Alive")]


def node_summary(node: dict) -> dict:
    resources = node.get("Resources", {})
    return {
        "host": node.get("NodeManagerHostname"),
        "ip": node.get("NodeManagerAddress"),
        "cpus": resources.get("CPU", 0.0),
        "gpus": resources.get("GPU", 0.0),
    }


def plan_actors(nodes: list[dict], device: str, cpus_per_actor: int) -> list[ActorSlot]:
    """One actor per GPU (``device`` auto or cuda, on nodes that have GPUs) with its share of the node's cores, else
    one per ``cpus_per_actor`` cores of each node (at least one per node with a core). Sized per node rather than
    from the cluster's totals: an actor cannot span nodes, and one asking for more than any node has would wait for
    ever."""
    wants_gpu = device in ("auto", "cuda")
    if device == "cuda" and not any(node.get("Resources", {}).get("GPU", 0) >= 1 for node in nodes):
        raise ClusterError("--device cuda asked for, but no node of the cluster has a GPU")
    slots = []
    for node in nodes:
        resources = node.get("Resources", {})
        cpus, gpus = float(resources.get("CPU", 0.0)), int(resources.get("GPU", 0.0))
        node_id, host = node["NodeID"], node.get("NodeManagerHostname") or node.get("NodeManagerAddress", "?")
        if wants_gpu and gpus >= 1:
            # The GPU scores; the cores beside it decode and find faces for it, which is the slower part.
            slots.extend(ActorSlot(node_id, host, float(cpus // gpus), 1) for _ in range(gpus))
        elif cpus >= 1 and device != "cuda":
            count = max(1, int(cpus // cpus_per_actor))
            slots.extend(ActorSlot(node_id, host, min(float(cpus_per_actor), cpus), 0) for _ in range(count))
    if not slots:
        raise ClusterError("the cluster has no node with a CPU or GPU free for a detector actor")
    return slots

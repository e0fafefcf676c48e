"""deepscan on a Ray cluster: a local Ray instance (2 CPUs) scans a case as one machine does, to the same scores and
verdicts; a worker killed mid-file costs a try, not the file; a file whose every try dies is an error entry; the
chain of custody says where each file was scanned, with which weights. Ray is installed by the test extra."""

from __future__ import annotations

import logging
import os
import signal
import socket
import sys
import threading
from dataclasses import replace
from pathlib import Path

import pytest
import ray
from PIL import Image

from deepscan.cluster import ClusterError, ClusterOptions, ClusterScan
from deepscan.cluster.connect import plan_actors
from deepscan.cluster.worker import FileRequest, Stopped, TriedOut, TryLedger
from deepscan.media.images import discover_media
from deepscan.media.synthetic import moving_portrait_clip
from deepscan.scan import Judge, Scanner, ScanOptions
from deepscan.weights import build_detector

OPTIONS = ScanOptions(method="faclue")  # a shipped detector, the quickest on the CPU (ONNX Runtime)


@pytest.fixture(scope="module")
def ray_instance():
    # Small object store: the tests send a few megabytes at most; Ray's default would reserve 30 % of memory.
    ray.init(num_cpus=2, include_dashboard=False, logging_level=logging.ERROR, log_to_driver=False,
             object_store_memory=128 * 1024 * 1024)
    yield
    _Shared.close()
    ray.shutdown()


@pytest.fixture(scope="module")
def case(tmp_path_factory, portrait_image) -> list[Path]:
    """A photo, a clip with two people, a longer clip (the one whose worker is killed) and a file that is no video."""
    folder = tmp_path_factory.mktemp("case")
    Image.fromarray(portrait_image).save(folder / "a.jpg", quality=90)
    (folder / "broken.mp4").write_text("not a video\n")
    moving_portrait_clip(folder / "long.mp4", seconds=4.0, fps=25, size=(320, 240), faces=1)
    moving_portrait_clip(folder / "two.mp4", seconds=2.0, fps=25, size=(320, 240), faces=2)
    return discover_media([folder])


@pytest.fixture(scope="module")
def judge() -> Judge:
    detector, resolved = build_detector(OPTIONS.method)
    assert resolved.source == "shipped" and resolved.trained
    return Judge.single(detector, resolved)


@pytest.fixture(scope="module")
def local_results(case, judge, one_intra_op_thread) -> dict[str, dict]:
    """What one machine reports, file by file (one torch thread, as each 1-CPU actor has)."""
    with Scanner(None, OPTIONS, judge=judge) as scanner:
        return {str(path): _comparable(scanner.scan_file(path)) for path in case}


def _comparable(result) -> dict:
    entry = result.to_dict()
    entry.pop("seconds")  # how long it took is the one thing that may differ
    return entry


class _Shared:
    """One set of actors (a model load each) for the library tests; the CLI test needs the CPUs they hold."""

    scan: ClusterScan | None = None

    @classmethod
    def close(cls) -> None:
        if cls.scan is not None:
            cls.scan.close()
            cls.scan = None


@pytest.fixture
def cluster(ray_instance, judge) -> ClusterScan:
    if _Shared.scan is None:
        _Shared.scan = ClusterScan(judge, OPTIONS, ClusterOptions(cpus_per_actor=1))
        _Shared.scan.start()
    yield _Shared.scan
    _Shared.scan.cluster = ClusterOptions(cpus_per_actor=1)  # whatever a test changed


def _index_of(case: list[Path], name: str) -> int:
    return [path.name for path in case].index(name)


class _KillOnStart(threading.Thread):
    """Kills (SIGKILL) the worker process scanning file ``index`` as soon as the ledger shows its try: a worker that
    dies mid-file, as it would when its node goes down. The clip takes seconds to scan, the kill milliseconds."""

    def __init__(self, cluster: ClusterScan, index: int):
        super().__init__(daemon=True)
        self.cluster, self.index = cluster, index
        self.killed_pid: int | None = None
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.wait(0.02):
            tries = self.cluster.open_tries().get(self.index)
            if tries:
                self.killed_pid = tries[-1]["pid"]
                os.kill(self.killed_pid, signal.SIGKILL)
                return


def _scan_killing(cluster: ClusterScan, case: list[Path], name: str):
    killer = _KillOnStart(cluster, _index_of(case, name))
    killer.start()
    try:
        outcomes = list(cluster.scan(case))
    finally:
        killer.stop.set()
        killer.join()
    assert killer.killed_pid is not None, "the kill never happened: the test proved nothing"
    return outcomes, killer.killed_pid


# --- the command line (first: it starts actors of its own, on the CPUs the shared actors would hold) ------------


def test_scan_with_ray_auto_writes_the_local_report(tmp_path, ray_instance, case, local_results):
    """Needs the `--ray` option of `deepscan scan` (the CLI diff of issue 17)."""
    import json

    from typer.testing import CliRunner

    from deepscan.cli import app

    _Shared.close()
    report_path = tmp_path / "report.json"
    result = CliRunner().invoke(app, ["scan", str(case[0].parent), "--method", OPTIONS.method, "--ray", "auto",
                                        "--json", str(report_path)])
    assert result.exit_code == 1, result.output  # broken.mp4 cannot be read, as on one machine
    assert "Traceback" not in result.output
    report = json.loads(report_path.read_text())
    assert report["partial"] is False and report["files_planned"] == len(case)
    assert [entry["path"] for entry in report["files"]] == [str(path) for path in case]  # the planned order
    for entry in report["files"]:
        local = local_results[entry["path"]]
        assert entry["status"] == local["status"] and entry["message"] == local["message"]
        assert (entry["verdict"] or {}).get("label") == (local["verdict"] or {}).get("label")
        assert [face["fake_probability"] for face in entry["faces"]] == pytest.approx(
            [face["fake_probability"] for face in local["faces"]], rel=1e-5)
    cluster = report["custody"]["cluster"]
    assert cluster["engine"] == "ray" and set(cluster["files"]) == {str(path) for path in case}
    assert all(entry["host"] and entry["tries"][-1]["outcome"] == "scanned" for entry in cluster["files"].values())


@pytest.mark.parametrize("command", ["scan", "evaluate -m faclue"])
def test_ray_auto_is_refused_in_one_line_without_ray(tmp_path, case, monkeypatch, command):
    """Needs the `--ray` option of `deepscan scan` and `deepscan evaluate` (the CLI diff of issue 17)."""
    from typer.testing import CliRunner

    from deepscan.cli import app

    monkeypatch.setitem(sys.modules, "ray", None)  # what an install without the extra looks like to `import ray`
    result = CliRunner().invoke(app, [*command.split(), str(case[0].parent), "--ray", "auto"])
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert result.stderr.strip() == 'error: --ray needs Ray, which is not installed here: pip install "deepscan[ray]"'


# --- the library ------------------------------------------------------------------------------------------------


def test_a_cluster_scan_gives_exactly_the_local_scores_and_verdicts(cluster, case, local_results, judge):
    outcomes = list(cluster.scan(case))
    assert sorted(outcome.index for outcome in outcomes) == list(range(len(case)))
    for outcome in outcomes:
        assert outcome.result.path == str(case[outcome.index])
        assert _comparable(outcome.result) == local_results[outcome.result.path]
        (only_try,) = outcome.tries
        assert only_try["outcome"] == "scanned" and only_try["access"] == "shared path"
        assert only_try["weights_sha256"] == {"faclue": judge.members[0].weights.sha256}
    custody = cluster.custody()
    assert custody["engine"] == "ray" and custody["ray_version"] == ray.__version__
    assert custody["actors_planned"] == 2  # one per CPU, as asked (the scan starts on the first one ready)
    assert custody["actors"]
    for actor in custody["actors"]:
        assert actor["refusal"] is None and actor["threads"] == 1
        assert actor["weights_verified"] == [{"member": "faclue", "source": "shipped",
                                              "sha256": judge.members[0].weights.sha256,
                                              "card_sha256": judge.members[0].weights.card_sha256}]
    assert set(custody["files"]) == set(local_results)


def test_stopping_a_scan_part_way_keeps_what_was_done_and_the_actors(cluster, case, local_results):
    """Ctrl-C in the driver: the interrupt leaves the iteration, what came before stands, and what was in flight is
    cancelled without harming the actors (the next scan on them is whole)."""
    scanning = cluster.scan(case)
    first = next(scanning)
    assert _comparable(first.result) == local_results[first.result.path]
    with pytest.raises(KeyboardInterrupt):
        scanning.throw(KeyboardInterrupt)
    # A call of the stopped scan that reaches an actor now is answered at once, its file unread.
    late = FileRequest.for_path(cluster._scans, len(case), case[0])
    assert isinstance(ray.get(cluster.actors[0].handle.scan.remote(late, None, 3)), Stopped)
    again = {outcome.result.path: _comparable(outcome.result) for outcome in cluster.scan(case[:2])}
    assert again == {str(path): local_results[str(path)] for path in case[:2]}


def test_the_ledger_begins_no_try_of_a_stopped_scan():
    """How a stopped scan's queued files are stopped without cancelling their calls: their tries are refused."""
    ledger = TryLedger()
    assert ledger.start(1, 0, {"host": "a"}, 3) == 1
    assert ledger.stop(1) == {0: [{"host": "a", "attempt": 1}]}  # what had begun: the calls to cancel
    assert isinstance(ledger.start(1, 1, {"host": "a"}, 3), Stopped)
    assert ledger.open_tries(1) == {0: [{"host": "a", "attempt": 1}]}  # the refused call left no try
    assert ledger.start(2, 0, {"host": "a"}, 1) == 1  # the next scan is not stopped
    assert isinstance(ledger.start(2, 0, {"host": "a"}, 1), TriedOut)


def test_a_file_whose_worker_dies_mid_scan_is_retried_and_the_report_says_so(cluster, case, local_results):
    outcomes, killed_pid = _scan_killing(cluster, case, "long.mp4")
    assert {outcome.result.path: _comparable(outcome.result) for outcome in outcomes} == local_results
    retried = next(outcome for outcome in outcomes if outcome.result.path.endswith("long.mp4"))
    died, scanned = retried.tries
    assert (died["attempt"], died["outcome"], died["pid"]) == (1, "worker died", killed_pid)
    assert (scanned["attempt"], scanned["outcome"]) == (2, "scanned") and scanned["pid"] != killed_pid
    assert cluster.custody()["files"][retried.result.path]["tries"] == retried.tries
    assert all(len(outcome.tries) == 1 for outcome in outcomes if outcome is not retried)


def test_a_file_that_fails_on_every_try_is_an_error_entry_and_the_rest_is_scanned(cluster, case, local_results):
    cluster.cluster = replace(cluster.cluster, tries_per_file=1)
    outcomes, killed_pid = _scan_killing(cluster, case, "long.mp4")
    by_path = {outcome.result.path: outcome for outcome in outcomes}
    assert set(by_path) == set(local_results)
    failed = by_path[str(case[_index_of(case, "long.mp4")])]
    assert failed.result.status == "error" and failed.result.verdict is None and failed.result.kind == "video"
    assert failed.result.message.startswith(f"{failed.result.path}: not scanned: its worker died on each of its 1 try")
    assert "\n" not in failed.result.message
    assert [(entry["outcome"], entry["pid"]) for entry in failed.tries] == [("worker died", killed_pid)]
    for path, outcome in by_path.items():
        if outcome is not failed:
            assert _comparable(outcome.result) == local_results[path]


def test_a_file_no_node_sees_at_its_path_is_sent_and_named_as_given(cluster, case, local_results, monkeypatch):
    """Media off the shared mount: the node says it does not see the driver's file (here: another modification
    time), the driver sends its bytes, and the result (its errors too) names the file as the scan was given it."""
    real_for_path = FileRequest.for_path.__func__

    def elsewhere(cls, scan, index, path):
        request = real_for_path(cls, scan, index, path)
        return replace(request, mtime_ns=request.mtime_ns + 1) if request.mtime_ns is not None else request

    monkeypatch.setattr(FileRequest, "for_path", classmethod(elsewhere))
    chosen = [case[_index_of(case, "a.jpg")], case[_index_of(case, "broken.mp4")]]
    outcomes = list(cluster.scan(chosen))
    assert {o.result.path: _comparable(o.result) for o in outcomes} == {str(p): local_results[str(p)] for p in chosen}
    assert all(outcome.tries[-1]["access"] == "sent bytes" for outcome in outcomes)

    cluster.cluster = replace(cluster.cluster, send_limit_bytes=100)
    (too_large,) = cluster.scan(chosen[:1])
    assert too_large.result.status == "error" and too_large.tries == []
    assert "does not see it at its path and it is larger" in too_large.result.message


def test_an_unreachable_cluster_is_one_line(judge):
    with socket.socket() as probe:  # a port nothing listens on: bound, then released
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with pytest.raises(ClusterError) as caught:
        ClusterScan(judge, OPTIONS, ClusterOptions(address=f"127.0.0.1:{port}")).start()
    message = str(caught.value)
    assert message.startswith(f"no Ray cluster answers at 127.0.0.1:{port}") and "\n" not in message
    with pytest.raises(ClusterError, match="expected auto, HOST:PORT"):
        ClusterScan(judge, OPTIONS, ClusterOptions(address="head-node:port")).start()


def test_a_port_where_something_else_listens_is_refused_before_ray_waits_on_it(judge):
    """Ray would wait for ever on a port where some other service listens (a web server, say)."""
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        port = server.getsockname()[1]

        def answer_as_a_web_server() -> None:
            connection, _ = server.accept()
            with connection:
                connection.sendall(b"HTTP/1.1 400 Bad Request\r\n\r\n")

        threading.Thread(target=answer_as_a_web_server, daemon=True).start()
        with pytest.raises(ClusterError, match=f"what answers at 127.0.0.1:{port} is not a Ray cluster"):
            ClusterScan(judge, OPTIONS, ClusterOptions(address=f"127.0.0.1:{port}")).start()


def test_a_running_cluster_is_joined_by_its_address(ray_instance):
    """The probe lets a real Ray head through (here: the test's own instance, which the scan keeps using)."""
    from deepscan.cluster.connect import join

    connection = join(ray.get_runtime_context().gcs_address)
    assert connection.owned is False and ray.is_initialized()


def test_weights_that_differ_on_a_node_are_refused(ray_instance, judge, tmp_path):
    """The check each actor runs on its node: weights whose sha256 is not the driver's build nothing."""
    import shutil

    from deepscan.cluster.parcel import WeightsDiffer, pack_judge, unpack_judge

    member = judge.members[0]
    copy = tmp_path / member.weights.path.name
    shutil.copy(member.weights.path, copy)
    shutil.copy(member.weights.card_path, tmp_path / member.weights.card_path.name)
    altered = replace(member.weights, path=copy, source="file", sha256="0" * 64)  # what the driver claims to hold
    parcel = pack_judge(Judge.single(member.detector, altered))
    received = member.weights.sha256[:12]  # the node hashes the file it received: the real weights' sha256
    with pytest.raises(WeightsDiffer, match=rf"node here: the received faclue weights \(sha256 {received}"):
        unpack_judge(parcel, "here")
    rebuilt, verified = unpack_judge(pack_judge(Judge.single(member.detector, replace(member.weights, path=copy,
                                                                                       source="file"))), "here")
    assert verified[0]["sha256"] == member.weights.sha256 and rebuilt.threshold == judge.threshold


def test_actors_are_one_per_gpu_else_one_per_cpus_per_actor_cores():
    gpu_node = {"NodeID": "g", "NodeManagerHostname": "gpu", "Resources": {"CPU": 16.0, "GPU": 4.0}}
    cpu_node = {"NodeID": "c", "NodeManagerHostname": "cpu", "Resources": {"CPU": 9.0}}
    small_node = {"NodeID": "s", "NodeManagerHostname": "small", "Resources": {"CPU": 1.0}}
    slots = plan_actors([gpu_node, cpu_node, small_node], "auto", cpus_per_actor=2)
    assert [(s.host, s.cpus, s.gpus) for s in slots] == [("gpu", 4.0, 1)] * 4 + [("cpu", 2.0, 0)] * 4 + [
        ("small", 1.0, 0)]
    assert [(s.host, s.gpus) for s in plan_actors([gpu_node], "cpu", cpus_per_actor=4)] == [("gpu", 0)] * 4
    with pytest.raises(ClusterError, match="no node of the cluster has a GPU"):
        plan_actors([cpu_node], "cuda", cpus_per_actor=2)


# --- evaluate ----------------------------------------------------------------------------------------------------


def test_evaluate_on_the_cluster_measures_what_one_machine_measures(ray_instance, tmp_path, portrait_image,
                                                                    monkeypatch):
    """The cluster fills the face and score caches; the evaluation that follows finds everything there (it may not
    find a face or score a logit itself here) and writes the same results as an evaluation on one machine."""
    import io
    import json

    from rich.console import Console

    from deepscan.cluster.evaluate import warm_evaluation
    from deepscan.cli.evaluate import run_evaluate
    from deepscan.evaluate.request import EvaluateRequest

    _Shared.close()  # their CPUs are the evaluation actors'
    data = tmp_path / "data"
    (data / "real").mkdir(parents=True)
    (data / "fake").mkdir()
    Image.fromarray(portrait_image).save(data / "real" / "a.jpg", quality=90)
    moving_portrait_clip(data / "real" / "clip.mp4", seconds=1.0, fps=25, size=(320, 240), faces=1)
    Image.fromarray(portrait_image[:, ::-1]).save(data / "fake" / "b.png")
    moving_portrait_clip(data / "fake" / "two.mp4", seconds=1.0, fps=25, size=(320, 240), faces=2)
    quiet = Console(file=io.StringIO())

    def evaluation(name: str) -> EvaluateRequest:
        return EvaluateRequest(data=[data], methods=["faclue"], perturb=["jpeg:50"], out_dir=tmp_path / name,
                               frames_per_video=2, bootstrap=0, cache_dir=tmp_path / f"cache-{name}")

    assert run_evaluate(evaluation("local"), quiet, quiet) == 0

    warmed = warm_evaluation(evaluation("cluster"), ClusterOptions(cpus_per_actor=1))
    assert (warmed.media_files, warmed.unreadable, warmed.lost_calls) == (4, 0, 0)
    assert warmed.logits > 0

    def nothing_left_to_do(*args, **kwargs):
        raise AssertionError("the cluster left work to the driver")

    monkeypatch.setattr("deepscan.scan.face_logits", nothing_left_to_do)
    monkeypatch.setattr("deepscan.media.faces.FaceDetector", nothing_left_to_do)
    assert run_evaluate(evaluation("cluster"), quiet, quiet) == 0
    local, cluster = (json.loads((tmp_path / name / "results.json").read_text()) for name in ("local", "cluster"))
    assert cluster["methods"] == local["methods"]

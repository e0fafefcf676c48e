"""Scan throughput, stage by stage, on a generated 720p H.264 clip of two faces, all in one run.

    nice -n 10 python benchmarks/scan_bench.py [--seconds 60] [--long-seconds 600] [--method faclue]
                                               [--device auto] [--fps 2] [--runtimes eager,compile,onnx,openvino]
                                               [--threads N] [--rounds 12] [--json OUT]

The clip: ``--seconds`` of 1280 x 720 at 25 fps, H.264 (libx264 ``veryfast``, as the test fixtures), two portraits
of about 180 px faces circling over a plain canvas (``deepscan.media.synthetic.moving_portrait_clip``); its
motion repeats every 4 s. The scan samples it at ``--fps`` (2: one frame in 12.5). Every rate below is counted in
the scan's unit of work, **sampled frames** (the frames the scan keeps) per second of wall time, and in faces per
second where faces are involved; one-time costs (building the model, runtime exports, MediaPipe's first call)
are never inside a timed figure and are reported on their own.

- **(a) decode**: the scan's decode stage alone, as the pipeline's decode thread runs it (``Scanner._check_file``,
  its checksum, then ``Scanner._frames``: PyAV decodes every frame, converts to RGB only the sampled ones, skips
  the rest). Sampled frames / wall seconds of the whole pass. Also shown, not used in a ratio: every frame
  decoded and converted to RGB (``iter_frames(every_frame=True)``), the naive loop's decoding, in frames/s.
- **(b) detection**: face search alone on the sampled frames (decoding not timed): ``guided`` (the scan's
  default, ``make_face_search("guided")``) and ``tiles`` (today's tiling: whole frame + 6 tiles on every frame),
  each a fresh search over the clip's sampled frames in order, interleaved frame by frame so load drift hits
  both alike. Sampled frames / summed seconds of ``detect()``. Also shown: the scan's whole faces stage
  (``Scanner._find_faces``: guided search, tracking, crops at the detector's input size, sharpness), which is
  what the pipeline's faces thread does per frame; (b) in the ratio is detection only, as the issue defines it.
- **(c) forward**: scoring alone, on the faces the guided search found in (b), pre-cut as the scan cuts them,
  in batches of the scan's batch size (``Scanner.batch_size``: 16 on the CPU), cycling through the faces.
  Per runtime (eager, compile, onnx, openvino, each via ``deepscan.runtimes.load_runtime``) and for the scan's
  own scoring call (``Member.probabilities`` under the scan's autocast: whichever runtime the scan uses, named
  in ``forward.scan.runtime``; eager PyTorch until the scan holds a runtime). Rounds of one batch per runtime,
  interleaved; faces/s = batch size / median batch seconds. Converted to sampled frames/s by dividing by the
  faces per sampled frame that (d) found (2 here).
  Setup (export and its check, compilation, or loading from the export cache) is reported apart.
- **(d) scan**: ``Scanner.scan_files([clip])`` with default ``ScanOptions`` (pipelined, guided face search, the
  default batch size and runtime), the detector and weights resolved as ``deepscan scan`` resolves them
  (``deepscan.cli.scan._judge_for``), after a warm-up scan of a 2 s clip on the same Scanner. Sampled frames
  (``frames_scanned``) and faces / wall seconds of the call, checksum and probe included.
- **(e) naive**: the loop a first version would write over the SAME sampled frames as (a): decode every frame
  to RGB, keep the sampled ones, ``FaceDetector(tile=True)`` on each, crop each face, one forward per face in
  eager PyTorch (a copy of the detector in its default memory format, ``deepscan.scan.face_logits``), then the
  calibration. Sampled frames / wall seconds of the loop (model and MediaPipe already warm).

Ratios: ``pipeline_efficiency = d / min(a, b_guided, c_scan)`` (all in sampled frames/s) and
``speedup_vs_naive = d / e``. The stages share the machine's cores when they run together, so d cannot exceed
``cores / (sum of the stages' CPU seconds per sampled frame)`` either (process CPU time, every thread). Reported
too, under ``cpu_bound``, to say what limits d, not to change the metric: the CPU seconds per sampled frame of
each stage alone and of d, the cores each used, that limit for the machine's cores and for the cores d actually
got (fewer on a shared machine), and ``best_possible_efficiency_stages_use_all_cores`` = the largest stage's
share of the CPU seconds: the efficiency d could reach at best were each stage alone to keep every core busy.

Every stage alone runs on a thread of its own, as in the pipeline, and (e) too, so that the comparison is of
the designs: on this 2-core machine under load, eager PyTorch with two intra-op threads ran 3-5x slower on the
main thread than on any other (the same CPU share, burnt waiting), which would flatter both ratios.

Peak RSS: ``deepscan scan CLIP --json OUT`` (the real command) in a fresh process per clip, on the ``--seconds``
clip and on a ``--long-seconds`` clip (default 600: 10 minutes), so the two figures are independent: each child
records its own high-water mark (``VmHWM`` of /proc/self/status) at exit. Not ``ru_maxrss`` from ``wait4`` or
``RUSAGE_CHILDREN``: across fork and exec Linux keeps the parent's resident set at the fork in it, here the
benchmark's own. When the long clip's length is a whole multiple of the short one's, it is the short clip
repeated by stream copy (no re-encoding: 10 minutes in about a second; the same frames, each copy joining the
next seamlessly when the length is a multiple of the motion's 4 s); otherwise it is encoded.

``--threads N`` sets ``torch.set_num_threads(N)`` first, in this process and in the RSS children (the exported
runtimes take the same number). The machine's load average is recorded at the start and end: on a shared
machine compare ratios from one run.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import json
import math
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

CLIP_SIZE = (1280, 720)
CLIP_FPS = 25
FACES = 2
WARMUP_SECONDS = 2.0
DEFAULT_RUNTIMES = ("eager", "compile", "onnx", "openvino")


# --- clocks ----------------------------------------------------------------------------------------------------


def cpu_seconds() -> float:
    """CPU seconds used so far by every thread of this process (user + system)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


class Clock:
    """Wall and CPU seconds, summed over the ``with clock:`` blocks it times."""

    def __init__(self) -> None:
        self.wall = 0.0
        self.cpu = 0.0

    def __enter__(self) -> "Clock":
        self._wall, self._cpu = time.perf_counter(), cpu_seconds()
        return self

    def __exit__(self, *exc) -> None:
        self.wall += time.perf_counter() - self._wall
        self.cpu += cpu_seconds() - self._cpu


def rates(frames: int, faces: int | None, clock: Clock) -> dict:
    """A stage's figures: sampled frames/s, faces/s, ms and CPU seconds per sampled frame, cores used."""
    wall = max(clock.wall, 1e-9)
    row = {
        "frames": frames,
        "seconds": clock.wall,
        "frames_per_s": frames / wall,
        "ms_per_frame": 1000 * clock.wall / max(frames, 1),
        "cpu_s_per_frame": clock.cpu / max(frames, 1),
        "cores_used": clock.cpu / wall,
    }
    if faces is not None:
        row["faces"] = faces
        row["faces_per_s"] = faces / wall
    return row


def on_a_thread(function, *args):
    """``function(*args)`` on a fresh thread, as the pipeline runs each stage; its value, or its exception."""
    outcome: dict = {}

    def target() -> None:
        try:
            outcome["value"] = function(*args)
        except BaseException as error:  # noqa: BLE001 - raised again in the caller's thread
            outcome["error"] = error

    thread = threading.Thread(target=target, name=f"bench-{function.__name__}")
    thread.start()
    thread.join()
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]


# --- clips -----------------------------------------------------------------------------------------------------


def make_clip(path: Path, seconds: float) -> Path:
    from deepscan.media.synthetic import moving_portrait_clip

    return moving_portrait_clip(path, seconds=seconds, fps=CLIP_FPS, size=CLIP_SIZE, faces=FACES)


def repeat_clip(source: Path, target: Path, times: int) -> Path:
    """``source`` played ``times`` times in a row, by stream copy (no re-encoding): each copy's packets with their
    timestamps shifted by the clip's duration. Every copy begins with the clip's first keyframe (x264 closes its
    groups of pictures), so the result decodes as one stream."""
    import av

    with av.open(os.fspath(source)) as clip, av.open(os.fspath(target), "w") as out:
        stream = clip.streams.video[0]
        copied = out.add_stream_from_template(stream)
        packets = [packet for packet in clip.demux(stream) if packet.size]  # the last, empty one only flushes
        duration = stream.duration or (max(p.pts + p.duration for p in packets) - min(p.pts for p in packets))
        for turn in range(times):
            for packet in packets:
                shifted = av.Packet(bytes(packet))
                shifted.pts, shifted.dts = packet.pts + turn * duration, packet.dts + turn * duration
                shifted.duration, shifted.is_keyframe = packet.duration, packet.is_keyframe
                shifted.time_base, shifted.stream = stream.time_base, copied
                out.mux(shifted)
    return target


def long_clip(short: Path, short_seconds: float, long_seconds: float, target: Path) -> tuple[Path, str]:
    times = round(long_seconds / short_seconds)
    if times >= 1 and math.isclose(times * short_seconds, long_seconds, rel_tol=1e-9):
        return repeat_clip(short, target, times), f"the {short_seconds:g} s clip x{times}, stream copy"
    return make_clip(target, long_seconds), "encoded"


# --- the stages alone ------------------------------------------------------------------------------------------


def measure_decode(scanner, clip: Path) -> tuple[dict, list[int]]:
    """(a): the decode stage as the scan runs it; and every frame to RGB, as the naive loop decodes."""
    from deepscan.media.video import iter_frames

    sampled, clock = [], Clock()
    with clock:
        result = scanner._new_result(clip)
        scanner._check_file(clip, result)
        for index, _time_s, _image in scanner._frames(clip, result):
            sampled.append(index)
    decode = rates(len(sampled), None, clock)
    every, clock = 0, Clock()
    with clock:
        for _ in iter_frames(clip, every_frame=True):
            every += 1
    every_row = rates(every, None, clock)
    every_row["sampled_frames_per_s"] = every_row["frames_per_s"] * len(sampled) / max(every, 1)
    every_row["cpu_s_per_sampled_frame"] = clock.cpu / max(len(sampled), 1)
    return {"sampled": decode, "every_frame_rgb": every_row}, sampled


def sampled_frames(scanner, clip: Path):
    """The sampled frames of ``clip`` as the scan's decode stage gives them: (index, time_s, image)."""
    from deepscan.media.images import media_kind

    result = scanner._new_result(clip)
    result.kind = media_kind(clip)
    return contextlib.closing(scanner._frames(clip, result))


def measure_detection(scanner, clip: Path) -> tuple[dict, dict[int, list[np.ndarray]]]:
    """(b): guided and tiles detection, and the scan's whole faces stage, on the sampled frames (decoding not
    timed); the crops the faces stage cut, by input size, for (c)."""
    from deepscan.media.face_search import GuidedFaceSearch, make_face_search

    min_score = scanner.options.min_face_score
    searches = {name: make_face_search(name, min_score=min_score) for name in ("guided", "tiles")}
    clocks = {name: Clock() for name in (*searches, "faces_stage")}
    found = {name: 0 for name in clocks}
    calls = {name: 0 for name in searches}
    crops: dict[int, list[np.ndarray]] = {size: [] for size in scanner.crop_sizes}
    frames = 0
    try:
        with sampled_frames(scanner, clip) as stream:
            first = next(stream)[2]
        for search in searches.values():  # MediaPipe's first call sets it up: not part of the cost
            search.detect(first)
            search.reset()
        tracker = scanner._start_face_search()
        with sampled_frames(scanner, clip) as stream:
            for index, time_s, image in stream:
                height, width = image.shape[:2]
                for name, search in searches.items():
                    with clocks[name]:
                        faces = search.detect(image)
                    found[name] += len(faces)
                    calls[name] += (search.last_pass.model_calls if isinstance(search, GuidedFaceSearch)
                                    else 1 + len(search.tiles_for(height, width)))
                with clocks["faces_stage"]:
                    pending = scanner._find_faces(tracker, index, time_s, image)
                found["faces_stage"] += len(pending)
                for item in pending:
                    for size, crop in item.crops.items():
                        crops[size].append(crop)
                frames += 1
    finally:
        for search in searches.values():
            search.close()
    rows = {name: rates(frames, found[name], clock) for name, clock in clocks.items()}
    for name in searches:
        rows[name]["model_calls_per_frame"] = calls[name] / max(frames, 1)
    return rows, crops


def _scan_runtime_name(member) -> str:
    """The runtime the scan scores ``member`` with: the name of a runtime it holds (anything with ``logits`` and a
    ``name``: deepscan's runtimes, once the scan scores through them), else eager (``deepscan.scan.face_logits``)."""
    for value in vars(member).values():
        if callable(getattr(value, "logits", None)) and isinstance(getattr(value, "name", None), str):
            return value.name
    return "eager"


def measure_forward(scanner, crops: dict[int, list[np.ndarray]], runtime_names: list[str], rounds: int) -> dict:
    """(c): faces/s of scoring pre-cut faces at the scan's batch size: the scan's own call, and each runtime."""
    import torch

    batch_size = scanner.batch_size
    members = scanner.judge.members
    count = min(len(faces) for faces in crops.values())
    if count == 0:
        raise SystemExit("the face search found no face in the clip: nothing to score")
    # Batches of batch_size faces, the clip's faces in turn (wrapping round): as the scan's batches.
    order = [np.arange(start, start + batch_size) % count for start in range(0, count, batch_size)]
    batches = [{size: np.stack([faces[i] for i in indices]) for size, faces in crops.items()} for indices in order]

    def scan_call(batch: dict) -> None:
        with scanner._autocast():
            for member in members:
                member.probabilities(batch[member.input_size])

    callers, rows = {"scan": scan_call}, {"scan": {"runtime": [_scan_runtime_name(m) for m in members]}}
    try:
        from deepscan.runtimes import load_runtime
    except ImportError as error:  # runtimes not there yet: eager only, through the scan's own call
        rows["scan"]["note"] = f"deepscan.runtimes not importable ({error}): the scan's eager call only"
        runtime_names = []
    for name in runtime_names:
        row = rows[name] = {}
        try:
            started = time.perf_counter()
            loaded = [
                (member.input_size, load_runtime(copy.deepcopy(member.detector), name,
                                                 weights_sha256=member.weights.sha256, input_size=member.input_size,
                                                 device=scanner.device.type, batch_size=batch_size))
                for member in members
            ]
            row["setup_s"] = time.perf_counter() - started
            started = time.perf_counter()
            for size, runtime in loaded:
                runtime.logits(batches[0][size])  # first batch: allocations, lazy initialisation
            row["first_batch_s"] = time.perf_counter() - started
        except Exception as error:  # noqa: BLE001 - a runtime that cannot run here is a result, not the end
            row["error"] = " ".join(str(error).split())[:300]
            print(f"  runtime {name}: cannot run ({row['error']})", flush=True)
            continue
        callers[name] = lambda batch, loaded=loaded: [runtime.logits(batch[size]) for size, runtime in loaded]
    for call in callers.values():
        call(batches[0])  # warm: the scan's call too
    times: dict[str, list[float]] = {name: [] for name in callers}
    cpu: dict[str, float] = {name: 0.0 for name in callers}
    for turn in range(rounds):
        batch = batches[turn % len(batches)]
        for name, call in callers.items():  # interleaved: load drift hits every runtime alike
            clock = Clock()
            with clock:
                call(batch)
            times[name].append(clock.wall)
            cpu[name] += clock.cpu
    for name, samples in times.items():
        seconds = statistics.median(samples)
        rows[name].update({
            "batch_size": batch_size,
            "batches_timed": len(samples),
            "batch_ms": 1000 * seconds,
            "faces_per_s": batch_size / seconds,
            "cpu_s_per_face": cpu[name] / (batch_size * len(samples)),
            "cores_used": cpu[name] / max(sum(samples), 1e-9),
        })
    rows["scan"]["threads"] = torch.get_num_threads()
    return rows


# --- the scan, and the naive loop ------------------------------------------------------------------------------


def measure_scan(scanner, clip: Path) -> tuple[dict, object]:
    """(d): the scan of ``clip`` as ``deepscan scan`` runs it."""
    clock = Clock()
    with clock, contextlib.closing(scanner.scan_files([clip])) as scanned:
        [result] = list(scanned)
    if result.status != "complete":
        raise SystemExit(f"the scan of the clip did not complete: {result.status} {result.message}")
    row = rates(result.frames_scanned, len(result.faces), clock)
    row["tracks"] = len(result.tracks)
    row["verdict"] = result.verdict.label if result.verdict is not None else None
    return row, result


def measure_naive(scanner, clip: Path, sampled: list[int]) -> dict:
    """(e): decode every frame to RGB, tiles on the sampled ones, crop, one eager forward per face."""
    import torch

    from deepscan.media.faces import FaceDetector, crop_face
    from deepscan.media.video import iter_frames
    from deepscan.scan import face_logits

    wanted = set(sampled)
    margin = scanner.options.margin
    members = [(copy.deepcopy(m.detector).to(memory_format=torch.contiguous_format).eval(), m.input_size,
                m.calibration) for m in scanner.judge.members]
    frames = faces = 0
    with FaceDetector(tile=True, min_score=scanner.options.min_face_score) as detector:
        with contextlib.closing(iter_frames(clip, every_frame=True)) as stream:
            first = next(stream).image
        for face in detector.detect(first)[:1]:  # warm-up: MediaPipe's first call, the model's first forward
            for model, size, _ in members:
                face_logits(model, np.array(crop_face(first, face, size, margin)[None]))
        clock = Clock()
        with clock:
            for frame in iter_frames(clip, every_frame=True):
                if frame.index not in wanted:
                    continue
                for face in detector.detect(frame.image):
                    for model, size, calibration in members:
                        crop = np.array(crop_face(frame.image, face, size, margin)[None])  # writable, as torch wants
                        calibration.probability(face_logits(model, crop))
                    faces += 1
                frames += 1
    if frames != len(sampled):
        raise SystemExit(f"the naive loop saw {frames} sampled frames, the scan's decoding {len(sampled)}")
    return rates(frames, faces, clock)


# --- peak memory of the real command -----------------------------------------------------------------------------


# The child: `deepscan scan` itself, recording at exit the peak resident set of its own process (VmHWM). Not the
# parent's ru_maxrss of the child: across fork and exec Linux keeps the larger of the child's peak and the
# parent's resident set at the fork, which here is the benchmark's own (the models, the runtimes, the crops).
_CHILD = """
import atexit, json, os, sys

if os.environ.get("SCAN_BENCH_THREADS"):
    import torch

    torch.set_num_threads(int(os.environ["SCAN_BENCH_THREADS"]))

def _record_peak():
    fields = {}
    with open("/proc/self/status") as status:
        for line in status:
            name, _, value = line.partition(":")
            if name in ("VmHWM", "VmRSS"):
                fields[name] = int(value.split()[0])  # kB
    with open(os.environ["SCAN_BENCH_PEAK"], "w") as out:
        json.dump(fields, out)

atexit.register(_record_peak)
sys.argv[0] = "deepscan"
from deepscan.cli import main
main()
"""


def scan_in_child(clip: Path, args, folder: Path) -> dict:
    """``deepscan scan CLIP --json`` in a fresh process: its peak RSS (VmHWM at exit) and timings."""
    report_path, log_path, peak_path = (folder / f"{clip.stem}.{suffix}" for suffix in ("report.json", "log", "peak"))
    command = [sys.executable, "-c", _CHILD, "scan", os.fspath(clip), "--method", args.method,
               "--device", args.device, "--fps", f"{args.fps:g}", "--json", os.fspath(report_path)]
    started = time.perf_counter()
    with open(log_path, "wb") as log:
        child = subprocess.run(command, stdout=subprocess.DEVNULL, stderr=log, check=False,
                               env={**os.environ, "SCAN_BENCH_PEAK": os.fspath(peak_path),
                                    "SCAN_BENCH_THREADS": str(args.threads or "")})
    wall = time.perf_counter() - started
    if child.returncode != 0 or not report_path.exists() or not peak_path.exists():
        raise SystemExit(f"deepscan scan {clip.name} failed ({child.returncode}): {log_path.read_text()[-2000:]}")
    entry = json.loads(report_path.read_text())["files"][0]
    peak = json.loads(peak_path.read_text())
    return {
        "peak_rss_mb": peak["VmHWM"] / 1024,
        "rss_at_exit_mb": peak["VmRSS"] / 1024,
        "process_wall_s": wall,
        "scan_s": entry["seconds"],
        "frames_scanned": entry["frames_scanned"],
        "faces": len(entry["faces"]),
        "frames_per_s": entry["frames_scanned"] / entry["seconds"],
    }


# --- the run ---------------------------------------------------------------------------------------------------


def run(args) -> dict:
    import torch

    from deepscan.cli.scan import _judge_for
    from deepscan.media.video import probe_video
    from deepscan.scan import Scanner, ScanOptions

    report: dict = {
        "machine": {"platform": platform.platform(), "python": platform.python_version(), "torch": torch.__version__,
                    "cpu_count": os.cpu_count(), "cores_available": len(os.sched_getaffinity(0)),
                    "torch_threads": torch.get_num_threads(), "load_average_start": os.getloadavg()},
        "parameters": {"seconds": args.seconds, "long_seconds": args.long_seconds, "method": args.method,
                       "device": args.device, "fps": args.fps, "forward_rounds": args.rounds,
                       "threads": args.threads, "runtimes": args.runtimes},
    }
    with tempfile.TemporaryDirectory(prefix="scan-bench-") as scratch:
        folder = Path(scratch)
        made = Clock()
        with made:
            clip = make_clip(folder / "clip.mp4", args.seconds)
            # A short run warms up on its own clip: the same one-time costs, one clip less to make.
            warmup = clip if args.seconds <= WARMUP_SECONDS else make_clip(folder / "warmup.mp4", WARMUP_SECONDS)
        info = probe_video(clip)
        report["clip"] = {"width": info.width, "height": info.height, "fps": info.fps, "duration_s": info.duration_s,
                          "frame_count": info.frame_count, "codec": info.codec, "faces": FACES,
                          "bytes": clip.stat().st_size, "made_s": made.wall}
        print(f"clip: {info.width}x{info.height} {info.codec}, {info.frame_count} frames, {info.duration_s:.1f} s, "
              f"{FACES} faces ({made.wall:.1f} s to make, with the warm-up clip)", flush=True)

        # One-time costs, outside every timed figure.
        options = ScanOptions(method=args.method, device=args.device, fps=args.fps)
        one_time = {}
        started = time.perf_counter()
        judge, _config, _resolved = _judge_for(options)
        one_time["model_build_s"] = time.perf_counter() - started
        started = time.perf_counter()
        scanner = Scanner(None, options, judge=judge)
        one_time["scanner_init_s"] = time.perf_counter() - started
        with scanner:
            started = time.perf_counter()
            # Pays MediaPipe's set-up, the first batches' allocations and any runtime export, outside (d).
            with contextlib.closing(scanner.scan_files([warmup])) as scanned:
                list(scanned)
            one_time["warmup_scan_s"] = time.perf_counter() - started
            report["one_time"] = one_time
            report["scan_options"] = {"batch_size": scanner.batch_size, "device": scanner.device.type,
                                      "face_search": options.face_search, "pipeline": options.pipeline}
            print(f"one-time: model {one_time['model_build_s']:.1f} s, scanner {one_time['scanner_init_s']:.1f} s, "
                  f"warm-up scan {one_time['warmup_scan_s']:.1f} s", flush=True)

            print("(a) decode ...", flush=True)
            report["decode"], sampled = on_a_thread(measure_decode, scanner, clip)
            print("(b) detection ...", flush=True)
            report["detection"], crops = on_a_thread(measure_detection, scanner, clip)
            print("(c) forward ...", flush=True)
            report["forward"] = on_a_thread(measure_forward, scanner, crops, args.runtimes, args.rounds)
            del crops
            print("(d) scan ...", flush=True)
            report["scan"], result = measure_scan(scanner, clip)
            if result.frames_scanned != len(sampled):
                raise SystemExit(f"the scan kept {result.frames_scanned} frames, its decoding {len(sampled)}")
            print("(e) naive loop ...", flush=True)
            report["naive"] = on_a_thread(measure_naive, scanner, clip, sampled)

        print("peak RSS: deepscan scan, a fresh process per clip ...", flush=True)
        made = Clock()
        with made:
            long_path, how = long_clip(clip, args.seconds, args.long_seconds, folder / "long.mp4")
        long_info = probe_video(long_path)
        report["long_clip"] = {"duration_s": long_info.duration_s, "frame_count": long_info.frame_count,
                               "made_by": how, "made_s": made.wall}
        report["rss"] = {"short": scan_in_child(clip, args, folder), "long": scan_in_child(long_path, args, folder)}
    report["machine"]["load_average_end"] = os.getloadavg()
    summarize(report)
    return report


def summarize(report: dict) -> None:
    """The ratios, and what bounds (d) when its stages share the cores."""
    faces_per_frame = report["scan"]["faces"] / max(report["scan"]["frames"], 1) or float(FACES)
    a = report["decode"]["sampled"]["frames_per_s"]
    b = report["detection"]["guided"]["frames_per_s"]
    c_faces = report["forward"]["scan"]["faces_per_s"]
    c = c_faces / faces_per_frame
    d = report["scan"]["frames_per_s"]
    e = report["naive"]["frames_per_s"]
    slowest = min(("decode", a), ("detection", b), ("forward", c), key=lambda pair: pair[1])
    # CPU seconds per sampled frame of what the pipeline's threads do: decode, the faces stage, the forward.
    stage_cpu = {
        "decode": report["decode"]["sampled"]["cpu_s_per_frame"],
        "faces_stage": report["detection"]["faces_stage"]["cpu_s_per_frame"],
        "forward": report["forward"]["scan"]["cpu_s_per_face"] * faces_per_frame,
    }
    cores = report["machine"]["cores_available"]
    obtained = report["scan"]["cores_used"]
    limit_nominal = cores / sum(stage_cpu.values())
    limit_obtained = obtained / sum(stage_cpu.values())
    rss_short, rss_long = report["rss"]["short"]["peak_rss_mb"], report["rss"]["long"]["peak_rss_mb"]
    report.update({
        "faces_per_frame": faces_per_frame,
        "rates_frames_per_s": {"a_decode": a, "b_detect_guided": b,
                               "b_detect_tiles": report["detection"]["tiles"]["frames_per_s"],
                               "c_forward": c, "d_scan": d, "e_naive": e},
        "rates_faces_per_s": {"c_forward": c_faces, "d_scan": report["scan"]["faces_per_s"],
                              "e_naive": report["naive"]["faces_per_s"]},
        "slowest_stage": slowest[0],
        "pipeline_efficiency": d / slowest[1],
        "speedup_vs_naive": d / e,
        "cpu_bound": {
            "cpu_s_per_frame_by_stage": stage_cpu,
            "cpu_s_per_frame_sum": sum(stage_cpu.values()),
            "cpu_s_per_frame_scan": report["scan"]["cpu_s_per_frame"],
            "cores_used_alone": {"decode": report["decode"]["sampled"]["cores_used"],
                                 "detection": report["detection"]["guided"]["cores_used"],
                                 "forward": report["forward"]["scan"]["cores_used"]},
            "cores": cores,
            "scan_cores_used": obtained,
            # The stages together cannot run faster than the cores allow: the machine's, and those the scan got.
            "frames_per_s_limit": limit_nominal,
            "best_possible_efficiency": min(1.0, limit_nominal / slowest[1]),
            # Were every stage alone to keep all the cores busy, min(a, b, c) = cores / the largest CPU share, and
            # the stages together reach at most that share of it.
            "best_possible_efficiency_stages_use_all_cores": max(stage_cpu.values()) / sum(stage_cpu.values()),
            "frames_per_s_limit_cores_obtained": limit_obtained,
            "best_possible_efficiency_cores_obtained": min(1.0, limit_obtained / slowest[1]),
            "d_of_limit_cores_obtained": d / min(slowest[1], limit_obtained),
        },
        "peak_rss_mb": rss_short,
        "peak_rss_mb_long": rss_long,
        "rss_growth_long_vs_short": rss_long / rss_short - 1,
    })
    report["targets"] = {
        "pipeline_efficiency_ge_0.9": report["pipeline_efficiency"] >= 0.9,
        "speedup_vs_naive_ge_3": report["speedup_vs_naive"] >= 3,
        "rss_long_within_10pct": abs(report["rss_growth_long_vs_short"]) <= 0.10,
    }


def print_report(report: dict) -> None:
    clip, fps = report["clip"], report["parameters"]["fps"]
    print(f"\n{clip['duration_s']:.0f} s {clip['width']}x{clip['height']} clip sampled at {fps:g} fps: "
          f"{report['scan']['frames']} sampled frames, {report['faces_per_frame']:.2f} faces each; "
          f"{report['machine']['cores_available']} cores, torch {report['machine']['torch_threads']} threads, "
          f"load average {report['machine']['load_average_start'][0]:.1f} -> "
          f"{report['machine']['load_average_end'][0]:.1f}")
    print(f"{'stage':44s} {'frames/s':>9s} {'faces/s':>8s} {'ms/frame':>9s} {'CPU s/fr':>9s} {'cores':>6s}")

    def line(label: str, row: dict, frames_per_s: float | None = None, faces_per_s: float | None = None) -> None:
        frames_per_s = row.get("frames_per_s") if frames_per_s is None else frames_per_s
        faces_per_s = row.get("faces_per_s") if faces_per_s is None else faces_per_s
        faces = f"{faces_per_s:8.1f}" if faces_per_s is not None else f"{'-':>8s}"
        ms = 1000 / frames_per_s if frames_per_s else math.nan
        print(f"{label:44s} {frames_per_s:9.1f} {faces} {ms:9.1f} {row.get('cpu_s_per_frame', math.nan):9.3f} "
              f"{row.get('cores_used', math.nan):6.2f}")

    faces_per_frame = report["faces_per_frame"]
    line("(a) decode, as the scan (RGB for sampled only)", report["decode"]["sampled"])
    every = report["decode"]["every_frame_rgb"]
    line("    decode every frame to RGB (per sampled fr.)",
         dict(every, cpu_s_per_frame=every["cpu_s_per_sampled_frame"]), every["sampled_frames_per_s"])
    line("(b) detection, guided", report["detection"]["guided"])
    line("    detection, tiles (today's tiling)", report["detection"]["tiles"])
    line("    faces stage (guided + track + crop)", report["detection"]["faces_stage"])
    for name, row in report["forward"].items():
        if "error" in row:
            print(f"{'(c) forward, ' + name:44s} cannot run: {row['error'][:60]}")
            continue
        label = (f"(c) forward, the scan's ({'+'.join(row['runtime'])})" if name == "scan"
                 else f"    forward, {name} (setup {row['setup_s']:.1f} s)")
        per_frame = dict(row, cpu_s_per_frame=row["cpu_s_per_face"] * faces_per_frame)
        line(label, per_frame, row["faces_per_s"] / faces_per_frame)
    line("(d) scan (Scanner.scan_files, defaults)", report["scan"])
    line("(e) naive loop (tiles, 1 face per forward)", report["naive"])
    bound = report["cpu_bound"]
    print(f"\npipeline_efficiency = d / min(a, b, c) = {report['rates_frames_per_s']['d_scan']:.2f} / "
          f"{min(report['rates_frames_per_s'][k] for k in ('a_decode', 'b_detect_guided', 'c_forward')):.2f} "
          f"({report['slowest_stage']}) = {report['pipeline_efficiency']:.3f}")
    print(f"speedup_vs_naive    = d / e = {report['speedup_vs_naive']:.2f}")
    stage_cpu = bound["cpu_s_per_frame_by_stage"]
    print(f"CPU: the stages alone take {bound['cpu_s_per_frame_sum']:.3f} CPU s per sampled frame (decode "
          f"{stage_cpu['decode']:.3f}, faces {stage_cpu['faces_stage']:.3f}, forward {stage_cpu['forward']:.3f}), "
          f"the scan {bound['cpu_s_per_frame_scan']:.3f}. {bound['cores']} cores allow "
          f"{bound['frames_per_s_limit']:.2f} frames/s (best possible efficiency "
          f"{bound['best_possible_efficiency']:.3f}); the {bound['scan_cores_used']:.2f} cores the scan got allow "
          f"{bound['frames_per_s_limit_cores_obtained']:.2f} (best possible "
          f"{bound['best_possible_efficiency_cores_obtained']:.3f}), of which d reached "
          f"{bound['d_of_limit_cores_obtained']:.3f}; were each stage alone to use all {bound['cores']} cores, "
          f"at most {bound['best_possible_efficiency_stages_use_all_cores']:.3f}")
    rss = report["rss"]
    print(f"peak RSS of deepscan scan: {rss['short']['peak_rss_mb']:.0f} MB on the "
          f"{report['clip']['duration_s']:.0f} s clip, {rss['long']['peak_rss_mb']:.0f} MB on the "
          f"{report['long_clip']['duration_s']:.0f} s clip ({report['long_clip']['made_by']}): "
          f"{100 * report['rss_growth_long_vs_short']:+.1f} %; the command scanned at "
          f"{rss['short']['frames_per_s']:.2f} and {rss['long']['frames_per_s']:.2f} frames/s")
    one = report["one_time"]
    setups = ", ".join(f"{name} {row['setup_s']:.1f} s" for name, row in report["forward"].items()
                       if "setup_s" in row)
    print(f"one-time costs (not in any rate): model {one['model_build_s']:.1f} s, scanner "
          f"{one['scanner_init_s']:.1f} s, warm-up scan {one['warmup_scan_s']:.1f} s; "
          f"runtime setup: {setups or 'none'}")
    print("targets: " + ", ".join(f"{name} {'met' if met else 'NOT met'}" for name, met in report["targets"].items()))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=60.0, help="length of the clip every stage is timed on")
    parser.add_argument("--long-seconds", type=float, default=600.0, help="length of the clip for the second peak RSS")
    parser.add_argument("--method", default="faclue", help="detector (or ensemble), with its shipped weights")
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda")
    parser.add_argument("--fps", type=float, default=2.0, help="the scan's sampling rate")
    parser.add_argument("--runtimes", default=",".join(DEFAULT_RUNTIMES),
                        help="runtimes timed in (c), comma-separated; the scan's own call is always timed")
    parser.add_argument("--rounds", type=int, default=12, help="(c): timed batches per runtime")
    parser.add_argument("--threads", type=int, help="torch.set_num_threads first, here and in the RSS children "
                        "(default: torch's own, one per core)")
    parser.add_argument("--json", type=Path, help="write every figure here")
    args = parser.parse_args(argv)
    if args.seconds <= 0 or args.long_seconds <= 0 or args.fps <= 0 or args.rounds < 1:
        parser.error("--seconds, --long-seconds, --fps must be positive and --rounds at least 1")
    args.runtimes = [name for name in args.runtimes.split(",") if name]
    if args.threads is not None:
        import torch

        torch.set_num_threads(args.threads)
    report = run(args)
    print_report(report)
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")
        print(f"written to {args.json}")


if __name__ == "__main__":
    main()

"""Face runtimes per detector: faces/s of eager, torch.compile, ONNX Runtime and OpenVINO, and how far each moves
P(fake) from eager on real face crops.

    nice -n 10 python benchmarks/runtime_bench.py [--detectors faclue,sficonv] [--batch-size 16] [--threads 2]
                                                  [--repeats 5] [--faces 64] [--json OUT]

Each detector runs at its configured input size with its shipped weights where it has them (calibrated P(fake)
from its model card), else with random weights (seed 0, P = sigmoid). The runtimes are timed in rounds, one
batch each per round, so that a machine whose load drifts slows all of them alike; each rate is the median over
rounds and the ratios are to eager's in the same run (compare ratios, not rates, between machines). Setup time
is the export and its check (onnx, openvino) or the compilation (compile), in a fresh cache folder unless
--cache-dir is given (Inductor's kernel cache too, unless TORCHINDUCTOR_CACHE_DIR is set). Real faces come from deepscan's face cache (crops of files under a ``real/`` folder, cut as
the scan cuts them: 1.3 times the face box), or from --faces-dir (image files, used whole).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

DETECTORS = ("faclue", "sficonv", "pel", "mclcr", "ralf")
RUNTIMES = ("eager", "compile", "onnx", "openvino")


def real_face_crops(count: int, size: int, faces_dir: Path | None) -> np.ndarray:
    """``count`` real face crops ``(count, size, size, 3)`` uint8, always the same ones for the same cache."""
    from PIL import Image

    if faces_dir is not None:
        files = sorted(p for p in faces_dir.rglob("*") if p.suffix.lower() in (".png", ".jpg", ".jpeg", ".webp"))
        crops = [np.asarray(Image.open(p).convert("RGB").resize((size, size), Image.Resampling.BICUBIC))
                 for p in files[:count]]
    else:
        crops = list(_cached_real_faces(count, size))
    if len(crops) < count:
        raise SystemExit(f"found {len(crops)} real face crops, {count} wanted: fill the face cache or pass --faces-dir")
    return np.stack(crops)


def _cached_real_faces(count: int, size: int):
    from PIL import Image

    from deepscan.data.framing import DEFAULT_MARGIN, Framing, frame_face
    from deepscan.runtime import face_cache_dir

    found = 0
    for entry in sorted(face_cache_dir().glob("*/*/faces.json")):
        try:
            record = json.loads(entry.read_text())
        except (OSError, ValueError):
            continue
        if "/real/" not in record.get("source", "") or not record.get("faces"):
            continue
        face = record["faces"][0]
        crop = np.asarray(Image.open(entry.parent / face["file"]).convert("RGB"))
        keypoints = np.asarray(face["keypoints"], dtype=np.float64)
        image, _ = frame_face(crop, keypoints, record["params"]["cache_margin"], size, Framing(DEFAULT_MARGIN))
        yield image
        found += 1
        if found == count:
            return


def build(name: str):
    """The detector (shipped weights when it has them, else seeded random), its weights' sha256 (None when
    random) and its calibration."""
    import torch

    from deepscan.calibration import Calibration
    from deepscan.detectors import create_detector, get_config
    from deepscan.weights import build_detector, weights_status

    if weights_status(get_config(name)) == "shipped":
        detector, resolved = build_detector(name)
        return detector.eval(), resolved.sha256, resolved.calibration, "shipped"
    torch.manual_seed(0)
    return create_detector(name).eval(), None, Calibration(), "random (seed 0)"


def timed(action):
    started = time.perf_counter()
    value = action()
    return time.perf_counter() - started, value


def measure(name: str, runtimes: list[str], args, cache_dir: Path) -> dict:
    from deepscan.runtimes import load_runtime

    detector, sha256, calibration, weights = build(name)
    size = detector.config.input_size
    crops = real_face_crops(args.faces, size, args.faces_dir)
    batch = np.resize(crops, (args.batch_size, size, size, 3))  # the first faces, repeated if there are fewer
    result = {"detector": name, "input_size": size, "weights": weights, "faces": len(crops), "runtimes": {}}
    loaded, probabilities = {}, {}
    for runtime_name in runtimes:
        row = result["runtimes"][runtime_name] = {}
        try:
            row["setup_s"], runtime = timed(lambda: load_runtime(
                detector, runtime_name, weights_sha256=sha256, input_size=size, cache_dir=cache_dir,
                batch_size=args.batch_size))
        except Exception as error:  # noqa: BLE001 - a runtime that cannot run is a result, not the end of the run
            row["error"] = str(error)
            print(f"  {name:8s} {runtime_name:9s} cannot run: {error}", flush=True)
            continue
        row["first_batch_s"], _ = timed(lambda: runtime.logits(batch))  # warm-up: allocations, lazy compilation
        logits = np.concatenate([runtime.logits(crops[i : i + args.batch_size])
                                 for i in range(0, len(crops), args.batch_size)])
        probabilities[runtime_name] = calibration.probability(logits)
        loaded[runtime_name] = runtime
        print(f"  {name:8s} {runtime_name:9s} ready in {row['setup_s']:.1f} s", flush=True)
    times = {runtime_name: [] for runtime_name in loaded}
    for _ in range(args.repeats):
        for runtime_name, runtime in loaded.items():  # interleaved: load drift hits every runtime alike
            # Idle thread pools spin for a while after a call (OpenMP, TBB): left to settle, so that no runtime
            # is timed against the previous one's spinning threads, which a scan running one runtime never sees.
            time.sleep(args.settle)
            times[runtime_name].append(timed(lambda: runtime.logits(batch))[0])
    eager_s = statistics.median(times["eager"]) if "eager" in times else math.nan
    for runtime_name, samples in times.items():
        row = result["runtimes"][runtime_name]
        row["batch_s"] = statistics.median(samples)
        row["faces_per_s"] = args.batch_size / row["batch_s"]
        row["ratio_to_eager"] = eager_s / row["batch_s"]
        if "eager" in probabilities:
            gap = np.abs(np.asarray(probabilities[runtime_name]) - np.asarray(probabilities["eager"]))
            row["max_abs_dp"] = float(gap.max())
    return result


def print_table(results: list[dict], batch_size: int, threads: int) -> None:
    print(f"\nbatch {batch_size}, {threads} threads; ratio = eager's time / the runtime's (same run); "
          "max |dP| = largest |P(fake) - P(fake) eager| over the real faces")
    print(f"{'detector':9s} {'size':>4s} {'runtime':9s} {'faces/s':>8s} {'x eager':>8s} {'max |dP|':>9s} "
          f"{'setup s':>8s}  note")
    for result in results:
        for runtime_name, row in result["runtimes"].items():
            if "error" in row:
                print(f"{result['detector']:9s} {result['input_size']:4d} {runtime_name:9s} {'-':>8s} {'-':>8s} "
                      f"{'-':>9s} {'-':>8s}  {row['error']}")
                continue
            print(f"{result['detector']:9s} {result['input_size']:4d} {runtime_name:9s} {row['faces_per_s']:8.1f} "
                  f"{row['ratio_to_eager']:8.2f} {row.get('max_abs_dp', math.nan):9.1e} {row['setup_s']:8.1f}  "
                  f"{result['weights']}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--detectors", default=",".join(DETECTORS), help="comma-separated")
    parser.add_argument("--runtimes", default=",".join(RUNTIMES), help="comma-separated; eager is always measured")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5, help="timed rounds (one batch per runtime each)")
    parser.add_argument("--settle", type=float, default=1.0, help="seconds idle before each timed batch")
    parser.add_argument("--faces", type=int, default=64, help="real faces scored for max |dP|")
    parser.add_argument("--faces-dir", type=Path, help="real face crops (image files) instead of the face cache")
    parser.add_argument("--cache-dir", type=Path, help="export cache to use (default: a fresh temporary folder)")
    parser.add_argument("--json", type=Path, help="write the results here")
    args = parser.parse_args()

    scratch_dir = tempfile.TemporaryDirectory(prefix="runtime-bench-")
    # Inductor keeps compiled kernels on disk between runs: a private folder makes compile_s a cold compilation.
    os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", str(Path(scratch_dir.name) / "inductor"))
    import torch

    torch.set_num_threads(args.threads)
    runtimes = ["eager"] + [name for name in args.runtimes.split(",") if name and name != "eager"]
    results = []
    with scratch_dir as scratch:
        cache_dir = args.cache_dir or Path(scratch) / "exports"
        for name in args.detectors.split(","):
            print(f"{name}:", flush=True)
            results.append(measure(name, runtimes, args, cache_dir))
    print_table(results, args.batch_size, args.threads)
    if args.json:
        args.json.write_text(json.dumps({"batch_size": args.batch_size, "threads": args.threads,
                                         "repeats": args.repeats, "torch": torch.__version__,
                                         "results": results}, indent=2))


if __name__ == "__main__":
    main()

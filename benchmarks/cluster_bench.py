"""Files per second of a scan spread with Ray (`deepscan scan --ray auto`) against the local pipeline, same folder.

    python benchmarks/cluster_bench.py [--clips 8] [--images 8] [--seconds 4] [--cpus-per-actor 2]

Makes a folder of small clips and photos, scans it on this machine with ``Scanner.scan_file`` (what `deepscan scan`
does without --ray), then with :class:`deepscan.cluster.ClusterScan` on ``--ray auto`` (with no cluster running: a
Ray instance on this machine, one actor per ``--cpus-per-actor`` cores), and prints both rates and their ratio:

- end to end: from joining (or starting) Ray to the last result, actors' model loads included;
- steady: from the first result to the last, the rate the actors keep once loaded (what a long case sees).

On one machine the cluster cannot be faster than the local pipeline; the ratio is Ray's overhead (start, one model
per actor, files and results through the object store). Compare ratios from the same run: these machines are noisy.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch
from PIL import Image

from deepscan.cluster import ClusterOptions, ClusterScan
from deepscan.media.images import discover_media
from deepscan.media.synthetic import moving_portrait_clip, portrait
from deepscan.scan import Judge, Scanner, ScanOptions
from deepscan.weights import build_detector


def make_case(folder: Path, clips: int, images: int, seconds: float) -> list[Path]:
    picture = portrait()
    for number in range(images):
        # Each photo a little different (a crop shifted by a few pixels), as a case's photos are.
        Image.fromarray(picture[number * 4 :, number * 3 :]).save(folder / f"photo{number:03d}.jpg", quality=90)
    for number in range(clips):
        moving_portrait_clip(folder / f"clip{number:03d}.mp4", seconds=seconds, fps=25, size=(320, 240),
                             faces=1 + number % 2)
    return discover_media([folder])


def scan_locally(judge: Judge, options: ScanOptions, files: list[Path]) -> tuple[list, float, float]:
    """The results, the seconds to scan them all, and the seconds from the first result to the last."""
    start = time.perf_counter()
    with Scanner(None, options, judge=judge) as scanner:
        results = [scanner.scan_file(files[0])]
        first = time.perf_counter()
        results.extend(scanner.scan_file(path) for path in files[1:])
    last = time.perf_counter()
    return results, last - start, last - first


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clips", type=int, default=8)
    parser.add_argument("--images", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=4.0, help="length of each clip")
    parser.add_argument("--cpus-per-actor", type=int, default=2)
    parser.add_argument("--method", default="faclue")
    args = parser.parse_args()
    options = ScanOptions(method=args.method)

    with tempfile.TemporaryDirectory() as folder:
        files = make_case(Path(folder), args.clips, args.images, args.seconds)
        detector, resolved = build_detector(args.method)
        judge = Judge.single(detector, resolved)

        # The local scan gets the cores one actor gets, so that the ratio is Ray's cost, not a thread count's.
        torch.set_num_threads(args.cpus_per_actor)
        local, local_s, local_steady_s = scan_locally(judge, options, files)

        start = time.perf_counter()
        first = None
        with ClusterScan(judge, options, ClusterOptions(cpus_per_actor=args.cpus_per_actor), notice=print) as cluster:
            outcomes = []
            for outcome in cluster.scan(files):
                first = first or time.perf_counter()
                outcomes.append(outcome)
            last = time.perf_counter()
            actors = cluster.custody()["actors_planned"]
        cluster_s, steady_s = last - start, last - first
        # Once more after the cluster: how much the machine's load moved the local figure meanwhile.
        _, local_after_s, local_after_steady_s = scan_locally(judge, options, files)

    labels = {result.path: result.verdict and result.verdict.label for result in local}
    same = labels == {outcome.result.path: outcome.result.verdict and outcome.result.verdict.label
                      for outcome in outcomes}
    count = len(files)
    local_rate = 2 * count / (local_s + local_after_s)
    local_steady_rate = 2 * (count - 1) / (local_steady_s + local_after_steady_s)
    cluster_rate, steady_rate = count / cluster_s, (count - 1) / steady_s
    print(f"case: {args.images} photos, {args.clips} clips of {args.seconds:g} s (320x240), {args.method}, "
          f"{args.cpus_per_actor} cores per actor and for the local scan")
    print(f"local pipeline, end to end: {local_rate:7.2f} files/s ({local_s:.1f} s before the cluster run, "
          f"{local_after_s:.1f} s after; model already loaded)")
    print(f"local pipeline, steady:     {local_steady_rate:7.2f} files/s (first result to last)")
    print(f"--ray auto, end to end:     {cluster_rate:7.2f} files/s ({cluster_s:.1f} s, {actors} actor(s), Ray start "
          "and model loads included)")
    print(f"--ray auto, steady:         {steady_rate:7.2f} files/s (first result to last)")
    print(f"overhead (local rate / ray rate): end to end {local_rate / cluster_rate:.2f}, steady "
          f"{local_steady_rate / steady_rate:.2f}  (same verdicts: {same})")


if __name__ == "__main__":
    main()

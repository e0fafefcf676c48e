"""Scan throughput on a generated 30 s 720p H.264 clip, each stage measured in one run.

    python benchmarks/scan_bench.py [--seconds 30] [--device auto] [--method faclue]

Prints decode, face detection and full-scan rates, and the ratios between them, so that a change can be
judged against the same machine's numbers from the same run (these machines are noisy; compare ratios).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from deepscan.detectors import create_detector
from deepscan.media.faces import FaceDetector
from deepscan.media.synthetic import moving_portrait_clip
from deepscan.media.video import iter_frames, probe_video
from deepscan.scan import Scanner, ScanOptions


def timed(action) -> tuple[float, object]:
    start = time.perf_counter()
    value = action()
    return time.perf_counter() - start, value


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--fps", type=float, default=2.0, help="scan sampling rate")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--method", default="faclue")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as folder:
        clip = Path(folder) / "clip.mp4"
        made, _ = timed(lambda: moving_portrait_clip(clip, seconds=args.seconds, fps=25, size=(1280, 720)))
        info = probe_video(clip)
        print(f"clip: {info.width}x{info.height}, {info.frame_count} frames, {info.duration_s:.1f} s ({made:.1f} s to make)")

        decode_all, frames = timed(lambda: sum(1 for _ in iter_frames(clip, every_frame=True)))
        decode_sampled, sampled = timed(lambda: sum(1 for _ in iter_frames(clip, fps=args.fps)))
        images = [frame.image for _, frame in zip(range(20), iter_frames(clip, fps=args.fps))]
        detect_times = {}
        for tile in (False, True):
            with FaceDetector(tile=tile) as detector:
                detector.detect(images[0])  # warm-up
                elapsed, _ = timed(lambda: [detector.detect(image) for image in images])
            detect_times[tile] = elapsed / len(images)

        options = ScanOptions(method=args.method, fps=args.fps, device=args.device)
        detector = create_detector(args.method)
        with Scanner(detector, options, trained=False) as scanner:
            scan_time, result = timed(lambda: scanner.scan_file(clip))
            every_options = ScanOptions(method=args.method, every_frame=True, device=args.device, batch_size=32)
            scanner.options = every_options
            every_time, every_result = timed(lambda: scanner.scan_file(clip))

    print(f"decode, every frame:        {frames / decode_all:8.1f} frames/s")
    print(f"decode, sampled at {args.fps:g} fps:  {sampled / decode_sampled:8.1f} sampled frames/s "
          f"({info.duration_s / decode_sampled:.1f}x real time)")
    print(f"face detection, whole frame:{1000 * detect_times[False]:8.1f} ms/frame")
    print(f"face detection, with tiles: {1000 * detect_times[True]:8.1f} ms/frame "
          f"(x{detect_times[True] / detect_times[False]:.1f} the whole-frame cost)")
    print(f"scan at {args.fps:g} fps ({args.method}, {scanner.device}): {result.frames_scanned / scan_time:8.1f} "
          f"sampled frames/s, {info.duration_s / scan_time:.2f}x real time, {len(result.faces)} faces")
    print(f"scan every frame:           {every_result.frames_scanned / every_time:8.1f} frames/s "
          f"({len(every_result.faces)} faces)")
    print(f"ratio scan(every frame) / decode(every frame): {every_result.frames_scanned / every_time / (frames / decode_all):.3f}")


if __name__ == "__main__":
    main()

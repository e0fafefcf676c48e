"""Face search cost and recall, "guided" against "tiles" (and "whole"), measured in one run.

    python benchmarks/face_search_bench.py [--seconds 30] [--fps 2] [--json OUT]

Generated H.264 clips of two faces moving: at 1280 x 720, faces of about 180 px (the whole-frame
pass finds them) and of about 80 px (only tiles or crops round them do), and at 1920 x 1080 faces of
about 80 px. Each sampled frame goes through every strategy back to back, so the machine's load
weighs on all of them alike: on a shared machine compare the ratios, not the milliseconds.

Recall is measured against today's search: the share of the faces "tiles" finds in a frame that the
strategy finds in the same frame (box IoU of 0.5 or more). Faces per frame are shown too: each clip
has two faces in every frame.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np

from deepscan.media.face_search import GuidedFaceSearch, make_face_search
from deepscan.media.faces import Face, FaceDetector, box_iou
from deepscan.media.synthetic import moving_portrait_clip
from deepscan.media.video import iter_frames

STRATEGIES = ("tiles", "guided", "whole")
# (width, height) and the portraits' height as a share of the frame's; the face is a third of its
# portrait's height, but two portraits side by side at 0.8 are cut down to fit their half-width.
CLIPS = {
    "1280x720, two moving faces ~180 px": ((1280, 720), 0.8),
    "1280x720, two moving faces ~80 px": ((1280, 720), 0.35),
    "1920x1080, two moving faces ~80 px": ((1920, 1080), 0.23),
}
_SAME_FACE_IOU = 0.5


def model_calls(search, height: int, width: int) -> int:
    """Regions the model was shown for the last frame (each costs about the same)."""
    if isinstance(search, GuidedFaceSearch):
        return search.last_pass.model_calls
    assert isinstance(search, FaceDetector)
    return 1 + len(search.tiles_for(height, width))


def found_of(reference: list[Face], faces: list[Face]) -> int:
    """How many faces of ``reference`` have a face of ``faces`` on them."""
    if not faces:
        return 0
    boxes = np.array([face.box for face in faces])
    return sum(box_iou(face.box, boxes).max() >= _SAME_FACE_IOU for face in reference)


def measure_face_search(clip: Path, fps: float) -> dict[str, dict]:
    """Per strategy: ms and model calls per sampled frame, faces per frame, recall against "tiles",
    and for "guided" how many full searches it ran and why."""
    searches = {name: make_face_search(name) for name in STRATEGIES}
    totals = {name: {"seconds": 0.0, "calls": 0, "faces": [], "found_of_tiles": 0} for name in STRATEGIES}
    reasons: dict[str, int] = {}
    tiles_faces = frames = 0
    try:
        first = next(iter_frames(clip, fps=fps)).image
        for search in searches.values():  # MediaPipe's first call sets it up: not part of the cost
            search.detect(first)
            search.reset()
        for frame in iter_frames(clip, fps=fps):
            height, width = frame.image.shape[:2]
            found = {}
            for name, search in searches.items():
                start = time.perf_counter()
                found[name] = search.detect(frame.image)
                totals[name]["seconds"] += time.perf_counter() - start
                totals[name]["calls"] += model_calls(search, height, width)
                totals[name]["faces"].append(len(found[name]))
            reason = searches["guided"].last_pass.reason or "none: whole frame and crops"
            reasons[reason] = reasons.get(reason, 0) + 1
            for name in STRATEGIES:
                totals[name]["found_of_tiles"] += found_of(found["tiles"], found[name])
            tiles_faces += len(found["tiles"])
            frames += 1
    finally:
        for search in searches.values():
            search.close()
    results = {name: _summary(total, frames, tiles_faces) for name, total in totals.items()}
    results["guided"]["frames_by_full_search_reason"] = dict(sorted(reasons.items()))
    return results


def _summary(total: dict, frames: int, tiles_faces: int) -> dict:
    return {
        "frames": frames,
        "ms_per_frame": 1000 * total["seconds"] / frames,
        "model_calls_per_frame": total["calls"] / frames,
        "faces_per_frame": float(np.mean(total["faces"])),
        "frames_with_two_faces": sum(count == 2 for count in total["faces"]),
        "recall_vs_tiles": total["found_of_tiles"] / max(tiles_faces, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=30.0, help="length of each generated clip")
    parser.add_argument("--fps", type=float, default=2.0, help="scan sampling rate")
    parser.add_argument("--json", type=Path, help="also write the numbers here")
    args = parser.parse_args()

    report = {"seconds": args.seconds, "fps": args.fps, "clips": {}}
    with tempfile.TemporaryDirectory() as folder:
        for label, (size, portrait_height) in CLIPS.items():
            clip = moving_portrait_clip(Path(folder) / "clip.mp4", seconds=args.seconds, fps=25,
                                        size=size, faces=2, portrait_height=portrait_height)
            report["clips"][label] = results = measure_face_search(clip, args.fps)
            _print_clip(label, results)
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")


def _print_clip(label: str, results: dict[str, dict]) -> None:
    frames = results["tiles"]["frames"]
    print(f"{label}, {frames} sampled frames")
    for name, result in results.items():
        print(f"  {name:<7} {result['ms_per_frame']:7.1f} ms/frame  {result['model_calls_per_frame']:5.2f} "
              f"model calls/frame  {result['faces_per_frame']:.2f} faces/frame "
              f"({result['frames_with_two_faces']}/{frames} frames with both)  "
              f"recall vs tiles {result['recall_vs_tiles']:.3f}")
    tiles, guided = results["tiles"], results["guided"]
    print(f"  tiles / guided: x{tiles['ms_per_frame'] / guided['ms_per_frame']:.2f} time, "
          f"x{tiles['model_calls_per_frame'] / guided['model_calls_per_frame']:.2f} model calls; "
          f"guided frames by reason for a full search: {guided['frames_by_full_search_reason']}")


if __name__ == "__main__":
    main()

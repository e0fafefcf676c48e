"""Framing: the crop and cache rules that training and evaluation share.

The face cache keeps each face in a square crop whose side is ``cache_margin`` times the face box, centred on
the box, and just large enough (:func:`extraction_size`) that the evaluation framing keeps the detector's
resolution. :func:`frame_face` cuts the view a detector sees out of it (side = ``scale`` times the box,
optionally rotated, shifted and mirrored) in one resampling, and moves the face keypoints along.
:func:`extraction_params` is the one place the face cache's extraction parameters are made.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from PIL import Image

from deepscan.data.face_cache import ExtractionParams

# The scan's framing: crop side = 1.3 x face box; the cached crop's: 1.8 x face box.
DEFAULT_MARGIN = 1.3
DEFAULT_CACHE_MARGIN = 1.8

# Keypoint order of deepscan.media.faces: right eye, left eye, nose tip, mouth, right ear, left ear.
# Mirroring swaps the person's right and left.
MIRRORED_KEYPOINTS = np.array([1, 0, 2, 3, 5, 4])


@dataclass(frozen=True)
class Framing:
    """Where the training crop lies in the cached crop: the face-relative crop side and the view's changes."""

    scale: float  # crop side / face box side
    angle_deg: float = 0.0
    shift: tuple[float, float] = (0.0, 0.0)  # share of the face box side
    mirror: bool = False
    vflip: bool = False


def frame_face(
    crop: np.ndarray, keypoints: np.ndarray, cache_margin: float, out_size: int, framing: Framing
) -> tuple[np.ndarray, np.ndarray]:
    """Cut an ``out_size`` square view of the face from its cached crop; returns (image, keypoints).

    The cached crop is first mirrored outward at its edges, so that a rotated or wide view never shows a
    black corner (a hard edge that frequency detectors would take for an artefact).
    """
    height, width = crop.shape[:2]
    face_side = width / cache_margin
    pad = int(math.ceil(0.5 * width))
    padded = np.pad(crop, ((pad, pad), (pad, pad), (0, 0)), mode="reflect")
    side = framing.scale * face_side
    angle = math.radians(framing.angle_deg)
    cos, sin = math.cos(angle), math.sin(angle)
    sx = -1.0 if framing.mirror else 1.0
    sy = -1.0 if framing.vflip else 1.0
    centre_x = width / 2 + framing.shift[0] * face_side
    centre_y = height / 2 + framing.shift[1] * face_side
    step = side / out_size
    # Output pixel (u, v) -> cached-crop point: centre + R(angle) @ diag(sx, sy) @ ((u, v) - out/2) * step.
    a, b = cos * sx * step, -sin * sy * step
    d, e = sin * sx * step, cos * sy * step
    half = out_size / 2
    c = centre_x - a * half - b * half
    f = centre_y - d * half - e * half
    image = Image.fromarray(padded).transform(
        (out_size, out_size), Image.Transform.AFFINE, (a, b, c + pad, d, e, f + pad), resample=Image.Resampling.BICUBIC
    )
    # Invert the map for the keypoints: (x, y) -> (u, v).
    matrix = np.array([[a, b], [d, e]])
    moved = (np.linalg.solve(matrix, (keypoints - np.array([c, f])).T)).T
    if framing.mirror != framing.vflip:  # one reflection turns the person's right into the image's other side
        moved = moved[MIRRORED_KEYPOINTS]
    return np.asarray(image), moved


def extraction_size(input_size: int, margin: float, cache_margin: float) -> int:
    """Cache crops just large enough that the evaluation framing keeps the training resolution."""
    size = math.ceil(input_size * cache_margin / margin)
    return size + size % 2


def extraction_params(
    item,
    *,
    input_size: int,
    margin: float = DEFAULT_MARGIN,
    cache_margin: float = DEFAULT_CACHE_MARGIN,
    frames_per_video: int = 8,
    faces_per_frame: int = 1,
    min_score: float = 0.5,
) -> ExtractionParams:
    """The face cache's extraction parameters for one media item (``deepscan.data.sources.MediaItem``): a
    video's frames are always searched for faces, an image's unless it already is a face crop."""
    return ExtractionParams(
        frames_per_video=frames_per_video,
        faces_per_frame=faces_per_frame,
        cache_margin=cache_margin,
        cache_size=extraction_size(input_size, margin, cache_margin),
        min_score=min_score,
        crop_faces=item.crop_faces or item.kind == "video",
    )

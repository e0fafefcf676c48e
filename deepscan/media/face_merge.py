"""Merging what several passes over one frame found (the whole frame, tiles, crops round known faces) into one
face each: the tiles that cover a frame, box overlaps, and the suppression of duplicates and of the fragments a
tile sees of a face it cuts."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from deepscan.media.faces import Face

# Two detections one of which lies mostly inside the other are one face seen twice.
_CONTAINED_SHARE = 0.6
# How far round a kept face (as a share of its size) a cut detection counts as its fragment.
_FRAGMENT_REACH = 0.25


def _axis_spans(length: int, tile_size: int, overlap: float) -> list[tuple[int, int]]:
    """Spans of equal tiles covering ``0..length`` whose neighbours share ``overlap`` of a tile."""
    if length <= tile_size:
        return [(0, length)]
    count = math.ceil((length - tile_size * overlap) / (tile_size * (1 - overlap)))
    side = length / (count - (count - 1) * overlap)
    stride = side * (1 - overlap)
    return [(round(i * stride), min(length, round(i * stride + side))) for i in range(count)]


def tile_regions(
    height: int, width: int, tile_size: int = 512, overlap: float = 0.25
) -> list[tuple[int, int, int, int]]:
    """Overlapping tiles ``(x0, y0, x1, y1)`` of about ``tile_size`` covering a frame (row-major).

    Tiles are as close to ``tile_size`` as whole counts allow, never larger, so they are square-ish:
    a 1280 x 720 frame gives 3 x 2 tiles of 512 x 411, 1920 x 1080 gives 5 x 3 tiles of 480 x 432.
    """
    if not 0 <= overlap < 1:
        raise ValueError(f"overlap must be in [0, 1), got {overlap}")
    rows = _axis_spans(height, tile_size, overlap)
    columns = _axis_spans(width, tile_size, overlap)
    return [(x0, y0, x1, y1) for y0, y1 in rows for x0, x1 in columns]


def _box_area(box: np.ndarray) -> np.ndarray:
    return np.clip(box[..., 2] - box[..., 0], 0, None) * np.clip(box[..., 3] - box[..., 1], 0, None)


def _intersection(box: np.ndarray, others: np.ndarray) -> np.ndarray:
    x0 = np.maximum(box[0], others[:, 0])
    y0 = np.maximum(box[1], others[:, 1])
    x1 = np.minimum(box[2], others[:, 2])
    y1 = np.minimum(box[3], others[:, 3])
    return np.clip(x1 - x0, 0, None) * np.clip(y1 - y0, 0, None)


def box_iou(box: tuple[float, ...] | np.ndarray, others: np.ndarray) -> np.ndarray:
    """IoU of one ``(x0, y0, x1, y1)`` box with each row of an (N, 4) array."""
    box = np.asarray(box, dtype=np.float64)
    others = np.asarray(others, dtype=np.float64).reshape(-1, 4)
    overlap = _intersection(box, others)
    union = _box_area(box) + _box_area(others) - overlap
    return np.divide(overlap, union, out=np.zeros_like(overlap), where=union > 0)


def _grown(boxes: np.ndarray, share: float) -> np.ndarray:
    sizes = np.maximum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1])[:, None] * share
    return boxes + np.hstack([-sizes, -sizes, sizes, sizes])


@dataclass(frozen=True)
class Candidate:
    face: Face
    region: tuple[int, int, int, int] | None  # the tile it was found in; None for the whole frame
    cut: bool  # touches an edge of its tile that lies inside the frame


def _contains(region: tuple[int, int, int, int], box: np.ndarray) -> bool:
    return bool(
        box[0] >= region[0] and box[1] >= region[1] and box[2] <= region[2] and box[3] <= region[3]
    )


def merge_detections(
    candidates: list[Candidate], iou_threshold: float, height: int, width: int
) -> list[Face]:
    """Non-maximum suppression over all passes, which also removes what tiles see of faces they cut.

    A tile that holds only part of a face may call that part (the eyes, or the chin and collar) a
    face of its own. Such fragments are dropped: a detection is suppressed when it overlaps a face
    already kept by more than ``iou_threshold`` IoU, or mostly lies inside it (or it inside the
    detection), or, for a tile's detection, when it overlaps a kept face that its tile does not
    wholly contain, or touches the surroundings of a kept face while being cut by its tile's edge.
    Detections cut by a tile edge come last, so whole views of a face win.
    """
    ordered = sorted(candidates, key=lambda candidate: (candidate.cut, -candidate.face.score))
    frame = np.array([0, 0, width, height], dtype=np.float64)
    kept: list[Face] = []
    kept_boxes = np.empty((0, 4))
    for candidate in ordered:
        box = np.asarray(candidate.face.box, dtype=np.float64)
        if len(kept):
            overlap = _intersection(box, kept_boxes)
            smaller_area = np.minimum(_box_area(box), _box_area(kept_boxes))
            contained = np.divide(
                overlap, smaller_area, out=np.ones_like(overlap), where=smaller_area > 0
            )
            if np.any(box_iou(box, kept_boxes) > iou_threshold) or np.any(
                contained > _CONTAINED_SHARE
            ):
                continue
            if candidate.region is not None:
                visible = np.clip(kept_boxes, frame[[0, 1, 0, 1]], frame[[2, 3, 2, 3]])
                partly_seen = np.array([not _contains(candidate.region, b) for b in visible])
                if np.any((overlap > 0) & partly_seen):
                    continue
            if candidate.cut and np.any(
                _intersection(box, _grown(kept_boxes, _FRAGMENT_REACH)) > 0
            ):
                continue
        kept.append(candidate.face)
        kept_boxes = np.vstack([kept_boxes, box])
    return sorted(kept, key=lambda face: -face.score)

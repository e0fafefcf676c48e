"""How much of each frame BlazeFace is shown: the face search strategies of a scan.

* ``"tiles"``: :class:`~deepscan.media.faces.FaceDetector` on the whole frame and on every tile of
  every frame: 7 model calls per 720p frame, 16 per 1080p frame. It finds faces of 78 px and more
  anywhere in such frames, and costs about 6.6 times the whole-frame pass.
* ``"whole"``: the whole frame only (one call), blind to faces under about an eighth of the frame's
  longer side (about 150 px at 720p).
* ``"guided"``: :class:`GuidedFaceSearch`, for videos. Faces do not jump about between frames half a
  second apart, so once a frame has been searched in full, the next ones need only the whole-frame
  pass and a crop round each face already found. The full search is rerun whenever that could miss
  something: on the first frame, every ``full_search_every`` frames, when a known face is not found
  again (it moved more than 1.5 face sizes, turned away, or left), and when the scene changes (a
  cut) or the frame size does. A face once found is thus found in every frame the tile search would
  find it; a face that comes into view without a cut (walks in, turns to the camera) is found at
  once by the whole-frame pass if it is large, else by the next periodic full search, at most
  ``full_search_every - 1`` frames (3.5 s at the scan's 2 fps) late.

Every strategy has ``detect(image) -> list[Face]``, ``reset()`` (a new file or stream: call it
before each) and ``close()``. Each model call costs about the same whatever the region's size (the
model sees 128 x 128 pixels), so the cost of a frame is its number of calls.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from deepscan.media.faces import Face, FaceDetector

FACE_SEARCH_STRATEGIES = ("guided", "tiles", "whole")

# At the scan's default 2 fps, every 8th sampled frame is every 4 s. Model calls per frame on the
# benchmark's clips of two small moving faces (each call costs about the same), against 7 (720p) and
# 16 (1080p) for the tile search: every 4th frame 4.0 and 6.25, every 8th 3.5 and 4.6, every 16th
# 3.25 and 3.8. Past 8 the whole-frame pass and the crops dominate, while the delay before a small
# face that walks in is found keeps doubling (up to 3.5 s at 8, 7.5 s at 16).
DEFAULT_FULL_SEARCH_EVERY = 8
# The scene changed when at least half of the picture did: when the median, over the cells of the
# grey thumbnails of two successive frames, of their absolute difference exceeds this many grey
# levels (0-255). Measured on 9 real videos sampled at 2 fps, 50 real clips sampled 1 s apart and 3
# synthetic clips of moving portraits: successive frames of one shot exceeded 16 in 9 of 572 pairs
# (1.6 %, all head-and-shoulders close-ups 1 s apart; the synthetic clips reach 13.4), while frames
# of two different shots stayed at or under it in 27 of 6844 pairs (0.4 %: the same footage under
# two names, or two dark close-ups whose large faces the whole-frame pass finds anyway). A missed cut
# delays small new faces to the next periodic search, a false one costs one full search: hence the
# low end of the gap. The median, not the mean: a moving head changes part of the picture, a cut
# nearly all of it; the mean exceeded 16 in 21 % of one shot's pairs (44 on the synthetic clips),
# and no threshold on it errs less than 3 % both ways.
DEFAULT_SCENE_CHANGE = 16.0
# The crop searched round a known face is this many face sizes wide, so the face may move
# (CROP_FACES - 1) / 2 = 1.5 face sizes between two frames and still lie whole inside it. Wider
# crops shrink the face in the model's 128 px input: faces of 78 and 240 px at 1080p, anywhere in
# the crop, were found with box IoU of 0.81 or more in crops 3 to 5 faces wide, 0.67 at 6 wide, and
# 8 wide missed one in six. 4 keeps a size's margin from where placement degrades.
CROP_FACES = 4.0
# The whole-frame pass finds faces down to an eighth of the frame's longer side but places the small
# ones badly. Box IoU with the pasted face's true box, over 45 positions at 720p and at 1080p: at an
# eighth 0.53 at worst (boxes a third too large), at a seventh 0.66, from a sixth on 0.79 (0.80 at
# a fifth), while a crop round the face gives 0.84 or more at every size. A known face under a sixth
# of the frame therefore gets its crop even when the whole-frame pass sees it.
_WHOLE_FRAME_PLACES_SHARE = 1 / 6
# A face found again in the next frame is at most half or twice as large as it was.
_MAX_SIZE_RATIO = 2.0
# The thumbnail has this many cells along the frame's longer side (20 px at 720p), each the mean of
# 2 x 2 samples: 4 x 4 samples measured no better (the same errors both ways) at four times the cost.
_THUMBNAIL_CELLS = 64
_SAMPLES_PER_CELL = 2
_LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)

Region = tuple[int, int, int, int]

# Why GuidedFaceSearch ran the full search on a frame (FramePass.reason).
FIRST_FRAME = "first frame"
FRAME_SIZE_CHANGED = "frame size changed"
PERIODIC = "periodic"
SCENE_CHANGE = "scene change"
FACE_LOST = "face lost"
NOT_TILED = "frame not tiled"  # too small for tiles: the whole frame is all there is to search


class FaceSearch(Protocol):
    """What a scan needs of a face search (:func:`make_face_search` makes one)."""

    def __enter__(self) -> FaceSearch: ...

    def __exit__(self, *exc_info: object) -> None: ...

    def detect(self, image: np.ndarray) -> list[Face]: ...

    def reset(self) -> None: ...

    def close(self) -> None: ...


@dataclass(frozen=True)
class FramePass:
    """How :class:`GuidedFaceSearch` searched one frame: ``reason`` is why it ran the full tile
    search (``None`` when it did not), ``crops`` how many crops round known faces it ran, and
    ``model_calls`` how many regions in all the model was shown (the whole frame counts one)."""

    reason: str | None
    crops: int
    model_calls: int

    @property
    def full_search(self) -> bool:
        return self.reason is not None


def grey_thumbnail(image: np.ndarray) -> np.ndarray:
    """A small grey copy of an RGB frame: ``_THUMBNAIL_CELLS`` cells along its longer side.

    Built from a sparse grid of samples rather than by resizing the frame, which costs about half a
    model call at 720p; this costs about a tenth of one.
    """
    height, width = image.shape[:2]
    cell_px = max(height, width) / _THUMBNAIL_CELLS
    rows, columns = (max(1, round(side / cell_px)) for side in (height, width))
    row_samples = _sample_positions(height, rows * _SAMPLES_PER_CELL)
    column_samples = _sample_positions(width, columns * _SAMPLES_PER_CELL)
    # Two takes: numpy's one-step fancy indexing of rows and columns is several times slower.
    samples = image.take(row_samples, axis=0).take(column_samples, axis=1)
    grey = samples.astype(np.float32) @ _LUMA
    return grey.reshape(rows, _SAMPLES_PER_CELL, columns, _SAMPLES_PER_CELL).mean(axis=(1, 3))


def _sample_positions(length: int, count: int) -> np.ndarray:
    return ((np.arange(count) + 0.5) * length / count).astype(np.intp)


def scene_difference(first: np.ndarray, second: np.ndarray) -> float:
    """The median over the cells of two :func:`grey_thumbnail` s of their absolute difference, in
    grey levels: how much at least half of the picture changed."""
    return float(np.median(np.abs(first - second)))


def crop_region(face: Face, height: int, width: int) -> Region | None:
    """The square of ``CROP_FACES`` face sizes round ``face``, inside the frame (None if empty)."""
    half_side = CROP_FACES * face.size / 2
    center_x, center_y = face.center
    x0, y0 = max(0, math.floor(center_x - half_side)), max(0, math.floor(center_y - half_side))
    x1 = min(width, math.ceil(center_x + half_side))
    y1 = min(height, math.ceil(center_y + half_side))
    return (x0, y0, x1, y1) if x0 < x1 and y0 < y1 else None


def _continues(known: Face, found: Face) -> float | None:
    """How far ``found`` lies from ``known`` in ``known``'s face sizes, if it can be that face one
    frame later (whole inside ``known``'s crop and of a similar size); else None."""
    ratio = max(known.size, found.size) / max(min(known.size, found.size), 1e-6)
    distance = math.dist(known.center, found.center) / max(known.size, 1e-6)
    if ratio > _MAX_SIZE_RATIO or distance > (CROP_FACES - 1) / 2:
        return None
    return distance


def unmatched_faces(known: list[Face], found: list[Face]) -> list[Face]:
    """The faces of ``known`` that no face of ``found`` continues, pairing them one to one,
    the closest pairs first (two faces side by side are not both taken for one)."""
    pairs = []
    for known_index, known_face in enumerate(known):
        for found_index, found_face in enumerate(found):
            distance = _continues(known_face, found_face)
            if distance is not None:
                pairs.append((distance, known_index, found_index))
    matched_known: set[int] = set()
    matched_found: set[int] = set()
    for _, known_index, found_index in sorted(pairs):
        if known_index not in matched_known and found_index not in matched_found:
            matched_known.add(known_index)
            matched_found.add(found_index)
    return [face for index, face in enumerate(known) if index not in matched_known]


class GuidedFaceSearch:
    """The tile search on some frames, the whole frame and crops round known faces on the others.

    Wraps (and closes) a :class:`FaceDetector`; see this module's description for when the full
    search runs. Results depend only on the frames given since :meth:`reset`, in their order.
    Frames too small to be tiled get the detector's whole-frame search, as with ``"tiles"``.
    """

    def __init__(
        self,
        detector: FaceDetector,
        full_search_every: int = DEFAULT_FULL_SEARCH_EVERY,
        scene_change: float = DEFAULT_SCENE_CHANGE,
    ) -> None:
        if full_search_every < 1:
            raise ValueError(f"full_search_every must be at least 1, got {full_search_every}")
        self.detector = detector
        self.full_search_every = full_search_every
        self.scene_change = scene_change
        self.last_pass: FramePass | None = None
        self.reset()

    def __enter__(self) -> GuidedFaceSearch:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        self.detector.close()

    def reset(self) -> None:
        """Forget the faces and the scene seen so far: the next frame gets the full search."""
        self._known: list[Face] = []
        self._thumbnail: np.ndarray | None = None
        self._frame_shape: tuple[int, ...] | None = None
        self._guided_since_full = 0

    def detect(self, image: np.ndarray) -> list[Face]:
        """Faces in an H x W x 3 uint8 RGB frame, the next of the file's, best score first."""
        whole_frame = self.detector.whole_frame_faces(image)
        height, width = image.shape[:2]
        tiles = self.detector.tiles_for(height, width)
        if not tiles:
            self.reset()
            self.last_pass = FramePass(reason=NOT_TILED, crops=0, model_calls=1)
            return self.detector.merged_with_regions(image, whole_frame, [])
        thumbnail = grey_thumbnail(image)
        reason = self._reason_to_search_all(image.shape, thumbnail)
        crops = 0
        if reason is None:
            faces, crops = self._follow_known_faces(image, whole_frame)
            if unmatched_faces(self._known, faces):
                reason = FACE_LOST
        if reason is not None:
            faces = self.detector.merged_with_regions(image, whole_frame, tiles)
        self._guided_since_full = 0 if reason is not None else self._guided_since_full + 1
        self._known, self._thumbnail, self._frame_shape = faces, thumbnail, image.shape
        model_calls = 1 + crops + (len(tiles) if reason is not None else 0)
        self.last_pass = FramePass(reason=reason, crops=crops, model_calls=model_calls)
        return faces

    def _reason_to_search_all(
        self, frame_shape: tuple[int, ...], thumbnail: np.ndarray
    ) -> str | None:
        if self._thumbnail is None:
            return FIRST_FRAME
        if self._frame_shape != frame_shape:
            return FRAME_SIZE_CHANGED
        if self._guided_since_full + 1 >= self.full_search_every:
            return PERIODIC
        if scene_difference(self._thumbnail, thumbnail) > self.scene_change:
            return SCENE_CHANGE
        return None

    def _follow_known_faces(
        self, image: np.ndarray, whole_frame: list[Face]
    ) -> tuple[list[Face], int]:
        """The whole-frame faces merged with a crop round each known face that they do not
        continue, or that is too small for them to place well."""
        height, width = image.shape[:2]
        placed_size = _WHOLE_FRAME_PLACES_SHARE * max(height, width)
        large = [face for face in self._known if face.size >= placed_size]
        large_unseen = {id(face) for face in unmatched_faces(large, whole_frame)}
        to_crop = [
            face for face in self._known if face.size < placed_size or id(face) in large_unseen
        ]
        regions = [crop_region(face, height, width) for face in to_crop]
        regions = [region for region in regions if region is not None]
        return self.detector.merged_with_regions(image, whole_frame, regions), len(regions)


def make_face_search(
    strategy: str = "guided",
    *,
    min_score: float = 0.5,
    full_search_every: int = DEFAULT_FULL_SEARCH_EVERY,
    scene_change: float = DEFAULT_SCENE_CHANGE,
    model_path: str | os.PathLike[str] | None = None,
) -> FaceSearch:
    """A face search by name: ``"guided"`` (videos' default), ``"tiles"`` or ``"whole"``."""
    if strategy not in FACE_SEARCH_STRATEGIES:
        raise ValueError(
            f"unknown face search {strategy!r}: expected one of {', '.join(FACE_SEARCH_STRATEGIES)}"
        )
    detector = FaceDetector(min_score=min_score, tile=strategy != "whole", model_path=model_path)
    if strategy != "guided":
        return detector
    return GuidedFaceSearch(detector, full_search_every, scene_change)

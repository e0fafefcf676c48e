"""The faces a report explains, kept by the scan so that the file is not decoded a second time for them.

The HTML report's heat maps (``scan --report``), and ``explain FILE``, explain the most suspicious faces of each
file (:func:`deepscan.explain.recorded.suspicious_faces`: per track, the faces with the highest P(fake); the
tracks with the highest scores). Without help they decode the file again to find those faces' frames. Asked to
(``Scanner(..., keep_faces=KeepFaces(...))``), the scan keeps what those figures need instead:

- the face stage gives every face it finds a :class:`FrameView` of its frame: the frame at display size (at most
  :data:`MAX_FRAME_DISPLAY` pixels wide, downscaled as the figure downscales it: :func:`display_frame`) and the
  frame's shape, with the face's crop at the explaining detector's input size (the one the scan scored, which is
  the crop ``deepscan.explain.recorded`` would cut again: the same box, margin and frame);
- once the face is scored, the file's :class:`KeptFaces` keeps it if it is among the ``per_track`` faces of its
  track with the highest P(fake) so far, stored as lossless PNG bytes; everything else is released as without it;
- when the file is concluded, only the ``max_tracks`` tracks with the highest scores keep their faces.

Memory: in flight, one display frame (at most 960 pixels wide: 1.5 MB for 960 x 540) per frame with faces between
the face stage and the scoring stage: at most ``QueueSizes.found_faces`` + ``batch_size`` frames in the pipelined
scan, one batch in the serial scan (frames 960 pixels wide or less are not copied). Kept, per file while it is
scanned: ``per_track`` faces of each track, each a PNG of its crop and of its display frame, which the faces of one
frame share (0.7 MB for a smooth 960 x 540 frame, 1.2 MB for a noisy one, measured; at most one per sampled frame:
min(tracks x per_track, frames with faces) of them). Once the file is concluded: the faces of its ``max_tracks``
highest-scored tracks only, until the report is drawn. CPU: a frame is encoded (level 1, 40-70 ms at 960 x 540)
once at most, and only when one of its faces becomes one of its track's most suspicious.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass
from functools import cached_property
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image

if TYPE_CHECKING:
    from deepscan.media.faces import Face
    from deepscan.scan_results import FaceResult, FileResult
    from deepscan.verdicts import TrackVerdict

MAX_FRAME_DISPLAY = 960  # pixels wide at most: a figure's frame panel cannot show more


def display_step(width: int) -> int:
    """The step a frame ``width`` pixels wide is downscaled by for display (1: shown as it is)."""
    return max(1, math.ceil(width / MAX_FRAME_DISPLAY))


def display_frame(frame: np.ndarray) -> np.ndarray:
    """The frame (uint8 RGB) at display size: downscaled by :func:`display_step` (bilinear), else itself."""
    height, width = frame.shape[:2]
    step = display_step(width)
    if step == 1:
        return frame
    size = (max(1, width // step), max(1, height // step))
    return np.asarray(Image.fromarray(frame).resize(size, Image.Resampling.BILINEAR), dtype=np.uint8)


def _png(image: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(image)).save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()


def _unpng(data: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(data)) as image:
        return np.asarray(image.convert("RGB"), dtype=np.uint8)


class FrameView:
    """What a heat-map figure needs of one frame: its shape and its display-size copy (shared by its faces)."""

    def __init__(self, frame: np.ndarray):
        self.shape = tuple(frame.shape)
        self.display = display_frame(frame)

    @cached_property
    def png(self) -> bytes:
        return _png(self.display)  # once per frame, however many of its faces are kept


def attach_views(found: list, faces: list[Face], image: np.ndarray, input_size: int, margin: float) -> None:
    """Give each face found in ``image`` (``deepscan.scan._Pending``, in the order of ``faces``) what a report keeps
    of it: ``kept = (crop, view)``, its crop at ``input_size`` and a :class:`FrameView` of ``image``.

    The crop is the scan's own where its box is the recorded one in floats (the detectors' boxes are): the square
    round it is then the one ``deepscan.explain.recorded`` computes from the report, so the pixels are identical.
    Else it is cut again from the recorded box, as the report would."""
    from deepscan.media.faces import Face, crop_face

    view = FrameView(image)
    for pending, face in zip(found, faces):
        box = pending.face.box
        if all(isinstance(value, float) for value in face.box) and tuple(face.box) == box:
            crop = pending.crops[input_size]
        else:
            crop = crop_face(image, Face(box=box, score=pending.face.detection_score,
                                         keypoints=np.zeros((6, 2))), input_size, margin)
        pending.kept = (crop, view)


def keep_scored(result: FileResult, pending: list) -> None:
    """Scored faces of ``result``'s file (a ``FileResult``), in frame order: its kept faces, if it keeps any, take
    those a report explains."""
    if result.kept_faces is not None:
        result.kept_faces.offer(pending)


@dataclass(frozen=True)
class KeepFaces:
    """What the scan keeps for a report: the ``per_track`` most suspicious faces of each track, of the
    ``max_tracks`` tracks with the highest scores (None: every track)."""

    per_track: int = 1
    max_tracks: int | None = None


@dataclass(frozen=True)
class KeptFace:
    """One face kept by the scan: which it is, its P(fake), its crop and its frame (at display size), as PNG."""

    frame_index: int
    track_id: int
    fake_probability: float
    frame_shape: tuple[int, ...]
    frame_png: bytes
    crop_png: bytes

    @property
    def frame(self) -> np.ndarray:
        """The frame at display size (:func:`display_frame`), uint8 RGB."""
        return _unpng(self.frame_png)

    @property
    def crop(self) -> np.ndarray:
        return _unpng(self.crop_png)


class KeptFaces:
    """One file's kept faces, per track the most suspicious first; ``input_size`` and ``margin``: the crops'."""

    def __init__(self, keep: KeepFaces, input_size: int, margin: float):
        self.keep = keep
        self.input_size = input_size
        self.margin = margin
        self._tracks: dict[int, list[KeptFace]] = {}

    def offer(self, pending: list) -> None:
        """Scored faces (``deepscan.scan._Pending``, with their ``kept`` from :func:`attach_views`), in the order of
        the file's frames."""
        for item in pending:
            if item.kept is not None:
                self._offer(item.face, *item.kept)

    def _offer(self, face: FaceResult, crop: np.ndarray, view: FrameView) -> None:
        """Kept if it is among its track's ``per_track`` highest P(fake) so far (a tie goes to the earlier face, as
        ``suspicious_faces`` chooses)."""
        probability = face.fake_probability
        if probability != probability:  # unscored (NaN)
            return
        kept = self._tracks.setdefault(face.track_id, [])
        if len(kept) >= self.keep.per_track and probability <= kept[-1].fake_probability:
            return
        place = sum(1 for other in kept if other.fake_probability >= probability)
        kept.insert(place, KeptFace(face.frame_index, face.track_id, probability, view.shape, view.png, _png(crop)))
        del kept[self.keep.per_track:]

    def conclude(self, tracks: list[TrackVerdict]) -> None:
        """The file's tracks are judged: keep the faces of the ``max_tracks`` highest-scored only."""
        if self.keep.max_tracks is None:
            return
        ranked = sorted(tracks, key=lambda track: -track.score)[: self.keep.max_tracks]
        chosen = {track.track_id for track in ranked}
        self._tracks = {track_id: kept for track_id, kept in self._tracks.items() if track_id in chosen}

    def get(self, frame_index: int, track_id: int, fake_probability: float | None) -> KeptFace | None:
        """The kept face of that frame and track with that P(fake); None: not kept."""
        for kept in self._tracks.get(track_id, ()):
            if kept.frame_index == frame_index and kept.fake_probability == fake_probability:
                return kept
        return None

    def __len__(self) -> int:
        return sum(len(kept) for kept in self._tracks.values())

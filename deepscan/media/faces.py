"""Face detection (MediaPipe BlazeFace short range, shipped in the package) and face crops.

BlazeFace sees a 128 x 128 letterboxed copy of its input, and finds faces down to roughly an
eighth of that input's longer side. A whole 1280 x 720 frame therefore hides faces smaller than
about 150 px, so large frames are also searched tile by tile (overlapping, square-ish tiles of about
``tile_size`` pixels), and the detections of all passes are merged (:mod:`deepscan.media.face_merge`).
Crops of the faces found are :mod:`deepscan.media.face_crops`.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import os
import sys
import threading
import weakref
from collections.abc import Iterator
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np
from PIL import Image

from deepscan.errors import DeepscanError
from deepscan.media.face_crops import crop_face, face_square  # noqa: F401 - also found here, as they always were
from deepscan.media.face_merge import Candidate, merge_detections, tile_regions
from deepscan.media.face_merge import box_iou  # noqa: F401 - also found here, as it always was

MODEL_NAME = "face_detection_short_range.tflite"
# sha256 of face_detection_short_range.tflite as shipped in the mediapipe 0.10.21 wheel.
MODEL_SHA256 = "bbff11cebd1eb27a1e004cae0b0e63ec8c551cbf34a4451148b4908b8db3eca8"

KEYPOINT_NAMES = ("right_eye", "left_eye", "nose_tip", "mouth", "right_ear", "left_ear")

# A detection this close (as a share of the tile side) to a tile edge that lies inside the frame
# is probably a face cut by that edge: the neighbouring tile or the whole frame sees it whole.
_CUT_EDGE_SHARE = 0.02
# MediaPipe aborts the whole process (a native check, no exception) on an image with a side of 32767
# px or more, such as a 40000 x 40 strip; larger frames are shrunk for the whole-frame pass, which
# the model sees at 128 px anyway.
_MAX_NATIVE_SIDE = 16384
# A frame so elongated that tiling it takes more tiles than this (a 1 x 80 000 000 strip would take
# 200 000 calls, minutes) is searched whole only; an 89-megapixel photo, the largest image deepscan
# loads, takes about 600.
_MAX_TILES = 2000


class FaceModelError(DeepscanError, RuntimeError):
    """The face detection model is missing or is not the file deepscan shipped."""


@dataclass(frozen=True, eq=False)
class Face:
    """A detected face, in pixel coordinates of the frame it was found in.

    ``box`` is ``(x0, y0, x1, y1)`` and may reach outside the frame for faces at its edge.
    ``keypoints`` is a (6, 2) array of (x, y): right eye, left eye, nose tip, mouth, right ear,
    left ear, in MediaPipe's order ("right" is the person's right, on the left of the picture).
    """

    box: tuple[float, float, float, float]
    score: float
    keypoints: np.ndarray

    @property
    def width(self) -> float:
        return self.box[2] - self.box[0]

    @property
    def height(self) -> float:
        return self.box[3] - self.box[1]

    @property
    def center(self) -> tuple[float, float]:
        return ((self.box[0] + self.box[2]) / 2, (self.box[1] + self.box[3]) / 2)

    @property
    def size(self) -> float:
        """The longer side of the box: the scale that distances between faces are measured in."""
        return max(self.width, self.height)


def load_model_bytes(model_path: str | os.PathLike[str] | None = None) -> bytes:
    """The detector model's bytes (the shipped one by default), checked against MODEL_SHA256."""
    if model_path is None:
        source = resources.files("deepscan").joinpath("assets", MODEL_NAME)
    else:
        source = Path(model_path)
    try:
        data = source.read_bytes()
    except OSError as error:
        raise FaceModelError(
            f"face detection model {MODEL_NAME} cannot be read ({error}); reinstall deepscan"
        ) from None
    digest = hashlib.sha256(data).hexdigest()
    if digest != MODEL_SHA256:
        raise FaceModelError(
            f"face detection model {source} is damaged or not the shipped file "
            f"(sha256 {digest}, expected {MODEL_SHA256}); reinstall deepscan"
        )
    return data


@contextlib.contextmanager
def _native_stderr_silenced() -> Iterator[None]:
    """Hide what MediaPipe's C++ side prints straight to file descriptor 2 (INFO lines, warnings).

    Nothing else silences it (GLOG_minloglevel and TF_CPP_MIN_LOG_LEVEL do not), and a scan's
    output must stay readable. Held only around model creation, the first call and closing.
    """
    stderr_fd = 2  # the native side writes to the descriptor, whatever sys.stderr is now
    if sys.stderr is not None:
        sys.stderr.flush()
    try:
        saved_fd = os.dup(stderr_fd)
    except OSError:
        # No descriptor 2 at all (a detached service): there is nothing to hide from.
        yield
        return
    try:
        with open(os.devnull, "w") as devnull:
            os.dup2(devnull.fileno(), stderr_fd)
            try:
                yield
            finally:
                os.dup2(saved_fd, stderr_fd)
    finally:
        os.close(saved_fd)


def _import_mediapipe_quietly() -> None:
    with contextlib.suppress(Exception):
        importlib.import_module("mediapipe.tasks.python.vision")


def _import_mediapipe():
    """mediapipe, imported on first use: it takes seconds, and only face detection needs it.

    mediapipe keeps the exception of its optional ``sounddevice`` import, traceback and all, and
    that traceback pins every frame that was on the stack during the first import: the caller's
    locals (whole video frames, this detector) would never be freed. A thread of its own does the
    first import so that only that thread's empty frames stay pinned.
    """
    if "mediapipe.tasks.python.vision" not in sys.modules:
        loader = threading.Thread(target=_import_mediapipe_quietly, name="import-mediapipe")
        loader.start()
        loader.join()
    # Already loaded now; if loading failed, this import raises the real error here.
    import mediapipe
    from mediapipe.tasks import python as tasks

    return mediapipe, tasks


def _close_native(detector) -> None:
    with _native_stderr_silenced():
        detector.close()


class FaceDetector:
    """BlazeFace short range on the whole frame and, for large frames, on overlapping tiles.

    :meth:`detect` searches every tile of every frame; :meth:`whole_frame_faces` and
    :meth:`merged_with_regions` let a caller choose other regions (``deepscan.media.face_search``
    searches crops round the faces of the previous frames). Use as a context manager (or call
    :meth:`close`): MediaPipe holds native resources.
    """

    def __init__(
        self,
        min_score: float = 0.5,
        tile: bool = True,
        tile_size: int = 512,
        tile_overlap: float = 0.25,
        tile_min_score: float | None = 0.65,
        nms_iou: float = 0.35,
        model_path: str | os.PathLike[str] | None = None,
    ) -> None:
        mp, tasks = _import_mediapipe()
        self._detector = None
        if tile_size < 128:
            raise ValueError(
                f"tile_size must be at least the model's 128 px input, got {tile_size}"
            )
        self.min_score = min_score
        # Tiles show the model many small views, of bodies and backgrounds too: on portraits in
        # 1080p frames, tile-only false faces (collars, medals) scored up to 0.67, while true faces
        # of 78 px or more scored 0.82 and above. Tile detections must therefore score higher.
        self.tile_min_score = min_score if tile_min_score is None else tile_min_score
        self.tile = tile
        self.tile_size = tile_size
        self.tile_overlap = tile_overlap
        self.nms_iou = nms_iou
        self._mp = mp
        options = tasks.vision.FaceDetectorOptions(
            base_options=tasks.BaseOptions(model_asset_buffer=load_model_bytes(model_path)),
            # IMAGE mode: scans sample frames seconds apart, so there is no motion to track.
            running_mode=tasks.vision.RunningMode.IMAGE,
            min_detection_confidence=min(self.min_score, self.tile_min_score),
            min_suppression_threshold=nms_iou,
        )
        with _native_stderr_silenced():
            self._detector = tasks.vision.FaceDetector.create_from_options(options)
        # Closes a detector its owner forgot once it is garbage collected. Not at exit: by then
        # MediaPipe's worker pool is shut down and closing fails; only `with` or close() is clean.
        self._closer = weakref.finalize(self, _close_native, self._detector)
        self._closer.atexit = False
        self._warmed_up = False

    def __enter__(self) -> FaceDetector:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        """Free the native detector; safe to call twice."""
        if self._detector is not None:
            self._closer()
            self._detector = None

    def tiles_for(self, height: int, width: int) -> list[tuple[int, int, int, int]]:
        """The tiles :meth:`detect` searches besides the whole frame (none for small frames)."""
        # Below 1.5 tiles the whole frame already resolves nearly as small a face as a tile would.
        if not self.tile or max(height, width) <= 1.5 * self.tile_size:
            return []
        regions = tile_regions(height, width, self.tile_size, self.tile_overlap)
        return regions if len(regions) <= _MAX_TILES else []

    def _detect_region(
        self, image: np.ndarray, region: tuple[int, int, int, int], min_score: float
    ) -> list[Face]:
        x0, y0, x1, y1 = region
        pixels = np.ascontiguousarray(image[y0:y1, x0:x1])
        mp_image = self._mp.Image(image_format=self._mp.ImageFormat.SRGB, data=pixels)
        if self._warmed_up:
            result = self._detector.detect(mp_image)
        else:
            with _native_stderr_silenced():
                result = self._detector.detect(mp_image)
            self._warmed_up = True
        faces = []
        width, height = x1 - x0, y1 - y0
        for detection in result.detections:
            bbox = detection.bounding_box
            box = (
                float(x0 + bbox.origin_x),
                float(y0 + bbox.origin_y),
                float(x0 + bbox.origin_x + bbox.width),
                float(y0 + bbox.origin_y + bbox.height),
            )
            keypoints = np.array(
                [(x0 + point.x * width, y0 + point.y * height) for point in detection.keypoints],
                dtype=np.float64,
            ).reshape(-1, 2)
            score = float(detection.categories[0].score) if detection.categories else 0.0
            if score < min_score:
                continue
            faces.append(Face(box=box, score=score, keypoints=keypoints))
        return faces

    def reset(self) -> None:
        """Start a new file or stream. Each frame is searched afresh, so there is nothing to forget:
        this is here so that every face search (``deepscan.media.face_search``) is used alike."""

    def detect(self, image: np.ndarray) -> list[Face]:
        """Faces in an H x W x 3 uint8 RGB frame, best score first: whole frame and tiles."""
        whole_frame = self.whole_frame_faces(image)
        return self.merged_with_regions(image, whole_frame, self.tiles_for(*image.shape[:2]))

    def whole_frame_faces(self, image: np.ndarray) -> list[Face]:
        """The whole-frame pass alone, unmerged: one model call, blind to faces under about an
        eighth of the frame's longer side. :meth:`merged_with_regions` completes it."""
        self._check_frame(image)
        return self._detect_whole(image)

    def merged_with_regions(
        self,
        image: np.ndarray,
        whole_frame: list[Face],
        regions: list[tuple[int, int, int, int]],
    ) -> list[Face]:
        """``whole_frame`` (from :meth:`whole_frame_faces`) merged with the faces each region
        ``(x0, y0, x1, y1)`` of the frame shows, best score first. Regions are searched as tiles
        are (``tile_min_score``, cut-edge fragments dropped), whatever chose them."""
        self._check_frame(image)
        height, width = image.shape[:2]
        candidates = [Candidate(face, None, cut=False) for face in whole_frame]
        for region in regions:
            x0, y0, x1, y1 = region
            if not (0 <= x0 < x1 <= width and 0 <= y0 < y1 <= height):
                raise ValueError(f"region {region} is empty or leaves the {width} x {height} frame")
            for face in self._detect_region(image, region, self.tile_min_score):
                cut = self._cut_by_tile_edge(face, region, height, width)
                candidates.append(Candidate(face, region, cut))
        return merge_detections(candidates, self.nms_iou, height, width)

    def _check_frame(self, image: np.ndarray) -> None:
        if self._detector is None:
            raise RuntimeError("FaceDetector is closed")
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise ValueError(
                f"expected an H x W x 3 uint8 RGB image, got {image.shape} {image.dtype}"
            )

    def _detect_whole(self, image: np.ndarray) -> list[Face]:
        height, width = image.shape[:2]
        if max(height, width) <= _MAX_NATIVE_SIDE:
            return self._detect_region(image, (0, 0, width, height), self.min_score)
        scale = _MAX_NATIVE_SIDE / max(height, width)
        size = (max(1, round(width * scale)), max(1, round(height * scale)))
        small = np.asarray(Image.fromarray(image).resize(size, Image.Resampling.BILINEAR))
        x_scale, y_scale = width / size[0], height / size[1]
        return [
            Face(
                box=(face.box[0] * x_scale, face.box[1] * y_scale, face.box[2] * x_scale, face.box[3] * y_scale),
                score=face.score,
                keypoints=face.keypoints * (x_scale, y_scale),
            )
            for face in self._detect_region(small, (0, 0, *size), self.min_score)
        ]

    @staticmethod
    def _cut_by_tile_edge(
        face: Face, region: tuple[int, int, int, int], height: int, width: int
    ) -> bool:
        x0, y0, x1, y1 = region
        margin = _CUT_EDGE_SHARE * max(x1 - x0, y1 - y0)
        box_x0, box_y0, box_x1, box_y1 = face.box
        return bool(
            (x0 > 0 and box_x0 <= x0 + margin)
            or (y0 > 0 and box_y0 <= y0 + margin)
            or (x1 < width and box_x1 >= x1 - margin)
            or (y1 < height and box_y1 >= y1 - margin)
        )

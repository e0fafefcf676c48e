"""Face search strategies: the guided search keeps the tile search's recall on sequences of frames
while running the tile search on few of them. Cost is counted in model calls, never timed."""

from __future__ import annotations

import math

import numpy as np
import pytest
from PIL import Image

from deepscan.media.face_search import (
    CROP_FACES,
    DEFAULT_FULL_SEARCH_EVERY,
    DEFAULT_SCENE_CHANGE,
    FACE_LOST,
    FIRST_FRAME,
    FRAME_SIZE_CHANGED,
    NOT_TILED,
    PERIODIC,
    SCENE_CHANGE,
    GuidedFaceSearch,
    crop_region,
    grey_thumbnail,
    make_face_search,
    scene_difference,
    unmatched_faces,
)
from deepscan.media.faces import Face, FaceDetector, box_iou
from deepscan.media.synthetic import moving_portrait_clip
from deepscan.media.video import iter_frames

CANVAS = (196, 204, 212)
SMALLEST_FACE_PX = 78  # the tile search finds faces this large anywhere in 720p and 1080p frames
FRAME_SIZES = {"720p": (1280, 720), "1080p": (1920, 1080)}
N = DEFAULT_FULL_SEARCH_EVERY


@pytest.fixture(scope="module")
def detector():
    with FaceDetector() as face_detector:
        yield face_detector


class Scenes:
    """Frames of the portrait pasted so that its face has a given size and centre (cut off where
    the frame ends), over the plain canvas or another background."""

    def __init__(self, portrait: np.ndarray, portrait_face: Face):
        self.portrait = portrait
        self.portrait_face = portrait_face
        self._scaled: dict[float, np.ndarray] = {}

    def frame(self, size, faces=(), background=CANVAS) -> np.ndarray:
        """``faces``: (face_px, (centre_x, centre_y)) of each face; ``background``: an RGB colour
        or a whole frame."""
        width, height = size
        frame = np.empty((height, width, 3), np.uint8)
        frame[:] = background
        for face_px, center in faces:
            self._paste(frame, face_px, center)
        return frame

    def face_box(self, face_px: float, center) -> np.ndarray:
        """Where the pasted face is: the box BlazeFace gives the full-size portrait, moved there."""
        scale = face_px / self.portrait_face.size
        offset = np.subtract(center, np.array(self.portrait_face.center) * scale)
        return np.array(self.portrait_face.box) * scale + np.tile(offset, 2)

    def _paste(self, frame: np.ndarray, face_px: float, center) -> None:
        scale = face_px / self.portrait_face.size
        if scale not in self._scaled:
            size = (round(self.portrait.shape[1] * scale), round(self.portrait.shape[0] * scale))
            resized = Image.fromarray(self.portrait).resize(size, Image.Resampling.LANCZOS)
            self._scaled[scale] = np.asarray(resized)
        picture = self._scaled[scale]
        face_x, face_y = np.array(self.portrait_face.center) * scale
        x, y = round(center[0] - face_x), round(center[1] - face_y)
        height, width = frame.shape[:2]
        x0, y0 = max(0, x), max(0, y)
        x1, y1 = min(width, x + picture.shape[1]), min(height, y + picture.shape[0])
        frame[y0:y1, x0:x1] = picture[y0 - y : y1 - y, x0 - x : x1 - x]


@pytest.fixture(scope="module")
def scenes(detector, portrait_image) -> Scenes:
    [face] = detector.detect(portrait_image)
    return Scenes(portrait_image, face)


class ModelCalls:
    """Counts the regions the detector shows MediaPipe (each one model call)."""

    def __init__(self, detector: FaceDetector, monkeypatch: pytest.MonkeyPatch):
        self.count = 0
        original = detector._detect_region

        def counted(*args, **kwargs):
            self.count += 1
            return original(*args, **kwargs)

        monkeypatch.setattr(detector, "_detect_region", counted)

    def during(self, action):
        before = self.count
        value = action()
        return value, self.count - before


@pytest.fixture
def calls(detector, monkeypatch) -> ModelCalls:
    return ModelCalls(detector, monkeypatch)


def faces_at(faces: list[Face], center, face_px: float) -> list[Face]:
    """The faces whose box centre lies within half a face of ``center``."""
    return [face for face in faces if math.dist(face.center, center) < 0.5 * face_px]


def swept_centres(size, face_px: float) -> list[tuple[float, float]]:
    """A 9 x 5 grid of face centres over the whole frame, from one face size off each edge."""
    width, height = size
    xs = np.linspace(face_px, width - face_px, 9)
    ys = np.linspace(face_px, height - face_px, 5)
    return [(float(x), float(y)) for y in ys for x in xs]


def serpentine_path(size, face_px: float) -> list[tuple[float, float]]:
    """Every swept centre in turn, row by row, moving at most one face size between frames."""
    grid = swept_centres(size, face_px)
    rows = [grid[index : index + 9] for index in range(0, len(grid), 9)]
    visits = [centre for row, cells in enumerate(rows) for centre in (cells[::-1] if row % 2 else cells)]
    path = [visits[0]]
    for start, end in zip(visits, visits[1:]):
        steps = math.ceil(math.dist(start, end) / face_px)
        path += [
            (start[0] + (end[0] - start[0]) * k / steps, start[1] + (end[1] - start[1]) * k / steps)
            for k in range(1, steps + 1)
        ]
    return path


# --- the recall sweep ------------------------------------------------------------------------------


@pytest.mark.parametrize("frame_size", FRAME_SIZES.values(), ids=FRAME_SIZES.keys())
def test_tiles_find_a_78_px_face_in_every_swept_position(detector, scenes, frame_size):
    """Today's recall, which the guided search must keep."""
    misses = []
    for centre in swept_centres(frame_size, SMALLEST_FACE_PX):
        faces = detector.detect(scenes.frame(frame_size, [(SMALLEST_FACE_PX, centre)]))
        if len(faces) != 1 or not faces_at(faces, centre, SMALLEST_FACE_PX):
            misses.append((centre, len(faces)))
    assert misses == []


@pytest.mark.parametrize("face_px", [SMALLEST_FACE_PX, 160])
@pytest.mark.parametrize("frame_size", FRAME_SIZES.values(), ids=FRAME_SIZES.keys())
def test_guided_search_follows_a_face_through_every_swept_position(
    detector, scenes, calls, frame_size, face_px
):
    """A face moving over the whole frame, through every position of the sweep, one face size per
    frame: found in every frame, with the tile search only on every N-th frame."""
    search = GuidedFaceSearch(detector)
    tiles_per_search = len(detector.tiles_for(frame_size[1], frame_size[0]))
    misses, full_search_frames = [], []
    path = serpentine_path(frame_size, face_px)
    for index, centre in enumerate(path):
        faces, model_calls = calls.during(
            lambda: search.detect(scenes.frame(frame_size, [(face_px, centre)]))
        )
        if len(faces) != 1 or not faces_at(faces, centre, face_px):
            misses.append((index, centre, len(faces)))
        assert model_calls == search.last_pass.model_calls
        if search.last_pass.full_search:
            full_search_frames.append(index)
            assert model_calls == 1 + tiles_per_search
        else:
            assert model_calls == 2  # the whole frame, and the crop round this small face
    assert misses == []
    assert full_search_frames == list(range(0, len(path), N))


@pytest.mark.parametrize(
    "frame_size, face_px", [(FRAME_SIZES["720p"], 160), (FRAME_SIZES["1080p"], 240)], ids=["720p", "1080p"]
)
def test_faces_too_small_for_the_whole_frame_to_place_get_their_crop(detector, scenes, frame_size, face_px):
    """Faces of an eighth of the frame's longer side: the whole-frame pass finds them, with boxes up
    to a third too large. The guided search still crops round them, and places them well."""
    worst = 1.0
    for centre in swept_centres(frame_size, face_px)[::3]:
        frame = scenes.frame(frame_size, [(face_px, centre)])
        search = GuidedFaceSearch(detector)
        search.detect(frame)
        [face] = search.detect(frame)
        assert search.last_pass.crops == 1 and not search.last_pass.full_search
        worst = min(worst, float(box_iou(face.box, scenes.face_box(face_px, centre)[None])[0]))
    assert worst >= 0.7


# --- sequences: a face appears, a scene cut, a face leaves -----------------------------------------


def test_a_small_face_appearing_is_found_by_the_next_periodic_search(detector, scenes, calls):
    size = FRAME_SIZES["1080p"]
    search = GuidedFaceSearch(detector)
    # The large portrait covers 41 % of the frame: less than the half that makes a scene change.
    small_centre, large_centre, large_px = (1500.0, 800.0), (500.0, 560.0), 340
    appears, large_appears = 3, 11  # neither on a periodic frame (0, 8, 16)
    found_small, found_large, calls_per_frame = [], [], []
    for index in range(20):
        faces_shown = [(SMALLEST_FACE_PX, small_centre)] if index >= appears else []
        if index >= large_appears:
            faces_shown.append((large_px, large_centre))
        faces, model_calls = calls.during(lambda: search.detect(scenes.frame(size, faces_shown)))
        found_small.append(bool(faces_at(faces, small_centre, SMALLEST_FACE_PX)))
        found_large.append(bool(faces_at(faces, large_centre, large_px)))
        calls_per_frame.append(model_calls)
        assert search.last_pass.reason in (None, FIRST_FRAME, PERIODIC)  # no cut for a face walking in
    # Too small for the whole-frame pass: found by the next tile search (frame 8), then followed.
    assert found_small == [False] * 8 + [True] * 12
    # Large: the whole-frame pass finds it the moment it appears.
    assert found_large == [False] * large_appears + [True] * (20 - large_appears)
    tiles = 1 + len(detector.tiles_for(size[1], size[0]))
    assert calls_per_frame == [tiles] + [1] * 7 + [tiles] + [2] * 7 + [tiles] + [2] * 3


def cut_background(size) -> np.ndarray:
    """Another shot: a dark, diagonally shaded wall."""
    width, height = size
    rows, columns = np.mgrid[0:height, 0:width]
    shade = (40 + 60 * (rows + columns) / (height + width)).astype(np.uint8)
    return np.stack([shade, shade + 10, shade + 5], axis=2)


def shot_then_cut(scenes, first_shot_faces) -> list[np.ndarray]:
    """5 frames of a first shot on the canvas, then 3 of another shot: a small face at (1000, 550)."""
    size = FRAME_SIZES["720p"]
    second_shot = scenes.frame(size, [(SMALLEST_FACE_PX, (1000.0, 550.0))], background=cut_background(size))
    return [scenes.frame(size, first_shot_faces)] * 5 + [second_shot] * 3


def follow(search: GuidedFaceSearch, frames) -> tuple[list[bool], list[str | None]]:
    """Per frame: whether the second shot's face alone was found, and why a full search ran."""
    found, reasons = [], []
    for frame in frames:
        faces = search.detect(frame)
        found.append(len(faces_at(faces, (1000.0, 550.0), SMALLEST_FACE_PX)) == len(faces) == 1)
        reasons.append(search.last_pass.reason)
    return found, reasons


@pytest.mark.parametrize("first_shot", ["a face elsewhere", "no face"])
def test_a_scene_cut_to_a_new_face_is_searched_at_once(detector, scenes, first_shot):
    faces = [(SMALLEST_FACE_PX, (200.0, 200.0))] if first_shot == "a face elsewhere" else []
    found, reasons = follow(GuidedFaceSearch(detector), shot_then_cut(scenes, faces))
    assert reasons == [FIRST_FRAME, None, None, None, None, SCENE_CHANGE, None, None]
    assert found == [False] * 5 + [True] * 3


def test_without_the_scene_test_a_cut_from_an_empty_shot_hides_a_small_face(detector, scenes):
    """No face to lose: only the scene test sees the cut; without it the periodic search finds the
    face, frames later."""
    search = GuidedFaceSearch(detector, scene_change=math.inf)
    found, reasons = follow(search, shot_then_cut(scenes, []))
    assert SCENE_CHANGE not in reasons and found[5:] == [False] * 3


def test_a_face_that_leaves_costs_one_full_search(detector, scenes, calls):
    size = FRAME_SIZES["720p"]
    search = GuidedFaceSearch(detector)
    passes, counts = [], []
    for index in range(7):
        shown = [(SMALLEST_FACE_PX, (300.0 + 60 * index, 300.0))] if index < 3 else []
        faces, model_calls = calls.during(lambda: search.detect(scenes.frame(size, shown)))
        assert len(faces) == len(shown)
        passes.append(search.last_pass.reason)
        counts.append(model_calls)
    assert passes == [FIRST_FRAME, None, None, FACE_LOST, None, None, None]
    # On the frame it left: the whole frame, the crop that missed it, then the 6 tiles.
    assert counts == [7, 2, 2, 1 + 1 + 6, 1, 1, 1]


def test_a_face_that_jumps_out_of_its_crop_is_found_by_the_full_search(detector, scenes):
    size = FRAME_SIZES["720p"]
    search = GuidedFaceSearch(detector)
    centres = [(300.0, 300.0), (300.0, 300.0), (300.0 + 3 * SMALLEST_FACE_PX, 300.0)]
    for centre in centres:
        faces = search.detect(scenes.frame(size, [(SMALLEST_FACE_PX, centre)]))
        assert len(faces) == len(faces_at(faces, centre, SMALLEST_FACE_PX)) == 1
    assert search.last_pass.reason == FACE_LOST and search.last_pass.crops == 1


def test_a_clip_of_two_small_faces_is_followed_through_h264(detector, calls, tmp_path):
    """Real decoding (codec noise included): both faces in every sampled frame, as the tile search
    finds them, with the tile search on frames 0 and 8 only."""
    clip = moving_portrait_clip(
        tmp_path / "small_faces.mp4", seconds=4.0, fps=25, size=(1280, 720), faces=2,
        portrait_height=0.35,
    )
    search = GuidedFaceSearch(detector)
    reasons, guided_counts, tile_counts = [], [], []
    for frame in iter_frames(clip, fps=4):
        guided_counts.append(len(search.detect(frame.image)))
        reasons.append(search.last_pass.reason)
        tile_counts.append(len(detector.detect(frame.image)))
    assert len(reasons) == 16
    assert guided_counts == tile_counts == [2] * 16
    assert reasons == [FIRST_FRAME] + [None] * 7 + [PERIODIC] + [None] * 7


# --- determinism, images, small frames, strategies -------------------------------------------------


def sequence(scenes, size) -> list[np.ndarray]:
    """A small face walking left to right, its portrait never reaching the large one's."""
    return [
        scenes.frame(size, [(SMALLEST_FACE_PX, (150.0 + 50 * index, 300.0)), (250, (1100.0, 400.0))])
        for index in range(10)
    ]


def test_the_same_frames_give_the_same_faces(detector, scenes):
    frames = sequence(scenes, FRAME_SIZES["720p"])
    search = GuidedFaceSearch(detector)

    def run():
        search.reset()
        results = []
        for frame in frames:
            faces = search.detect(frame)
            results.append(([face.box for face in faces], [face.score for face in faces],
                            search.last_pass))
        return results

    first = run()
    assert first == run()
    assert sum(len(boxes) for boxes, _, _ in first) == 20


def test_an_image_gets_the_full_search(detector, scenes):
    size = FRAME_SIZES["1080p"]
    with make_face_search("guided") as search:
        for frame in sequence(scenes, size)[:3]:
            search.detect(frame)
        search.reset()  # a new file: a photograph
        photo = scenes.frame(size, [(SMALLEST_FACE_PX, (1700.0, 900.0))])
        faces = search.detect(photo)
        assert search.last_pass.reason == FIRST_FRAME
        assert [face.box for face in faces] == [face.box for face in detector.detect(photo)]
        assert len(faces) == 1
        # A frame of another size is a new stream even without reset().
        search.detect(scenes.frame(FRAME_SIZES["720p"], []))
        assert search.last_pass.reason == FRAME_SIZE_CHANGED


def test_frames_too_small_for_tiles_are_searched_as_the_tile_search_does(detector, portrait_clip, calls):
    search = GuidedFaceSearch(detector)
    for frame in iter_frames(portrait_clip, fps=4):
        faces, model_calls = calls.during(lambda: search.detect(frame.image))
        assert search.last_pass.reason == NOT_TILED and model_calls == 1
        assert [face.box for face in faces] == [face.box for face in detector.detect(frame.image)]


@pytest.mark.parametrize("strategy, tiled", [("tiles", True), ("whole", False)])
def test_tile_and_whole_frame_strategies_search_every_frame_alike(
    scenes, monkeypatch, strategy, tiled
):
    size = FRAME_SIZES["1080p"]
    with make_face_search(strategy) as search:
        assert isinstance(search, FaceDetector) and search.tile is tiled
        calls = ModelCalls(search, monkeypatch)
        counts = []
        for frame in sequence(scenes, size)[:4]:
            search.reset()  # nothing to forget: the same search each time
            counts.append(calls.during(lambda: search.detect(frame))[1])
    assert counts == [16 if tiled else 1] * 4


def test_unknown_strategies_and_periods_are_refused(detector):
    with pytest.raises(ValueError, match="guided, tiles, whole"):
        make_face_search("mosaic")
    with pytest.raises(ValueError, match="full_search_every"):
        GuidedFaceSearch(detector, full_search_every=0)


def test_every_frame_fully_searched_is_the_tile_search(detector, scenes, calls):
    frames = sequence(scenes, FRAME_SIZES["720p"])
    search = GuidedFaceSearch(detector, full_search_every=1)
    for frame in frames:
        faces, model_calls = calls.during(lambda: search.detect(frame))
        assert model_calls == 7
        assert [face.box for face in faces] == [face.box for face in detector.detect(frame)]


def test_regions_must_lie_inside_the_frame(detector):
    frame = np.zeros((720, 1280, 3), np.uint8)
    for region in [(0, 0, 0, 10), (-5, 0, 100, 100), (1200, 600, 1300, 700)]:
        with pytest.raises(ValueError, match="region"):
            detector.merged_with_regions(frame, [], [region])


# --- the parts, without the model ------------------------------------------------------------------


def face_at(x: float, y: float, size: float = 80.0) -> Face:
    return Face(box=(x, y, x + size, y + size), score=0.9, keypoints=np.zeros((6, 2)))


def test_crop_region_is_a_square_of_crop_faces_inside_the_frame():
    assert crop_region(face_at(500, 300), 720, 1280) == (380, 180, 700, 500)
    assert 500 - 180 == CROP_FACES * 80
    assert crop_region(face_at(-20, 650), 720, 1280) == (0, 530, 180, 720)
    assert crop_region(face_at(-500, -500), 720, 1280) is None


def test_known_faces_are_matched_one_to_one_and_nearby_only():
    left, right = face_at(100, 100), face_at(200, 100)
    moved_left = face_at(110, 100)
    assert unmatched_faces([left, right], [moved_left]) == [right]  # the closer one takes it
    assert unmatched_faces([left], [face_at(100 + 1.6 * 80, 100)]) == [left]  # beyond the crop
    assert unmatched_faces([left], [face_at(100, 100, size=170)]) == [left]  # more than twice as large
    assert unmatched_faces([left, right], [face_at(205, 100), face_at(95, 100)]) == []


def test_scene_difference_sees_cuts_not_moves(scenes):
    size = FRAME_SIZES["720p"]
    still = grey_thumbnail(scenes.frame(size, [(120, (400.0, 360.0))]))
    moved = grey_thumbnail(scenes.frame(size, [(120, (460.0, 360.0))]))  # half a face size
    cut = grey_thumbnail(scenes.frame(size, [(120, (400.0, 360.0))], background=cut_background(size)))
    assert still.shape == (36, 64)
    assert scene_difference(still, still) == 0
    assert scene_difference(still, moved) < DEFAULT_SCENE_CHANGE / 4
    assert scene_difference(still, cut) > 4 * DEFAULT_SCENE_CHANGE
    assert grey_thumbnail(np.zeros((40, 40_000, 3), np.uint8)).shape == (1, 64)

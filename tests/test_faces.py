"""Face detection (whole frame and tiles), the shipped model's integrity, and face crops."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from deepscan.media.faces import (
    MODEL_SHA256,
    Face,
    FaceDetector,
    FaceModelError,
    crop_face,
    face_square,
    load_model_bytes,
    tile_regions,
)
from deepscan.media.video import iter_frames

CANVAS = (196, 204, 212)


@pytest.fixture(scope="module")
def detector():
    with FaceDetector() as face_detector:
        yield face_detector


@pytest.fixture(scope="module")
def portrait_face(detector, portrait_image) -> Face:
    faces = detector.detect(portrait_image)
    assert len(faces) == 1
    return faces[0]


def paste(
    canvas_size: tuple[int, int], picture: np.ndarray, top_left: tuple[int, int]
) -> np.ndarray:
    width, height = canvas_size
    frame = np.empty((height, width, 3), np.uint8)
    frame[:] = CANVAS
    x, y = top_left
    frame[y : y + picture.shape[0], x : x + picture.shape[1]] = picture
    return frame


def scaled(picture: np.ndarray, scale: float) -> np.ndarray:
    size = (round(picture.shape[1] * scale), round(picture.shape[0] * scale))
    return np.asarray(Image.fromarray(picture).resize(size, Image.Resampling.LANCZOS))


def test_shipped_model_is_verified(tmp_path):
    data = load_model_bytes()
    assert len(data) == 229_714
    tampered = tmp_path / "model.tflite"
    tampered.write_bytes(data[:-1] + bytes([data[-1] ^ 1]))
    with pytest.raises(FaceModelError, match=MODEL_SHA256):
        load_model_bytes(tampered)
    with pytest.raises(FaceModelError, match="reinstall"):
        FaceDetector(model_path=tmp_path / "absent.tflite")


def test_portrait_face_and_keypoints(portrait_face, portrait_image):
    face = portrait_face
    assert face.score > 0.8
    x0, y0, x1, y1 = face.box
    height, width = portrait_image.shape[:2]
    assert 0 <= x0 < x1 <= width and 0 <= y0 < y1 <= height
    assert 0.2 * width < face.width < 0.6 * width
    assert face.keypoints.shape == (6, 2)
    right_eye, left_eye, nose, mouth = face.keypoints[:4]
    for x, y in (right_eye, left_eye, nose, mouth):
        assert x0 <= x <= x1 and y0 <= y <= y1
    # The person's right eye is on the picture's left; eyes above the nose, nose above the mouth.
    assert right_eye[0] < left_eye[0]
    assert max(right_eye[1], left_eye[1]) < nose[1] < mouth[1]


def test_face_found_in_every_sampled_frame_of_the_clip(detector, portrait_clip):
    counts = [len(detector.detect(frame.image)) for frame in iter_frames(portrait_clip, fps=4)]
    assert len(counts) == 8
    assert counts == [1] * 8


def test_small_face_in_a_large_frame_needs_tiles(detector, portrait_image, portrait_face):
    scale = 0.45  # the face becomes ~90 px wide: under 5 % of a 1920 px frame
    top_left = (1220, 610)
    frame = paste((1920, 1080), scaled(portrait_image, scale), top_left)
    expected_center = np.array(portrait_face.center) * scale + top_left

    with FaceDetector(tile=False) as whole_frame_only:
        assert whole_frame_only.detect(frame) == []

    assert detector.tiles_for(1080, 1920)
    faces = detector.detect(frame)
    assert len(faces) == 1
    assert np.linalg.norm(np.array(faces[0].center) - expected_center) < 0.15 * faces[0].size
    assert faces[0].size == pytest.approx(portrait_face.size * scale, rel=0.3)


def test_a_large_face_cut_by_tile_edges_is_reported_once(detector, portrait_image):
    # Tile edges cross this face; tiles holding part of it once reported the chin as a face.
    frame = paste((1280, 720), scaled(portrait_image, 0.9), (291, 83))
    assert len(detector.detect(frame)) == 1


def test_two_faces_in_a_clip_frame(detector, two_face_clip):
    frame = next(iter_frames(two_face_clip))
    faces = sorted(detector.detect(frame.image), key=lambda face: face.center[0])
    assert len(faces) == 2
    assert faces[0].center[0] < 160 < faces[1].center[0]


def test_tiles_cover_the_frame_with_overlap():
    for height, width in [(720, 1280), (1080, 1920), (2160, 3840), (1280, 720)]:
        tiles = tile_regions(height, width, tile_size=512, overlap=0.25)
        covered = np.zeros((height, width), bool)
        for x0, y0, x1, y1 in tiles:
            assert 0 <= x0 < x1 <= width and 0 <= y0 < y1 <= height
            assert x1 - x0 <= 512 and y1 - y0 <= 512
            assert max(x1 - x0, y1 - y0) <= 1.3 * min(x1 - x0, y1 - y0)  # square-ish
            covered[y0:y1, x0:x1] = True
        assert covered.all()
        # Horizontal neighbours share at least a quarter of a tile.
        first, second = tiles[0], tiles[1]
        assert first[2] - second[0] >= 0.25 * (first[2] - first[0]) - 1
    assert tile_regions(720, 1280) == [
        (0, 0, 512, 411), (384, 0, 896, 411), (768, 0, 1280, 411),
        (0, 309, 512, 720), (384, 309, 896, 720), (768, 309, 1280, 720),
    ]  # fmt: skip


def test_small_frames_are_not_tiled(detector):
    assert detector.tiles_for(240, 320) == []
    assert detector.tiles_for(480, 640) == []
    with FaceDetector(tile=False) as untiled:
        assert untiled.tiles_for(1080, 1920) == []


def test_detect_checks_its_input():
    face_detector = FaceDetector()
    with pytest.raises(ValueError):
        face_detector.detect(np.zeros((64, 64), np.uint8))
    with pytest.raises(ValueError):
        face_detector.detect(np.zeros((64, 64, 3), np.float32))
    face_detector.close()
    face_detector.close()
    with pytest.raises(RuntimeError, match="closed"):
        face_detector.detect(np.zeros((64, 64, 3), np.uint8))


def gradient_frame(height: int = 200, width: int = 300) -> np.ndarray:
    rows, columns = np.mgrid[0:height, 0:width]
    return np.stack([rows % 256, columns % 256, (rows + columns) % 256], axis=2).astype(np.uint8)


def a_face(box: tuple[float, float, float, float]) -> Face:
    return Face(box=box, score=0.9, keypoints=np.zeros((6, 2)))


def test_face_square_is_centred_and_scaled():
    square = face_square(a_face((100, 50, 160, 130)), margin=1.3)  # 60 x 80 box
    x0, y0, x1, y1 = square
    assert x1 - x0 == y1 - y0 == round(1.3 * 80)
    assert ((x0 + x1) / 2, (y0 + y1) / 2) == pytest.approx((130, 90), abs=0.5)
    assert all(float(value).is_integer() for value in square)


def test_crop_inside_the_frame_is_the_square_resized():
    frame = gradient_frame()
    face = a_face((100, 50, 160, 130))
    x0, y0, x1, y1 = (int(value) for value in face_square(face))
    side = x1 - x0
    same_size = crop_face(frame, face, size=side)
    assert np.array_equal(same_size, frame[y0:y1, x0:x1])
    small = crop_face(frame, face, size=64)
    assert small.shape == (64, 64, 3) and small.dtype == np.uint8


def test_a_spot_on_the_crop_maps_back_through_face_square():
    frame = np.zeros((200, 300, 3), np.uint8)
    spot = (141, 77)  # x, y in the frame
    frame[spot[1] - 2 : spot[1] + 3, spot[0] - 2 : spot[0] + 3] = 255
    face = a_face((100, 50, 160, 130))
    crop = crop_face(frame, face, size=224)
    y, x = np.unravel_index(np.argmax(crop[:, :, 0]), crop.shape[:2])
    x0, y0, x1, y1 = face_square(face)
    back = (x0 + (x + 0.5) / 224 * (x1 - x0), y0 + (y + 0.5) / 224 * (y1 - y0))
    assert back == pytest.approx(spot, abs=1.5)


def test_crop_past_the_frame_edge_is_mirrored():
    frame = gradient_frame()
    face = a_face((-10, -20, 50, 40))  # 60 x 60, reaching past the top-left corner
    x0, y0, x1, y1 = (int(value) for value in face_square(face))
    assert x0 < 0 and y0 < 0
    side = x1 - x0
    crop = crop_face(frame, face, size=side)
    assert crop.shape == (side, side, 3)
    pad_top, pad_left = -y0, -x0
    # Row pad_top - k of the crop mirrors row pad_top + k (frame rows k and -k about row 0).
    for k in range(1, pad_top):
        assert np.array_equal(crop[pad_top - k], crop[pad_top + k])
    for k in range(1, pad_left):
        assert np.array_equal(crop[:, pad_left - k], crop[:, pad_left + k])
    assert np.array_equal(crop[pad_top:, pad_left:], frame[:y1, :x1])

    black = crop_face(frame, face, size=side, padding="constant")
    assert not black[:pad_top].any() and not black[:, :pad_left].any()


def test_crop_of_a_face_past_the_bottom_right_keeps_its_size():
    frame = gradient_frame()
    crop = crop_face(frame, a_face((270, 170, 330, 230)), size=96)
    assert crop.shape == (96, 96, 3)

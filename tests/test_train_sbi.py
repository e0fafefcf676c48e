"""Self-blended images and the breadth augmentation, on the public-domain portrait."""

import numpy as np
import pytest

from deepscan.media.faces import FaceDetector, crop_face, face_square
from deepscan.data.framing import Framing, frame_face
from deepscan.train.augment import (
    FaceAugmenter,
    h264_round_trip,
    jpeg_round_trip,
)
from deepscan.train.recipe import AugmentSpec, SBISpec
from deepscan.train.sbi import FACE_PARTS, face_mask, part_mask, self_blend

CACHE_MARGIN = 1.8


@pytest.fixture(scope="module")
def face(portrait_image):
    """Grace Hopper's face cropped at the cache margin, 256 px, with its keypoints in crop pixels."""
    with FaceDetector() as detector:
        [found] = detector.detect(portrait_image)
    x0, y0, x1, _ = face_square(found, CACHE_MARGIN)
    crop = crop_face(portrait_image, found, 256, CACHE_MARGIN)
    return crop, (found.keypoints - [x0, y0]) * 256 / (x1 - x0)


@pytest.mark.parametrize("seed", range(6))
def test_sbi_changes_the_face_only_inside_its_mask(face, seed):
    crop, keypoints = face
    blend = self_blend(crop, keypoints, np.random.default_rng(seed))
    difference = np.abs(blend.fake.astype(int) - blend.real.astype(int)).max(axis=2)
    outside = blend.mask == 0
    assert outside.any() and (~outside).any()
    assert (difference[outside] == 0).all(), "the fake differs from its source outside the mask"
    assert difference[~outside].mean() > 1.0, "the blend left the face unchanged"
    # The mask covers the face (between the eyes and the mouth) and leaves the corners of the crop alone.
    eye_centre, mouth = keypoints[:2].mean(axis=0), keypoints[3]
    for point in (eye_centre, (eye_centre + mouth) / 2):
        assert blend.mask[int(point[1]), int(point[0])] > 0
    corners = blend.mask[[0, 0, -1, -1], [0, -1, 0, -1]]
    assert (corners == 0).all()


def test_sbi_is_reproducible_from_its_seed_and_varies_between_seeds(face):
    crop, keypoints = face
    first = self_blend(crop, keypoints, np.random.default_rng(3))
    again = self_blend(crop, keypoints, np.random.default_rng(3))
    other = self_blend(crop, keypoints, np.random.default_rng(4))
    assert np.array_equal(first.fake, again.fake) and np.array_equal(first.mask, again.mask)
    assert not np.array_equal(first.mask, other.mask)


def test_mask_follows_the_face_when_the_face_moves(face):
    _, keypoints = face
    shifted = keypoints + [40.0, 0.0]
    left = face_mask(keypoints, (256, 256), np.random.default_rng(0))
    right = face_mask(shifted, (256, 256), np.random.default_rng(0))
    columns = np.arange(256)
    centre_left = (left.sum(axis=0) * columns).sum() / left.sum()
    centre_right = (right.sum(axis=0) * columns).sum() / right.sum()
    assert centre_right - centre_left == pytest.approx(40.0, abs=2.0)


def test_blend_ratio_and_geometry_come_from_the_spec(face):
    crop, keypoints = face
    half = SBISpec(blend_ratios=[0.5], scale_range=(1.0, 1.0), max_shift=0.0)
    blend = self_blend(crop, keypoints, np.random.default_rng(1), half)
    assert blend.mask.max() == pytest.approx(0.5, abs=1e-3)


@pytest.mark.parametrize("seed", range(6))
def test_part_blends_change_only_eyes_nose_or_mouth(face, seed):
    crop, keypoints = face
    blend = self_blend(crop, keypoints, np.random.default_rng(seed), SBISpec(parts=1.0))
    whole = face_mask(keypoints, crop.shape[:2], np.random.default_rng(seed))
    difference = np.abs(blend.fake.astype(int) - blend.real.astype(int)).max(axis=2)
    inside = blend.mask > 0
    assert (difference[~inside] == 0).all(), "the fake differs from its source outside the mask"
    core = blend.mask > 0.5 * blend.mask.max()
    assert difference[core].mean() > 1.0, "the blend left the parts unchanged"
    # Every blended pixel lies near one of the four parts, and the parts cover far less than the face oval.
    rows, columns = np.nonzero(inside)
    pixels = np.stack([columns, rows], axis=1).astype(float)
    eye_distance = float(np.linalg.norm(keypoints[1] - keypoints[0]))
    nearest = np.linalg.norm(pixels[:, None, :] - keypoints[None, :4, :], axis=2).min(axis=1)
    assert nearest.max() < 0.9 * eye_distance
    assert core.sum() < 0.6 * (whole > 0.5).sum()


def test_part_masks_draw_every_part_and_sometimes_several(face):
    _, keypoints = face
    covered = {part: 0 for part in FACE_PARTS}
    several = 0
    for seed in range(40):
        mask = part_mask(keypoints, (256, 256), np.random.default_rng(seed))
        hit = [part for part, point in zip(FACE_PARTS, keypoints[:4]) if mask[int(point[1]), int(point[0])] > 0.5]
        assert hit, "a part mask covers no part"
        several += len(hit) > 1
        for part in hit:
            covered[part] += 1
    assert all(count >= 5 for count in covered.values()), covered
    assert 5 <= several <= 38


def test_whole_face_blends_are_the_default_and_parts_a_recipe_choice(face):
    crop, keypoints = face
    default = self_blend(crop, keypoints, np.random.default_rng(7))
    no_parts = self_blend(crop, keypoints, np.random.default_rng(7), SBISpec(parts=0.0))
    all_parts = self_blend(crop, keypoints, np.random.default_rng(7), SBISpec(parts=1.0))
    assert np.array_equal(default.mask, no_parts.mask)
    # A part blend covers less of the face than the whole-face blend the default draws.
    assert all_parts.mask.sum() < 0.8 * default.mask.sum()
    assert SBISpec().parts == 0.0
    with pytest.raises(ValueError):
        SBISpec(parts=1.5)


def test_framing_moves_keypoints_with_the_pixels():
    crop = np.zeros((180, 180, 3), np.uint8)
    keypoints = np.array([[60.0, 70], [120, 70], [90, 100], [90, 125], [40, 90], [140, 90]])
    for x, y in keypoints.astype(int):
        crop[y - 2 : y + 3, x - 2 : x + 3] = 255
    for framing in (Framing(1.3), Framing(1.4, 15.0, (0.05, -0.05), mirror=True), Framing(1.2, -10.0, vflip=True)):
        image, moved = frame_face(crop, keypoints, CACHE_MARGIN, 96, framing)
        assert image.shape == (96, 96, 3)
        for u, v in moved:
            assert image[int(round(v)) - 1 : int(round(v)) + 2, int(round(u)) - 1 : int(round(u)) + 2].max() > 150
    _, mirrored = frame_face(crop, keypoints, CACHE_MARGIN, 96, Framing(1.3, mirror=True))
    # The person's right eye stays index 0, which after mirroring is the eye on the image's left.
    assert mirrored[0, 0] < mirrored[1, 0]


def test_evaluation_framing_is_the_scan_margin(face):
    crop, keypoints = face
    augmenter = FaceAugmenter(AugmentSpec(), 128, margin=1.3, cache_margin=CACHE_MARGIN)
    image, moved = augmenter.frame(crop, keypoints, augmenter.evaluation_framing())
    # The face box spans 1 / 1.3 of the crop; the eyes sit well inside it.
    assert image.shape == (128, 128, 3)
    eye_distance = np.linalg.norm(moved[1] - moved[0])
    original = np.linalg.norm(keypoints[1] - keypoints[0])
    assert eye_distance == pytest.approx(original * (256 / CACHE_MARGIN * 1.3) ** -1 * 128, rel=0.02)


def test_photometric_steps_keep_shape_and_change_pixels(face):
    crop, _ = face
    image = crop[:128, :128].copy()
    spec = AugmentSpec(color_cast=1, grayscale=1, rescale=1, blur=1, noise=1, jpeg=1)
    augmenter = FaceAugmenter(spec, 128, margin=1.3, cache_margin=CACHE_MARGIN)
    out = augmenter.photometric(image, np.random.default_rng(0))
    assert out.shape == image.shape and out.dtype == np.uint8
    assert np.abs(out.astype(int) - image.astype(int)).mean() > 2
    assert np.array_equal(augmenter.photometric(image, np.random.default_rng(0)), out)
    untouched = FaceAugmenter(AugmentSpec(), 128, 1.3, CACHE_MARGIN).photometric(image, np.random.default_rng(0))
    assert np.array_equal(untouched, image)
    grey = FaceAugmenter(AugmentSpec(grayscale=1), 128, 1.3, CACHE_MARGIN).photometric(image, np.random.default_rng(0))
    assert (grey[..., 0] == grey[..., 1]).all() and (grey[..., 1] == grey[..., 2]).all()
    assert not (image[..., 0] == image[..., 1]).all()


@pytest.mark.parametrize("round_trip", [lambda im: jpeg_round_trip(im, 30), lambda im: h264_round_trip(im, 40)])
def test_compression_round_trips_lose_detail_but_keep_the_picture(face, round_trip):
    crop, _ = face
    image = crop[:101, :99].copy()  # odd sizes: H.264 4:2:0 needs even ones internally
    out = round_trip(image)
    assert out.shape == image.shape
    error = np.abs(out.astype(int) - image.astype(int)).mean()
    assert 0.3 < error < 20


def test_augmenter_refuses_crops_wider_than_the_cache():
    with pytest.raises(ValueError, match="cache_margin"):
        FaceAugmenter(AugmentSpec(crop_scale=(1.2, 3.0), rotation=20), 128, 1.3, 1.5)

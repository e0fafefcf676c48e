"""Face size, sharpness and compression: the measures behind 'inconclusive'."""

import numpy as np
import pytest
from PIL import Image, ImageFilter

from deepscan.reliability import (TOO_BLURRED, TOO_SMALL, JointRange, ReliableRange, bits_per_pixel, face_sharpness,
                                  strictest)


def test_sharpness_is_the_variance_of_the_laplacian_of_the_grey_crop(portrait_image):
    crop = np.asarray(Image.fromarray(portrait_image).resize((224, 224)))
    grey = crop.astype(float) @ np.array([0.299, 0.587, 0.114])
    padded = np.pad(grey, 1, mode="symmetric")  # scipy's "reflect" repeats the edge pixel
    laplacian = (padded[:-2, 1:-1] + padded[2:, 1:-1] + padded[1:-1, :-2] + padded[1:-1, 2:] - 4 * grey)
    assert face_sharpness(crop) == pytest.approx(laplacian.var())


def test_blur_lowers_sharpness_and_a_flat_crop_has_none(portrait_image):
    image = Image.fromarray(portrait_image).resize((224, 224))
    blurred = np.asarray(image.filter(ImageFilter.GaussianBlur(3)))
    assert face_sharpness(blurred) < face_sharpness(np.asarray(image)) / 4
    assert face_sharpness(np.full((64, 64, 3), 128, np.uint8)) == 0.0


def test_bits_per_pixel_or_none_when_unknown():
    assert bits_per_pixel(1_000_000, 640, 360, 25.0) == pytest.approx(1_000_000 / (640 * 360 * 25))
    assert bits_per_pixel(None, 640, 360, 25.0) is None and bits_per_pixel(1000, 640, 360, 0.0) is None


def test_range_names_what_is_too_small_or_too_blurred():
    limits = ReliableRange(min_face_px=64, min_sharpness=20)
    assert limits.shortfalls(80, 30) == []
    assert limits.shortfalls(40, 30) == [TOO_SMALL]
    assert limits.shortfalls(40, 5) == [TOO_SMALL, TOO_BLURRED]
    assert limits.describe() == "faces of at least 64 px and sharpness 20"
    assert not ReliableRange().bounded and ReliableRange().shortfalls(1, 0) == []
    both = strictest([ReliableRange(64, 0), ReliableRange(32, 20)])
    assert both == ReliableRange(64, 20)


def test_a_joint_range_holds_each_sharpness_bound_at_its_own_input_size():
    joint = JointRange.of([(128, ReliableRange(64, 70)), (256, ReliableRange(96, 20)), (256, ReliableRange(0, 25))])
    assert joint.by_size == {128: ReliableRange(64, 70), 256: ReliableRange(96, 25)}  # one size: the strictest
    assert joint.min_face_px == 96 and joint.bounded
    # 35 at 256 px would fail the 128 px bound of 70, but the face is judged at 128 px on its 128 px crop.
    assert joint.shortfalls(100, {128: 140.0, 256: 35.0}) == []
    assert joint.shortfalls(100, {128: 60.0, 256: 35.0}) == [TOO_BLURRED]
    assert joint.shortfalls(80, {128: 140.0, 256: 10.0}) == [TOO_SMALL, TOO_BLURRED]
    assert joint.describe() == "faces of at least 96 px and sharpness 70 at 128 px, 25 at 256 px"
    assert joint.as_dict() == {"min_face_px": 96, "min_sharpness_at": {"128": 70, "256": 25}}
    one = JointRange.of([(224, ReliableRange(64, 20))])
    assert one.describe() == "faces of at least 64 px and sharpness 20"  # one detector: as its card says it
    assert not JointRange.of([(224, ReliableRange())]).bounded
    # One bound among several sizes still says its size: a face record's sharpness is at the largest.
    lone = JointRange.of([(128, ReliableRange(64, 70)), (256, ReliableRange(96, 0))])
    assert lone.describe() == "faces of at least 96 px and sharpness 70 at 128 px" and lone.sharpness_sizes == [128]
    assert lone.shortfalls(100, {128: 80.0}) == []  # no sharpness needed at 256 px, where nothing bounds it

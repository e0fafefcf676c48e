"""Image loading (orientation, colour modes, damaged files) and finding media on disk."""

from __future__ import annotations

import struct
import time
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from deepscan.media.errors import MediaError
from deepscan.media.images import (
    IMAGE_EXTENSIONS,
    VIDEO_EXTENSIONS,
    discover_media,
    load_image,
    media_kind,
)
from deepscan.media.video import encode_video

RED, BLUE = (220, 30, 40), (20, 40, 200)


def marked_picture(height: int = 40, width: int = 60) -> np.ndarray:
    """Blue picture with a red block in its top-left corner, so orientation is visible."""
    picture = np.empty((height, width, 3), np.uint8)
    picture[:] = BLUE
    picture[:10, :20] = RED
    return picture


def assert_rgb(image: np.ndarray, shape: tuple[int, int]) -> None:
    assert image.dtype == np.uint8
    assert image.shape == (*shape, 3)


def near(pixel: np.ndarray, colour, tolerance: int = 3) -> bool:
    return bool(np.all(np.abs(pixel.astype(int) - np.array(colour)) <= tolerance))


def test_exif_orientation_is_applied(tmp_path):
    stored = marked_picture()
    path = tmp_path / "phone.jpg"
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation 6: turn the stored pixels a quarter clockwise to display
    Image.fromarray(stored).save(path, exif=exif, quality=95)
    image = load_image(path)
    assert_rgb(image, (60, 40))
    expected = np.rot90(stored, k=-1)
    assert near(image[3, -3], RED, 12) and near(expected[3, -3], RED, 0)
    assert near(image[3, 3], BLUE, 12)


@pytest.mark.parametrize("extension", [".png", ".webp", ".bmp", ".tif"])
def test_lossless_formats_load_exactly(tmp_path, extension):
    picture = marked_picture()
    path = tmp_path / f"picture{extension}"
    options = {"lossless": True} if extension == ".webp" else {}
    Image.fromarray(picture).save(path, **options)
    image = load_image(path)
    assert_rgb(image, (40, 60))
    assert np.array_equal(image, picture)


def test_greyscale_becomes_three_equal_channels(tmp_path):
    grey = np.tile(np.arange(0, 250, 5, dtype=np.uint8), (10, 1))
    path = tmp_path / "grey.png"
    Image.fromarray(grey, mode="L").save(path)
    image = load_image(path)
    assert_rgb(image, grey.shape)
    for channel in range(3):
        assert np.array_equal(image[:, :, channel], grey)


def test_transparency_is_composited_on_white(tmp_path):
    rgba = np.zeros((4, 3, 4), np.uint8)
    rgba[..., :3] = (0, 0, 0)  # black under the transparency, as editors often leave it
    rgba[:, 0, 3] = 0
    rgba[:, 1, 3] = 255
    rgba[:, 2, 3] = 128
    path = tmp_path / "cutout.png"
    Image.fromarray(rgba, mode="RGBA").save(path)
    image = load_image(path)
    assert_rgb(image, (4, 3))
    assert near(image[0, 0], (255, 255, 255), 0)
    assert near(image[0, 1], (0, 0, 0), 0)
    assert near(image[0, 2], (127, 127, 127), 1)


def test_palette_image_with_transparent_index(tmp_path):
    palette_image = Image.new("P", (4, 2))
    palette_image.putpalette([*RED, *BLUE, 0, 0, 0] + [0] * (256 * 3 - 9))
    palette_image.putdata([0, 1, 2, 2, 1, 0, 2, 2])
    path = tmp_path / "palette.png"
    palette_image.save(path, transparency=2)
    image = load_image(path)
    assert_rgb(image, (2, 4))
    assert near(image[0, 0], RED, 0) and near(image[0, 1], BLUE, 0)
    assert near(image[0, 2], (255, 255, 255), 0)


def test_sixteen_bit_grey_is_rescaled_not_clipped(tmp_path):
    levels = np.array([[0, 1000, 40000, 65535]], dtype=np.uint16)
    path = tmp_path / "deep.png"
    Image.fromarray(levels).save(path)
    image = load_image(path)
    assert_rgb(image, (1, 4))
    assert image[0, :, 0].tolist() == [round(value / 257) for value in levels[0]]


def _write_rgb16_png(path: Path, pixels: np.ndarray) -> None:
    """PIL cannot write 48-bit PNGs, so write one by hand: IHDR (bit depth 16, colour type 2)."""

    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data))

    height, width = pixels.shape[:2]
    rows = b"".join(b"\x00" + row.astype(">u2").tobytes() for row in pixels)
    header = struct.pack(">IIBBBBB", width, height, 16, 2, 0, 0, 0)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(rows))
        + chunk(b"IEND", b"")
    )


def test_sixteen_bit_colour_png(tmp_path):
    pixels = np.zeros((2, 2, 3), np.uint16)
    pixels[0, 0] = (65535, 0, 0)
    pixels[1, 1] = (0, 32896, 65535)
    path = tmp_path / "deep_colour.png"
    _write_rgb16_png(path, pixels)
    image = load_image(path)
    assert_rgb(image, (2, 2))
    assert near(image[0, 0], (255, 0, 0), 1)
    assert near(image[1, 1], (0, 128, 255), 1)


def test_cmyk_is_converted(tmp_path):
    cmyk = np.zeros((2, 2, 4), np.uint8)
    cmyk[0, 0] = (255, 0, 0, 0)  # cyan ink only
    cmyk[1, 1] = (0, 0, 0, 255)  # black ink only
    path = tmp_path / "print.tif"
    Image.fromarray(cmyk, mode="CMYK").save(path)
    image = load_image(path)
    assert_rgb(image, (2, 2))
    assert near(image[0, 0], (0, 255, 255), 0)
    assert near(image[1, 1], (0, 0, 0), 0)
    assert near(image[0, 1], (255, 255, 255), 0)


def test_broken_images_give_one_line_errors(tmp_path):
    good = tmp_path / "good.jpg"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (64, 64, 3), np.uint8)).save(good)
    (tmp_path / "cut.jpg").write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    good_png = tmp_path / "good.png"
    Image.fromarray(marked_picture()).save(good_png)
    (tmp_path / "cut.png").write_bytes(good_png.read_bytes()[:-40])
    (tmp_path / "empty.png").write_bytes(b"")
    (tmp_path / "letter.jpg").write_text("Dear colleague,\nthis is not a photo.\n")
    cases = {
        "missing.jpg": "not found",
        "empty.png": "empty",
        "letter.jpg": "not an image",
        "cut.jpg": "truncated",
        "cut.png": "truncated",
    }
    for name, reason in cases.items():
        with pytest.raises(MediaError) as caught:
            load_image(tmp_path / name)
        message = str(caught.value)
        assert name in message and reason in message and "\n" not in message


def test_extension_sets():
    assert {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff"} <= IMAGE_EXTENSIONS
    assert {".mp4", ".mov", ".avi", ".mkv", ".webm", ".m4v", ".ts"} <= VIDEO_EXTENSIONS
    assert not IMAGE_EXTENSIONS & VIDEO_EXTENSIONS


def test_discover_walks_folders_in_order_and_keeps_what_was_named(tmp_path):
    tree = {
        "b/clip.MP4": b"v",
        "b/notes.txt": b"t",
        "a/z.png": b"i",
        "a/deeper/x.jpeg": b"i",
        "a/.hidden.jpg": b"i",
        "a/._resource.mp4": b"r",
        ".cache/thumb.jpg": b"i",
        "top.webm": b"v",
        "data.bin": b"x",
    }
    for name, content in tree.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(content)
    found = discover_media([tmp_path])
    relative = [path.relative_to(tmp_path).as_posix() for path in found]
    assert relative == ["top.webm", "a/z.png", "a/deeper/x.jpeg", "b/clip.MP4"]

    named = discover_media(
        [tmp_path / "data.bin", tmp_path / "gone.mp4", tmp_path / "a", tmp_path / "a/z.png"]
    )
    assert named == [
        tmp_path / "data.bin",  # named explicitly, so kept whatever its extension
        tmp_path / "gone.mp4",  # missing, kept so that the caller reports it
        tmp_path / "a/z.png",
        tmp_path / "a/deeper/x.jpeg",
    ]


def test_media_kind_by_extension_then_by_content(tmp_path):
    assert media_kind(tmp_path / "anything.JPG") == "image"
    assert media_kind(tmp_path / "anything.mkv") == "video"
    disguised_image = tmp_path / "photo.dat"
    Image.fromarray(marked_picture()).save(disguised_image, format="PNG")
    assert media_kind(disguised_image) == "image"
    encoded = tmp_path / "clip.mp4"
    encode_video(encoded, [np.zeros((16, 16, 3), np.uint8)] * 2, fps=25)
    disguised_video = encoded.rename(tmp_path / "clip.bin")
    assert media_kind(disguised_video) == "video"
    (tmp_path / "notes.xyz").write_text("plain text")
    with pytest.raises(MediaError, match="notes.xyz"):
        media_kind(tmp_path / "notes.xyz")


def _grey_png(width: int, height: int) -> bytes:
    """A grey PNG that weighs little and declares much: rows of zeros compress about a thousand times."""
    compressor = zlib.compressobj(9)
    row = bytes(width + 1)  # a filter byte, then the pixels
    body = b"".join(compressor.compress(row) for _ in range(height)) + compressor.flush()

    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", body) + chunk(b"IEND", b"")


@pytest.mark.parametrize("side", [10_000, 20_000])  # over PIL's warning level, and over its error level
def test_a_decompression_bomb_is_refused_from_its_header(tmp_path, side):
    path = tmp_path / "bomb.png"
    path.write_bytes(_grey_png(side, side))
    started = time.perf_counter()
    with pytest.raises(MediaError) as caught:
        load_image(path)
    # 10000 x 10000 decoded would be 300 MB and seconds of work: refused from the header, nothing is decoded.
    assert time.perf_counter() - started < 1.0
    message = str(caught.value)
    assert "too large to load safely" in message and "\n" not in message
    assert f"{side} x {side} pixels" in message or f"{side * side} pixels" in message  # PIL's words past 2x

"""Still images with PIL, and finding the images and videos a user points deepscan at."""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import av
import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from deepscan.media.errors import MediaError
from deepscan.media.files import check_regular

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff"})
VIDEO_EXTENSIONS = frozenset(
    {".mp4", ".mov", ".avi", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv", ".flv", ".ts"}
)

MediaKind = Literal["image", "video"]

# Transparent pixels are composited on white, the page colour most viewers show them on. Dropping
# alpha instead would expose whatever RGB hides under transparency (often black or leftovers from
# the editor), drawing hard edges around a cut-out face that frequency detectors read as forgery.
_ALPHA_BACKGROUND = (255, 255, 255)


# Pixels decoded from one image at most: PIL's own warning level (about 89 megapixels, 268 MB as RGB). A
# compressed image can declare far more than it weighs (a 100 kB PNG of 10000 x 10000 grey pixels), and it is
# refused from its header, before anything is allocated.
MAX_IMAGE_PIXELS = int(Image.MAX_IMAGE_PIXELS or 89_478_485)


def _check_file(path: Path) -> None:
    check_regular(path)


def _to_uint8(values: np.ndarray, full_scale: float) -> np.ndarray:
    return np.clip(np.rint(values.astype(np.float64) * (255.0 / full_scale)), 0, 255).astype(
        np.uint8
    )


def _high_depth_grey_to_rgb(image: Image.Image) -> np.ndarray:
    """16-bit and float greyscale, which PIL's ``convert("L")`` would clip instead of rescale."""
    values = np.asarray(image)
    if image.mode == "F":
        # Float images store 0..1 by convention; anything larger is taken as 0..255.
        full_scale = 1.0 if float(np.nanmax(values, initial=0.0)) <= 1.0 else 255.0
        grey = _to_uint8(np.nan_to_num(values), full_scale)
    else:
        # Mode "I" holds 16-bit PNG/TIFF samples widened to 32 bits: 65535 is white.
        grey = _to_uint8(values, 65535.0)
    return np.repeat(grey[:, :, None], 3, axis=2)


def _to_rgb_array(image: Image.Image) -> np.ndarray:
    if image.mode in ("I", "F") or image.mode.startswith("I;16"):
        return _high_depth_grey_to_rgb(image)
    if image.mode == "P" or (image.mode == "L" and "transparency" in image.info):
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA", "PA", "La", "RGBa"):
        image = image.convert("RGBA")
        background = Image.new("RGBA", image.size, _ALPHA_BACKGROUND + (255,))
        image = Image.alpha_composite(background, image)
    if image.mode != "RGB":
        # Covers "1", "L", "CMYK", "YCbCr", "LAB", "HSV" and the RGBA produced above.
        image = image.convert("RGB")
    return np.asarray(image, dtype=np.uint8).copy()


def load_image(path: str | os.PathLike[str]) -> np.ndarray:
    """Load an image as an H x W x 3 uint8 RGB array, upright (EXIF orientation applied).

    Greyscale, palette, CMYK and 16-bit images are converted; transparency is composited on white.
    Multi-frame files (animated WebP, multi-page TIFF) give their first frame.
    """
    path = Path(path)
    _check_file(path)
    try:
        with warnings.catch_warnings():
            # Turned into an error just below when the image is really too large.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            # PIL warns of corrupt EXIF ("Corrupt EXIF data", "Tag data larger than file") on stderr, in
            # several lines that read like a crash; the pixels are fine and are used as stored.
            warnings.simplefilter("ignore", UserWarning)
            with Image.open(path) as image:
                width, height = image.size
                if width * height > MAX_IMAGE_PIXELS:
                    raise MediaError(
                        path,
                        f"image too large to load safely: {width} x {height} pixels "
                        f"({width * height / 1e6:.0f} megapixels, over the limit of "
                        f"{MAX_IMAGE_PIXELS / 1e6:.0f}; a decompression bomb?)",
                    )
                image.load()
                upright = ImageOps.exif_transpose(image)
                return _to_rgb_array(upright)
    except UnidentifiedImageError:
        raise MediaError(
            path, "not an image deepscan can read (unknown or damaged format)"
        ) from None
    except Image.DecompressionBombError as error:
        # A frame of a multi-frame file can be larger than the size its header gives first.
        raise MediaError(path, f"image too large to load safely ({error})") from None
    except PermissionError:
        raise MediaError(path, "permission denied") from None
    except (OSError, SyntaxError, ValueError) as error:
        # PIL reports truncated and corrupt data as OSError ("image file is truncated ...");
        # some plugins raise SyntaxError or ValueError for malformed headers.
        raise MediaError(path, f"damaged or truncated image ({error})") from None


def _is_hidden(name: str) -> bool:
    # Dot-files inside folders are not a user's media: macOS "._clip.mp4" resource forks carry
    # the extension of the file they shadow but hold no image or video.
    return name.startswith(".")


def _has_media_extension(path: Path) -> bool:
    suffix = path.suffix.lower()
    return suffix in IMAGE_EXTENSIONS or suffix in VIDEO_EXTENSIONS


def _walk_media(folder: Path) -> list[Path]:
    found = []

    def unreadable(error: OSError) -> None:
        # Kept, so that the scan reports the folder it could not read rather than silently scanning less.
        found.append(Path(error.filename))

    # os.walk does not follow symbolic links to folders, so a link loop cannot recurse forever.
    for root, folders, files in os.walk(folder, onerror=unreadable):
        folders[:] = sorted(name for name in folders if not _is_hidden(name))
        for name in sorted(files):
            candidate = Path(root) / name
            if not _is_hidden(name) and _has_media_extension(candidate):
                found.append(candidate)
    return found


def discover_media(paths: Sequence[str | os.PathLike[str]]) -> list[Path]:
    """The files to scan: each given file as it is, each folder walked recursively for media.

    Folders contribute only files with an image or video extension, in sorted order; a file named
    explicitly is kept whatever its extension, and a path that does not exist is kept too, so that
    the caller reports it rather than silently scanning less; so is a folder the walk cannot read.
    A file reached twice is listed once. Nothing is opened here: pipes and devices are refused by
    whatever reads the list (see :mod:`deepscan.media.files`).
    """
    found: list[Path] = []
    seen: set[Path] = set()
    for given in paths:
        given = Path(given)
        candidates = _walk_media(given) if given.is_dir() else [given]
        for candidate in candidates:
            key = candidate.resolve() if candidate.exists() else candidate.absolute()
            if key not in seen:
                seen.add(key)
                found.append(candidate)
    return found


def _opens_as_image(path: Path) -> bool:
    try:
        with Image.open(path) as image:
            image.verify()
    except Exception:  # noqa: BLE001 - any failure just means "not an image PIL can read"
        return False
    return True


def _opens_as_video(path: Path) -> bool:
    try:
        with av.open(os.fspath(path), metadata_errors="ignore") as container:
            return bool(container.streams.video)
    except (av.FFmpegError, OSError):
        return False


def media_kind(path: str | os.PathLike[str]) -> MediaKind:
    """``"image"`` or ``"video"`` by extension; an unknown extension is settled by opening it."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix in IMAGE_EXTENSIONS:
        return "image"
    if suffix in VIDEO_EXTENSIONS:
        return "video"
    _check_file(path)
    if _opens_as_image(path):
        return "image"
    if _opens_as_video(path):
        return "video"
    raise MediaError(path, "not a video or image deepscan can read (unknown format)")

"""Face crops: the square round a face that a detector sees (:func:`face_square`), cut out of the frame and
resized (:func:`crop_face`), mirrored at the frame's edges where the square leaves it."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
from PIL import Image

if TYPE_CHECKING:
    from deepscan.media.faces import Face


def face_square(face: Face, margin: float = 1.3) -> tuple[float, float, float, float]:
    """The square, in frame pixels, that :func:`crop_face` cuts: ``margin`` times the box's longer
    side, centred on the box, snapped to whole pixels. A heatmap over the crop maps back onto it."""
    if margin <= 0:
        raise ValueError(f"margin must be positive, got {margin}")
    side = max(1, round(margin * face.size))
    center_x, center_y = face.center
    x0 = round(center_x - side / 2)
    y0 = round(center_y - side / 2)
    return (float(x0), float(y0), float(x0 + side), float(y0 + side))


def _reflected(positions: np.ndarray, length: int) -> np.ndarray:
    """Pixel positions folded into ``0..length - 1`` by mirroring about the edge pixels (numpy's "reflect"),
    as often as a far position needs."""
    if length == 1:
        return np.zeros_like(positions)
    period = 2 * (length - 1)
    folded = np.abs(positions) % period
    return np.where(folded < length, folded, period - folded)


def crop_face(
    image: np.ndarray, face: Face, size: int, margin: float = 1.3, padding: str = "reflect"
) -> np.ndarray:
    """A ``size`` x ``size`` x 3 uint8 crop of the square :func:`face_square` gives.

    Where the square leaves the frame the crop is padded by mirroring the frame at its edge
    (``padding="reflect"``, any ``numpy.pad`` mode works). Mirroring keeps the local texture and
    noise of the picture, whereas a black border or smeared edge pixels would add a sharp step or
    flat streaks: spectra unlike any camera's, which frequency detectors would take for artefacts.
    """
    x0, y0, x1, y1 = (int(value) for value in face_square(face, margin))
    height, width = image.shape[:2]
    inside = image[max(y0, 0) : max(min(y1, height), 0), max(x0, 0) : max(min(x1, width), 0)]
    pads = ((max(0, -y0), max(0, y1 - height)), (max(0, -x0), max(0, x1 - width)), (0, 0))
    if inside.size == 0:
        # The square misses the frame entirely: there is nothing to mirror.
        square = np.zeros((y1 - y0, x1 - x0, 3), dtype=np.uint8)
    elif padding == "reflect" and any(any(pad) for pad in pads):
        # Mirror the whole frame, not only the part of it inside the square: where the square reaches
        # further past an edge than into the frame (a face mostly cut off), numpy.pad would repeat that
        # thin strip over and over, the periodic streaks this mirroring exists to avoid.
        rows = _reflected(np.arange(y0, y1), height)
        columns = _reflected(np.arange(x0, x1), width)
        square = image[rows[:, None], columns[None, :]]
    else:
        square = np.pad(inside, pads, mode=padding)
    if square.shape[:2] != (size, size):
        square = np.asarray(
            Image.fromarray(square).resize((size, size), Image.Resampling.BICUBIC), dtype=np.uint8
        )
    return square

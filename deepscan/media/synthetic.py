"""Synthetic test media made from public-domain portraits, so no third-party footage is committed.

grace_hopper.jpg ships with matplotlib (US Navy photo, public domain); scikit-image's
``astronaut()`` (NASA, public domain) is used for a second person when scikit-image is installed.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from matplotlib import cbook
from PIL import Image

from deepscan.media.encode import encode_video

_CANVAS_RGB = (196, 204, 212)
# Portraits circle once every _LOOP_S seconds, reaching _REACH_SHARE of their width from the middle.
_LOOP_S = 4.0
_REACH_SHARE = 0.15
# Colour cast that makes a mirrored Grace Hopper read as a second, different-looking portrait.
_SECOND_PORTRAIT_TINT = np.array([0.85, 1.0, 1.15])


def portrait() -> np.ndarray:
    """Grace Hopper's portrait (matplotlib sample data, public domain), 600 x 512 RGB uint8."""
    with Image.open(cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)) as image:
        return np.asarray(image.convert("RGB"), dtype=np.uint8).copy()


def second_portrait() -> np.ndarray:
    """A second face: scikit-image's astronaut if installed, else a mirrored, tinted Hopper."""
    try:
        from skimage.data import astronaut
    except ImportError:
        mirrored = portrait()[:, ::-1].astype(np.float64) * _SECOND_PORTRAIT_TINT
        return np.clip(mirrored, 0, 255).astype(np.uint8)
    return np.asarray(astronaut(), dtype=np.uint8)[:, :, :3].copy()


def _fit(image: np.ndarray, max_width: int, max_height: int) -> np.ndarray:
    scale = min(max_width / image.shape[1], max_height / image.shape[0])
    size = (max(1, round(image.shape[1] * scale)), max(1, round(image.shape[0] * scale)))
    return np.asarray(Image.fromarray(image).resize(size, Image.Resampling.LANCZOS), dtype=np.uint8)


def _portrait_frames(
    portraits: list[np.ndarray], width: int, height: int, frame_count: int, fps: float
) -> Iterator[np.ndarray]:
    """Each portrait circles round the middle of its own slot of the canvas, neighbours in
    opposite senses. The face (about a third of the portrait's width) moves at most about half
    its width per second, like a talking head, so that frames sampled at 2 fps still overlap."""
    slot_width = width / len(portraits)
    background = np.empty((height, width, 3), dtype=np.uint8)
    background[:] = _CANVAS_RGB
    for index in range(frame_count):
        phase = 2 * math.pi * (index / fps) / _LOOP_S
        frame = background.copy()
        for slot, picture in enumerate(portraits):
            reach = _REACH_SHARE * picture.shape[1]
            free_x = slot_width - picture.shape[1]
            free_y = height - picture.shape[0]
            sense = 1 if slot % 2 == 0 else -1
            dx = min(reach, free_x / 2) * sense * math.sin(phase)
            dy = min(reach, free_y / 2) * math.cos(phase)
            x = int(round(slot * slot_width + free_x / 2 + dx))
            y = int(round(free_y / 2 + dy))
            frame[y : y + picture.shape[0], x : x + picture.shape[1]] = picture
        yield frame


def moving_portrait_clip(
    path: str | os.PathLike[str],
    seconds: float = 2.0,
    fps: float = 25,
    size: tuple[int, int] = (320, 240),
    faces: int = 1,
    codec: str = "libx264",
    portrait_height: float = 0.8,
) -> Path:
    """Write a clip of ``faces`` (1 or 2) portraits moving over a plain canvas; returns its path.

    ``size`` is (width, height); ``portrait_height`` is each portrait's height as a share of the
    frame's (its face is about a third of the portrait). Frames are made one at a time and streamed
    to the encoder, so a long 1280 x 720 clip costs no more memory than a short one.
    """
    if faces not in (1, 2):
        raise ValueError(f"faces must be 1 or 2, got {faces}")
    width, height = size
    pictures = [portrait(), second_portrait()][:faces]
    slot_width = width / faces
    # Leave a quarter of the slot free so that the portrait has room to move sideways.
    fitted = [
        _fit(picture, int(0.75 * slot_width), int(portrait_height * height)) for picture in pictures
    ]
    frame_count = max(1, round(seconds * fps))
    # Synthetic content needs no careful rate-distortion search: a fast preset keeps fixtures and
    # benchmark clips quick to make.
    options = {"preset": "veryfast"} if codec in ("libx264", "libx265") else {}
    frames = _portrait_frames(fitted, width, height, frame_count, fps)
    encode_video(path, frames, fps=fps, codec=codec, options=options)
    return Path(path)

"""Writing videos with PyAV: RGB frames in, an encoded file out (the tests' media, the H.264 perturbation)."""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterable, Mapping
from fractions import Fraction

import av
import numpy as np

# 4:2:0 chroma subsampling halves both dimensions, so these encoders need even frame sizes.
_EVEN_SIZE_PIXEL_FORMATS = frozenset({"yuv420p", "yuvj420p", "nv12", "yuv420p10le"})


def _frame_rate(fps: float | int | Fraction) -> Fraction:
    if fps <= 0:
        raise ValueError(f"fps must be positive, got {fps}")
    # 1001 covers the NTSC rates (30000/1001 for 29.97 fps) exactly.
    return Fraction(fps).limit_denominator(1001)


def encode_video(
    path: str | os.PathLike[str],
    frames: Iterable[np.ndarray],
    fps: float | int | Fraction = 25,
    codec: str = "libx264",
    crf: int | None = None,
    pix_fmt: str = "yuv420p",
    options: Mapping[str, str] | None = None,
    container_options: Mapping[str, str] | None = None,
) -> int:
    """Encode RGB uint8 frames (H x W x 3, all the same size) into a video; returns the frame count.

    ``frames`` may be any iterator: frames are encoded as they come, never held together. ``crf``
    sets constant-quality mode (libx264/libx265/libvpx-vp9: 0 best, 51 or 63 worst; H.264's
    default is 23). ``options`` go to the encoder as they are (e.g. ``{"preset": "ultrafast"}``),
    ``container_options`` to the muxer (``{"movflags": "faststart"}`` puts an mp4's index first).
    With a 4:2:0 ``pix_fmt`` an odd width or height is padded by repeating the last column or row,
    because the chroma planes need even sizes: crop decoded frames back if the exact size matters.
    """
    rate = _frame_rate(fps)
    encoder_options = {key: str(value) for key, value in (options or {}).items()}
    if crf is not None:
        encoder_options["crf"] = str(crf)
        if codec.startswith("libvpx"):
            # libvpx only honours crf as constant quality when no target bit rate is set.
            encoder_options.setdefault("b", "0")
    images = iter(frames)
    first = next(images, None)
    if first is None:
        raise ValueError("encode_video needs at least one frame")
    count = 0
    with av.open(os.fspath(path), mode="w", options=dict(container_options or {})) as container:
        stream = None
        for image in itertools.chain([first], images):
            image = _even_sized(_checked_rgb(image), pix_fmt)
            if stream is None:
                stream = container.add_stream(codec, rate=rate, options=encoder_options)
                stream.height, stream.width = image.shape[:2]
                stream.pix_fmt = pix_fmt
                size = image.shape
            elif image.shape != size:
                raise ValueError(f"frame {count} is {image.shape[:2]}, the first was {size[:2]}")
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="rgb24")
            frame.pts = count
            frame.time_base = 1 / rate
            container.mux(stream.encode(frame))
            count += 1
        container.mux(stream.encode(None))
    return count


def _checked_rgb(image: np.ndarray) -> np.ndarray:
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(
            f"frames must be H x W x 3 uint8 RGB arrays, got {image.shape} {image.dtype}"
        )
    return image


def _even_sized(image: np.ndarray, pix_fmt: str) -> np.ndarray:
    if pix_fmt not in _EVEN_SIZE_PIXEL_FORMATS:
        return image
    pad_rows, pad_cols = image.shape[0] % 2, image.shape[1] % 2
    if pad_rows or pad_cols:
        image = np.pad(image, ((0, pad_rows), (0, pad_cols), (0, 0)), mode="edge")
    return image

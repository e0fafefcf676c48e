"""Training framing and breadth augmentation, on uint8 RGB arrays with an explicit numpy Generator.

Every random choice takes a ``numpy.random.Generator`` that the caller seeds per sample, so that a sample is
the same whatever worker or process makes it: this is what lets `deepscan train --resume` continue exactly.

Framing (where the crop lies in the cached face) is :mod:`deepscan.data.framing`.

Breadth: the photometric steps (colour casts, grayscale, down-and-up rescaling, blur, noise, JPEG and H.264
round trips) are applied to real faces and to their pseudo-fakes alike. A few uniform studio headshots make
a poor picture of "real"; without breadth a detector learns "real = that studio" and calls everything else
fake. Compression comes last, as in the life of a real picture.
"""

from __future__ import annotations

import io
import math

import numpy as np
from PIL import Image, ImageFilter

from deepscan.data.framing import Framing, frame_face
from deepscan.train.recipe import AugmentSpec

_RESAMPLING = (Image.Resampling.NEAREST, Image.Resampling.BILINEAR, Image.Resampling.BICUBIC,
               Image.Resampling.BOX, Image.Resampling.LANCZOS)


# --- photometric steps ---------------------------------------------------------------------------------------


def color_cast(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Per-channel gains (a white-balance cast), a gamma and a contrast change."""
    values = image.astype(np.float32) / 255.0
    gains = rng.uniform(0.85, 1.15, size=3).astype(np.float32)
    values = values * gains
    values = np.clip(values, 0.0, 1.0) ** np.float32(rng.uniform(0.8, 1.25))
    mean = values.mean()
    values = (values - mean) * np.float32(rng.uniform(0.8, 1.2)) + mean
    return _to_uint8(values * 255.0)


def grayscale(image: np.ndarray) -> np.ndarray:
    grey = np.asarray(Image.fromarray(image).convert("L"))
    return np.repeat(grey[:, :, None], 3, axis=2)


def rescale(image: np.ndarray, rng: np.random.Generator, factor_range: tuple[float, float]) -> np.ndarray:
    """Down to a random share of the size and back up, with random resampling filters (a low-res source)."""
    height, width = image.shape[:2]
    factor = rng.uniform(*factor_range)
    small = (max(8, round(width * factor)), max(8, round(height * factor)))
    picture = Image.fromarray(image).resize(small, _RESAMPLING[rng.integers(1, len(_RESAMPLING))])
    return np.asarray(picture.resize((width, height), _RESAMPLING[rng.integers(1, len(_RESAMPLING))]))


def blur(image: np.ndarray, rng: np.random.Generator, sigma_range: tuple[float, float]) -> np.ndarray:
    return np.asarray(Image.fromarray(image).filter(ImageFilter.GaussianBlur(rng.uniform(*sigma_range))))


def noise(image: np.ndarray, rng: np.random.Generator, std_range: tuple[float, float]) -> np.ndarray:
    std = rng.uniform(*std_range)
    return _to_uint8(image.astype(np.float32) + rng.normal(0.0, std, size=image.shape).astype(np.float32))


def jpeg_round_trip(image: np.ndarray, quality: int) -> np.ndarray:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="JPEG", quality=int(quality))
    buffer.seek(0)
    with Image.open(buffer) as decoded:
        return np.asarray(decoded.convert("RGB"))


def h264_round_trip(image: np.ndarray, crf: int) -> np.ndarray:
    """Encode one frame with libx264 (4:2:0, constant quality ``crf``) and decode it again, in memory."""
    import av

    height, width = image.shape[:2]
    even = np.pad(image, ((0, height % 2), (0, width % 2), (0, 0)), mode="edge")
    buffer = io.BytesIO()
    with av.open(buffer, mode="w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=25, options={"crf": str(int(crf)), "preset": "veryfast"})
        stream.height, stream.width = even.shape[:2]
        stream.pix_fmt = "yuv420p"
        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(even), format="rgb24")
        container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    buffer.seek(0)
    with av.open(buffer, mode="r") as container:
        decoded = next(container.decode(video=0)).to_ndarray(format="rgb24")
    return np.ascontiguousarray(decoded[:height, :width])


def _to_uint8(values: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(values), 0, 255).astype(np.uint8)


# --- the per-sample pipeline ---------------------------------------------------------------------------------


class FaceAugmenter:
    """Framing for training (random) and evaluation (fixed), and the photometric breadth steps."""

    def __init__(self, spec: AugmentSpec, input_size: int, margin: float, cache_margin: float):
        self.spec = spec
        self.input_size = input_size
        self.margin = margin
        self.cache_margin = cache_margin
        widest = max(spec.crop_scale[1], margin) * (1 + 2 * spec.max_shift) * math.sqrt(2)
        if widest > cache_margin * 2:  # frame_face pads by half the crop on each side
            raise ValueError(f"augment.crop_scale up to {spec.crop_scale[1]} needs data.face.cache_margin >= {widest / 2:.2f}")

    def training_framing(self, rng: np.random.Generator) -> Framing:
        spec = self.spec
        return Framing(
            scale=float(rng.uniform(*spec.crop_scale)),
            angle_deg=float(rng.uniform(-spec.rotation, spec.rotation)) if spec.rotation else 0.0,
            shift=tuple(float(v) for v in rng.uniform(-spec.max_shift, spec.max_shift, size=2))
            if spec.max_shift
            else (0.0, 0.0),
            mirror=bool(rng.random() < spec.hflip),
            vflip=bool(rng.random() < spec.vflip),
        )

    def evaluation_framing(self) -> Framing:
        return Framing(scale=self.margin)

    def frame(self, crop: np.ndarray, keypoints: np.ndarray, framing: Framing) -> tuple[np.ndarray, np.ndarray]:
        return frame_face(crop, keypoints, self.cache_margin, self.input_size, framing)

    def photometric(self, image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        spec = self.spec
        # One draw per step, always made, so that turning one step off does not reshuffle the others.
        draws = rng.random(7)
        if draws[0] < spec.color_cast:
            image = color_cast(image, rng)
        if draws[1] < spec.grayscale:
            image = grayscale(image)
        if draws[2] < spec.rescale:
            image = rescale(image, rng, spec.rescale_range)
        if draws[3] < spec.blur:
            image = blur(image, rng, spec.blur_sigma)
        if draws[4] < spec.noise:
            image = noise(image, rng, spec.noise_std)
        # A picture is compressed once at the end of its life here: JPEG (photos) or H.264 (video), not both.
        if draws[5] < spec.jpeg:
            image = jpeg_round_trip(image, rng.integers(spec.jpeg_quality[0], spec.jpeg_quality[1] + 1))
        elif draws[6] < spec.h264:
            image = h264_round_trip(image, rng.integers(spec.h264_crf[0], spec.h264_crf[1] + 1))
        return image

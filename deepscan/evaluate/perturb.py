"""The robustness suite: image perturbations of PEL Table 3 and RALF Table 3, each at several strengths.

Each perturbation is a function ``(image uint8 HxWx3, strength, rng) -> image uint8 HxWx3`` whose strength
has a physical meaning, stated in its ``unit``, so that a reported AUC drop can be read as "what happens
when the face is blurred with sigma 2 px":

- ``gaussian_noise``: standard deviation of additive Gaussian noise, in 8-bit levels (0-255);
- ``salt_pepper``: fraction of pixels set to black or white (half each);
- ``gaussian_blur``: Gaussian kernel sigma, in pixels;
- ``jpeg``: JPEG quality (100 best; lower is stronger);
- ``contrast``: factor on the distance to the image's mean intensity (1 keeps it; lower is stronger);
- ``pixelation``: side of the square blocks of equal colour, in pixels;
- ``h264``: x264 constant rate factor of a one-frame H.264 re-encode (23 ~ FF++ c23, 40 ~ FF++ c40).

The default levels follow the distortion levels of DeeperForensics-1.0, which RALF cites, where a paper
gives none. Perturbations apply to the face crop at the detector's input size (the crop the detector sees),
and random ones draw from the ``rng`` the caller seeds per sample, so that a score can be reproduced.
"""

from __future__ import annotations

import io
import tempfile
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Callable, Mapping

import numpy as np

from deepscan.errors import DeepscanError

Perturb = Callable[[np.ndarray, float, np.random.Generator], np.ndarray]


@dataclass(frozen=True)
class Perturbation:
    name: str
    apply: Perturb
    levels: tuple[float, ...]
    unit: str
    stronger_when: str  # "higher" or "lower"


def _clip(values: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(values), 0, 255).astype(np.uint8)


def gaussian_noise(image: np.ndarray, std: float, rng: np.random.Generator) -> np.ndarray:
    return _clip(image.astype(np.float64) + rng.normal(0.0, std, image.shape))


def salt_pepper(image: np.ndarray, amount: float, rng: np.random.Generator) -> np.ndarray:
    out = image.copy()
    # Whole pixels, as a dead or hot sensor element hits every channel of its pixel.
    hit = rng.random(image.shape[:2]) < amount
    salt = rng.random(image.shape[:2]) < 0.5
    out[hit & salt] = 255
    out[hit & ~salt] = 0
    return out


def gaussian_blur(image: np.ndarray, sigma: float, rng: np.random.Generator) -> np.ndarray:
    from scipy.ndimage import gaussian_filter

    return _clip(gaussian_filter(image.astype(np.float64), sigma=(sigma, sigma, 0), mode="reflect"))


def jpeg(image: np.ndarray, quality: float, rng: np.random.Generator) -> np.ndarray:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="JPEG", quality=int(quality))
    return np.asarray(Image.open(buffer).convert("RGB"))


def contrast(image: np.ndarray, factor: float, rng: np.random.Generator) -> np.ndarray:
    pixels = image.astype(np.float64)
    mean = pixels.mean()
    return _clip(mean + factor * (pixels - mean))


def pixelation(image: np.ndarray, block: float, rng: np.random.Generator) -> np.ndarray:
    from PIL import Image

    block = int(block)
    height, width = image.shape[:2]
    small = Image.fromarray(image).resize(
        (max(1, -(-width // block)), max(1, -(-height // block))), Image.Resampling.BOX
    )
    big = small.resize((small.width * block, small.height * block), Image.Resampling.NEAREST)
    return np.asarray(big)[:height, :width].copy()


def h264(image: np.ndarray, crf: float, rng: np.random.Generator) -> np.ndarray:
    from deepscan.media import open_media
    from deepscan.media.encode import encode_video

    height, width = image.shape[:2]
    with tempfile.TemporaryDirectory(prefix="deepscan-h264-") as folder:
        path = Path(folder) / "frame.mp4"
        encode_video(path, [image], fps=25, crf=int(crf), options={"preset": "medium"})
        with open_media(path, kind="video") as video:
            frame = next(video.frames(fps=None))
    return np.ascontiguousarray(frame.image[:height, :width])


PERTURBATIONS: Mapping[str, Perturbation] = MappingProxyType(
    {
        p.name: p
        for p in (
            Perturbation("gaussian_noise", gaussian_noise, (5.0, 10.0, 20.0), "std, 8-bit levels", "higher"),
            Perturbation("salt_pepper", salt_pepper, (0.01, 0.05, 0.1), "fraction of pixels", "higher"),
            Perturbation("gaussian_blur", gaussian_blur, (1.0, 2.0, 3.0), "sigma, pixels", "higher"),
            Perturbation("jpeg", jpeg, (90.0, 70.0, 50.0, 30.0), "quality", "lower"),
            Perturbation("contrast", contrast, (0.85, 0.6, 0.35), "factor", "lower"),
            Perturbation("pixelation", pixelation, (2.0, 4.0, 8.0), "block side, pixels", "higher"),
            Perturbation("h264", h264, (23.0, 40.0), "x264 CRF", "higher"),
        )
    }
)


class PerturbationError(DeepscanError, ValueError):
    """A --perturb value that names no perturbation or gives a bad strength; one line for the user."""


def parse_perturb_spec(spec: str) -> list[tuple[str, float]]:
    """``all``, ``NAME`` (its default levels) or ``NAME:S1,S2`` (comma-separated strengths) -> conditions."""
    spec = spec.strip()
    if spec == "all":
        return [(p.name, level) for p in PERTURBATIONS.values() for level in p.levels]
    name, _, strengths = spec.partition(":")
    if name not in PERTURBATIONS:
        raise PerturbationError(f"unknown perturbation {name!r} (known: all, {', '.join(PERTURBATIONS)})")
    if not strengths:
        return [(name, level) for level in PERTURBATIONS[name].levels]
    try:
        levels = [float(value) for value in strengths.split(",") if value.strip()]
    except ValueError:
        raise PerturbationError(f"--perturb {spec}: strengths must be numbers, e.g. {name}:1,2") from None
    if not levels or any(level < 0 for level in levels):
        raise PerturbationError(f"--perturb {spec}: give one or more non-negative strengths")
    return [(name, level) for level in levels]


def condition_name(perturbation: str, strength: float) -> str:
    return "clean" if perturbation == "none" else f"{perturbation}@{strength:g}"


def apply_perturbation(image: np.ndarray, perturbation: str, strength: float, seed: int) -> np.ndarray:
    if perturbation == "none":
        return image
    return PERTURBATIONS[perturbation].apply(image, strength, np.random.default_rng(seed))

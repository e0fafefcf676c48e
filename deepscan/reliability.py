"""How much a face (and a file) can be trusted to be judged: size, sharpness and compression.

A detector measured on validation faces is only as good as those faces: its accuracy falls for faces much
smaller or blurrier than it was calibrated on, where the frequency clues it relies on are gone. A model card's
``reliability`` section states the range in which it was found reliable (``min_face_px``, ``min_sharpness``);
a face track none of whose faces is inside that range is judged ``inconclusive`` instead of real or fake. An
ensemble's faces must be inside every member's range (:class:`JointRange`).

The measures are plain functions so that the training side measures validation faces exactly as the scanner
measures scanned ones:

- face size: the longer side of the detected face box, in pixels of the frame (before any resizing);
- sharpness: the variance of the Laplacian of the grey face crop at the detector's input size (the crop the
  detector sees, margin included), on a 0-255 grey scale;
- compression (videos): bits per pixel per frame, ``bit_rate / (width * height * fps)``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from collections.abc import Iterable

    from deepscan.model_card import ReliabilitySection

TOO_SMALL = "too small"
TOO_BLURRED = "too blurred"
# ITU-R BT.601 luma weights, as PIL's convert("L") and OpenCV's RGB2GRAY use.
_LUMA = np.array([0.299, 0.587, 0.114])


def face_sharpness(crop: np.ndarray) -> float:
    """Variance of the Laplacian of ``crop`` (H, W, 3) uint8 RGB, converted to grey on a 0-255 scale.

    Measure it on the crop at the detector's input size: resizing changes it (a face enlarged from 40 px is
    blurrier at 224 px than one shrunk from 400 px), and that resized crop is what the detector judges.
    """
    from scipy.ndimage import laplace

    grey = np.asarray(crop, dtype=np.float64) @ _LUMA if crop.ndim == 3 else np.asarray(crop, dtype=np.float64)
    return float(laplace(grey, mode="reflect").var())


def bits_per_pixel(bit_rate: float | None, width: int | None, height: int | None, fps: float | None) -> float | None:
    """Bits spent per pixel per frame, the encoder's budget: low values mean heavy compression. None when the
    container does not say its bit rate (or the frame size or rate is unknown)."""
    if not bit_rate or not width or not height or not fps:
        return None
    return float(bit_rate) / (width * height * fps)


@dataclass(frozen=True)
class ReliableRange:
    """The faces a detector was found reliable on: at least ``min_face_px`` and ``min_sharpness``."""

    min_face_px: float = 0.0
    min_sharpness: float = 0.0

    @classmethod
    def from_card(cls, section: "ReliabilitySection | None") -> "ReliableRange":
        if section is None:
            return cls()
        return cls(min_face_px=section.min_face_px, min_sharpness=section.min_sharpness)

    @property
    def bounded(self) -> bool:
        return self.min_face_px > 0 or self.min_sharpness > 0

    def shortfalls(self, face_px: float, sharpness: float) -> list[str]:
        """What puts this face outside the range: ``[]``, or ``"too small"`` and/or ``"too blurred"``."""
        found = []
        if face_px < self.min_face_px:
            found.append(TOO_SMALL)
        if sharpness < self.min_sharpness:
            found.append(TOO_BLURRED)
        return found

    def describe(self) -> str:
        """The range in words, for verdict reasons: "faces of at least 64 px and sharpness 20"."""
        parts = []
        if self.min_face_px > 0:
            parts.append(f"{self.min_face_px:g} px")
        if self.min_sharpness > 0:
            parts.append(f"sharpness {self.min_sharpness:g}")
        return "faces of at least " + " and ".join(parts) if parts else "any face"

    def as_dict(self) -> dict:
        return {"min_face_px": self.min_face_px, "min_sharpness": self.min_sharpness}


def strictest(ranges: list[ReliableRange]) -> ReliableRange:
    """The range every one of ``ranges`` accepts, when all were measured at one input size."""
    return ReliableRange(
        min_face_px=max((r.min_face_px for r in ranges), default=0.0),
        min_sharpness=max((r.min_sharpness for r in ranges), default=0.0),
    )


@dataclass(frozen=True)
class JointRange:
    """The faces every one of a scan's detectors is reliable on: one detector's range, or an ensemble's members'
    together (their mean includes every member, so a face must be inside each member's range).

    Each sharpness bound holds at the input size it was measured at, on the crop that detector judges: the same
    face is sharper on a smaller crop (a 128 px crop of a face has several times the Laplacian variance of its
    256 px crop), so bounds measured at different sizes are on different scales and each is compared with the
    face's sharpness at its own size. ``by_size``: input size -> the range at that size.
    """

    by_size: dict[int, ReliableRange]

    @classmethod
    def of(cls, sized_ranges: "Iterable[tuple[int, ReliableRange]]") -> "JointRange":
        """From (input size, range) pairs; ranges measured at one size combine into the strictest of them."""
        grouped: dict[int, list[ReliableRange]] = {}
        for size, limits in sized_ranges:
            grouped.setdefault(size, []).append(limits)
        return cls({size: strictest(ranges) for size, ranges in sorted(grouped.items())})

    @property
    def bounded(self) -> bool:
        return any(limits.bounded for limits in self.by_size.values())

    @property
    def min_face_px(self) -> float:
        return max((limits.min_face_px for limits in self.by_size.values()), default=0.0)

    @property
    def sharpness_sizes(self) -> list[int]:
        """The input sizes with a sharpness bound: where a face's sharpness must be measured."""
        return [size for size, limits in self.by_size.items() if limits.min_sharpness > 0]

    def shortfalls(self, face_px: float, sharpness_at: dict[int, float]) -> list[str]:
        """What puts a face outside any of the ranges (``[]``, ``"too small"``, ``"too blurred"``);
        ``sharpness_at``: the face's sharpness on its crop at each of :attr:`sharpness_sizes`."""
        found = {shortfall for size, limits in self.by_size.items()
                 for shortfall in limits.shortfalls(face_px, sharpness_at[size] if limits.min_sharpness else 0.0)}
        return [shortfall for shortfall in (TOO_SMALL, TOO_BLURRED) if shortfall in found]

    def describe(self) -> str:
        """In words, for verdict reasons; with sharpness bounds at several sizes, each with its size:
        "faces of at least 96 px and sharpness 69 at 128 px, 20.5 at 224 px"."""
        sharpness = {size: limits.min_sharpness for size, limits in self.by_size.items() if limits.min_sharpness > 0}
        if len(self.by_size) == 1 or not sharpness:  # one detector, or no bound to place: as its card says it
            return ReliableRange(self.min_face_px, next(iter(sharpness.values()), 0.0)).describe()
        at_sizes = ", ".join(f"{bound:g} at {size} px" for size, bound in sharpness.items())
        face = f"{self.min_face_px:g} px and " if self.min_face_px > 0 else ""
        return f"faces of at least {face}sharpness {at_sizes}"

    def as_dict(self) -> dict:
        """``min_face_px`` and ``min_sharpness_at`` (input size as text -> bound; sizes without one left out)."""
        return {
            "min_face_px": self.min_face_px,
            "min_sharpness_at": {str(size): limits.min_sharpness for size, limits in self.by_size.items()
                                 if limits.min_sharpness > 0},
        }

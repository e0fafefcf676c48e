"""Explaining one face: its CAM, spectra and the detector's own frequency views (``Detector.frequency_views``);
without a face, what a method looks at regardless of its input (:func:`method_views`: the views that come out the
same whatever face goes in, a learned mask, learned band weights, constrained kernels); and the frame of a video at
a given time (``--at``)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from deepscan.calibration import Calibration
from deepscan.detectors.base import Detector, FrequencyView
from deepscan.explain.cam import CamResult, compute_cam, heatmap_to_frame
from deepscan.explain.errors import ExplainError
from deepscan.explain.spectra import FaceSpectra, ReferenceSpectrum, face_spectra


@dataclass
class FaceExplanation:
    """Everything shown for one face; ``frame`` is None when the face is not known in a frame. ``frame_shape``:
    the shape of the frame the face was found in, where ``frame`` is only its display-size copy (a face kept by the
    scan, ``deepscan.kept_faces``); None: ``frame`` is the frame itself."""

    method: str
    label: str  # where the face comes from, e.g. "clip.mp4, track 2 at 3.50 s"
    crop: np.ndarray  # (S, S, 3) uint8
    cam: CamResult
    spectra: FaceSpectra
    views: dict[str, FrequencyView]
    trained: bool = True
    frame: np.ndarray | None = None
    square: tuple[float, float, float, float] | None = None
    box: tuple[float, float, float, float] | None = None
    reference: ReferenceSpectrum | None = None
    recorded_probability: float | None = None  # what the scan recorded for this face, when it came from one
    # When nothing in the face raises the fake score, the map of what makes it look real says more.
    real_cam: CamResult | None = None
    calibration: Calibration = field(default_factory=Calibration)  # the weights' (identity without a card)
    frame_shape: tuple[int, ...] | None = None

    @property
    def fake_probability(self) -> float:
        """Calibrated P(fake) of this crop, as a scan with the same weights records it."""
        return float(self.calibration.probability([self.cam.fake_logit])[0])

    @property
    def frame_heatmap(self) -> np.ndarray | None:
        if self.frame is None or self.square is None:
            return None
        return heatmap_to_frame(self.cam.heatmap, self.square, self.frame_shape or self.frame.shape)


def crop_tensor(crop: np.ndarray) -> torch.Tensor:
    """(S, S, 3) uint8 -> (1, 3, S, S) float in [0, 1]."""
    # A copy: crops often come from PIL as read-only arrays, which torch cannot wrap safely.
    return torch.from_numpy(np.array(crop, dtype=np.uint8)).permute(2, 0, 1).unsqueeze(0).float().div(255.0)


def explain_face(
    detector: Detector,
    crop: np.ndarray,
    *,
    label: str,
    cam_method: str = "gradcam",
    trained: bool = True,
    frame: np.ndarray | None = None,
    square: tuple[float, float, float, float] | None = None,
    box: tuple[float, float, float, float] | None = None,
    reference: ReferenceSpectrum | None = None,
    recorded_probability: float | None = None,
    calibration: Calibration | None = None,
    frame_shape: tuple[int, ...] | None = None,
) -> FaceExplanation:
    """CAM, spectra and the detector's own views of one face crop (already at the detector's input size).
    ``calibration``: the weights' (``ResolvedWeights.calibration``), which turns the fake-logit into the P(fake)
    a scan reports; None: the identity (``sigmoid(logit)``), right only for weights without a calibrated card.
    ``frame_shape``: the frame's, where ``frame`` is its display-size copy (:class:`FaceExplanation`)."""
    face = crop_tensor(crop)
    cam = compute_cam(detector, face, cam_method)
    real_cam = compute_cam(detector, face, cam_method, target="real") if cam.is_empty else None
    device = next(detector.parameters()).device
    views = detector.frequency_views(face.to(device))
    return FaceExplanation(
        method=detector.config.name,
        label=label,
        crop=crop,
        cam=cam,
        spectra=face_spectra(face),
        views=views,
        trained=trained,
        frame=frame,
        square=square,
        box=box,
        reference=reference,
        recorded_probability=recorded_probability,
        real_cam=real_cam,
        calibration=calibration or Calibration(),
        frame_shape=frame_shape,
    )


# --- what a method looks at, without a face ----------------------------------------------------------------


@dataclass
class MethodViews:
    method: str
    paper: str
    summary: str
    fixed: dict[str, FrequencyView]  # identical whatever the input: learned masks, weights, kernels
    example: dict[str, FrequencyView] = field(default_factory=dict)  # on the reference portrait, when none is fixed
    example_source: str = ""


def _probe_faces(size: int) -> tuple[torch.Tensor, torch.Tensor, str]:
    """Two inputs as unlike as possible: a real public-domain portrait and seeded coloured noise."""
    from deepscan.media.faces import FaceDetector, crop_face
    from deepscan.media.synthetic import portrait

    picture = portrait()
    with FaceDetector(tile=False) as faces:
        found = faces.detect(picture)
    if found:
        crop = crop_face(picture, found[0], size)
    else:  # the portrait's face sits in its upper middle; good enough to probe with
        from PIL import Image

        side = picture.shape[1]
        crop = np.asarray(Image.fromarray(picture[:side]).resize((size, size)), dtype=np.uint8)
    noise = np.random.default_rng(0).integers(0, 256, size=(size, size, 3), dtype=np.uint8)
    return crop_tensor(crop), crop_tensor(noise), "Grace Hopper's portrait (public domain)"


def _same_view(first: FrequencyView, second: FrequencyView) -> bool:
    a, b = np.asarray(first.image, dtype=np.float64), np.asarray(second.image, dtype=np.float64)
    return a.shape == b.shape and np.allclose(a, b, rtol=1e-5, atol=1e-7, equal_nan=True)


def method_views(detector: Detector, size: int | None = None) -> MethodViews:
    """What the method looks at regardless of input: the frequency views that do not change with the face.

    They are found by asking for the views of two very different inputs (a portrait and noise) and keeping
    those that come out the same. A method with no such view is shown on the portrait instead.
    """
    size = size or detector.config.input_size
    detector.eval()
    portrait_face, noise, source = _probe_faces(size)
    device = next(detector.parameters()).device
    on_portrait = detector.frequency_views(portrait_face.to(device))
    on_noise = detector.frequency_views(noise.to(device))
    fixed = {key: view for key, view in on_portrait.items() if key in on_noise and _same_view(view, on_noise[key])}
    config = detector.config
    result = MethodViews(config.name, config.paper, config.summary, fixed)
    if not fixed:
        result.example, result.example_source = on_portrait, source
    return result


# --- timestamps --------------------------------------------------------------------------------------------

_TIMESTAMP = re.compile(r"^(?:(\d+):)?(?:(\d+):)?(\d+(?:\.\d*)?|\.\d+)s?$")


def parse_timestamp(text: str) -> float:
    """``12.5s``, ``12.5``, ``1:02.5`` or ``1:00:02`` -> seconds."""
    match = _TIMESTAMP.match(text.strip())
    if not match:
        raise ExplainError(f"--at {text!r}: expected seconds such as 12.5s, or mm:ss(.f)")
    first, second, seconds = match.groups()
    hours, minutes = (int(first), int(second)) if second is not None else (0, int(first or 0))
    return hours * 3600 + minutes * 60 + float(seconds)


def frame_at(path: Path, time_s: float) -> tuple[int, float, np.ndarray]:
    """The decoded frame of the video at ``path`` nearest to ``time_s`` (index, its time, RGB)."""
    from deepscan.media import open_media
    from deepscan.media.errors import MediaError, PartialMediaError

    previous = None
    try:
        with open_media(path, kind="video") as media:
            for frame in media.frames(fps=None):
                if frame.time_s >= time_s:
                    if previous is not None and time_s - previous.time_s < frame.time_s - time_s:
                        return previous.index, previous.time_s, previous.image
                    return frame.index, frame.time_s, frame.image
                previous = frame
    except PartialMediaError as error:
        if previous is None:
            raise ExplainError(str(error)) from None
    except MediaError as error:
        raise ExplainError(str(error)) from None
    if previous is None:
        raise ExplainError(f"{path}: no frame could be decoded")
    raise ExplainError(f"{path}: --at {time_s:g}s is past the end of the video (last frame at {previous.time_s:.2f} s)")

"""Why a detector calls a face forged: where (Grad-CAM), and in which frequencies (spectra, the method's views).

For one face crop this gathers
- a class-activation map of the fake logit on each of the detector's declared target layers, through
  pytorch_grad_cam (Grad-CAM, Grad-CAM++, HiResCAM, LayerCAM), mapped back onto the frame the face came from;
- the face's own spectra: global DCT log-magnitude of Y, Cb and Cr, 2-D FFT amplitude and phase of the luma,
  and the azimuthally averaged power spectrum, against a reference of real faces when one is given;
- the detector's own frequency views (``Detector.frequency_views``);
and composes them into one figure plus one PNG per view.

Without a face, :func:`method_views` shows what a method looks at regardless of its input: the views that come
out the same whatever face goes in (a learned mask, learned band weights, constrained kernels).

Faces of a previous scan are recovered from its JSON report by decoding the file again with the scan's own
sampling parameters (:func:`recover_frames`): decoding is deterministic, so the pixels are the ones that were
scored, and nothing had to be kept in memory during the scan.
"""

from __future__ import annotations

import json
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Iterator

import numpy as np
import torch
import torch.nn as nn

from deepscan.calibration import Calibration
from deepscan.detectors.base import Detector, FrequencyView
from deepscan.errors import DeepscanError
from deepscan.frequency import dct2, log_magnitude, rgb_to_ycbcr
from deepscan.report.plots import Panel, SpectrumPanel

if TYPE_CHECKING:
    from deepscan.media.faces import Face

CAM_METHODS = ("gradcam", "gradcam++", "hirescam", "layercam")
CAM_TITLES = {"gradcam": "Grad-CAM", "gradcam++": "Grad-CAM++", "hirescam": "HiResCAM", "layercam": "LayerCAM"}
REPORT_SCHEMA = "deepscan.scan-report"


class ExplainError(DeepscanError):
    """Something an explanation cannot be made from; the message is one line for the user."""


# --- Grad-CAM ----------------------------------------------------------------------------------------------


class FakeLogitModel(nn.Module):
    """The detector as pytorch_grad_cam wants a classifier: one input tensor in, ``(B, 1)`` logits out.

    Every deepscan detector already takes its single face batch and builds any second input (a frequency image,
    a destructed copy) inside; only the output shape differs from what the library expects.
    """

    def __init__(self, detector: Detector):
        super().__init__()
        self.detector = detector

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.detector(x).unsqueeze(1)


@dataclass
class CamResult:
    method: str
    target: str  # "fake" or "real": the class whose score the map explains
    heatmap: np.ndarray  # (S, S) in [0, 1]: the mean of the per-layer maps, rescaled
    layers: dict[str, np.ndarray]  # target layer name -> its own (S, S) map in [0, 1]
    fake_logit: float  # raw: P(fake) is the weights' calibration of it (FaceExplanation.fake_probability)

    @property
    def is_empty(self) -> bool:
        """No region raises the target's score: every weighted activation was negative (or zero)."""
        return float(self.heatmap.max()) <= 0.0


def _cam_class(method: str):
    from pytorch_grad_cam import GradCAM, GradCAMPlusPlus, HiResCAM, LayerCAM

    classes = {"gradcam": GradCAM, "gradcam++": GradCAMPlusPlus, "hirescam": HiResCAM, "layercam": LayerCAM}
    if method not in classes:
        raise ExplainError(f"unknown CAM method {method!r} (choose from {', '.join(CAM_METHODS)})")
    return classes[method]


def _rescaled(heatmap: np.ndarray) -> np.ndarray:
    low, high = float(heatmap.min()), float(heatmap.max())
    return (heatmap - low) / (high - low) if high > low else np.zeros_like(heatmap)


def compute_cam(detector: Detector, face: torch.Tensor, method: str = "gradcam", target: str = "fake") -> CamResult:
    """Class-activation map of the fake logit (or, ``target="real"``, of its negation) for one face
    ``(1, 3, S, S)`` in [0, 1].

    Each target layer gets a pass of its own. Given several layers at once, the library pairs the i-th
    activation with the i-th gradient to arrive, and gradients arrive in backward order, which for parallel
    streams (FAClue's and PEL's RGB and frequency streams) is not the forward order: maps would be built from
    one stream's activations and the other's gradients. One layer per pass cannot be mispaired.
    """
    from pytorch_grad_cam.utils.model_targets import BinaryClassifierOutputTarget

    cam_class = _cam_class(method)
    if target not in ("fake", "real"):
        raise ExplainError(f"unknown CAM target {target!r} (fake or real)")
    layers = detector.cam_target_layers()
    if not layers:
        raise ExplainError(f"detector {detector.config.name!r} declares no Grad-CAM target layer")
    names = {id(module): name for name, module in detector.named_modules()}
    detector.eval()
    model = FakeLogitModel(detector)
    device = next(detector.parameters()).device
    face = face.to(device=device, dtype=torch.float32)
    per_layer: dict[str, np.ndarray] = {}
    fake_logit = float("nan")
    try:
        for layer in layers:
            name = names.get(id(layer), type(layer).__name__)
            outputs: list[object] = []
            probe = layer.register_forward_hook(lambda _module, _inputs, output, seen=outputs: seen.append(output))
            maps = None
            try:
                # Grad-CAM needs gradients; callers may well be inside an inference block.
                with torch.inference_mode(False), torch.enable_grad():
                    with cam_class(model=model, target_layers=[layer]) as cam:
                        maps = cam(input_tensor=face, targets=[BinaryClassifierOutputTarget(int(target == "fake"))])
                        fake_logit = float(cam.outputs[0, 0].item())
            except (TypeError, ValueError, AttributeError, RuntimeError) as error:
                _check_layer_output(name, outputs)
                raise ExplainError(f"Grad-CAM failed on layer {name!r}: {error}") from None
            finally:
                probe.remove()
            _check_layer_output(name, outputs)
            if maps is None:  # the library's context manager swallows IndexError and leaves nothing behind
                raise ExplainError(f"Grad-CAM produced no map on layer {name!r}")
            per_layer[name] = np.asarray(maps[0], dtype=np.float32)
    finally:
        detector.zero_grad(set_to_none=True)
    heatmap = _rescaled(np.mean(np.stack(list(per_layer.values())), axis=0)).astype(np.float32)
    return CamResult(method=method, target=target, heatmap=heatmap, layers=per_layer, fake_logit=fake_logit)


def _check_layer_output(name: str, outputs: list[object]) -> None:
    if not outputs:
        raise ExplainError(f"Grad-CAM target layer {name!r} is not used by the detector's forward pass")
    if len(outputs) > 1:
        raise ExplainError(
            f"Grad-CAM target layer {name!r} runs {len(outputs)} times per forward pass (shared weights): "
            "its activations and gradients cannot be paired"
        )
    output = outputs[0]
    if not isinstance(output, torch.Tensor) or output.dim() != 4:
        raise ExplainError(f"Grad-CAM target layer {name!r} must output a 4-D tensor, not {type(output).__name__}")
    if not output.requires_grad:
        raise ExplainError(f"Grad-CAM target layer {name!r} outputs a tensor without gradients")


# --- mapping back onto the frame ---------------------------------------------------------------------------


def heatmap_to_frame(
    heatmap: np.ndarray, square: tuple[float, float, float, float], frame_shape: tuple[int, ...]
) -> np.ndarray:
    """A crop's heat map placed on the frame: ``(H, W)``, NaN wherever the crop did not cover the frame.

    ``square`` is the crop's square in frame pixels (``deepscan.media.faces.face_square``); the map is resized to
    its side and pasted, and the parts of the square that lie outside the frame (the mirrored padding of a face
    at the edge) are dropped.
    """
    from PIL import Image

    height, width = int(frame_shape[0]), int(frame_shape[1])
    x0, y0, x1, y1 = (int(round(value)) for value in square)
    side = x1 - x0
    if side <= 0 or y1 - y0 != side:
        raise ValueError(f"expected a square with a positive side, got {square}")
    resized = np.asarray(
        Image.fromarray(np.asarray(heatmap, dtype=np.float32)).resize((side, side), Image.Resampling.BILINEAR)
    )
    placed = np.full((height, width), np.nan, dtype=np.float32)
    fx0, fy0, fx1, fy1 = max(x0, 0), max(y0, 0), min(x1, width), min(y1, height)
    if fx1 > fx0 and fy1 > fy0:
        placed[fy0:fy1, fx0:fx1] = resized[fy0 - y0 : fy1 - y0, fx0 - x0 : fx1 - x0]
    return placed


# --- the face's own spectra --------------------------------------------------------------------------------


@dataclass
class RadialSpectrum:
    frequency: np.ndarray  # cycles per pixel, 1/S .. 1/2
    power_db: np.ndarray  # 10 log10 of each ring's mean power over the total power


@dataclass
class ReferenceSpectrum:
    """Mean and spread of the radial spectra of real faces, to compare a suspect face against."""

    frequency: np.ndarray
    mean_db: np.ndarray
    std_db: np.ndarray
    faces: int
    source: str


def azimuthal_power_spectrum(gray: np.ndarray) -> RadialSpectrum:
    """Power of a square grey image's 2-D FFT averaged over rings of equal spatial frequency.

    The image's mean is removed and a Hann window applied first: a crop's opposite edges do not meet, and
    the FFT would otherwise see that jump as a strong cross of high frequencies that hides the face's own
    fall-off, which is where generators and upsampling leave their trace. Power is given in dB relative to
    the total, so that brightness and contrast do not shift the curve.
    """
    gray = np.asarray(gray, dtype=np.float64)
    size = gray.shape[0]
    if gray.ndim != 2 or gray.shape[1] != size:
        raise ValueError(f"expected a square grey image, got shape {gray.shape}")
    window = np.outer(np.hanning(size), np.hanning(size))
    power = np.abs(np.fft.fftshift(np.fft.fft2((gray - gray.mean()) * window))) ** 2
    frequencies = np.fft.fftshift(np.fft.fftfreq(size))
    radius = np.hypot(frequencies[:, None], frequencies[None, :])
    rings = np.rint(radius * size).astype(int)
    counts = np.bincount(rings.ravel())
    sums = np.bincount(rings.ravel(), weights=power.ravel())
    kept = np.arange(1, size // 2 + 1)  # ring 0 is the removed mean; beyond 1/2 only the corners remain
    ring_power = sums[kept] / np.maximum(counts[kept], 1)
    total = max(float(power.sum()), 1e-30)
    return RadialSpectrum(frequency=kept / size, power_db=10.0 * np.log10(np.maximum(ring_power, 1e-30) / total))


@dataclass
class FaceSpectra:
    dct_log: np.ndarray  # (3, S, S): log |DCT| of Y, Cb, Cr
    fft_log_amplitude: np.ndarray  # (S, S), DC at the centre
    fft_phase: np.ndarray  # (S, S) radians, DC at the centre
    radial: RadialSpectrum


def face_spectra(face: torch.Tensor) -> FaceSpectra:
    """The spectra of one face ``(1, 3, S, S)`` in [0, 1]; the FFTs are of the luma (Y)."""
    face = face.detach().float().cpu()
    ycbcr = rgb_to_ycbcr(face)
    dct_log = log_magnitude(dct2(ycbcr))[0].numpy()
    luma = ycbcr[0, 0].numpy().astype(np.float64)
    size = luma.shape[0]
    window = np.outer(np.hanning(size), np.hanning(luma.shape[1]))
    spectrum = np.fft.fftshift(np.fft.fft2((luma - luma.mean()) * window))
    return FaceSpectra(
        dct_log=dct_log,
        fft_log_amplitude=np.log(np.abs(spectrum) + 1e-6),
        fft_phase=np.angle(spectrum),
        radial=azimuthal_power_spectrum(luma),
    )


def reference_spectrum(faces: list[torch.Tensor], source: str) -> ReferenceSpectrum:
    """Radial spectra of real faces ``(1, 3, S, S)`` (all of one size) summarised as mean and standard deviation."""
    if not faces:
        raise ExplainError(f"{source}: no real face to build a reference spectrum from")
    curves = [face_spectra(face).radial for face in faces]
    if len({len(curve.frequency) for curve in curves}) != 1:
        raise ExplainError(f"{source}: reference faces must all have the same size")
    stacked = np.stack([curve.power_db for curve in curves])
    return ReferenceSpectrum(curves[0].frequency, stacked.mean(0), stacked.std(0), len(faces), source)


# --- explaining one face -----------------------------------------------------------------------------------


@dataclass
class FaceExplanation:
    """Everything shown for one face; ``frame`` is None when the face is not known in a frame."""

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

    @property
    def fake_probability(self) -> float:
        """Calibrated P(fake) of this crop, as a scan with the same weights records it."""
        return float(self.calibration.probability([self.cam.fake_logit])[0])

    @property
    def frame_heatmap(self) -> np.ndarray | None:
        if self.frame is None or self.square is None:
            return None
        return heatmap_to_frame(self.cam.heatmap, self.square, self.frame.shape)


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
) -> FaceExplanation:
    """CAM, spectra and the detector's own views of one face crop (already at the detector's input size).
    ``calibration``: the weights' (``ResolvedWeights.calibration``), which turns the fake-logit into the P(fake)
    a scan reports; None: the identity (``sigmoid(logit)``), right only for weights without a calibrated card."""
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
    )


# --- panels and figures ------------------------------------------------------------------------------------

_CAM_LABEL = "relevance to 'fake' (0-1)"


def detector_view_panel(key: str, view: FrequencyView) -> Panel:
    return Panel(
        key=f"view_{key}",
        title=view.title,
        image=np.nan_to_num(np.asarray(view.image, dtype=np.float64), nan=np.nan, posinf=np.nan, neginf=np.nan),
        cmap=view.cmap if view.cmap in _SAFE_CMAPS else "viridis",
        description=view.description,
        parts=_stack_parts(view),
    )


# Perceptually uniform maps, readable with colour-vision deficiencies; anything else a detector asks for is
# shown with viridis. twilight is kept for angles (phase), which wrap round and need a cyclic map.
_SAFE_CMAPS = frozenset({"viridis", "cividis", "magma", "inferno", "plasma", "twilight", "twilight_shifted", "gray"})


def _stack_parts(view: FrequencyView) -> tuple[str, ...]:
    image = np.asarray(view.image)
    if image.ndim == 3 and image.shape[-1] != 3:
        # Maps stacked on the first axis; a title that names them "a; b" or "a | b" labels them.
        names = [part.strip() for part in re.split(r"[;|]", _parenthesised(view.title))]
        if len(names) == image.shape[0]:
            return tuple(names)
        return tuple(f"map {index + 1}" for index in range(image.shape[0]))
    return ()


def _parenthesised(title: str) -> str:
    match = re.search(r"\(([^()]*)\)\s*$", title)
    return match.group(1) if match else ""


def _layers_phrase(cam: CamResult) -> str:
    names = list(cam.layers)
    return f"layer {names[0]}" if len(names) == 1 else f"mean of layers {', '.join(names)}"


def face_panels(explanation: FaceExplanation) -> list:
    """The panels of one face explanation, in reading order: where, the face's spectra, the method's views."""
    size = explanation.crop.shape[0]
    crop = explanation.crop.astype(np.float64) / 255.0
    cam_title = CAM_TITLES[explanation.cam.method]
    empty = " (empty: no region raises the fake score)" if explanation.cam.is_empty else ""
    pixels = f"x (pixels of the {size}x{size} crop)"
    panels: list = [
        Panel("face", "Face crop as the detector sees it", crop, xlabel=pixels, ylabel="y (pixels)",
              description=f"The face cut from the frame, resized to the detector's {size}x{size} input."),
        Panel("cam", f"{cam_title} of the fake score, {_layers_phrase(explanation.cam)}{empty}", crop,
              overlay=explanation.cam.heatmap, overlay_label=_CAM_LABEL, xlabel=pixels, ylabel="y (pixels)",
              description=f"{cam_title} on the detector's target layers ({', '.join(explanation.cam.layers)}), "
              "averaged: bright regions raise the fake logit the most."),
    ]
    if explanation.real_cam is not None:
        panels.append(
            Panel("cam_real", f"{cam_title} of the real score (what makes the face look authentic)", crop,
                  overlay=explanation.real_cam.heatmap, overlay_label="relevance to 'real' (0-1)", xlabel=pixels,
                  ylabel="y (pixels)", overlay_cmap="cividis",
                  description=f"No region raises the fake score, so this is {cam_title} of the opposite class: "
                  "the regions that make the detector call the face authentic."),
        )
    if len(explanation.cam.layers) > 1:
        for name, heatmap in explanation.cam.layers.items():
            panels.append(
                Panel(f"cam_{name.replace('.', '_')}", f"{cam_title} on layer {name}", crop,
                      overlay=heatmap, overlay_label=_CAM_LABEL, xlabel=pixels, ylabel="y (pixels)",
                      description=f"{cam_title} on layer {name} alone.")
            )
    frame_heatmap = explanation.frame_heatmap
    if frame_heatmap is not None:
        outlines = [(explanation.square, "crop square")]
        if explanation.box is not None:
            outlines.append((explanation.box, "detected face"))
        frame, heat = _display_frame(explanation.frame, frame_heatmap)
        panels.append(
            Panel("frame", f"{cam_title} mapped back onto the frame", frame, overlay=heat, columns=2,
                  overlay_label=_CAM_LABEL, xlabel="x (frame pixels)", ylabel="y (frame pixels)",
                  extent=(0, explanation.frame.shape[1], explanation.frame.shape[0], 0),
                  outlines=tuple((tuple(v for v in box), text) for box, text in outlines),
                  description="The heat map placed back where the face was found: the yellow square is the crop "
                  "the detector saw, the blue dashed box the face the face detector found."),
        )
    spectra = explanation.spectra
    panels += [
        Panel("face_dct", "Global DCT of the face, log magnitude (Y | Cb | Cr)", spectra.dct_log,
              parts=("Y", "Cb", "Cr"), colorbar_label="log |DCT coefficient|",
              xlabel="colour channel (low frequencies top-left of each)",
              description="Orthonormal 2-D DCT of each YCbCr channel of the whole face: low frequencies top-left, "
              "high bottom-right. Generators and resampling often leave a grid of peaks or a missing corner."),
        Panel("face_fft_amplitude", "2-D FFT amplitude of the face (luma, log)", spectra.fft_log_amplitude,
              cmap="magma", colorbar_label="log |FFT|", extent=(-0.5, 0.5, -0.5, 0.5),
              xlabel="horizontal frequency (cycles/pixel)", ylabel="vertical frequency (cycles/pixel)",
              description="Hann-windowed FFT of the luma, DC at the centre. Upsampling artefacts show as bright "
              "off-centre spots repeated on a grid."),
        Panel("face_fft_phase", "2-D FFT phase of the face (luma)", spectra.fft_phase, cmap="twilight",
              limits=(-math.pi, math.pi), colorbar_label="phase (radians)", extent=(-0.5, 0.5, -0.5, 0.5),
              xlabel="horizontal frequency (cycles/pixel)", ylabel="vertical frequency (cycles/pixel)",
              description="Phase of the same FFT: it carries the face's structure and edges (cyclic colour map)."),
        _spectrum_panel(explanation),
    ]
    panels += [detector_view_panel(key, view) for key, view in explanation.views.items()]
    return panels


def _spectrum_panel(explanation: FaceExplanation) -> SpectrumPanel:
    radial, reference = explanation.spectra.radial, explanation.reference
    usable = reference is not None and len(reference.frequency) == len(radial.frequency)
    described = (
        f" against the mean of {reference.faces} real faces from {reference.source} (shaded: ± 1 standard deviation)"
        if usable else ""
    )
    return SpectrumPanel(
        key="power_spectrum",
        title="Azimuthally averaged power spectrum (luma)",
        frequency=radial.frequency,
        power_db=radial.power_db,
        reference_mean_db=reference.mean_db if usable else None,
        reference_std_db=reference.std_db if usable else None,
        reference_label=f"real faces (n = {reference.faces})" if usable else "",
        description="Mean power of each ring of equal spatial frequency" + described + ". Forged faces often "
        "carry too much or too little power at the highest frequencies.",
    )


MAX_FRAME_DISPLAY = 960


def _display_frame(frame: np.ndarray, heatmap: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Frame and heat map downscaled to at most MAX_FRAME_DISPLAY pixels wide (a figure cannot show more)."""
    from PIL import Image

    height, width = frame.shape[:2]
    step = max(1, math.ceil(width / MAX_FRAME_DISPLAY))
    if step == 1:
        return frame.astype(np.float64) / 255.0, heatmap
    size = (max(1, width // step), max(1, height // step))
    small = np.asarray(Image.fromarray(frame).resize(size, Image.Resampling.BILINEAR), dtype=np.float64) / 255.0
    heat = heatmap[:: step, :: step][: size[1], : size[0]]
    return small, heat


def explanation_header(explanation: FaceExplanation) -> tuple[str, str]:
    how = "calibrated by the weights' model card" if explanation.calibration.calibrated else "no calibration in a card"
    lines = [f"P(fake) {explanation.fake_probability:.3f} from the detector on this crop ({how})"]
    if explanation.recorded_probability is not None:
        lines[0] += f" (recorded by the scan: {explanation.recorded_probability:.3f})"
    if not explanation.trained:
        lines.append("UNTRAINED detector: random weights, so the score and the heat maps mean nothing")
    return f"deepscan explain: {explanation.method}, {explanation.label}", "\n".join(lines)


def literal_text():
    """A context in which matplotlib draws text as written. Figures carry strings from the evidence (file names):
    by default a ``$`` pair in them starts mathtext, and an unknown ``\\command`` between them (``a $\\x$.png``)
    makes the whole figure fail. Text objects keep the setting they were created under."""
    import matplotlib

    return matplotlib.rc_context({"text.parse_math": False})


def explanation_figure(explanation: FaceExplanation):
    from deepscan.report.plots import compose

    title, subtitle = explanation_header(explanation)
    with literal_text():
        return compose(title, subtitle, face_panels(explanation))


def save_explanation(explanation: FaceExplanation, out_dir: Path, prefix: str, dpi: int = 100) -> list[Path]:
    """One PNG per panel (``PREFIX_KEY.png``) and the composed figure (``PREFIX_explain.png``), last."""
    from deepscan.report.plots import save_png, single_panel_figure

    written = []
    with literal_text():
        for panel in face_panels(explanation):
            figure = single_panel_figure(panel)
            written.append(save_png(figure, out_dir / f"{prefix}_{safe_name(panel.key)}.png", dpi))
        written.append(save_png(explanation_figure(explanation), out_dir / f"{prefix}_explain.png", dpi))
    return written


def safe_name(name: str) -> str:
    """``name`` reduced to characters that are safe in a file name on every system."""
    return re.sub(r"[^A-Za-z0-9_.+-]+", "_", name).strip("_") or "file"


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


def method_figure(views: MethodViews, trained: bool):
    from deepscan.report.plots import compose

    panels = [detector_view_panel(key, view) for key, view in (views.fixed or views.example).items()]
    if views.fixed:
        shows = "what it looks at whatever the face (learned or fixed parts of the method)"
    elif views.example:
        shows = f"no part of its views is independent of the face; shown on {views.example_source}"
    else:
        shows = "it offers no frequency views"
    subtitle = f"{views.paper}\n{shows}"
    if not trained:
        subtitle += "\nUNTRAINED weights: learned parts are still at their initial values"
    return compose(f"deepscan explain: the {views.method} method", subtitle, panels, notes=views.summary)


def save_method_views(views: MethodViews, out_dir: Path, trained: bool, dpi: int = 100) -> list[Path]:
    from deepscan.report.plots import save_png, single_panel_figure

    written = []
    prefix = safe_name(views.method)
    for key, view in (views.fixed or views.example).items():
        figure = single_panel_figure(detector_view_panel(key, view))
        written.append(save_png(figure, out_dir / f"{prefix}_{safe_name(key)}.png", dpi))
    written.append(save_png(method_figure(views, trained), out_dir / f"{prefix}_method.png", dpi))
    return written


# --- faces of a recorded scan ------------------------------------------------------------------------------


def suspicious_faces(entry: dict, per_track: int = 1, max_tracks: int | None = None) -> list[dict]:
    """The most suspicious faces of one file of a report: the ``per_track`` highest-scored faces of each track,
    tracks in order of their score (highest first), at most ``max_tracks`` tracks."""
    tracks = sorted(entry.get("tracks") or [], key=lambda track: -track["score"])
    if max_tracks is not None:
        tracks = tracks[:max_tracks]
    chosen = []
    for track in tracks:
        faces = [
            face for face in entry.get("faces") or []
            if face["track_id"] == track["track_id"] and _scored(face.get("fake_probability"))
        ]
        chosen += sorted(faces, key=lambda face: -face["fake_probability"])[:per_track]
    return chosen


def _scored(probability: float | None) -> bool:
    """Faces left unscored (an interrupt) carry None in a JSON report and NaN in a live scan result."""
    return probability is not None and probability == probability


# A report on disk may come from anyone: the files it names are opened only inside these two folders, whatever
# "..", absolute paths or symbolic links it uses. Told in each refusal, so that the user knows where to stand.
REPORT_FOLDERS = "the report's folder and the working folder"


def _inside_report_folders(path: Path, report_path: Path) -> bool:
    target = os.path.realpath(path)
    for folder in (os.path.realpath(Path(report_path).parent), os.path.realpath(Path.cwd())):
        if os.path.commonpath([target, folder]) == folder:
            return True
    return False


def locate_media(recorded_path: str, report_path: Path | None = None) -> Path:
    """The recorded file as given at scan time (relative to the working folder), else beside the report. With a
    report on disk (``report_path``), a file outside :data:`REPORT_FOLDERS` is refused (ExplainError)."""
    path = Path(recorded_path)
    if report_path is None:
        return path  # a scan of this run: the paths are the user's own
    if not (path.exists() or path.is_absolute()):
        beside = report_path.parent / path
        path = beside if beside.exists() else path
    if not _inside_report_folders(path, report_path):
        raise ExplainError(
            f"{report_path}: refused: it names {recorded_path!r}, outside {REPORT_FOLDERS}; explain --from opens "
            "only files inside those (run it from a folder that holds the scanned files)"
        )
    return path


def check_report_paths(report: dict, report_path: Path) -> None:
    """Refuse, before anything is opened, a report that names any file outside :data:`REPORT_FOLDERS`."""
    for entry in report.get("files") or []:
        recorded = entry.get("path") if isinstance(entry, dict) else None
        if not isinstance(recorded, str) or not recorded:
            raise ExplainError(f"{report_path}: refused: a file entry has no path")
        locate_media(recorded, report_path)


def report_weights(report: dict, report_path: Path) -> str | None:
    """The weights a report was scanned with, to explain with the same: None for the detector's own. A report
    must not make explain fetch weights from the network or read them from elsewhere: an hf:// spec, or a file
    outside :data:`REPORT_FOLDERS`, is refused (the user may still pass them with --weights)."""
    spec = (report.get("custody", {}).get("parameters") or {}).get("weights")
    if spec is None:
        return None
    if not isinstance(spec, str) or spec.startswith("hf://") or not _inside_report_folders(Path(spec), report_path):
        raise ExplainError(
            f"{report_path}: refused: it names the weights {str(spec)!r}, from the network or outside "
            f"{REPORT_FOLDERS}; pass --weights to explain with them (or with others)"
        )
    return spec


def verify_media(entry: dict, path: Path) -> None:
    """Chain of custody: the file must be the one that was scanned, byte for byte."""
    from deepscan.runtime import sha256_file

    if not path.is_file():
        raise ExplainError(f"{path}: the scanned file is no longer there")
    expected = entry.get("sha256")
    if not isinstance(expected, str) or not re.fullmatch(r"[0-9a-fA-F]{64}", expected):
        raise ExplainError(f"{path}: the report records no sha256 for it: it cannot be shown to be the scanned file")
    if sha256_file(path) != expected.lower():
        raise ExplainError(f"{path}: the file has changed since it was scanned (sha256 differs from the report)")


def recover_frames(path: Path, kind: str, frame_indices: set[int], parameters: dict) -> dict[int, np.ndarray]:
    """The frames a scan scored, by index, decoded again with the scan's own sampling.

    A video that breaks part-way gives the frames before the break, which is all a partial scan scored.
    """
    from deepscan.media.errors import MediaError, PartialMediaError
    from deepscan.media.images import load_image
    from deepscan.media.video import iter_frames

    try:
        if kind == "image":
            return {0: load_image(path)} if 0 in frame_indices else {}
        fps = None if parameters.get("every_frame") else parameters.get("fps", 2.0)
        found: dict[int, np.ndarray] = {}
        frames = iter_frames(path, fps=fps)
        try:
            for frame in frames:
                if frame.index in frame_indices:
                    found[frame.index] = frame.image
                    if len(found) == len(frame_indices):
                        break
        except PartialMediaError:
            pass
        finally:
            frames.close()
        return found
    except MediaError as error:
        raise ExplainError(str(error)) from None


def recorded_face(face: dict) -> "Face":
    """A report's face record as the media layer's Face (crops only need its box)."""
    from deepscan.media.faces import Face

    return Face(box=tuple(face["box"]), score=float(face["detection_score"]), keypoints=np.zeros((6, 2)))


def face_label(path: Path, kind: str, face: dict) -> str:
    from deepscan.media.errors import shown_path

    name = shown_path(path.name)  # figures draw it: a byte that is not UTF-8 would fail them
    if kind == "image":
        return f"{name}, face {face['track_id']}"
    return f"{name}, track {face['track_id']} at {face['time_s']:.2f} s"


def explain_recorded_faces(
    detector: Detector,
    entry: dict,
    parameters: dict,
    *,
    per_track: int = 1,
    max_tracks: int | None = None,
    cam_method: str = "gradcam",
    trained: bool = True,
    reference: ReferenceSpectrum | None = None,
    report_path: Path | None = None,
    calibration: Calibration | None = None,
) -> Iterator[tuple[dict, FaceExplanation]]:
    """Explain the most suspicious faces of one file of a scan report, recovering their frames from the file.
    ``calibration``: the weights', as in :func:`explain_face`."""
    from deepscan.media.faces import crop_face, face_square

    faces = suspicious_faces(entry, per_track, max_tracks)
    if not faces:
        return
    path = locate_media(entry["path"], report_path)
    verify_media(entry, path)
    frames = recover_frames(path, entry["kind"], {face["frame_index"] for face in faces}, parameters)
    size = detector.config.input_size
    margin = float(parameters.get("margin", 1.3))
    for face in faces:
        frame = frames.get(face["frame_index"])
        if frame is None:
            raise ExplainError(f"{path}: frame {face['frame_index']} could not be decoded again")
        located = recorded_face(face)
        yield face, explain_face(
            detector,
            crop_face(frame, located, size, margin),
            label=face_label(path, entry["kind"], face),
            cam_method=cam_method,
            trained=trained,
            frame=frame,
            square=face_square(located, margin),
            box=tuple(face["box"]),
            reference=reference,
            recorded_probability=face.get("fake_probability"),
            calibration=calibration,
        )


# --- reports on disk ---------------------------------------------------------------------------------------


def load_report(path: Path) -> dict:
    try:
        report = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise ExplainError(f"{path}: no such report") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ExplainError(f"{path}: not a readable JSON report ({type(error).__name__})") from None
    if not isinstance(report, dict) or report.get("schema") != REPORT_SCHEMA:
        raise ExplainError(f"{path}: not a deepscan scan report (schema {REPORT_SCHEMA!r} expected)")
    # What explain reads before anything else, in the shape a scan writes it: a stranger's report that lacks it is
    # one line, not a KeyError.
    custody = report.get("custody")
    detector = custody.get("detector") if isinstance(custody, dict) else None
    if (not isinstance(detector, dict) or not isinstance(detector.get("name"), str)
            or not isinstance(custody.get("parameters"), dict) or not isinstance(report.get("files"), list)
            or not all(isinstance(entry, dict) for entry in report["files"])):
        raise ExplainError(f"{path}: not a complete scan report (custody.detector.name, custody.parameters and files "
                           "are needed)")
    return report


def find_recent_report(folder: Path) -> Path | None:
    """The newest scan report in ``folder``: its ``*.json`` files or a ``--report`` folder's ``report.json``."""
    candidates = sorted(folder.glob("*.json")) + sorted(folder.glob("*/report.json"))
    best: tuple[str, float, Path] | None = None
    for candidate in candidates:
        try:
            if candidate.stat().st_size > 200 * 1024 * 1024:  # not a report worth parsing to find out
                continue
            report = load_report(candidate)
        except (ExplainError, OSError):
            continue
        key = (str(report.get("custody", {}).get("finished_at", "")), candidate.stat().st_mtime, candidate)
        if best is None or key[:2] > best[:2]:
            best = key
    return best[2] if best else None


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
    """The decoded frame nearest to ``time_s`` (index, its time, RGB)."""
    from deepscan.media.errors import MediaError, PartialMediaError
    from deepscan.media.video import iter_frames

    previous = None
    try:
        for frame in iter_frames(path, fps=None):
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

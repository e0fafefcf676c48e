"""The panels and figures of an explanation: one face's (heat maps, spectra, the detector's views) and a method's
views without a face, one PNG per panel plus one composed figure."""

from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np

from deepscan.detectors.base import FrequencyView
from deepscan.explain import CAM_TITLES, CamResult, FaceExplanation, MethodViews
from deepscan.kept_faces import MAX_FRAME_DISPLAY, display_frame, display_step  # noqa: F401 - named here as before
from deepscan.report.plots import Panel, SpectrumPanel


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
    panels = _cam_panels(explanation)
    frame_panel = _frame_panel(explanation)
    if frame_panel is not None:
        panels.append(frame_panel)
    panels += _spectra_panels(explanation)
    panels += [detector_view_panel(key, view) for key, view in explanation.views.items()]
    return panels


def _cam_panels(explanation: FaceExplanation) -> list:
    """The face crop, its heat map of the fake score (of the real score too when that one is empty), and each
    target layer's own map when there are several."""
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
    return panels


def _frame_panel(explanation: FaceExplanation) -> Panel | None:
    """The heat map mapped back onto the frame; None when the face is not known in a frame."""
    cam_title = CAM_TITLES[explanation.cam.method]
    frame_heatmap = explanation.frame_heatmap
    if frame_heatmap is None:
        return None
    outlines = [(explanation.square, "crop square")]
    if explanation.box is not None:
        outlines.append((explanation.box, "detected face"))
    frame, heat = _display_frame(explanation.frame, frame_heatmap)
    height, width = frame_heatmap.shape[:2]  # the frame's: explanation.frame may be its display-size copy
    return Panel("frame", f"{cam_title} mapped back onto the frame", frame, overlay=heat, columns=2,
                 overlay_label=_CAM_LABEL, xlabel="x (frame pixels)", ylabel="y (frame pixels)",
                 extent=(0, width, height, 0),
                 outlines=tuple((tuple(v for v in box), text) for box, text in outlines),
                 description="The heat map placed back where the face was found: the yellow square is the crop "
                 "the detector saw, the blue dashed box the face the face detector found.")


def _spectra_panels(explanation: FaceExplanation) -> list:
    """The face's DCT, FFT amplitude and phase, and its azimuthally averaged power spectrum."""
    spectra = explanation.spectra
    return [
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


def _display_frame(frame: np.ndarray, heatmap: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Frame and heat map downscaled to at most MAX_FRAME_DISPLAY pixels wide (a figure cannot show more).
    ``heatmap`` is the frame's size; ``frame`` may already be its display-size copy (a face the scan kept)."""
    height, width = heatmap.shape[:2]
    step = display_step(width)
    small = display_frame(frame) if frame.shape[:2] == (height, width) else frame
    return small.astype(np.float64) / 255.0, heatmap[:: step, :: step][: small.shape[0], : small.shape[1]]


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

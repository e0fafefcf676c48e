"""Grad-CAM of a detector's fake logit on one face, and the map placed back onto the frame the face came from.

A class-activation map of the fake logit on each of the detector's declared target layers, through
pytorch_grad_cam (Grad-CAM, Grad-CAM++, HiResCAM, LayerCAM), one pass per layer.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn as nn

from deepscan.detectors.base import Detector
from deepscan.explain.errors import ExplainError

CAM_METHODS = ("gradcam", "gradcam++", "hirescam", "layercam")
CAM_TITLES = {"gradcam": "Grad-CAM", "gradcam++": "Grad-CAM++", "hirescam": "HiResCAM", "layercam": "LayerCAM"}


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

"""The ``openvino`` runtime: the detector converted by OpenVINO's PyTorch frontend from ``torch.export`` (its
ExportedProgram), saved as OpenVINO IR (``model.xml`` and ``model.bin``) and run by OpenVINO on the CPU in
float32.

Two other ways in were measured and refused, both giving wrong scores without an error: OpenVINO's ONNX frontend
reading the ``onnx`` runtime's file, and its TorchScript-tracing frontend, each put FAClue's logits off by 0.07-0.19
(its frequency-attention module; every step of it alone agreed to 1e-6). The torch.export route agrees to 1e-5.
OpenVINO also runs in bfloat16 by default on CPUs that have it (AVX-512 BF16, AMX), which moves P(fake) by
about 1e-2: the precision is pinned to float32, and weights are saved uncompressed (not fp16).
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from deepscan.runtimes.base import (
    MAX_BATCH,
    ExportedFileRuntime,
    RuntimeUnavailableError,
    UnsupportedDetectorError,
    exporter_reason,
    installed_versions,
    make_face_crops_input,
    probe_crops,
)

if TYPE_CHECKING:
    from deepscan.detectors.base import Detector

NAME = "openvino"
MODEL_FILE = "model.xml"
DEVICE = "CPU"


def library_versions() -> tuple[tuple[str, str], ...]:
    """What the conversion and its check depend on; raises RuntimeUnavailableError when a piece is missing."""
    return installed_versions(NAME, "torch", "openvino")


def _openvino():
    try:
        import openvino
    except ImportError:
        raise RuntimeUnavailableError(
            "runtime openvino needs openvino, which is not installed (pip install 'deepscan[runtimes]')"
        ) from None
    return openvino


def export(detector: "Detector", folder: Path, input_size: int) -> str:
    """Convert the detector, with the scan's preprocessing, to ``folder/model.xml``; returns the file name."""
    import torch

    ov = _openvino()
    module = make_face_crops_input(detector)
    example = torch.from_numpy(probe_crops(input_size))
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            program = torch.export.export(
                module, (example,), dynamic_shapes=({0: torch.export.Dim("batch", min=1, max=MAX_BATCH)},)
            )
            model = ov.convert_model(program)
            model.reshape({model.inputs[0]: ov.PartialShape([-1, input_size, input_size, 3])})
    except Exception as error:  # noqa: BLE001 - every conversion failure means: OpenVINO cannot express it
        raise UnsupportedDetectorError(
            f"OpenVINO cannot express detector {detector.config.name!r}: {exporter_reason(error)}"
        ) from None
    ov.save_model(model, str(folder / MODEL_FILE), compress_to_fp16=False)
    return MODEL_FILE


class OpenVinoRuntime(ExportedFileRuntime):
    """A converted detector compiled by OpenVINO for the CPU, in float32."""

    name = NAME

    def __init__(self, model: Path, *, input_size: int, threads: int, sha256: str | None = None,
                 check_max_abs_dp: float | None = None):
        ov = _openvino()
        super().__init__(model, input_size=input_size, sha256=sha256, check_max_abs_dp=check_max_abs_dp)
        config = {
            "INFERENCE_PRECISION_HINT": "f32",  # not the bfloat16 default of CPUs that have it: scores must hold
            "INFERENCE_NUM_THREADS": threads,  # as many as torch is set to use (OMP_NUM_THREADS holds here too)
            "PERFORMANCE_HINT": "LATENCY",  # one batch at a time, each as fast as it can go
        }
        core = ov.Core()
        self.compiled = core.compile_model(core.read_model(str(model)), DEVICE, config)
        self.library = f"openvino {dict(library_versions())['openvino']}"

    def run(self, crops: np.ndarray) -> np.ndarray:
        return self.compiled(crops)[0]

    def custody(self) -> dict:
        return {**super().custody(), "precision": "f32"}

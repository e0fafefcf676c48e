"""The ``onnx`` runtime: the detector exported with ``torch.onnx.export`` (the torch.export-based exporter,
onnxscript's translations) and run by ONNX Runtime on the CPU.

The graph takes the scan's crops as they are, ``(N, S, S, 3)`` uint8 with a dynamic batch, and returns one
fake-logit per crop; the detector's own normalisation and frequency transforms are inside it.
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

NAME = "onnx"
MODEL_FILE = "model.onnx"
OPSET = 18
INPUT_NAME = "crops"


def library_versions() -> tuple[tuple[str, str], ...]:
    """What the export and its check depend on; raises RuntimeUnavailableError when a piece is missing."""
    return installed_versions(NAME, "torch", "onnxscript", "onnx", "onnxruntime")


def export(detector: "Detector", folder: Path, input_size: int) -> str:
    """Write the detector, with the scan's preprocessing, as ``folder/model.onnx`` (weights in
    ``model.onnx.data`` beside it); returns the file name. Raises UnsupportedDetectorError when the exporter has
    no translation for one of the detector's operations."""
    import torch

    module = make_face_crops_input(detector)
    example = torch.from_numpy(probe_crops(input_size))
    batch = torch.export.Dim("batch", min=1, max=MAX_BATCH)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the exporter's notes on its own internals say nothing to the user
            torch.onnx.export(
                module, (example,), str(folder / MODEL_FILE), dynamo=True, opset_version=OPSET,
                input_names=[INPUT_NAME], output_names=["logits"], dynamic_shapes=({0: batch},),
                external_data=True, optimize=True, verbose=False,
            )
    except Exception as error:  # noqa: BLE001 - every exporter failure means: ONNX cannot express this detector
        raise UnsupportedDetectorError(
            f"ONNX cannot express detector {detector.config.name!r}: {exporter_reason(error)}"
        ) from None
    return MODEL_FILE


class OnnxRuntime(ExportedFileRuntime):
    """An exported detector in an ONNX Runtime session, on the CPU."""

    name = NAME

    def __init__(self, model: Path, *, input_size: int, threads: int, sha256: str | None = None,
                 check_max_abs_dp: float | None = None):
        try:
            import onnxruntime
        except ImportError:
            raise RuntimeUnavailableError(
                "runtime onnx needs onnxruntime, which is not installed (pip install onnxruntime)"
            ) from None
        super().__init__(model, input_size=input_size, sha256=sha256, check_max_abs_dp=check_max_abs_dp)
        options = onnxruntime.SessionOptions()
        # As many threads as torch is set to use, so that OMP_NUM_THREADS and torch.set_num_threads hold here too.
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        # Idle threads sleep instead of spinning: the scan decodes and finds faces on the same cores meanwhile.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        options.log_severity_level = 3
        self.session = onnxruntime.InferenceSession(str(model), options, providers=["CPUExecutionProvider"])
        self.library = f"onnxruntime {onnxruntime.__version__}"

    def run(self, crops: np.ndarray) -> np.ndarray:
        return self.session.run(None, {INPUT_NAME: crops})[0]

"""Face runtimes: the same detector scored by eager PyTorch, ``torch.compile``, ONNX Runtime or OpenVINO.

    runtime = load_runtime(detector, "auto", weights_sha256=resolved.sha256, input_size=224, device="cpu")
    logits = runtime.logits(crops)      # (N, S, S, 3) uint8 -> (N,) float64, as deepscan.scan.face_logits

``auto`` picks, per detector, the fastest runtime measured to keep every P(fake) within 1e-3 of eager
(:mod:`deepscan.runtimes.defaults`), and falls back to eager where that runtime cannot run. Exports are made once
per weights, checked against eager, and cached (:mod:`deepscan.runtimes.cache`); :func:`export_runtime` makes
them ahead of a scan (``deepscan export``).

Modules: ``base`` (the interface, errors, shared helpers), ``torch_runtimes`` (eager, compile), ``onnx`` and
``openvino`` (one exporter and runtime each), ``exported`` (export once, check, open), ``cache`` (the folders
on disk), ``defaults`` (the measured table), ``factory`` (by name).
"""

from deepscan.runtimes.base import (
    AUTO,
    RUNTIMES,
    CropsError,
    FaceRuntime,
    RuntimeChoiceError,
    RuntimeUnavailableError,
    UnsupportedDetectorError,
)
from deepscan.runtimes.cache import runtime_cache_dir
from deepscan.runtimes.defaults import DEFAULT_CPU_RUNTIME, default_runtime
from deepscan.runtimes.factory import EXPORT_FORMATS, export_runtime, load_runtime, runtime_custody

__all__ = [
    "AUTO",
    "DEFAULT_CPU_RUNTIME",
    "EXPORT_FORMATS",
    "RUNTIMES",
    "CropsError",
    "FaceRuntime",
    "RuntimeChoiceError",
    "RuntimeUnavailableError",
    "UnsupportedDetectorError",
    "default_runtime",
    "export_runtime",
    "load_runtime",
    "runtime_custody",
    "runtime_cache_dir",
]

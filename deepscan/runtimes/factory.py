"""Build a runtime by name (:func:`load_runtime`); fill the export cache ahead of a scan (:func:`export_runtime`)."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path
from typing import TYPE_CHECKING

from deepscan.runtimes.base import (
    AUTO,
    RUNTIMES,
    FaceRuntime,
    RuntimeChoiceError,
    RuntimeUnavailableError,
    UnsupportedDetectorError,
)
from deepscan.runtimes.defaults import default_runtime
from deepscan.runtimes.exported import FORMATS, ensure_export, open_export
from deepscan.runtimes.torch_runtimes import CompiledRuntime, EagerRuntime

if TYPE_CHECKING:
    from deepscan.detectors.base import Detector

logger = logging.getLogger(__name__)

EXPORT_FORMATS = tuple(FORMATS)  # what `deepscan export --format` takes


def load_runtime(
    detector: "Detector",
    name: str = AUTO,
    *,
    weights_sha256: str | None,
    input_size: int,
    device: str = "cpu",
    cache_dir: str | Path | None = None,
    batch_size: int = 16,
) -> FaceRuntime:
    """``detector`` ready to score crops on runtime ``name`` ("auto", "eager", "compile", "onnx", "openvino").

    ``weights_sha256`` keys the export cache (None: the detector has no weights file; its state dict is hashed);
    ``device`` is the device that runs, "cpu" or "cuda" (:func:`deepscan.runtime.select_device`); without a weights
    file ``auto`` runs eager;
    ``batch_size`` is the scan's (``compile`` compiles for it). ``auto`` runs :func:`default_runtime` and falls
    back to eager, saying why in the runtime's custody, when that cannot run here. A runtime asked for by name
    that cannot run raises a one-line error instead: RuntimeChoiceError, RuntimeUnavailableError (library
    missing, cache not writable) or UnsupportedDetectorError."""
    if name not in (AUTO, *RUNTIMES):
        raise RuntimeChoiceError(f"unknown runtime {name!r} ({', '.join((AUTO, *RUNTIMES))})")
    if name != AUTO:
        runtime = _build(detector, name, weights_sha256=weights_sha256, input_size=input_size, device=device,
                         cache_dir=cache_dir, batch_size=batch_size)
        return _chosen(runtime, requested=name)
    if weights_sha256 is None:
        # Random weights (an untrained detector, a test) would be exported, checked and cached on every run, for
        # scores that mean nothing: they run eager.
        return _chosen(EagerRuntime(detector, input_size=input_size, device=device), requested=AUTO,
                       fallback_reason="no weights file (random weights are never exported)")
    chosen = default_runtime(detector.config.name, device)
    try:
        runtime = _build(detector, chosen, weights_sha256=weights_sha256, input_size=input_size, device=device,
                         cache_dir=cache_dir, batch_size=batch_size)
    except (RuntimeUnavailableError, UnsupportedDetectorError) as error:
        logger.warning("runtime %s not used for %s, running eager: %s", chosen, detector.config.name, error)
        return _chosen(EagerRuntime(detector, input_size=input_size, device=device), requested=AUTO,
                       fallback_reason=str(error))
    return _chosen(runtime, requested=AUTO)


def _build(detector: "Detector", name: str, *, weights_sha256: str | None, input_size: int, device: str,
           cache_dir: str | Path | None, batch_size: int) -> FaceRuntime:
    import torch

    if name == "eager":
        return EagerRuntime(detector, input_size=input_size, device=device)
    if name == "compile":
        return CompiledRuntime(detector, input_size=input_size, device=device, batch_size=batch_size)
    if device != "cpu":
        raise RuntimeChoiceError(f"runtime {name} runs on the CPU only: use --device cpu, or --runtime eager")
    threads = torch.get_num_threads()  # OMP_NUM_THREADS and torch.set_num_threads hold for every runtime
    try:
        export = ensure_export(name, detector, weights_sha256=weights_sha256, input_size=input_size,
                               cache_dir=cache_dir, threads=threads)
    except OSError as error:
        raise RuntimeUnavailableError(
            f"runtime {name}: could not write its export cache ({error.strerror or error}); "
            "set DEEPSCAN_CACHE to a writable folder"
        ) from None
    return open_export(name, export, input_size=input_size, threads=threads)


def _chosen(runtime: FaceRuntime, *, requested: str, fallback_reason: str | None = None) -> FaceRuntime:
    """Record on the runtime what was asked for, and why another runs, for its custody."""
    runtime.requested = requested
    runtime.fallback_reason = fallback_reason
    return runtime


def runtime_custody(runtime: FaceRuntime) -> dict:
    """What a scan report records of the runtime that scored: its own custody, what was asked for, and the
    reason ``auto`` fell back to eager (None when it did not)."""
    return {**runtime.custody(), "requested": runtime.requested, "fallback_reason": runtime.fallback_reason}


def export_runtime(method: str, weights: str | Path | None = None, fmt: str = "onnx", out: str | Path | None = None,
                   *, cache_dir: str | Path | None = None) -> Path:
    """Export detector ``method`` (its own weights, or ``weights``: a path or hf:// spec) for runtime ``fmt``
    into the export cache, so that the first scan does not pay for it; with ``out``, also copy the exported
    files into that folder. Returns the main exported file (``model.onnx``, ``model.xml``), in ``out`` when
    given. Raises one-line errors: WeightsError, RuntimeChoiceError, RuntimeUnavailableError,
    UnsupportedDetectorError."""
    import torch

    from deepscan.weights import build_detector

    if fmt not in FORMATS:
        raise RuntimeChoiceError(f"unknown export format {fmt!r} ({', '.join(FORMATS)})")
    FORMATS[fmt].library_versions()  # a missing library is said before the detector is built
    detector, resolved = build_detector(method, weights)
    try:
        export = ensure_export(fmt, detector.eval(), weights_sha256=resolved.sha256,
                               input_size=detector.config.input_size, cache_dir=cache_dir,
                               threads=torch.get_num_threads())
    except OSError as error:
        raise RuntimeUnavailableError(
            f"could not write the export cache ({error.strerror or error}); set DEEPSCAN_CACHE to a writable folder"
        ) from None
    if out is None:
        return export.path
    target = Path(out)
    try:
        target.mkdir(parents=True, exist_ok=True)
        for name in (*export.files, "manifest.json"):
            shutil.copy2(export.folder / name, target / name)
    except OSError as error:
        raise RuntimeUnavailableError(f"{target}: cannot write the export there ({error.strerror or error})") from None
    return target / export.main

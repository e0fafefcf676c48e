"""What every face runtime is: crops in, one fake-logit per crop out, and what a report records of it.

A runtime takes face crops exactly as the scan cuts them, ``(N, S, S, 3)`` uint8 RGB, and returns the detector's
fake-logit per crop as float64, the same numbers :func:`deepscan.scan.face_logits` returns for eager PyTorch.
Runtimes that run an exported graph carry the uint8 -> [0, 1] float and NHWC -> NCHW steps inside the graph
(:class:`FaceCropsInput`), so they are computed the same way everywhere: ``float(crop) / 255``, then the detector.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import re
from pathlib import Path
from typing import TYPE_CHECKING, Protocol, runtime_checkable

import numpy as np

from deepscan.errors import DeepscanError

if TYPE_CHECKING:
    import torch

    from deepscan.detectors.base import Detector

RUNTIMES = ("eager", "compile", "onnx", "openvino")
AUTO = "auto"
MAX_BATCH = 4096  # exported graphs take batches of 1 to this many crops


class RuntimeChoiceError(DeepscanError, ValueError):
    """A runtime name deepscan does not know, or one that cannot run on the device asked for."""


class RuntimeUnavailableError(DeepscanError):
    """The library a runtime needs is not installed."""


class UnsupportedDetectorError(DeepscanError):
    """A runtime that cannot express a detector: its exporter has no translation for one of the detector's
    operations, or the exported graph does not give the detector's scores. ``auto`` falls back to eager then."""


class CropsError(DeepscanError, ValueError):
    """Crops that are not what a runtime takes: ``(N, S, S, 3)`` uint8 at the detector's input size."""


@runtime_checkable
class FaceRuntime(Protocol):
    """One detector, ready to score face crops on one runtime."""

    name: str  # "eager", "compile", "onnx" or "openvino": the runtime that actually runs
    requested: str | None  # what load_runtime was asked for ("auto", or a runtime's name)
    fallback_reason: str | None  # why auto runs eager instead of its default; None when it does not

    def logits(self, crops: np.ndarray) -> np.ndarray:
        """``(N, S, S, 3)`` uint8 RGB crops -> the fake-logit per crop, ``(N,)`` float64."""
        ...

    def custody(self) -> dict:
        """What a scan report records of this runtime (name, library and version, exported file and its sha256)."""
        ...


class ChosenRuntime:
    """What :func:`deepscan.runtimes.load_runtime` records on every runtime it returns, for its custody."""

    requested: str | None = None
    fallback_reason: str | None = None


class ExportedFileRuntime(ChosenRuntime):
    """A detector exported to a file and run by another library on the CPU: what the onnx and openvino runtimes
    share. Subclasses open ``model`` and implement :meth:`run` on checked, non-empty crops."""

    name: str
    library: str  # "<library> <version>", for the custody

    def __init__(self, model: Path, *, input_size: int, sha256: str | None, check_max_abs_dp: float | None):
        self.model, self.input_size, self.sha256 = model, input_size, sha256
        self.check_max_abs_dp = check_max_abs_dp  # its P(fake) against eager's on the probe crops, when exported

    def run(self, crops: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def logits(self, crops: np.ndarray) -> np.ndarray:
        crops = check_crops(crops, self.input_size)
        if len(crops) == 0:
            return np.zeros(0, dtype=np.float64)
        return np.asarray(self.run(crops), dtype=np.float64)

    def custody(self) -> dict:
        return {"name": self.name, "library": self.library, "device": "cpu", "model": str(self.model),
                "model_sha256": self.sha256, "check_max_abs_dp": self.check_max_abs_dp}


def check_crops(crops: np.ndarray, input_size: int) -> np.ndarray:
    """``crops`` as a C-contiguous ``(N, S, S, 3)`` uint8 array, or a one-line :class:`CropsError`."""
    crops = np.asarray(crops)
    if crops.dtype != np.uint8 or crops.ndim != 4 or crops.shape[1:] != (input_size, input_size, 3):
        raise CropsError(
            f"face crops must be (N, {input_size}, {input_size}, 3) uint8 RGB, got {crops.shape} {crops.dtype}"
        )
    return np.ascontiguousarray(crops)


def make_face_crops_input(detector: "Detector") -> "torch.nn.Module":
    """The detector behind the scan's own preprocessing, for exporters: uint8 NHWC crops -> fake-logits."""
    import torch

    class FaceCropsInput(torch.nn.Module):
        def __init__(self, inner: "Detector"):
            super().__init__()
            self.detector = inner

        def forward(self, crops: torch.Tensor) -> torch.Tensor:
            # The same steps, in the same order, as deepscan.scan.face_logits: permute, float, divide by 255.
            return self.detector(crops.permute(0, 3, 1, 2).float().div(255))

    return FaceCropsInput(detector).eval()


def state_dict_sha256(detector: "Detector") -> str:
    """A digest of the detector's weights (names, dtypes, shapes, values): the cache key of detectors that have
    no weights file (untrained, random), so that two different random draws never share an export."""
    import torch

    digest = hashlib.sha256()
    for name, tensor in sorted(detector.state_dict().items()):
        value = tensor.detach().cpu().contiguous().view(-1)
        digest.update(f"{name}|{value.dtype}|{tuple(tensor.shape)}\n".encode())
        digest.update(value.view(torch.uint8).numpy().tobytes())  # the raw bytes, whatever the dtype
    return digest.hexdigest()


def probe_crops(input_size: int, count: int = 2) -> np.ndarray:
    """Fixed, seeded crops for checking an export against eager: smooth gradients with mild noise (faces are not
    needed to catch a graph that computes something else; every runtime sees the same numbers)."""
    rng = np.random.default_rng(20240615)
    ramp = np.linspace(0.0, 1.0, input_size)
    crops = []
    for index in range(count):
        base = np.stack([np.outer(ramp, 1 - ramp), np.outer(1 - ramp, ramp), np.outer(ramp, ramp)], axis=-1)
        noisy = 0.15 + 0.7 * np.roll(base, index * 7, axis=(0, 1)) + rng.normal(0.0, 0.04, base.shape)
        crops.append(np.clip(noisy * 255.0, 0, 255).astype(np.uint8))
    return np.stack(crops)


def max_probability_gap(logits: np.ndarray, reference: np.ndarray) -> float:
    """Largest ``|sigmoid(a) - sigmoid(b)|`` over two logit arrays: how far apart two runtimes put P(fake)."""
    return float(np.max(np.abs(_sigmoid(np.asarray(logits)) - _sigmoid(np.asarray(reference))), initial=0.0))


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * x.astype(np.float64)))  # tanh form: no overflow for large |x|


def installed_versions(runtime: str, *packages: str) -> tuple[tuple[str, str], ...]:
    """(package, version) of each of ``packages``; a one-line :class:`RuntimeUnavailableError` naming the first
    that is not installed."""
    try:
        return tuple((package, importlib.metadata.version(package)) for package in packages)
    except importlib.metadata.PackageNotFoundError as error:
        raise RuntimeUnavailableError(
            f"runtime {runtime} needs {error.name}, which is not installed (pip install {error.name})"
        ) from None


def exporter_reason(error: BaseException) -> str:
    """An exporter's failure in a few words: the PyTorch operation it has no translation for, when it names one."""
    text = str(error)
    missing = re.search(r"No ONNX function found for <OpOverload\(op='([\w.]+)', overload='(\w+)'\)>", text)
    if missing:
        return f"no ONNX translation for the PyTorch operation {missing.group(1)}.{missing.group(2)}"
    unconverted = re.search(r"No conversion rule found for operations: ([\w.]+(?:, [\w.]+)*)", text)
    if unconverted:
        return f"no OpenVINO conversion rule for the PyTorch operation {unconverted.group(1)}"
    failed = re.search(r"Failed operations detailed log:\s*-- ([\w.]+)", text)
    if failed:
        return f"OpenVINO failed to convert the PyTorch operation {failed.group(1)}"
    summary = next((line.strip() for line in text.splitlines() if line.strip().startswith("<class")), "")
    return " ".join((summary or text or type(error).__name__).split())[:240]

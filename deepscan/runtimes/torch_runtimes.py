"""The PyTorch runtimes: ``eager`` (the detector as it is, channels-last, under inference mode) and ``compile``
(the same module through ``torch.compile``, Inductor generating C++ kernels with gcc on the CPU)."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Callable

import numpy as np

from deepscan.runtimes.base import (
    ChosenRuntime,
    UnsupportedDetectorError,
    check_crops,
    max_probability_gap,
    probe_crops,
)

if TYPE_CHECKING:
    import torch

    from deepscan.detectors.base import Detector

# torch.compile must give the scores eager gives: the same bound the exported runtimes are held to.
COMPILE_TOLERANCE = 1e-3


def eager_logits(forward: Callable[["torch.Tensor"], "torch.Tensor"], crops: np.ndarray,
                 device: "torch.device") -> np.ndarray:
    """``(N, S, S, 3)`` uint8 crops through ``forward`` (a detector on ``device``, or its compiled form) -> its
    fake-logits as float64: the scan's one way of feeding a PyTorch detector (``deepscan.scan.face_logits``)."""
    import torch

    # A read-only array (a decoded image is one) is copied: torch refuses to share memory it could write to.
    batch = torch.from_numpy(np.ascontiguousarray(crops) if crops.flags.writeable else np.array(crops))
    # To a GPU the uint8 crops (a quarter of the bytes of floats) are copied from page-locked memory, which lets
    # the copy run asynchronously; the result's copy back waits for it.
    batch = batch.pin_memory().to(device, non_blocking=True) if device.type == "cuda" else batch.to(device)
    batch = batch.permute(0, 3, 1, 2).float().div_(255)
    with torch.inference_mode():
        logits = forward(batch)
    return logits.float().cpu().numpy().astype(np.float64)


class EagerRuntime(ChosenRuntime):
    """Today's path: the detector itself, channels-last, in inference mode."""

    name = "eager"

    def __init__(self, detector: "Detector", *, input_size: int, device: str = "cpu"):
        import torch

        self.input_size = input_size
        self.device = torch.device(device)
        # Channels-last suits the convolution kernels (measured 1.3-1.9x on FAClue on the CPU); the crops arrive
        # channels-last already, being a permuted (N, H, W, 3) array.
        self.detector = detector.to(self.device, memory_format=torch.channels_last).eval()

    def logits(self, crops: np.ndarray) -> np.ndarray:
        crops = check_crops(crops, self.input_size)
        if len(crops) == 0:
            return np.zeros(0, dtype=np.float64)
        return eager_logits(self._forward, crops, self.device)

    def _forward(self, batch: "torch.Tensor") -> "torch.Tensor":
        return self.detector(batch)

    def custody(self) -> dict:
        import torch

        return {"name": self.name, "library": f"torch {torch.__version__}", "device": self.device.type}


class CompiledRuntime(EagerRuntime):
    """``torch.compile`` of the channels-last detector, with Inductor's freezing (weights folded into the graph,
    convolution weights pre-packed for oneDNN: the CPU inference setting PyTorch recommends).

    Batches are padded to ``batch_size`` (and longer ones cut into pieces of that size) so that one compiled
    graph serves every batch: each new batch size would otherwise compile again, tens of seconds each, and after
    eight torch.compile gives up and runs eager. The detector is compiled when the runtime is built, on probe
    crops, and its logits there are checked against eager's; ``compile_s`` records how long that took.
    """

    name = "compile"

    def __init__(self, detector: "Detector", *, input_size: int, device: str = "cpu", batch_size: int = 16):
        import torch

        super().__init__(detector, input_size=input_size, device=device)
        self.batch_size = batch_size
        probe = probe_crops(input_size)
        reference = EagerRuntime(self.detector, input_size=input_size, device=device).logits(probe)
        self._compiled = torch.compile(self.detector, dynamic=False, options={"freezing": True})
        started = time.perf_counter()
        try:
            compiled = self.logits(probe)
        except Exception as error:  # noqa: BLE001 - whatever Dynamo or Inductor fails on, one line for the user
            reason = " ".join(str(error).split())[:200]
            raise UnsupportedDetectorError(
                f"torch.compile cannot compile detector {detector.config.name!r} ({type(error).__name__}: {reason})"
            ) from None
        self.compile_s = time.perf_counter() - started
        self.check_gap = max_probability_gap(compiled, reference)
        if not self.check_gap <= COMPILE_TOLERANCE:
            raise UnsupportedDetectorError(
                f"torch.compile changes the scores of detector {detector.config.name!r} "
                f"(P(fake) off by {self.check_gap:.2g} on probe crops)"
            )

    def _forward(self, batch: "torch.Tensor") -> "torch.Tensor":
        import torch

        pieces = []
        for start in range(0, len(batch), self.batch_size):
            piece = batch[start : start + self.batch_size]
            count = len(piece)
            if count < self.batch_size:  # repeat the last crop: each crop's logit depends on that crop only
                piece = torch.cat([piece, piece[-1:].expand(self.batch_size - count, -1, -1, -1)])
            piece = piece.contiguous(memory_format=torch.channels_last)  # the strides the graph was compiled for
            pieces.append(self._compiled(piece)[:count])
        return torch.cat(pieces)

    def custody(self) -> dict:
        return {**super().custody(), "batch_size": self.batch_size, "compile_s": round(self.compile_s, 3),
                "check_max_abs_dp": self.check_gap}

"""How a scan runs its detectors on the device: numeric precision and the batch size.

- **Precision** (``ScanOptions.precision``): ``auto`` is bfloat16 autocast on a CUDA GPU that supports bfloat16,
  and float32 everywhere else (on the CPU, bfloat16 rarely pays and shifts scores); ``fp32``, ``bf16`` and ``fp16``
  ask for one. Autocast lowers the precision of convolutions and matrix products only; the weights stay float32,
  and deepscan.frequency's transforms switch autocast off and run in float32 whatever is asked (a DCT in bfloat16
  loses the finest bands, where forgeries leave their traces).
- **Batch size** (``ScanOptions.batch_size``): the user's when given. Else 16 on the CPU (larger batches gain
  nothing there). Else, on CUDA, measured: a probe batch of ``PROBE_FACES`` faces gives each detector's peak memory
  per face, and the batch is the largest power of two, at most ``MAX_GPU_BATCH_SIZE``, whose faces fit in
  ``GPU_MEMORY_SHARE`` of the memory free at the start (the rest is left to other processes, to the allocator's
  fragmentation and to the kernels' workspaces).
"""

from __future__ import annotations

import contextlib
import math
from typing import TYPE_CHECKING, Callable, ContextManager

import numpy as np

from deepscan.errors import DeepscanError

if TYPE_CHECKING:
    import torch

PRECISIONS = ("auto", "fp32", "bf16", "fp16")
CPU_BATCH_SIZE = 16
MAX_GPU_BATCH_SIZE = 256  # beyond this a GPU gains little, and each batch's faces wait longer for their scores
GPU_MEMORY_SHARE = 0.5
PROBE_FACES = 8


class PrecisionError(DeepscanError, ValueError):
    """A precision that is unknown, or that the device cannot run; one line for the user."""


def autocast_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    """The dtype to autocast to on ``device`` for ``precision``; None: float32, no autocast."""
    import torch

    if precision not in PRECISIONS:
        raise PrecisionError(f"unknown precision {precision!r} (auto, fp32, bf16 or fp16)")
    on_cuda = device.type == "cuda"
    if precision == "fp32" or (precision == "auto" and not on_cuda):
        return None
    if precision == "auto":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else None
    if precision == "bf16" and on_cuda and not torch.cuda.is_bf16_supported():
        raise PrecisionError("precision bf16 asked for, but this GPU does not support bfloat16 (use fp16 or fp32)")
    return torch.bfloat16 if precision == "bf16" else torch.float16


def autocast(device: torch.device, dtype: torch.dtype | None) -> ContextManager:
    """Autocast to ``dtype`` on ``device``'s type (nothing when ``dtype`` is None). Autocast is per thread: enter
    it in the thread that runs the detector."""
    if dtype is None:
        return contextlib.nullcontext()
    import torch

    return torch.autocast(device_type=device.type, dtype=dtype)


def gpu_batch_size(free_bytes: int, bytes_per_face: int) -> int:
    """The largest power of two, from 1 to ``MAX_GPU_BATCH_SIZE``, whose faces fit in ``GPU_MEMORY_SHARE`` of
    ``free_bytes``."""
    fitting = int(GPU_MEMORY_SHARE * free_bytes // max(bytes_per_face, 1))
    if fitting < 1:
        return 1
    return min(MAX_GPU_BATCH_SIZE, 2 ** int(math.log2(fitting)))


def peak_bytes_per_face(score: Callable[[np.ndarray], object], input_size: int, device: torch.device) -> int:
    """Peak CUDA memory ``score`` (crops ``(N, S, S, 3)`` uint8 -> scores) takes per face, measured on a probe
    batch of ``PROBE_FACES`` grey faces. Fixed costs are counted as if per face, which errs on the safe side."""
    import torch

    probe = np.full((PROBE_FACES, input_size, input_size, 3), 128, dtype=np.uint8)
    torch.cuda.synchronize(device)
    torch.cuda.reset_peak_memory_stats(device)
    before = torch.cuda.memory_allocated(device)
    score(probe)
    torch.cuda.synchronize(device)
    return max(1, math.ceil((torch.cuda.max_memory_allocated(device) - before) / PROBE_FACES))


def free_gpu_bytes(device: torch.device) -> int:
    """Memory this process can still use on ``device``: the GPU's free memory plus what torch's caching allocator
    holds without using it."""
    import torch

    free, _total = torch.cuda.mem_get_info(device)
    return int(free + torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device))

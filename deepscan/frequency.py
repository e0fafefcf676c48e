"""Frequency transforms shared by every detector: YCbCr, DCT/IDCT (global, block-wise, sliding) and patch FFT.

All functions take batched tensors ``(B, C, H, W)``, are differentiable and run on any device.
The DCT is the orthonormal type-II DCT (``scipy.fft.dctn(norm="ortho")``), computed as matrix
products so that it is exact, fast for the small sizes used on face crops, and free of FFT
round-trip error.

Every transform runs in float32 even under autocast: in bfloat16 (8 mantissa bits) a 224-point DCT puts
errors of up to ~10 % into the finest bands, which are exactly where forgeries leave their traces.
"""

from __future__ import annotations

import functools
import math

import torch
import torch.nn.functional as F

# ITU-R BT.601 full range (JPEG) for pixels in [0, 1]; chroma centred on 0.5.
_RGB_TO_YCBCR = torch.tensor(
    [
        [0.299, 0.587, 0.114],
        [-0.168736, -0.331264, 0.5],
        [0.5, -0.418688, -0.081312],
    ]
)
_YCBCR_OFFSET = torch.tensor([0.0, 0.5, 0.5])


def in_float32(transform):
    """Run ``transform`` with autocast off and low-precision float inputs raised to float32."""

    @functools.wraps(transform)
    def wrapper(x: torch.Tensor, *args, **kwargs):
        if x.is_floating_point() and x.dtype in (torch.float16, torch.bfloat16):
            x = x.float()
        with torch.autocast(device_type=x.device.type, enabled=False):
            return transform(x, *args, **kwargs)

    return wrapper


@in_float32
def rgb_to_ycbcr(x: torch.Tensor) -> torch.Tensor:
    """RGB in [0, 1] -> YCbCr in [0, 1] (BT.601 full range), channel-first."""
    matrix = _RGB_TO_YCBCR.to(x)
    offset = _YCBCR_OFFSET.to(x).view(1, 3, 1, 1)
    return torch.einsum("ij,bjhw->bihw", matrix, x) + offset


@in_float32
def ycbcr_to_rgb(x: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`rgb_to_ycbcr`."""
    inverse = torch.linalg.inv(_RGB_TO_YCBCR).to(x)
    offset = _YCBCR_OFFSET.to(x).view(1, 3, 1, 1)
    return torch.einsum("ij,bjhw->bihw", inverse, x - offset)


def rgb_to_gray(x: torch.Tensor) -> torch.Tensor:
    """Luma (BT.601) of an RGB batch, keeping a channel axis of size 1."""
    return rgb_to_ycbcr(x)[:, :1]


def dct_matrix(n: int, *, device=None, dtype=torch.float32) -> torch.Tensor:
    """Orthonormal DCT-II matrix ``D`` with ``D @ x`` = ``scipy.fft.dct(x, norm="ortho")``."""
    k = torch.arange(n, dtype=torch.float64).unsqueeze(1)
    i = torch.arange(n, dtype=torch.float64).unsqueeze(0)
    matrix = torch.cos(math.pi * (2 * i + 1) * k / (2 * n)) * math.sqrt(2.0 / n)
    matrix[0] /= math.sqrt(2.0)
    return matrix.to(device=device, dtype=dtype)


@in_float32
def dct2(x: torch.Tensor) -> torch.Tensor:
    """2-D orthonormal DCT-II over the last two axes (the whole image)."""
    rows = dct_matrix(x.shape[-2], device=x.device, dtype=x.dtype)
    cols = dct_matrix(x.shape[-1], device=x.device, dtype=x.dtype)
    return rows @ x @ cols.T


@in_float32
def idct2(x: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`dct2` (the DCT-III, orthonormal)."""
    rows = dct_matrix(x.shape[-2], device=x.device, dtype=x.dtype)
    cols = dct_matrix(x.shape[-1], device=x.device, dtype=x.dtype)
    return rows.T @ x @ cols


def to_patches(x: torch.Tensor, patch: int) -> torch.Tensor:
    """``(B, C, H, W)`` -> ``(B, C, H/p, W/p, p, p)`` non-overlapping patches (H, W divisible by p)."""
    b, c, h, w = x.shape
    if h % patch or w % patch:
        raise ValueError(f"image size {h}x{w} is not a multiple of the patch size {patch}")
    return x.reshape(b, c, h // patch, patch, w // patch, patch).permute(0, 1, 2, 4, 3, 5)


def from_patches(patches: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`to_patches`."""
    b, c, gh, gw, p, q = patches.shape
    return patches.permute(0, 1, 2, 4, 3, 5).reshape(b, c, gh * p, gw * q)


@in_float32
def block_dct2(x: torch.Tensor, block: int) -> torch.Tensor:
    """DCT of each non-overlapping ``block x block`` patch, stitched back in place (JPEG-style)."""
    return from_patches(dct2(to_patches(x, block)))


@in_float32
def block_idct2(x: torch.Tensor, block: int) -> torch.Tensor:
    """Inverse of :func:`block_dct2`."""
    return from_patches(idct2(to_patches(x, block)))


@in_float32
def sliding_dct2(x: torch.Tensor, window: int = 8, stride: int = 2) -> torch.Tensor:
    """DCT of every ``window x window`` sliding window, one output channel per (input channel, band).

    Returns ``(B, C * window**2, H', W')`` where channel ``c * window**2 + u * window + v`` holds the
    coefficient of band (u, v) of input channel c, and ``H' = (H - window) // stride + 1``.
    One ``unfold`` plus one matrix product: no loop over windows.
    """
    b, c, h, w = x.shape
    basis = dct_matrix(window, device=x.device, dtype=x.dtype)
    # kron(D, D) maps a row-major flattened window to its row-major flattened 2-D DCT.
    basis2d = torch.kron(basis, basis)
    windows = F.unfold(x, kernel_size=window, stride=stride)  # (B, C*k*k, L), channel-major
    windows = windows.view(b, c, window * window, -1)
    bands = torch.einsum("fk,bckl->bcfl", basis2d, windows)
    out_h = (h - window) // stride + 1
    out_w = (w - window) // stride + 1
    return bands.reshape(b, c * window * window, out_h, out_w)


@in_float32
def patch_fft2(x: torch.Tensor, patch: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Amplitude and phase of the 2-D DFT of each non-overlapping patch.

    Returns two tensors ``(B, C, H/p, W/p, p, p)``.
    """
    spectrum = torch.fft.fft2(to_patches(x, patch))
    return spectrum.abs(), spectrum.angle()


def log_magnitude(coefficients: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """``log(|c| + eps)``: the usual way to look at a spectrum's dynamic range."""
    return torch.log(coefficients.abs() + eps)

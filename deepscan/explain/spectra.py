"""The face's own spectra: global DCT log-magnitude of Y, Cb and Cr, 2-D FFT amplitude and phase of the luma, and
the azimuthally averaged power spectrum, against a reference of real faces when one is given."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from deepscan.explain.errors import ExplainError
from deepscan.frequency import dct2, log_magnitude, rgb_to_ycbcr


@dataclass
class RadialSpectrum:
    frequency: np.ndarray  # cycles per pixel, 1/S .. 1/2
    power_db: np.ndarray  # 10 log10 of each ring's mean power over the total power


@dataclass
class ReferenceSpectrum:
    """Mean and spread of the radial spectra of real faces, to compare a suspect face against."""

    frequency: np.ndarray
    mean_db: np.ndarray
    std_db: np.ndarray
    faces: int
    source: str


def azimuthal_power_spectrum(gray: np.ndarray) -> RadialSpectrum:
    """Power of a square grey image's 2-D FFT averaged over rings of equal spatial frequency.

    The image's mean is removed and a Hann window applied first: a crop's opposite edges do not meet, and
    the FFT would otherwise see that jump as a strong cross of high frequencies that hides the face's own
    fall-off, which is where generators and upsampling leave their trace. Power is given in dB relative to
    the total, so that brightness and contrast do not shift the curve.
    """
    gray = np.asarray(gray, dtype=np.float64)
    size = gray.shape[0]
    if gray.ndim != 2 or gray.shape[1] != size:
        raise ValueError(f"expected a square grey image, got shape {gray.shape}")
    window = np.outer(np.hanning(size), np.hanning(size))
    power = np.abs(np.fft.fftshift(np.fft.fft2((gray - gray.mean()) * window))) ** 2
    frequencies = np.fft.fftshift(np.fft.fftfreq(size))
    radius = np.hypot(frequencies[:, None], frequencies[None, :])
    rings = np.rint(radius * size).astype(int)
    counts = np.bincount(rings.ravel())
    sums = np.bincount(rings.ravel(), weights=power.ravel())
    kept = np.arange(1, size // 2 + 1)  # ring 0 is the removed mean; beyond 1/2 only the corners remain
    ring_power = sums[kept] / np.maximum(counts[kept], 1)
    total = max(float(power.sum()), 1e-30)
    return RadialSpectrum(frequency=kept / size, power_db=10.0 * np.log10(np.maximum(ring_power, 1e-30) / total))


@dataclass
class FaceSpectra:
    dct_log: np.ndarray  # (3, S, S): log |DCT| of Y, Cb, Cr
    fft_log_amplitude: np.ndarray  # (S, S), DC at the centre
    fft_phase: np.ndarray  # (S, S) radians, DC at the centre
    radial: RadialSpectrum


def face_spectra(face: torch.Tensor) -> FaceSpectra:
    """The spectra of one face ``(1, 3, S, S)`` in [0, 1]; the FFTs are of the luma (Y)."""
    face = face.detach().float().cpu()
    ycbcr = rgb_to_ycbcr(face)
    dct_log = log_magnitude(dct2(ycbcr))[0].numpy()
    luma = ycbcr[0, 0].numpy().astype(np.float64)
    size = luma.shape[0]
    window = np.outer(np.hanning(size), np.hanning(luma.shape[1]))
    spectrum = np.fft.fftshift(np.fft.fft2((luma - luma.mean()) * window))
    return FaceSpectra(
        dct_log=dct_log,
        fft_log_amplitude=np.log(np.abs(spectrum) + 1e-6),
        fft_phase=np.angle(spectrum),
        radial=azimuthal_power_spectrum(luma),
    )


def reference_spectrum(faces: list[torch.Tensor], source: str) -> ReferenceSpectrum:
    """Radial spectra of real faces ``(1, 3, S, S)`` (all of one size) summarised as mean and standard deviation."""
    if not faces:
        raise ExplainError(f"{source}: no real face to build a reference spectrum from")
    curves = [face_spectra(face).radial for face in faces]
    if len({len(curve.frequency) for curve in curves}) != 1:
        raise ExplainError(f"{source}: reference faces must all have the same size")
    stacked = np.stack([curve.power_db for curve in curves])
    return ReferenceSpectrum(curves[0].frequency, stacked.mean(0), stacked.std(0), len(faces), source)

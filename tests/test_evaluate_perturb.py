"""Each perturbation changes the image by the amount its strength says."""

import numpy as np
import pytest

from deepscan.evaluate import perturb
from deepscan.evaluate.perturb import PERTURBATIONS, PerturbationError, apply_perturbation, parse_perturb_spec

GREY = np.full((64, 64, 3), 128, dtype=np.uint8)


def textured(size=64, seed=0):
    """A smooth face-like gradient plus fine texture: something for blur and compression to remove."""
    y, x = np.mgrid[0:size, 0:size] / size
    base = 60 + 120 * (0.5 * x + 0.5 * y)
    texture = np.random.default_rng(seed).normal(0, 20, (size, size))
    image = np.stack([base + texture, base * 0.9 + texture, base * 0.8 + texture], axis=-1)
    return np.clip(np.rint(image), 0, 255).astype(np.uint8)


def mse(a, b):
    return float(np.mean((a.astype(float) - b.astype(float)) ** 2))


@pytest.mark.parametrize("std", [5.0, 20.0])
def test_gaussian_noise_has_the_asked_standard_deviation(std):
    out = perturb.gaussian_noise(GREY, std, np.random.default_rng(0))
    assert np.std(out.astype(float) - 128) == pytest.approx(std, rel=0.05)


@pytest.mark.parametrize("amount", [0.01, 0.1])
def test_salt_and_pepper_hits_the_asked_share_of_pixels(amount):
    image = np.zeros((200, 200, 3), np.uint8) + 128
    out = perturb.salt_pepper(image, amount, np.random.default_rng(0))
    changed = (out != 128).any(axis=-1)
    assert changed.mean() == pytest.approx(amount, rel=0.15)
    assert set(np.unique(out[changed])) <= {0, 255}
    assert (out[changed] == 255).mean() == pytest.approx(0.5, abs=0.1)


@pytest.mark.parametrize("sigma", [1.0, 3.0])
def test_gaussian_blur_spreads_an_edge_by_sigma(sigma):
    # The derivative of a blurred step is the Gaussian kernel: its standard deviation is sigma.
    image = np.zeros((64, 64, 3), np.uint8)
    image[:, 32:] = 255
    profile = perturb.gaussian_blur(image, sigma, None)[32, :, 0].astype(float)
    derivative = np.diff(profile)
    position = np.arange(len(derivative)) + 0.5
    centre = np.sum(position * derivative) / derivative.sum()
    spread = np.sqrt(np.sum((position - centre) ** 2 * derivative) / derivative.sum())
    assert spread == pytest.approx(sigma, rel=0.1)


def test_jpeg_error_grows_as_quality_falls():
    image = textured()
    errors = [mse(image, perturb.jpeg(image, q, None)) for q in (95, 70, 30, 10)]
    assert errors == sorted(errors) and errors[0] > 0
    assert perturb.jpeg(image, 50, None).shape == image.shape


@pytest.mark.parametrize("factor", [0.85, 0.35])
def test_contrast_scales_the_spread_around_the_mean(factor):
    image = textured()
    out = perturb.contrast(image, factor, None)
    assert out.astype(float).std() == pytest.approx(factor * image.astype(float).std(), rel=0.02)
    assert out.astype(float).mean() == pytest.approx(image.astype(float).mean(), abs=0.5)


@pytest.mark.parametrize("block", [2, 4, 8])
def test_pixelation_makes_blocks_of_the_asked_side(block):
    image = textured()
    out = perturb.pixelation(image, block, None)
    assert out.shape == image.shape
    cells = out.reshape(64 // block, block, 64 // block, block, 3)
    assert (cells == cells[:, :1, :, :1]).all()  # every pixel equals its block's corner
    # ...and each block holds the mean colour of the original block (BOX resampling).
    original = image.reshape(64 // block, block, 64 // block, block, 3).astype(float).mean(axis=(1, 3))
    assert np.abs(cells[:, 0, :, 0].astype(float) - original).max() <= 1.0


def test_h264_crf_40_destroys_more_than_crf_23():
    image = textured()
    light, heavy = perturb.h264(image, 23, None), perturb.h264(image, 40, None)
    assert light.shape == heavy.shape == image.shape and light.dtype == np.uint8
    assert 0 < mse(image, light) < mse(image, heavy)


def test_random_perturbations_repeat_with_the_same_seed():
    image = textured()
    assert (apply_perturbation(image, "gaussian_noise", 10, seed=5) == apply_perturbation(image, "gaussian_noise", 10, seed=5)).all()
    assert (apply_perturbation(image, "gaussian_noise", 10, seed=5) != apply_perturbation(image, "gaussian_noise", 10, seed=6)).any()
    assert apply_perturbation(image, "none", 0, seed=0) is image


def test_every_registered_perturbation_keeps_shape_and_type():
    image = textured(48)
    for item in PERTURBATIONS.values():
        out = item.apply(image, item.levels[-1], np.random.default_rng(0))
        assert out.shape == image.shape and out.dtype == np.uint8, item.name
        assert mse(image, out) > 0, item.name


def test_perturb_specs():
    everything = parse_perturb_spec("all")
    assert ("h264", 23.0) in everything and ("h264", 40.0) in everything
    assert {name for name, _ in everything} == set(PERTURBATIONS)
    assert parse_perturb_spec("jpeg") == [("jpeg", level) for level in PERTURBATIONS["jpeg"].levels]
    assert parse_perturb_spec("gaussian_blur:1,2.5") == [("gaussian_blur", 1.0), ("gaussian_blur", 2.5)]
    for bad in ("sharpen", "jpeg:high", "jpeg:-3"):
        with pytest.raises(PerturbationError):
            parse_perturb_spec(bad)

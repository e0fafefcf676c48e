import numpy as np
import pytest
import scipy.fft
import torch

from deepscan import frequency


@pytest.fixture
def image():
    torch.manual_seed(0)
    return torch.rand(2, 3, 32, 48, dtype=torch.float64)


def test_dct2_matches_scipy(image):
    expected = scipy.fft.dctn(image.numpy(), axes=(-2, -1), norm="ortho")
    np.testing.assert_allclose(frequency.dct2(image).numpy(), expected, atol=1e-10)


def test_idct2_inverts_dct2(image):
    torch.testing.assert_close(frequency.idct2(frequency.dct2(image)), image)


def test_block_dct2_matches_scipy_per_block(image):
    coefficients = frequency.block_dct2(image, 16).numpy()
    block = image[1, 2, 16:32, 32:48].numpy()
    np.testing.assert_allclose(coefficients[1, 2, 16:32, 32:48], scipy.fft.dctn(block, norm="ortho"), atol=1e-10)
    torch.testing.assert_close(frequency.block_idct2(frequency.block_dct2(image, 16), 16), image)


def test_block_dct2_rejects_sizes_that_do_not_tile(image):
    with pytest.raises(ValueError, match="multiple of the patch size"):
        frequency.block_dct2(image, 7)


def test_sliding_dct2_matches_windows(image):
    bands = frequency.sliding_dct2(image, window=8, stride=2)
    assert bands.shape == (2, 3 * 64, (32 - 8) // 2 + 1, (48 - 8) // 2 + 1)
    row, col, channel = 3, 5, 1
    window = image[0, channel, 2 * row : 2 * row + 8, 2 * col : 2 * col + 8].numpy()
    expected = scipy.fft.dctn(window, norm="ortho").reshape(-1)
    np.testing.assert_allclose(bands[0, channel * 64 : (channel + 1) * 64, row, col].numpy(), expected, atol=1e-10)


def test_ycbcr_round_trip_and_known_values():
    white = torch.ones(1, 3, 2, 2)
    ycbcr = frequency.rgb_to_ycbcr(white)
    torch.testing.assert_close(ycbcr[0, :, 0, 0], torch.tensor([1.0, 0.5, 0.5]), atol=1e-5, rtol=0)
    rgb = torch.rand(2, 3, 8, 8)
    torch.testing.assert_close(frequency.ycbcr_to_rgb(frequency.rgb_to_ycbcr(rgb)), rgb, atol=1e-5, rtol=0)


def test_patch_fft2_matches_numpy(image):
    amplitude, phase = frequency.patch_fft2(image, 16)
    assert amplitude.shape == (2, 3, 2, 3, 16, 16)
    patch = image[0, 0, 16:32, 0:16].numpy()
    spectrum = np.fft.fft2(patch)
    np.testing.assert_allclose(amplitude[0, 0, 1, 0].numpy(), np.abs(spectrum), atol=1e-10)
    np.testing.assert_allclose(phase[0, 0, 1, 0].numpy(), np.angle(spectrum), atol=1e-10)


def test_transforms_are_differentiable(image):
    x = image.clone().requires_grad_(True)
    frequency.sliding_dct2(frequency.block_dct2(frequency.dct2(x), 8)).sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0



@pytest.mark.parametrize("name", ["dct2", "idct2", "sliding_dct2"])  # block_dct2 is dct2 on patches
def test_transforms_run_in_float32_under_bfloat16_autocast(name):
    transform = getattr(frequency, name)
    args = {"sliding_dct2": (8, 2)}.get(name, ())
    x = torch.rand(2, 3, 64, 64)
    with torch.autocast(device_type="cpu", dtype=torch.bfloat16):
        guarded = transform(x.bfloat16(), *args)
        unguarded = transform.__wrapped__(x.bfloat16(), *args)
    assert guarded.dtype == torch.float32
    # Guarded, only the input's rounding to bfloat16 remains; the transform adds no error of its own.
    torch.testing.assert_close(guarded, transform(x.bfloat16().float(), *args), atol=1e-5, rtol=1e-5)
    exact = transform(x, *args)
    assert (unguarded.float() - exact).abs().max() > 2 * (guarded - exact).abs().max()

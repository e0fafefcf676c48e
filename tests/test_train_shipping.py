"""Shipping a run: fp16 weights that keep their metadata, and the reliable range read off degraded faces."""

import numpy as np
import torch
from PIL import Image
from safetensors import safe_open
from safetensors.torch import save_file

from deepscan.reliability import face_sharpness
from deepscan.media.synthetic import portrait
from deepscan.train.shipping import as_if_face_px, blurred, last_reliable, to_fp16_safetensors


def test_fp16_weights_keep_metadata_and_integer_buffers(tmp_path):
    source, target = tmp_path / "run.safetensors", tmp_path / "ship.safetensors"
    state = {"conv.weight": torch.randn(4, 3, 3, 3), "bn.num_batches_tracked": torch.tensor(7)}
    save_file(state, str(source), metadata={"detector": "faclue", "input_size": "160"})
    to_fp16_safetensors(source, target)
    with safe_open(str(target), "pt") as handle:
        assert handle.metadata()["detector"] == "faclue" and handle.metadata()["input_size"] == "160"
        assert handle.get_tensor("conv.weight").dtype == torch.float16
        assert handle.get_tensor("bn.num_batches_tracked").dtype == torch.int64
        torch.testing.assert_close(handle.get_tensor("conv.weight").float(), state["conv.weight"], atol=2e-3, rtol=1e-3)
    assert target.stat().st_size < 0.7 * source.stat().st_size


def test_smaller_and_blurrier_faces_lose_sharpness_as_a_scan_would_see():
    crop = np.asarray(Image.fromarray(portrait()).resize((160, 160)))
    by_size = [face_sharpness(as_if_face_px(crop[None], size, 1.3)[0]) for size in (128, 64, 32)]
    by_blur = [face_sharpness(blurred(crop[None], sigma)[0]) for sigma in (0.5, 1.5, 3.0)]
    assert by_size == sorted(by_size, reverse=True) and by_blur == sorted(by_blur, reverse=True)


def test_the_reliable_range_stops_at_the_first_degradation_that_fails():
    rows = [  # mildest first
        {"face_px": 128, "auc": 0.95, "fpr": 0.04},
        {"face_px": 64, "auc": 0.93, "fpr": 0.06},
        {"face_px": 48, "auc": 0.80, "fpr": 0.05},  # AUC fell by more than 0.05: not reliable
        {"face_px": 32, "auc": 0.94, "fpr": 0.05},  # a lucky point past a failure is not trusted
    ]
    assert last_reliable(rows, 0.96, "face_px", 256) == 64
    rows[1]["fpr"] = 0.2  # too many false alarms fails too
    assert last_reliable(rows, 0.96, "face_px", 256) == 128
    assert last_reliable([{"face_px": 128, "auc": None, "fpr": 0.0}], 0.96, "face_px", 256) == 256

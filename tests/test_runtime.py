"""The shared rules of deepscan.runtime (hashes, device, whole-file writes, caches) and deepscan.errors."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys

import pytest
import torch

from deepscan import runtime
from deepscan.errors import EXIT_INCOMPLETE, EXIT_USAGE, DeepscanError
from deepscan.media.files import file_sha256


def test_files_and_media_hash_with_the_same_loop(tmp_path):
    data = os.urandom(3 * 1024 + 5)
    path = tmp_path / "clip.mp4"
    path.write_bytes(data)
    expected = hashlib.sha256(data).hexdigest()
    assert runtime.sha256_file(path, chunk_size=1024) == expected
    assert file_sha256(path, chunk_size=1024) == (expected, len(data))


def test_select_device_names_the_setting_the_user_gave(monkeypatch):
    assert runtime.select_device("cpu") == "cpu"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert runtime.select_device("auto") == "cpu"
    with pytest.raises(runtime.DeviceError, match="^--device cuda asked for, but PyTorch sees no CUDA device$"):
        runtime.select_device("cuda")
    with pytest.raises(DeepscanError, match="^device: cuda asked for"):
        runtime.select_device("cuda", setting="device:")
    with pytest.raises(ValueError, match=r"^unknown device 'tpu' \(auto, cpu or cuda\)$"):
        runtime.select_device("tpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert runtime.select_device("auto") == runtime.select_device("cuda") == "cuda"


@pytest.mark.parametrize("concurrent", [False, True])
def test_atomic_write_takes_bytes_text_or_a_writer_and_leaves_no_temporary(tmp_path, concurrent):
    path = tmp_path / "card.json"
    runtime.atomic_write(path, b"one", concurrent=concurrent)
    assert path.read_bytes() == b"one"
    runtime.atomic_write(path, "twö", concurrent=concurrent)
    assert path.read_bytes() == "twö".encode("utf-8")
    runtime.atomic_write(path, lambda handle: handle.write(b"three"), concurrent=concurrent)
    assert path.read_bytes() == b"three"

    def fails(handle):
        handle.write(b"half")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        runtime.atomic_write(path, fails, concurrent=concurrent)
    assert path.read_bytes() == b"three"
    assert [p.name for p in tmp_path.iterdir()] == ["card.json"]


def test_the_caches_live_under_deepscan_cache_else_the_xdg_cache(monkeypatch, tmp_path):
    monkeypatch.setenv("DEEPSCAN_CACHE", str(tmp_path / "mine"))
    assert runtime.cache_root() == tmp_path / "mine"
    assert runtime.face_cache_dir() == tmp_path / "mine" / "faces"
    assert runtime.score_cache_path() == tmp_path / "mine" / "scores.sqlite"
    assert runtime.face_cache_dir(tmp_path / "given") == tmp_path / "given" / "faces"
    monkeypatch.delenv("DEEPSCAN_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert runtime.cache_root() == tmp_path / "xdg" / "deepscan"


def test_runtime_and_errors_import_no_heavy_library():
    probe = "import sys, deepscan.runtime, deepscan.errors; print('torch' in sys.modules, 'numpy' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60)
    assert result.stdout.split() == ["False", "False"], result.stderr


def test_every_user_facing_error_is_a_deepscan_error_and_keeps_its_builtin_base():
    from deepscan.calibration import CalibrationError
    from deepscan.data.sources import DataError
    from deepscan.detectors import UnknownDetectorError
    from deepscan.detectors.ralf import PerceptualNetworkError
    from deepscan.ensemble import EnsembleError
    from deepscan.evaluate.perturb import PerturbationError
    from deepscan.evaluate.samples import EvaluationError
    from deepscan.explain import ExplainError
    from deepscan.media.errors import MediaError, PartialMediaError
    from deepscan.media.faces import FaceModelError
    from deepscan.model_card import ModelCardError
    from deepscan.detectors.pretrained import PretrainedError
    from deepscan.train.recipe import RecipeError
    from deepscan.train.trainer import TrainingError
    from deepscan.weights import IntegrityError, WeightsError, WeightsUnavailableError

    bases = {
        CalibrationError: ValueError, ModelCardError: ValueError, PerturbationError: ValueError,
        EvaluationError: ValueError, RecipeError: ValueError, DataError: ValueError, PretrainedError: ValueError,
        PerceptualNetworkError: ValueError, runtime.DeviceError: ValueError, UnknownDetectorError: KeyError,
        FaceModelError: RuntimeError, EnsembleError: Exception, ExplainError: Exception, TrainingError: Exception,
        WeightsError: Exception, IntegrityError: Exception, WeightsUnavailableError: Exception,
        MediaError: Exception, PartialMediaError: Exception,
    }
    for error, builtin in bases.items():
        assert issubclass(error, DeepscanError) and issubclass(error, builtin), error
    assert str(UnknownDetectorError("unknown detector 'x'")) == "unknown detector 'x'"  # not KeyError's quotes
    assert MediaError("a.mp4", "empty file").exit_code == EXIT_INCOMPLETE  # input that could not be read
    assert WeightsError("x").exit_code == EXIT_USAGE

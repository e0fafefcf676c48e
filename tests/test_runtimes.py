"""Face runtimes (deepscan.runtimes): every default keeps the scores, exports are cached, checked and refused.

The runtimes that ``auto`` picks on the CPU are checked against eager on real crops of the synthetic portraits
(shipped weights where a detector has them, random weights at a small input otherwise); the cache and the errors
are checked on tiny detectors, whose exports take a second. Exports go to a temporary cache, never ~/.cache.
"""

from __future__ import annotations

import dataclasses
import importlib.metadata
import json

import numpy as np
import pytest
import torch
import torch.nn as nn

from deepscan.detectors.base import Detector, DetectorConfig
from deepscan.errors import DeepscanError
from deepscan.runtimes import (
    DEFAULT_CPU_RUNTIME,
    RUNTIMES,
    CropsError,
    RuntimeChoiceError,
    RuntimeUnavailableError,
    UnsupportedDetectorError,
    default_runtime,
    export_runtime,
    load_runtime,
    runtime_custody,
)
from deepscan.runtimes import exported
from deepscan.runtimes.base import FaceRuntime, state_dict_sha256
from deepscan.runtimes.cache import MANIFEST

pytestmark = pytest.mark.usefixtures("one_intra_op_thread")

FIVE_DETECTORS = ("faclue", "sficonv", "pel", "mclcr", "ralf")
TOLERANCE = 1e-3  # the bound on |P(fake) - P(fake) eager| every default must keep
# Random-weight detectors are built small, to keep exports quick: the layers that make each detector what it is
# (RALF's DCT destructor and reconstructor) at a small input, with a small classifier trunk.
SMALL_BUILDS = {"ralf": {"image_size": 64, "width": 8, "blocks_per_scale": 1, "backbone": "mobilenetv2_100"},
                "pel": {"backbone": "efficientnet_b0"}, "mclcr": {"image_size": 64}}
SMALL_SIZES = {"ralf": 64, "pel": 64, "mclcr": 64}
DEFAULTS = sorted((name, runtime) for name, runtime in DEFAULT_CPU_RUNTIME.items() if runtime != "eager")


@pytest.fixture(autouse=True)
def no_user_cache(tmp_path, monkeypatch):
    """Whatever a test forgets to point elsewhere lands in its own folder, never in ~/.cache/deepscan."""
    monkeypatch.setenv("DEEPSCAN_CACHE", str(tmp_path / "deepscan-cache"))


# --- real crops of the synthetic portraits -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def portrait_faces():
    """(image, face) for each face MediaPipe finds in the two synthetic portraits."""
    from deepscan.media.faces import FaceDetector
    from deepscan.media.synthetic import portrait, second_portrait

    found = []
    with FaceDetector() as finder:
        for image in (portrait(), second_portrait()):
            found.extend((image, face) for face in finder.detect(image))
    assert len(found) >= 2
    return found


def face_crops(portrait_faces, size: int) -> np.ndarray:
    """Crops as the scan cuts them, at three margins, and mirrored: 12 or more faces."""
    from deepscan.media.faces import crop_face

    crops = [crop_face(image, face, size, margin) for image, face in portrait_faces for margin in (1.1, 1.3, 1.6)]
    crops += [crop[:, ::-1] for crop in crops]
    return np.ascontiguousarray(np.stack(crops))


def build(name: str):
    """The detector as the scan would run it (shipped weights), or small with seeded random weights."""
    from deepscan.calibration import Calibration
    from deepscan.detectors import create_detector, get_config
    from deepscan.weights import build_detector, weights_status

    if weights_status(get_config(name)) == "shipped":
        detector, resolved = build_detector(name)
        return detector.eval(), resolved.sha256, resolved.calibration
    torch.manual_seed(0)
    detector = create_detector(name, **SMALL_BUILDS[name]).eval()
    detector.config = dataclasses.replace(detector.config, input_size=SMALL_SIZES[name])
    return detector, state_dict_sha256(detector), Calibration()  # as if saved: auto exports weights files only


@pytest.mark.parametrize(("name", "runtime_name"), DEFAULTS, ids=[f"{n}-{r}" for n, r in DEFAULTS])
def test_each_cpu_default_keeps_every_score_within_1e3_of_eager(name, runtime_name, portrait_faces, tmp_path):
    detector, sha256, calibration = build(name)
    size = detector.config.input_size
    crops = face_crops(portrait_faces, size)
    eager = load_runtime(detector, "eager", weights_sha256=sha256, input_size=size)
    runtime = load_runtime(detector, "auto", weights_sha256=sha256, input_size=size, cache_dir=tmp_path)

    assert (runtime.name, runtime.fallback_reason) == (runtime_name, None)  # auto did not fall back
    gap = np.abs(calibration.probability(runtime.logits(crops)) - calibration.probability(eager.logits(crops)))
    assert gap.max() <= TOLERANCE, f"{name} on {runtime_name}: P(fake) off by {gap.max():.2g}"


def test_every_detector_has_a_cpu_default_and_cuda_runs_eager():
    assert set(DEFAULT_CPU_RUNTIME) == set(FIVE_DETECTORS)
    assert set(DEFAULT_CPU_RUNTIME.values()) <= set(RUNTIMES)
    assert all(default_runtime(name, "cuda") == "eager" for name in FIVE_DETECTORS)
    assert default_runtime("a-detector-nobody-measured", "cpu") == "eager"


def test_eager_is_the_scans_own_scoring(portrait_faces):
    """The eager runtime gives exactly what deepscan.scan.face_logits gives today."""
    from deepscan.scan import face_logits

    detector, sha256, _ = build("sficonv")
    crops = face_crops(portrait_faces, detector.config.input_size)
    runtime = load_runtime(detector, "eager", weights_sha256=sha256, input_size=detector.config.input_size)
    logits = runtime.logits(crops)
    assert logits.dtype == np.float64 and logits.shape == (len(crops),)
    np.testing.assert_array_equal(logits, face_logits(detector, crops))


# --- tiny detectors: cache, checks, errors --------------------------------------------------------------------------


class TinyConv(Detector):
    """A conv, a ReLU and a linear head; with ``median``, a 3x3 median filter that ONNX has no operator for."""

    def __init__(self, median: bool = False, seed: int = 0):
        super().__init__()
        self.config = DetectorConfig(name="tiny_median" if median else "tiny_conv", paper="test", input_size=24)
        generator = torch.Generator().manual_seed(seed)
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.head = nn.Linear(4, 1)
        with torch.no_grad():
            for parameter in self.parameters():
                parameter.copy_(torch.randn(parameter.shape, generator=generator))
        self.median = median

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = torch.relu(self.conv(self.normalize(x)))
        if self.median:
            windows = features.unfold(2, 3, 1).unfold(3, 3, 1)
            features = windows.flatten(-2).median(dim=-1).values
        return self.head(features.mean(dim=(2, 3))).squeeze(1)


@pytest.fixture
def crops24() -> np.ndarray:
    return np.random.default_rng(1).integers(0, 256, (5, 24, 24, 3), dtype=np.uint8)


@pytest.fixture(scope="module")
def real_onnx_export(tmp_path_factory):
    """TinyConv (seed 0) exported for real, once for the module: the export's folder."""
    cache = tmp_path_factory.mktemp("real-export")
    return load_runtime(TinyConv(), "onnx", weights_sha256=None, input_size=24, cache_dir=cache).model.parent


def copy_export(made, folder) -> str:
    import shutil

    for path in made.iterdir():
        if path.name != MANIFEST:
            shutil.copy(path, folder / path.name)
    return "model.onnx"


@pytest.fixture
def export_calls(monkeypatch, real_onnx_export) -> dict[str, int]:
    """Counts the ONNX exports a test makes. Each is a copy of the module's real export of TinyConv (the cache,
    not the exporter, is under test), or a real export for any other detector."""
    from deepscan.runtimes.base import state_dict_sha256

    calls = {"onnx": 0}
    fmt = exported.FORMATS["onnx"]
    tiny = state_dict_sha256(TinyConv())

    def counting(detector, folder, input_size):
        calls["onnx"] += 1
        if state_dict_sha256(detector) == tiny:
            return copy_export(real_onnx_export, folder)
        return fmt.export(detector, folder, input_size)

    monkeypatch.setitem(exported.FORMATS, "onnx", dataclasses.replace(fmt, export=counting))
    return calls


def load(detector, name, cache, sha256=None):
    return load_runtime(detector, name, weights_sha256=sha256, input_size=detector.config.input_size, cache_dir=cache)


def manifest_of(runtime) -> dict:
    return json.loads((runtime.model.parent / MANIFEST).read_text())


def test_exported_tiny_detector_matches_eager_and_records_its_custody(real_onnx_export, crops24, tmp_path):
    detector = TinyConv()
    runtime = load(detector, "onnx", tmp_path)
    eager = load(detector, "eager", tmp_path)

    assert isinstance(runtime, FaceRuntime)
    np.testing.assert_allclose(runtime.logits(crops24), eager.logits(crops24), atol=1e-5)
    assert runtime.logits(crops24[:0]).shape == (0,)
    custody = runtime_custody(runtime)
    assert custody["name"] == custody["requested"] == "onnx" and custody["library"].startswith("onnxruntime ")
    assert custody["fallback_reason"] is None and custody["check_max_abs_dp"] <= TOLERANCE
    assert custody["model_sha256"] == manifest_of(runtime)["files"]["model.onnx"]


def test_openvino_runs_the_tiny_detector_as_eager_does(crops24, tmp_path):
    detector = TinyConv()
    runtime = load(detector, "openvino", tmp_path)  # a real conversion, through torch.export

    np.testing.assert_allclose(runtime.logits(crops24), load(detector, "eager", tmp_path).logits(crops24), atol=1e-5)
    custody = runtime_custody(runtime)
    assert custody["name"] == "openvino" and custody["precision"] == "f32" and custody["library"].startswith("openvino")
    assert custody["model_sha256"] == manifest_of(runtime)["files"]["model.xml"]


def test_second_load_reuses_the_export(export_calls, tmp_path):
    first = load(TinyConv(), "onnx", tmp_path)
    stamp = (first.model.parent / MANIFEST).stat().st_mtime_ns
    second = load(TinyConv(), "onnx", tmp_path)  # same weights, another detector object (another scan)

    assert export_calls["onnx"] == 1
    assert second.model == first.model and (second.model.parent / MANIFEST).stat().st_mtime_ns == stamp


def test_other_weights_are_exported_anew(export_calls, tmp_path):
    first = load(TinyConv(), "onnx", tmp_path, sha256="ab" * 32)
    other_file = load(TinyConv(), "onnx", tmp_path, sha256="cd" * 32)

    assert export_calls["onnx"] == 2 and first.model != other_file.model


def test_detectors_without_a_weights_file_are_keyed_by_their_weights():
    """Two random draws (or a detector changed in memory) never share an export."""
    def key(detector, size=24):
        return exported.export_key("onnx", detector, weights_sha256=None, input_size=size).folder_name()

    assert key(TinyConv(seed=0)) == key(TinyConv(seed=0))
    assert len({key(TinyConv(seed=0)), key(TinyConv(seed=1)), key(TinyConv(seed=0), size=32)}) == 3


@pytest.mark.parametrize("damage", ["weights byte", "model truncated", "model missing", "manifest garbled",
                                    "manifest of other weights"])
def test_a_damaged_export_is_exported_again_not_used(damage, export_calls, crops24, tmp_path):
    runtime = load(TinyConv(), "onnx", tmp_path)
    folder = runtime.model.parent
    if damage == "weights byte":
        target = max(folder.iterdir(), key=lambda path: path.stat().st_size)  # the weights, wherever they are
        data = bytearray(target.read_bytes())
        data[len(data) // 2] ^= 0xFF
        target.write_bytes(bytes(data))
    elif damage == "model truncated":
        runtime.model.write_bytes(runtime.model.read_bytes()[:100])
    elif damage == "model missing":
        runtime.model.unlink()
    elif damage == "manifest garbled":
        (folder / MANIFEST).write_text("{not json")
    else:
        manifest = manifest_of(runtime)
        manifest["key_digest"] = "0" * 64
        (folder / MANIFEST).write_text(json.dumps(manifest))

    again = load(TinyConv(), "onnx", tmp_path)
    assert export_calls["onnx"] == 2
    assert again.model == runtime.model and manifest_of(again)["key_digest"] != "0" * 64
    np.testing.assert_allclose(again.logits(crops24), load(TinyConv(), "eager", tmp_path).logits(crops24), atol=1e-5)


def test_a_detector_onnx_cannot_express_is_a_clear_error_and_auto_runs_eager(monkeypatch, crops24, tmp_path):
    from deepscan.runtimes import defaults

    detector = TinyConv(median=True)
    with pytest.raises(UnsupportedDetectorError) as caught:
        load(detector, "onnx", tmp_path)  # a real export attempt: the exporter has no median
    message = str(caught.value)
    assert isinstance(caught.value, DeepscanError) and "\n" not in message
    assert "ONNX cannot express detector 'tiny_median'" in message and "median" in message

    calls = []
    monkeypatch.setitem(exported.FORMATS, "onnx", dataclasses.replace(
        exported.FORMATS["onnx"], export=lambda *args: calls.append(args)))
    monkeypatch.setitem(defaults.DEFAULT_CPU_RUNTIME, "tiny_median", "onnx")
    runtime = load(detector, "auto", tmp_path, sha256=state_dict_sha256(detector))
    assert (runtime.name, runtime.fallback_reason) == ("eager", message)
    assert runtime_custody(runtime)["requested"] == "auto"
    assert calls == []  # the failure was recorded: no scan tries the export again
    np.testing.assert_array_equal(runtime.logits(crops24), load(detector, "eager", tmp_path).logits(crops24))


def test_an_export_that_changes_the_scores_is_refused_and_recorded(monkeypatch, real_onnx_export, tmp_path):
    """A converter that silently computes something else (OpenVINO's ONNX frontend did, on FAClue) is caught by
    the check against eager on the probe crops, and recorded."""
    calls = []

    def wrong_graph(detector, folder, input_size):
        calls.append(detector)
        return copy_export(real_onnx_export, folder)  # seed 0's graph for seed 1's detector

    monkeypatch.setitem(exported.FORMATS, "onnx", dataclasses.replace(exported.FORMATS["onnx"], export=wrong_graph))
    for _ in range(2):
        with pytest.raises(UnsupportedDetectorError, match="onnx changes the scores of detector 'tiny_conv'"):
            load(TinyConv(seed=1), "onnx", tmp_path)
    assert len(calls) == 1


@pytest.mark.parametrize(("message", "reason"), [
    ("ConversionError ... No ONNX function found for <OpOverload(op='aten.median', overload='dim')>. Failure",
     "no ONNX translation for the PyTorch operation aten.median.dim"),
    ("Check 'false' failed at src/frontends/x.cpp:151: FrontEnd API failed with OpConversionFailure: Model wasn't "
     "fully converted. Summary: -- No conversion rule found for operations: aten.median.dim",
     "no OpenVINO conversion rule for the PyTorch operation aten.median.dim"),
    ("Model wasn't fully converted. Failed operations detailed log: -- aten._to_copy.default with a message:\nx",
     "OpenVINO failed to convert the PyTorch operation aten._to_copy.default"),
])
def test_exporter_failures_are_said_in_a_few_words(message, reason):
    from deepscan.runtimes.base import exporter_reason

    assert exporter_reason(RuntimeError(message)) == reason


def test_a_missing_library_says_what_to_install_and_auto_runs_eager(monkeypatch, tmp_path):
    from deepscan.runtimes import defaults

    version = importlib.metadata.version

    def without_openvino(package):
        if package == "openvino":
            raise importlib.metadata.PackageNotFoundError(package)
        return version(package)

    monkeypatch.setattr(importlib.metadata, "version", without_openvino)
    monkeypatch.setitem(defaults.DEFAULT_CPU_RUNTIME, "tiny_conv", "openvino")
    with pytest.raises(RuntimeUnavailableError, match=r"needs openvino, which is not installed \(pip install"):
        load(TinyConv(), "openvino", tmp_path)
    tiny = TinyConv()
    runtime = load(tiny, "auto", tmp_path, sha256=state_dict_sha256(tiny))
    assert runtime.name == "eager" and "openvino" in runtime.fallback_reason


def test_auto_never_exports_random_weights(monkeypatch, tmp_path):
    from deepscan.runtimes import defaults

    monkeypatch.setitem(defaults.DEFAULT_CPU_RUNTIME, "tiny_conv", "onnx")
    runtime = load(TinyConv(), "auto", tmp_path)  # no weights file: an untrained detector
    assert runtime.name == "eager" and "random weights" in runtime.fallback_reason
    assert not any(tmp_path.rglob("*.onnx"))


def test_unknown_runtime_exported_runtime_on_cuda_and_bad_crops_are_one_line_errors(tmp_path, crops24):
    detector = TinyConv()
    with pytest.raises(RuntimeChoiceError, match="unknown runtime 'tensorrt'"):
        load(detector, "tensorrt", tmp_path)
    with pytest.raises(RuntimeChoiceError, match="runs on the CPU only"):
        load_runtime(detector, "onnx", weights_sha256=None, input_size=24, device="cuda", cache_dir=tmp_path)
    runtime = load(detector, "eager", tmp_path)
    for bad in (crops24.astype(np.float32), crops24[:, :20], crops24[0]):
        with pytest.raises(CropsError, match=r"face crops must be \(N, 24, 24, 3\) uint8"):
            runtime.logits(bad)


def test_compile_matches_eager_on_any_batch_size(crops24, tmp_path):
    detector = TinyConv()
    compiled = load_runtime(detector, "compile", weights_sha256=None, input_size=24, batch_size=4)
    eager = load(detector, "eager", tmp_path)
    many = np.concatenate([crops24, crops24])  # 10 crops: two full batches of 4 and one padded
    np.testing.assert_allclose(compiled.logits(many), eager.logits(many), atol=1e-5)
    assert runtime_custody(compiled)["compile_s"] > 0


def test_export_command_fills_the_cache_the_scan_then_uses(shipped, export_calls, tmp_path):
    """``deepscan export`` ahead of a scan: the scan's load finds the export and does not make it again."""
    from deepscan.weights import build_detector

    shipped.add("tiny_a", logit=0.5)
    path = export_runtime("tiny_a", fmt="onnx", out=tmp_path / "out", cache_dir=tmp_path / "cache")
    detector, resolved = build_detector("tiny_a")
    runtime = load_runtime(detector, "onnx", weights_sha256=resolved.sha256, input_size=32,
                           cache_dir=tmp_path / "cache")

    assert path == tmp_path / "out" / "model.onnx" and (tmp_path / "out" / MANIFEST).is_file()
    assert export_calls["onnx"] == 1
    assert runtime.logits(np.zeros((2, 32, 32, 3), np.uint8)) == pytest.approx([0.5, 0.5], abs=1e-6)
    with pytest.raises(RuntimeChoiceError, match="unknown export format 'tflite'"):
        export_runtime("tiny_a", fmt="tflite", cache_dir=tmp_path / "cache")

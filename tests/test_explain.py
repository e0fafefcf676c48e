"""`deepscan explain`: CAMs for every detector, heat maps back on the frame, spectra, method views, figures, CLI."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
import torch.nn as nn
from PIL import Image
from typer.testing import CliRunner

from deepscan.cli import app
from deepscan.detectors.base import Detector, DetectorConfig
from deepscan.explain import (
    CAM_METHODS,
    ExplainError,
    azimuthal_power_spectrum,
    compute_cam,
    crop_tensor,
    explain_face,
    face_spectra,
    heatmap_to_frame,
    method_views,
    parse_timestamp,
    reference_spectrum,
    suspicious_faces,
)
from deepscan.report.figures import face_panels, save_explanation
from deepscan.detectors import create_detector, list_detectors
from deepscan.media.faces import Face, FaceDetector, crop_face, face_square

SIZE = 64
# Heavy detectors at test size; every other registered detector is built with its defaults and runs at SIZE.
SMALL_KWARGS = {
    "ralf": dict(image_size=SIZE, width=8, blocks_per_scale=1, discriminator_width=8),
    "mclcr": dict(image_size=SIZE),
    "pel": dict(backbone="efficientnet_b0"),
}
PAPER_METHODS = {"faclue", "pel", "sficonv", "mclcr", "ralf"}

runner = CliRunner()


pytestmark = pytest.mark.usefixtures("one_intra_op_thread")


@pytest.fixture(scope="module")
def detectors():
    """Registered detectors, built on first use and shared by the tests of this module."""
    built: dict[str, Detector] = {}

    def get(name: str) -> Detector:
        if name not in built:
            torch.manual_seed(0)
            built[name] = create_detector(name, **SMALL_KWARGS.get(name, {})).eval()
        return built[name]

    return get


@pytest.fixture(scope="module")
def portrait_face(portrait_image):
    """The portrait's face (public domain), found by the face detector, cropped to SIZE."""
    with FaceDetector(tile=False) as finder:
        face = finder.detect(portrait_image)[0]
    return crop_face(portrait_image, face, SIZE)


# --- Grad-CAM -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", list_detectors())
def test_cam_for_every_registered_detector_is_a_real_map(name, detectors, portrait_face):
    detector = detectors(name)
    face = crop_tensor(portrait_face)
    cam = compute_cam(detector, face)
    assert set(cam.layers) == set(detector.config.cam_target_layers) & {n for n, _ in detector.named_modules()}
    with torch.no_grad():
        expected_logit = float(detector(face))
    assert cam.fake_logit == pytest.approx(expected_logit, rel=1e-3, abs=1e-3)
    if cam.is_empty:
        # Nothing raises the fake score (the untrained detector leans "real"): then the map of the real score
        # must hold what the fake one lacked. Either way, a constant map means the CAM is broken.
        cam = compute_cam(detector, face, target="real")
    assert cam.heatmap.shape == (SIZE, SIZE)
    assert np.isfinite(cam.heatmap).all()
    assert cam.heatmap.min() >= 0.0 and cam.heatmap.max() == pytest.approx(1.0)
    assert cam.heatmap.std() > 0.02, f"{name}: the CAM is constant"


@pytest.mark.parametrize("method", CAM_METHODS)
def test_every_cam_method_runs_on_a_two_stream_detector(method, detectors, portrait_face):
    cam = compute_cam(detectors("faclue"), crop_tensor(portrait_face), method)
    assert cam.method == method
    assert len(cam.layers) == 2  # RGB and frequency streams, one pass each
    assert all(layer.shape == (SIZE, SIZE) for layer in cam.layers.values())


class SpotDetector(Detector):
    """A toy detector whose fake score is the amount of saturated red: its CAM must point at the red."""

    config = DetectorConfig(name="spot", paper="test", input_size=SIZE, cam_target_layers=("features",))

    def __init__(self):
        super().__init__()
        conv = nn.Conv2d(3, 4, kernel_size=4, stride=4)
        with torch.no_grad():
            conv.weight.zero_()
            conv.weight[:, 0] = 1.0  # red in
            conv.weight[:, 1:] = -1.0  # green and blue out
            conv.bias.fill_(-4.0)
        self.features = nn.Sequential(conv, nn.ReLU())

    def forward(self, x):
        return self.features(x).mean(dim=(1, 2, 3)) - 0.01


def test_cam_points_at_the_evidence_and_maps_back_to_it_in_the_frame():
    frame = np.full((240, 320, 3), 128, dtype=np.uint8)
    frame[60:80, 200:220] = (255, 0, 0)  # the "evidence", inside the face's square
    face = Face(box=(150.0, 40.0, 250.0, 140.0), score=0.9, keypoints=np.zeros((6, 2)))
    detector = SpotDetector().eval()
    cam = compute_cam(detector, crop_tensor(crop_face(frame, face, SIZE)))
    assert not cam.is_empty
    placed = heatmap_to_frame(cam.heatmap, face_square(face), frame.shape)
    peak_y, peak_x = np.unravel_index(np.nanargmax(placed), placed.shape)
    assert 60 - 8 <= peak_y < 80 + 8 and 200 - 8 <= peak_x < 220 + 8
    x0, y0, x1, y1 = (int(v) for v in face_square(face))
    covered = ~np.isnan(placed)
    assert covered[y0:y1, x0:x1].all() and covered.sum() == (x1 - x0) * (y1 - y0)


def test_a_face_at_the_frame_edge_maps_back_without_its_mirrored_padding():
    frame = np.full((200, 200, 3), 128, dtype=np.uint8)
    frame[5:20, 170:195] = (255, 0, 0)  # near the top-right corner: the crop mirrors it into its padding
    face = Face(box=(140.0, 0.0, 200.0, 60.0), score=0.9, keypoints=np.zeros((6, 2)))
    square = face_square(face)
    assert square[1] < 0 and square[2] > 200  # the square leaves the frame
    cam = compute_cam(SpotDetector().eval(), crop_tensor(crop_face(frame, face, SIZE)))
    placed = heatmap_to_frame(cam.heatmap, square, frame.shape)
    assert placed.shape == (200, 200)
    assert np.isnan(placed[:, : int(square[0])]).all() and np.isnan(placed[int(square[3]) :]).all()
    peak_y, peak_x = np.unravel_index(np.nanargmax(placed), placed.shape)
    assert peak_y < 30 and 160 <= peak_x < 200


def test_heatmap_to_frame_resizes_into_the_square():
    heatmap = np.zeros((8, 8), dtype=np.float32)
    heatmap[:4, 4:] = 1.0  # top-right quarter of the crop
    placed = heatmap_to_frame(heatmap, (100.0, 50.0, 180.0, 130.0), (300, 400, 3))
    assert placed[50 + 10, 100 + 70] == pytest.approx(1.0) and placed[50 + 70, 100 + 10] == pytest.approx(0.0)
    assert np.isnan(placed[49, 120]) and np.isnan(placed[60, 181])
    with pytest.raises(ValueError):
        heatmap_to_frame(heatmap, (0.0, 0.0, 10.0, 20.0), (100, 100))


def test_a_layer_that_the_forward_pass_never_reaches_is_a_clear_error():
    class Unused(SpotDetector):
        config = DetectorConfig(name="unused", paper="test", input_size=SIZE, cam_target_layers=("spare",))

        def __init__(self):
            super().__init__()
            self.spare = nn.Conv2d(3, 3, 1)

    with pytest.raises(ExplainError, match="not used"):
        compute_cam(Unused().eval(), torch.rand(1, 3, SIZE, SIZE))
    with pytest.raises(ExplainError, match="unknown CAM method"):
        compute_cam(SpotDetector().eval(), torch.rand(1, 3, SIZE, SIZE), "occlusion")


# --- spectra ------------------------------------------------------------------------------------------------


def test_power_spectrum_is_flat_for_white_noise_and_falls_for_smooth_images():
    rng = np.random.default_rng(0)
    noise = rng.standard_normal((128, 128))
    flat = azimuthal_power_spectrum(noise)
    assert flat.frequency[0] == pytest.approx(1 / 128) and flat.frequency[-1] == pytest.approx(0.5)
    inner = flat.power_db[4:-4]  # the window shapes the first and last few rings
    half = len(inner) // 2
    assert abs(inner[:half].mean() - inner[half:].mean()) < 1.0  # no trend from low to high frequencies
    assert inner.std() < 1.5
    frequency = np.fft.fftfreq(128)
    radius = np.hypot(frequency[:, None], frequency[None, :])
    smooth = np.fft.ifft2(np.fft.fft2(noise) * np.exp(-((radius / 0.05) ** 2))).real  # Gaussian low-pass
    falling = azimuthal_power_spectrum(smooth)
    assert np.all(np.diff(falling.power_db[6:40]) < 0)  # falls steadily past the cut-off
    assert falling.power_db[2] - falling.power_db[-1] > 60.0


def test_power_spectrum_finds_a_grating_and_ignores_brightness_and_contrast():
    size, cycles = 128, 0.25
    x = np.arange(size)
    grating = np.sin(2 * math.pi * cycles * x)[None, :].repeat(size, axis=0)
    spectrum = azimuthal_power_spectrum(grating)
    assert spectrum.frequency[np.argmax(spectrum.power_db)] == pytest.approx(cycles, abs=1.5 / size)
    rescaled = azimuthal_power_spectrum(3.0 * grating + 7.0)
    np.testing.assert_allclose(rescaled.power_db, spectrum.power_db, atol=1e-6)


def test_face_spectra_and_reference(portrait_face):
    face = crop_tensor(portrait_face)
    spectra = face_spectra(face)
    assert spectra.dct_log.shape == (3, SIZE, SIZE)
    # Faces are smooth: the DC corner of the Y channel's DCT outweighs its highest-frequency corner by far.
    assert spectra.dct_log[0, :4, :4].mean() > spectra.dct_log[0, -8:, -8:].mean() + 3.0
    assert spectra.fft_phase.min() >= -math.pi and spectra.fft_phase.max() <= math.pi
    mirrored = crop_tensor(np.ascontiguousarray(portrait_face[:, ::-1]))
    darker = crop_tensor((portrait_face * 0.5).astype(np.uint8))
    reference = reference_spectrum([mirrored, darker], "test faces")
    curves = np.stack([face_spectra(mirrored).radial.power_db, face_spectra(darker).radial.power_db])
    np.testing.assert_allclose(reference.mean_db, curves.mean(0))
    np.testing.assert_allclose(reference.std_db, curves.std(0))
    assert reference.faces == 2
    with pytest.raises(ExplainError):
        reference_spectrum([], "nothing")


# --- the methods' own views ---------------------------------------------------------------------------------


def test_every_method_gives_its_frequency_views(detectors, portrait_face):
    face = crop_tensor(portrait_face)
    with_views = set()
    for name in list_detectors():
        detector = detectors(name)
        views = detector.frequency_views(face)
        if type(detector).frequency_views is Detector.frequency_views:
            assert views == {}  # a plain baseline: nothing of its own to show
            continue
        assert views, f"{name} gives no frequency view"
        with_views.add(name)
        for key, view in views.items():
            image = np.asarray(view.image, dtype=np.float64)
            assert image.ndim in (2, 3) and image.size > 1, f"{name}.{key}"
            assert np.isfinite(image).mean() > 0.99, f"{name}.{key} is not finite"
            assert view.title and view.description, f"{name}.{key} is not explained"
    assert PAPER_METHODS <= with_views


def test_method_views_keep_what_does_not_depend_on_the_face(detectors):
    ralf = method_views(detectors("ralf"), size=SIZE)
    assert "mask" in ralf.fixed and "destructed" not in ralf.fixed and "residual" not in ralf.fixed
    assert "band_weights" in method_views(detectors("pel"), size=SIZE).fixed
    assert "mcsconv_kernel_spectra" in method_views(detectors("sficonv"), size=SIZE).fixed
    faclue = method_views(detectors("faclue"), size=SIZE)  # every FAClue view depends on its input
    assert faclue.fixed == {} and faclue.example and "portrait" in faclue.example_source
    assert faclue.paper.startswith("Liang") and "FAClue" in faclue.summary


# --- figures ------------------------------------------------------------------------------------------------


def test_explanation_writes_a_png_per_view_and_one_figure(tmp_path, detectors, portrait_image):
    with FaceDetector(tile=False) as finder:
        face = finder.detect(portrait_image)[0]
    detector = detectors("mclcr")
    explanation = explain_face(
        detector, crop_face(portrait_image, face, SIZE), label="portrait.jpg, face 1", trained=False,
        frame=portrait_image, square=face_square(face), box=face.box,
    )
    panels = face_panels(explanation)
    keys = [panel.key for panel in panels]
    assert {"face", "cam", "frame", "face_dct", "face_fft_amplitude", "face_fft_phase", "power_spectrum"} <= set(keys)
    assert {f"view_{key}" for key in explanation.views} <= set(keys)
    written = save_explanation(explanation, tmp_path, "portrait")
    assert [path.name for path in written[:-1]] == [f"portrait_{key}.png" for key in keys]
    assert written[-1].name == "portrait_explain.png"
    for path in written:
        with Image.open(path) as image:
            assert image.format == "PNG" and min(image.size) > 200
    with Image.open(written[-1]) as figure:
        assert figure.size[0] >= 1600 and figure.size[1] >= 1200  # four columns, several rows


def test_suspicious_faces_are_the_top_faces_of_the_top_tracks():
    entry = {
        "tracks": [{"track_id": 0, "score": 0.2}, {"track_id": 1, "score": 0.9}],
        "faces": [
            {"track_id": 0, "fake_probability": 0.3, "frame_index": 0},
            {"track_id": 0, "fake_probability": 0.1, "frame_index": 1},
            {"track_id": 1, "fake_probability": 0.8, "frame_index": 0},
            {"track_id": 1, "fake_probability": 0.95, "frame_index": 1},
            {"track_id": 1, "fake_probability": None, "frame_index": 2},
        ],
    }
    assert [(f["track_id"], f["frame_index"]) for f in suspicious_faces(entry)] == [(1, 1), (0, 0)]
    assert [(f["track_id"], f["frame_index"]) for f in suspicious_faces(entry, 2, max_tracks=1)] == [(1, 1), (1, 0)]


@pytest.mark.parametrize(
    ("text", "seconds"), [("12.5s", 12.5), ("12.5", 12.5), ("1:02.5", 62.5), ("1:00:02", 3602.0), (".5s", 0.5)]
)
def test_parse_timestamp(text, seconds):
    assert parse_timestamp(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "abc", "12.5m", "-3s", "1:2:3:4"])
def test_parse_timestamp_refuses_nonsense(text):
    with pytest.raises(ExplainError):
        parse_timestamp(text)


# --- the command line ---------------------------------------------------------------------------------------


def _run(*args):
    return runner.invoke(app, [str(arg) for arg in args])


def test_cli_explains_what_a_method_looks_at_and_the_faces_of_the_last_scan(tmp_path, monkeypatch, portrait_image):
    monkeypatch.chdir(tmp_path)
    Image.fromarray(portrait_image).save("portrait.jpg", quality=92)
    scanned = _run("scan", "portrait.jpg", "--method", "sficonv", "--json", "scan.json")
    assert scanned.exit_code == 0, scanned.output

    result = _run("explain", "--method", "sficonv")  # no input, exactly as a user types it
    assert result.exit_code == 0, result.output
    words = " ".join(result.stdout.replace("│", " ").split())
    assert "SFIConv replaces" in words and "Guo et al." in words  # the method in plain words, and its paper
    out = tmp_path / "deepscan-explain"
    assert (out / "sficonv_method.png").is_file() and (out / "sficonv_mcsconv_kernel_spectra.png").is_file()
    assert (out / "portrait_face0_explain.png").is_file()  # the newest report's face, found in the working folder
    assert (out / "portrait_face0_frame.png").is_file()

    with open("portrait.jpg", "ab") as image:  # the evidence changes after the scan
        image.write(b"tampered")
    changed = _run("explain", "--from", "scan.json", "--out", "again")
    assert changed.exit_code == 1  # one file could not be explained
    assert "changed since it was scanned" in changed.stderr
    assert not list((tmp_path / "again").glob("portrait_*"))


def test_cli_explain_refuses_bad_input_in_one_line(tmp_path, monkeypatch, portrait_image):
    monkeypatch.chdir(tmp_path)  # no scan report lying about
    image = tmp_path / "face.png"
    Image.fromarray(portrait_image).save(image)
    not_json = tmp_path / "notes.json"
    not_json.write_text("{not json")
    other_json = tmp_path / "other.json"
    other_json.write_text(json.dumps({"schema": "something-else"}))
    cases = [
        (("explain", "--method", "faclue", tmp_path / "missing.mp4"), "missing.mp4"),
        (("explain", "--method", "faclue", image, "--cam", "occlusion"), "--cam"),
        (("explain", "--method", "faclue", image, "--at", "2s"), "videos only"),
        (("explain", "--method", "nosuch"), "unknown detector"),
        (("explain", "--from", not_json), "not a readable JSON report"),
        (("explain", "--from", other_json), "not a deepscan scan report"),
        (("explain", "--at", "2s"), "--at needs a video"),
        (("explain", image, "--from", other_json), "not both"),
    ]
    for args, message in cases:
        result = _run(*args)
        lines = [line for line in result.stderr.splitlines() if line.strip() and not line.startswith("warning:")]
        assert result.exit_code == 2, (args, result.output)
        assert len(lines) == 1 and message in lines[0] and "Traceback" not in result.output, (args, result.stderr)


# --- reports from strangers: explain --from opens nothing outside the report's folder and the working folder ---


@pytest.fixture
def scanned_elsewhere(tmp_path, monkeypatch, portrait_image):
    """A case folder as a user keeps it: the evidence in the working folder, the report in reports/ below it
    (as `scan --report DIR` leaves it), and an image outside both."""
    case = tmp_path / "case"
    (case / "reports").mkdir(parents=True)
    monkeypatch.chdir(case)
    Image.fromarray(portrait_image).save("portrait.jpg", quality=92)
    scanned = _run("scan", "portrait.jpg", "--method", "sficonv", "--json", "reports/scan.json")
    assert scanned.exit_code == 0, scanned.output
    outside = tmp_path / "private"
    outside.mkdir()
    Image.fromarray(portrait_image).save(outside / "holiday.jpg", quality=92)
    return case, json.loads((case / "reports" / "scan.json").read_text()), outside / "holiday.jpg"


def _refused(report: dict, folder, *extra) -> str:
    path = folder / "reports" / "handed-over.json"
    path.write_text(json.dumps(report))
    result = _run("explain", "--from", path, "--out", folder / "explained", *extra)
    lines = [line for line in result.stderr.splitlines() if line.strip() and not line.startswith("warning:")]
    assert result.exit_code == 2 and len(lines) == 1 and "Traceback" not in result.output, result.output
    assert not (folder / "explained").exists()  # refused before anything was opened or written
    return lines[0]


def test_explain_from_a_report_beside_the_evidence_works(scanned_elsewhere):
    case, _, _ = scanned_elsewhere
    result = _run("explain", "--from", "reports/scan.json", "--out", "explained")
    assert result.exit_code == 0, result.output
    assert (case / "explained" / "portrait_face0_explain.png").is_file()


def test_a_report_naming_files_outside_its_folder_and_the_working_folder_is_refused(scanned_elsewhere):
    case, report, holiday = scanned_elsewhere
    from deepscan.weights import sha256_file

    (case / "reports" / "link.jpg").symlink_to(holiday)
    for recorded in ("../../../../../../etc/passwd", str(holiday), "reports/link.jpg", "../private/holiday.jpg"):
        hostile = json.loads(json.dumps(report))
        # The sha256 is the file's own: the location alone is refused.
        hostile["files"][0].update(path=recorded, sha256=sha256_file(holiday))
        line = _refused(hostile, case)
        assert line.startswith(f"error: {case / 'reports' / 'handed-over.json'}: refused: it names {recorded!r}, "
                               "outside the report's folder and the working folder; explain --from opens only "
                               "files inside those"), line


def test_weights_a_report_names_from_the_network_or_elsewhere_are_refused(scanned_elsewhere):
    case, report, holiday = scanned_elsewhere
    for weights in ("hf://someone/detector/faclue.safetensors", str(holiday.parent / "w.safetensors")):
        hostile = json.loads(json.dumps(report))
        hostile["custody"]["parameters"]["weights"] = weights
        line = _refused(hostile, case)
        assert f"refused: it names the weights {weights!r}" in line and "pass --weights" in line, line


def test_a_report_without_the_files_sha256_or_with_another_explains_nothing(scanned_elsewhere):
    case, report, _ = scanned_elsewhere
    for sha256, message in ((None, "the report records no sha256 for it"), ("ab" * 32, "changed since it was scanned")):
        changed = json.loads(json.dumps(report))
        changed["files"][0]["sha256"] = sha256
        (case / "reports" / "changed.json").write_text(json.dumps(changed))
        result = _run("explain", "--from", "reports/changed.json", "--out", "explained")
        lines = [line for line in result.stderr.splitlines() if line.startswith("skipped:")]
        assert result.exit_code == 1 and len(lines) == 1 and message in lines[0], result.output
        assert not list((case / "explained").glob("portrait_*"))


def test_an_incomplete_report_is_one_line(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "r.json").write_text(json.dumps({"schema": "deepscan.scan-report", "files": []}))
    result = _run("explain", "--from", "r.json")
    assert result.exit_code == 2 and "not a complete scan report" in result.stderr, result.output


def test_cli_explain_prints_the_calibrated_probability_the_scan_records(tmp_path, monkeypatch, portrait_image,
                                                                        calibration_card, tiny_cam, tiny_cam_detector):
    from deepscan import weights
    from deepscan.weights import save_weights, sha256_file

    folder = tmp_path / "weights"
    folder.mkdir()
    monkeypatch.setattr(weights, "shipped_weights_dir", lambda: folder)
    detector = tiny_cam_detector()
    with torch.no_grad():
        detector.head.weight.zero_()  # the fake-logit is the head's bias: P(fake) known exactly
        detector.head.bias.fill_(1.5)  # calibrated: sigmoid(2 * 1.5 - 1) = 0.881; uncalibrated sigmoid(1.5) = 0.818
    save_weights(detector, folder / "tiny_cam.safetensors")
    card = {"schema": "deepscan.model-card", "detector": {"name": "tiny_cam", "input_size": 32},
            "weights": {"file": "tiny_cam.safetensors", "sha256": sha256_file(folder / "tiny_cam.safetensors")},
            "calibration": calibration_card}
    (folder / "tiny_cam.card.json").write_text(json.dumps(card))
    (folder / "SHA256SUMS").write_text("".join(f"{sha256_file(folder / name)}  {name}\n"
                                               for name in ("tiny_cam.safetensors", "tiny_cam.card.json")))
    monkeypatch.chdir(tmp_path)
    Image.fromarray(portrait_image).save("portrait.jpg", quality=92)
    scanned = _run("scan", "portrait.jpg", "--method", "tiny_cam", "--json", "scan.json")
    assert scanned.exit_code == 0, scanned.output
    recorded = json.loads((tmp_path / "scan.json").read_text())["files"][0]["faces"][0]["fake_probability"]
    calibrated = 1 / (1 + math.exp(-(2 * 1.5 - 1)))
    assert recorded == pytest.approx(calibrated)
    for args in (("--from", "scan.json"), ("portrait.jpg",)):  # a report's faces, and an input found afresh
        result = _run("explain", "--method", "tiny_cam", *args, "--out", "explained")
        assert result.exit_code == 0, result.output
        assert f"{calibrated:.3f}" in result.stdout and f"{1 / (1 + math.exp(-1.5)):.3f}" not in result.stdout
    reported = _run("scan", "portrait.jpg", "--method", "tiny_cam", "--report", "report")  # heat maps, calibrated
    assert reported.exit_code == 0, reported.output
    assert (tmp_path / "report" / "report.html").is_file() and "no heat maps" not in reported.stderr


def test_the_figure_states_the_calibrated_probability(tiny_cam_detector):
    from deepscan.calibration import Calibration
    from deepscan.report.figures import explanation_header

    detector = tiny_cam_detector()
    with torch.no_grad():
        detector.head.bias.fill_(1.5)
    crop = np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    logit = float(detector(crop_tensor(crop)).item())
    calibration = Calibration(scale=2.0, bias=-1.0, threshold=0.7, method="platt")
    explanation = explain_face(detector, crop, label="x", calibration=calibration)
    assert explanation.fake_probability == pytest.approx(1 / (1 + math.exp(-(2 * logit - 1))), abs=1e-6)
    assert f"P(fake) {explanation.fake_probability:.3f}" in explanation_header(explanation)[1]
    assert "calibrated by the weights' model card" in explanation_header(explanation)[1]
    plain = explain_face(detector, crop, label="x")  # no card: the identity
    assert plain.fake_probability == pytest.approx(1 / (1 + math.exp(-logit)), abs=1e-6)

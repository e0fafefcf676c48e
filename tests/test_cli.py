"""End-to-end: the `deepscan` command as a user runs it, on media the tests make themselves."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from deepscan.cli import app
from deepscan.weights import sha256_file

runner = CliRunner()


def run(*args):
    return runner.invoke(app, [str(a) for a in args])


def stderr_lines(result):
    return [line for line in result.stderr.splitlines() if line.strip()]


@pytest.fixture(scope="module")
def portrait_jpg(tmp_path_factory, portrait_image):
    path = tmp_path_factory.mktemp("images") / "portrait.jpg"
    Image.fromarray(portrait_image).save(path, quality=92)
    return path


def test_help_is_quick_and_lists_the_commands():
    result = subprocess.run([sys.executable, "-m", "deepscan", "--help"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0
    assert "scan" in result.stdout and "models" in result.stdout
    # Heavy libraries stay out of --help: it must not import torch.
    probe = "import sys, deepscan.cli; print('torch' in sys.modules, 'mediapipe' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True).stdout.split() == ["False", "False"]


def test_scan_video_writes_a_versioned_report(tmp_path, portrait_clip):
    report_path = tmp_path / "report.json"
    result = run("scan", portrait_clip, "--fps", 5, "--json", report_path)
    assert result.exit_code == 0, result.output
    assert "no trained weights" in result.stderr  # says plainly that scores mean nothing
    report = json.loads(report_path.read_text())
    assert report["schema"] == "deepscan.scan-report" and report["schema_version"] == 1
    custody = report["custody"]
    assert custody["detector"]["name"] == "faclue"
    assert custody["weights"] == {"source": "none", "path": None, "sha256": None, "trained": False}
    assert custody["parameters"]["fps"] == 5 and custody["started_at"] <= custody["finished_at"]
    [entry] = report["files"]
    assert entry["sha256"] == sha256_file(Path(portrait_clip))
    assert entry["size_bytes"] == Path(portrait_clip).stat().st_size
    assert entry["status"] == "complete" and entry["verdict"]["label"] == "untrained"
    assert entry["frames_scanned"] >= 9  # 2 s at 5 fps
    times = [face["time_s"] for face in entry["faces"]]
    assert times == sorted(times) and len(entry["faces"]) >= 9
    assert all(0.0 <= face["fake_probability"] <= 1.0 for face in entry["faces"])
    assert len(entry["tracks"]) == 1 and entry["tracks"][0]["faces"] == len(entry["faces"])
    assert report["summary"] == {"files": 1, "complete": 1, "partial": 0, "errors": 0,
                                 "verdicts": {"untrained": 1}, "interrupted": False}


def test_scan_image_and_two_face_clip(tmp_path, portrait_jpg, two_face_clip):
    report_path = tmp_path / "report.json"
    result = run("scan", portrait_jpg, two_face_clip, "--fps", 4, "--json", report_path)
    assert result.exit_code == 0, result.output
    image, video = json.loads(report_path.read_text())["files"]
    assert image["kind"] == "image" and len(image["faces"]) == 1 and len(image["tracks"]) == 1
    assert video["kind"] == "video" and len(video["tracks"]) == 2


def test_a_frame_without_faces_is_no_face_not_real(tmp_path):
    blank = tmp_path / "wall.png"
    Image.fromarray(np.full((240, 320, 3), 200, np.uint8)).save(blank)
    report_path = tmp_path / "r.json"
    result = run("scan", blank, "--json", report_path)
    assert result.exit_code == 0
    assert json.loads(report_path.read_text())["files"][0]["verdict"]["label"] == "no face"


def test_bad_inputs_give_one_line_each_and_the_rest_is_scanned(tmp_path, portrait_jpg):
    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"")
    text = tmp_path / "notes.mp4"
    text.write_text("this is not a video\n")
    scrambled = tmp_path / "noise.mov"
    scrambled.write_bytes(np.random.default_rng(0).integers(0, 256, 50_000, dtype=np.uint8).tobytes())
    broken_image = tmp_path / "broken.jpg"
    broken_image.write_bytes(portrait_jpg.read_bytes()[:200])
    missing = tmp_path / "missing.mp4"
    report_path = tmp_path / "r.json"
    result = run("scan", missing, empty, text, scrambled, broken_image, portrait_jpg, "--json", report_path)
    assert result.exit_code == 1
    errors = [line for line in stderr_lines(result) if line.startswith("error:")]
    assert len(errors) == 5, result.stderr
    for path, line in zip([missing, empty, text, scrambled, broken_image], errors):
        assert path.name in line
    assert "Traceback" not in result.output
    files = json.loads(report_path.read_text())["files"]
    assert [f["status"] for f in files] == ["error"] * 5 + ["complete"]
    assert len(files[-1]["faces"]) == 1


def test_video_broken_half_way_keeps_its_results_as_partial(tmp_path, portrait_clip):
    from deepscan.media.video import encode_video, iter_frames

    faststart = tmp_path / "faststart.mp4"  # index first, so the first half of the file still decodes
    frames = (frame.image for frame in iter_frames(portrait_clip, every_frame=True))
    encode_video(faststart, frames, fps=25, container_options={"movflags": "+faststart"})
    data = faststart.read_bytes()
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(data[: len(data) * 3 // 4])  # past the first keyframe, short of the end
    report_path = tmp_path / "r.json"
    result = run("scan", cut, "--fps", 5, "--json", report_path)
    assert result.exit_code == 1
    assert any(line.startswith("partial:") and "cut.mp4" in line for line in stderr_lines(result)), result.stderr
    [entry] = json.loads(report_path.read_text())["files"]
    assert entry["status"] == "partial" and len(entry["faces"]) > 0 and entry["verdict"] is not None


def test_usage_errors_exit_2_with_one_line(tmp_path, portrait_jpg):
    result = run("scan", portrait_jpg, "--method", "nonsense")
    assert result.exit_code == 2 and "unknown detector 'nonsense'" in result.stderr
    pickle = tmp_path / "w.pth"
    pickle.write_bytes(b"x")
    result = run("scan", portrait_jpg, "--weights", pickle)
    assert result.exit_code == 2 and "only .safetensors" in result.stderr
    result = run("scan", tmp_path / "empty-dir-does-not-exist" / "..")
    assert result.exit_code != 0


def test_models_lists_every_detector_as_json():
    from deepscan.registry import list_detectors

    result = run("models", "--json")
    assert result.exit_code == 0
    rows = json.loads(result.stdout)
    assert [row["name"] for row in rows] == list_detectors()
    faclue = next(row for row in rows if row["name"] == "faclue")
    assert faclue["input_size"] == 224 and faclue["parameters"] > 7e6 and faclue["weights_available"] is False


def test_ctrl_c_keeps_the_results_so_far_and_marks_them(tmp_path, portrait_clip, monkeypatch):
    from deepscan.scan import Scanner

    original = Scanner._frames

    def frames_then_ctrl_c(self, path, result):
        for count, frame in enumerate(original(self, path, result)):
            if count == 3:
                raise KeyboardInterrupt
            yield frame

    monkeypatch.setattr(Scanner, "_frames", frames_then_ctrl_c)
    report_path = tmp_path / "r.json"
    result = run("scan", portrait_clip, "--fps", 5, "--json", report_path)
    assert result.exit_code == 130
    report = json.loads(report_path.read_text())
    assert report["summary"]["interrupted"] is True
    [entry] = report["files"]
    assert entry["status"] == "partial" and entry["frames_scanned"] == 3
    assert len(entry["faces"]) == 3 and all(face["fake_probability"] is not None for face in entry["faces"])

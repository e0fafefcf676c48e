"""Folder scans lose nothing: a bad file is reported and passed, Ctrl-C keeps what was done, and a scan killed
outright leaves the report of the files it finished (rewritten atomically after each one)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from PIL import Image
from typer.testing import CliRunner

from deepscan.cli import app
from deepscan.media.synthetic import moving_portrait_clip
from deepscan.report.json_report import write_report

runner = CliRunner()


def run(*args):
    return runner.invoke(app, [str(a) for a in args])


@pytest.fixture
def mixed_folder(tmp_path, portrait_image) -> Path:
    folder = tmp_path / "case 42"
    (folder / "sub").mkdir(parents=True)
    Image.fromarray(portrait_image).save(folder / "a.jpg", quality=90)
    (folder / "b.mp4").write_text("not a video\n")
    Image.fromarray(portrait_image).save(folder / "d.png")
    os.mkfifo(folder / "sub" / "pipe.mp4")  # would block the scan forever if it were opened
    return folder


def test_a_folder_scan_reports_bad_files_and_goes_on(tmp_path, mixed_folder, untrained):
    report_path = tmp_path / "r.json"
    result = run("scan", mixed_folder, "--json", report_path)
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    report = json.loads(report_path.read_text())
    assert [(Path(f["path"]).name, f["status"]) for f in report["files"]] == [
        ("a.jpg", "complete"), ("b.mp4", "error"), ("d.png", "complete"), ("pipe.mp4", "error")]
    assert "named pipe" in report["files"][3]["message"]
    assert report["partial"] is False and report["files_planned"] == 4
    assert report["summary"]["errors"] == 2 and report["custody"]["finished_at"] is not None


def test_an_unexpected_failure_on_one_file_is_its_error_not_the_end_of_the_scan(tmp_path, mixed_folder, untrained,
                                                                               monkeypatch):
    import deepscan.media.source as source_module  # where the scan's files are read

    real_load_image = source_module.load_image

    def broken_decoder(path):
        if path.name == "a.jpg":
            raise RuntimeError("decoder state\ncorrupted")  # what no handler expects
        return real_load_image(path)

    monkeypatch.delenv("DEEPSCAN_DEBUG", raising=False)
    monkeypatch.setattr(source_module, "load_image", broken_decoder)
    report_path = tmp_path / "r.json"
    result = run("scan", mixed_folder, "--json", report_path)
    assert result.exit_code == 1 and "Traceback" not in result.output
    files = json.loads(report_path.read_text())["files"]
    assert [f["status"] for f in files] == ["error", "error", "complete", "error"]
    message = files[0]["message"]
    assert "unexpected failure while reading it (RuntimeError: decoder state corrupted)" in message
    assert f"error: {message}" in result.stderr.splitlines()


def test_ctrl_c_in_a_folder_writes_what_was_done_marked_partial(tmp_path, mixed_folder, untrained, monkeypatch):
    from deepscan.scan import Scanner

    original = Scanner._frames

    def ctrl_c_in_the_third_file(self, path, result):
        if path.name == "d.png":
            raise KeyboardInterrupt
        yield from original(self, path, result)

    monkeypatch.setattr(Scanner, "_frames", ctrl_c_in_the_third_file)
    report_path = tmp_path / "r.json"
    result = run("scan", mixed_folder, "--json", report_path)
    assert result.exit_code == 130
    report = json.loads(report_path.read_text())
    assert [f["status"] for f in report["files"]] == ["complete", "error", "partial"]
    assert report["partial"] is True and report["files_planned"] == 4 and report["summary"]["interrupted"] is True


def test_a_report_that_cannot_be_written_stops_the_scan_before_it_starts(tmp_path, mixed_folder, untrained):
    taken = tmp_path / "taken.json"
    taken.mkdir()  # a folder where the report file should go
    result = run("scan", mixed_folder, "--json", taken)
    assert result.exit_code == 2
    [line] = [line for line in result.stderr.splitlines() if line.strip() and "no trained weights" not in line]
    assert line.startswith("error: cannot write the report to") and "taken.json" in line
    assert "deepscan verdicts" not in result.stdout  # nothing was scanned for nothing
    assert not [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_the_report_is_replaced_atomically_and_synced_first(tmp_path, monkeypatch):
    path = tmp_path / "report.json"
    write_report({"files": [1]}, path)
    calls = []
    real_fsync, real_replace = os.fsync, os.replace
    monkeypatch.setattr(os, "fsync", lambda fd: (calls.append("fsync"), real_fsync(fd))[1])
    monkeypatch.setattr(os, "replace", lambda a, b: (calls.append("replace"), real_replace(a, b))[1])
    write_report({"files": [1, 2]}, path)
    assert calls[:2] == ["fsync", "replace"]  # the data is on disk before the name points at it
    assert json.loads(path.read_text()) == {"files": [1, 2]}

    def disk_full(fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", disk_full)
    with pytest.raises(OSError):
        write_report({"files": [1, 2, 3]}, path)
    assert json.loads(path.read_text()) == {"files": [1, 2]}  # the last complete report stands
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report.json"]  # and no temporary is left behind


def test_a_killed_folder_scan_leaves_the_report_of_the_files_it_finished(tmp_path):
    folder = tmp_path / "clips"
    folder.mkdir()
    clips = 5
    for index in range(clips):
        # About 50 frames of work each (every frame scanned): seconds, so the kill comes mid-run.
        moving_portrait_clip(folder / f"clip{index}.mp4", seconds=2.0, fps=25, size=(160, 120))
    report_path = tmp_path / "out.json"
    process = subprocess.Popen(
        [sys.executable, "-m", "deepscan", "scan", folder, "--every-frame", "--device", "cpu", "--json", report_path],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    seen = None
    try:
        deadline = time.monotonic() + 150
        while time.monotonic() < deadline and process.poll() is None:
            if report_path.exists():
                seen = json.loads(report_path.read_text())  # never half-written: it must parse every time
                if seen["files"]:
                    break
            time.sleep(0.02)
        process.send_signal(signal.SIGKILL)
    finally:
        process.kill()
        process.wait()
    assert seen is not None and seen["files"], "the scan wrote no report of its first file in time"
    report = json.loads(report_path.read_text())
    done = report["files"]
    assert 1 <= len(done) < clips, "the kill came after the scan had finished: nothing was tested"
    assert report["partial"] is True and report["files_planned"] == clips
    assert report["custody"]["finished_at"] is None and report["summary"]["files"] == len(done)
    for entry in done:
        assert entry["status"] == "complete" and entry["verdict"] is not None
        assert entry["frames_scanned"] == 50 and len(entry["faces"]) >= 45

"""End-to-end: the `deepscan` command as a user runs it, on media the tests make themselves."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from deepscan.catalog import DEFAULT_METHOD
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


def test_scan_video_writes_a_versioned_report(tmp_path, portrait_clip, untrained):
    report_path = tmp_path / "report.json"
    result = run("scan", portrait_clip, "--fps", 5, "--json", report_path)
    assert result.exit_code == 0, result.output
    assert "no trained weights" in result.stderr  # says plainly that scores mean nothing
    report = json.loads(report_path.read_text())
    assert report["schema"] == "deepscan.scan-report" and report["schema_version"] == 2
    custody = report["custody"]
    assert custody["detector"]["name"] == DEFAULT_METHOD
    assert custody["weights"] == {"source": "none", "path": None, "sha256": None, "trained": False}
    assert custody["parameters"]["threshold"] is None  # not given: the card's, else 0.5
    assert custody["decision"]["threshold"] == 0.5 and custody["decision"]["threshold_source"] == "default"
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
    from deepscan.detectors import get_config, list_detectors
    from deepscan.weights import shipped_checksums, shipped_weights_dir

    result = run("models", "--json")
    assert result.exit_code == 0
    rows = json.loads(result.stdout)
    assert [row["name"] for row in rows] == [*list_detectors(), "ensemble"]
    shipped = sorted(name.removesuffix(".safetensors") for name in shipped_checksums() if name.endswith(".safetensors"))
    for row in rows[:-1]:
        assert row["weights_available"] is (row["name"] in shipped)
        assert row["weights"] == ("shipped" if row["name"] in shipped else "untrained")
    # A shipped detector is listed as its weights were trained, the others as the paper builds them.
    for row in rows[:-1]:
        if row["name"] in shipped:
            card = json.loads((shipped_weights_dir() / f"{row['name']}.card.json").read_text())
            assert row["input_size"] == card["detector"]["input_size"]
        else:
            assert row["input_size"] == get_config(row["name"]).input_size
    if "pel" not in shipped:
        pel = next(row for row in rows if row["name"] == "pel")
        assert pel["input_size"] == 224 and pel["parameters"] > 35e6
    assert rows[-1]["members"] == shipped and rows[-1]["weights_available"] is bool(shipped)
    # Exactly one default, and one with trained weights: a default scan must never say "untrained".
    assert [row["name"] for row in rows if row["default"]] == [DEFAULT_METHOD] and DEFAULT_METHOD in shipped


def test_scan_and_explain_default_to_the_catalogs_default_method():
    import inspect

    from deepscan.scan import ScanOptions

    assert ScanOptions().method == DEFAULT_METHOD
    assert f"without --method, scan and explain use {DEFAULT_METHOD}" in " ".join(run("models").stdout.split())
    assert f"else {DEFAULT_METHOD}" in " ".join(run("explain", "--help").stdout.split())
    from deepscan.cli.scan import scan

    assert inspect.signature(scan).parameters["method"].default == DEFAULT_METHOD


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


# --- calibrated weights, inconclusive tracks, the ensemble (tiny detectors, see conftest.shipped) ---------------


def sigmoid(x: float) -> float:
    return float(1 / (1 + np.exp(-x)))


def _scan_json(tmp_path, *args):
    report_path = tmp_path / "r.json"
    result = run("scan", *args, "--json", report_path)
    return result, (json.loads(report_path.read_text()) if report_path.exists() else None)


def test_calibrated_weights_give_calibrated_scores_at_the_cards_threshold(tmp_path, portrait_jpg, shipped,
                                                                          calibration_card):
    shipped.add("tiny_a", 1.5, calibration=calibration_card)
    result, report = _scan_json(tmp_path, portrait_jpg, "--method", "tiny_a")
    assert result.exit_code == 0, result.output
    assert "no trained weights" not in result.stderr  # trained weights: no "untrained" warning or verdict
    [entry] = report["files"]
    assert entry["faces"][0]["fake_probability"] == pytest.approx(sigmoid(2 * 1.5 - 1))  # 0.881, not sigmoid(1.5)
    assert entry["tracks"][0]["label"] == "fake" and entry["verdict"]["label"] == "fake"  # 0.881 >= 0.7
    decision = report["custody"]["decision"]
    assert decision["threshold"] == 0.7 and decision["threshold_source"] == "model card"
    [member] = decision["members"]
    assert member["calibration"]["scale"] == 2.0 and member["model_card"]["path"].endswith("tiny_a.card.json")
    assert member["reliability_note"] is None  # the card has no reliability section
    assert report["custody"]["weights"]["source"] == "shipped"

    result, report = _scan_json(tmp_path, portrait_jpg, "--method", "tiny_a", "--threshold", 0.9)
    assert report["files"][0]["verdict"]["label"] == "real"  # an explicit --threshold wins over the card
    assert report["custody"]["decision"]["threshold_source"] == "--threshold"


def test_faces_outside_the_reliable_range_make_an_inconclusive_verdict(tmp_path, portrait_jpg, shipped,
                                                                       calibration_card):
    shipped.add("tiny_a", 1.0, calibration=calibration_card,
                reliability={"min_face_px": 5000, "text": "tiny faces fail"})
    result, report = _scan_json(tmp_path, portrait_jpg, "--method", "tiny_a")
    assert result.exit_code == 0, result.output
    [entry] = report["files"]
    [face] = entry["faces"]
    assert face["outside_range"] == ["too small"] and 50 < face["face_px"] < 5000
    [track] = entry["tracks"]
    assert track["label"] == "inconclusive" and "faces of at least 5000 px" in track["reason"]
    assert track["score"] == pytest.approx(sigmoid(1.0))  # still reported
    assert entry["verdict"]["label"] == "inconclusive" and "not called real" in entry["verdict"]["reason"]
    assert "inconclusive" in result.stdout and "1 too small" in result.stdout

    shipped.add("tiny_a", 1.0, calibration=calibration_card, reliability={"min_sharpness": 1e9})
    _, report = _scan_json(tmp_path, portrait_jpg, "--method", "tiny_a")
    assert report["files"][0]["tracks"][0]["reason"].endswith("1 too blurred")


def test_report_records_face_size_sharpness_and_video_compression(tmp_path, portrait_clip, shipped):
    from deepscan.media.video import probe_video

    shipped.add("tiny_a", 1.0)
    _, report = _scan_json(tmp_path, portrait_clip, "--method", "tiny_a", "--fps", 2)
    [entry] = report["files"]
    info = probe_video(portrait_clip)
    assert entry["media"]["bits_per_pixel"] == pytest.approx(info.bit_rate / (info.width * info.height * info.fps))
    assert all(face["face_px"] > 20 and face["sharpness"] > 0 and face["outside_range"] == []
               for face in entry["faces"])
    assert report["custody"]["decision"]["sharpness_input_size"] == 32


def test_ensemble_averages_calibrated_members_on_their_own_crops(tmp_path, portrait_jpg, shipped, monkeypatch,
                                                                 calibration_card):
    import deepscan.scan as scan_module

    shipped.add("tiny_a", 2.0, calibration=calibration_card)  # sigmoid(3) = 0.953 >= its 0.7: fake
    shipped.add("tiny_b", -2.5)  # no card: sigmoid(-2.5) = 0.076, below 0.5: real
    seen = []
    original = scan_module.Member.probabilities

    def recording(member, crops):
        seen.append((member.name, crops.shape))
        return original(member, crops)

    monkeypatch.setattr(scan_module.Member, "probabilities", recording)
    result, report = _scan_json(tmp_path, portrait_jpg, "--method", "ensemble")
    assert result.exit_code == 0, result.output
    assert sorted(seen) == [("tiny_a", (1, 32, 32, 3)), ("tiny_b", (1, 48, 48, 3))]
    [entry] = report["files"]
    [face] = entry["faces"]
    assert face["member_probabilities"] == pytest.approx({"tiny_a": sigmoid(3.0), "tiny_b": sigmoid(-2.5)})
    assert face["fake_probability"] == pytest.approx((sigmoid(3.0) + sigmoid(-2.5)) / 2)
    [track] = entry["tracks"]
    assert track["label"] == "fake"  # the mean, 0.514, reaches 0.5
    assert track["members"]["tiny_a"]["label"] == "fake" and track["members"]["tiny_b"]["label"] == "real"
    assert track["agreement"] == 0.5
    decision = report["custody"]["decision"]
    assert decision["method"] == "ensemble" and decision["threshold_source"] == "default"
    assert [m["name"] for m in decision["members"]] == ["tiny_a", "tiny_b"]
    assert report["custody"]["detector"]["name"] == "ensemble"
    assert "agreement 50%" in result.stdout and "tiny_a 0.953 (fake)" in result.stdout

    models = json.loads(run("models", "--json").stdout)
    assert models[-1]["name"] == "ensemble" and models[-1]["members"] == ["tiny_a", "tiny_b"]


def test_an_ensemble_judges_each_members_sharpness_bound_on_that_members_own_crop(tmp_path, portrait_jpg, shipped):
    """A face is sharper on a smaller crop, so bounds measured at different input sizes are not comparable: the
    ensemble's range must hold each member's bound against the face on that member's crop, not the largest one."""
    sharpness = {}
    for name in ("tiny_a", "tiny_b"):  # 32 and 48 px: each alone reports the face's sharpness at its own size
        shipped.add(name, 1.0)
        _, report = _scan_json(tmp_path, portrait_jpg, "--method", name)
        sharpness[name] = report["files"][0]["faces"][0]["sharpness"]
    assert sharpness["tiny_a"] > sharpness["tiny_b"] * 1.2  # else this test could not tell the two readings apart

    def ensemble_with_bounds(bound_a, bound_b):
        shipped.add("tiny_a", 1.0, reliability={"min_sharpness": bound_a})
        shipped.add("tiny_b", 1.0, reliability={"min_sharpness": bound_b})
        _, report = _scan_json(tmp_path, portrait_jpg, "--method", "ensemble")
        return report

    # Inside each member's own range, though tiny_a's bound is above the face's sharpness on the 48 px crop.
    report = ensemble_with_bounds(0.9 * sharpness["tiny_a"], 0.9 * sharpness["tiny_b"])
    [entry] = report["files"]
    assert entry["faces"][0]["outside_range"] == [] and entry["tracks"][0]["label"] != "inconclusive"
    assert report["custody"]["decision"]["reliable_range"]["min_sharpness_at"] == pytest.approx(
        {"32": 0.9 * sharpness["tiny_a"], "48": 0.9 * sharpness["tiny_b"]})

    # Outside one member's: the face is too blurred for the ensemble, and the reason gives each bound's size.
    report = ensemble_with_bounds(1.1 * sharpness["tiny_a"], 0.9 * sharpness["tiny_b"])
    [track] = report["files"][0]["tracks"]
    assert track["label"] == "inconclusive" and track["reason"].endswith("1 too blurred")
    assert " at 32 px, " in track["reason"] and " at 48 px" in track["reason"]


def test_an_ensemble_card_sets_the_members_and_the_threshold(tmp_path, portrait_jpg, shipped, calibration_card):
    shipped.add("tiny_a", 2.0, calibration=calibration_card)
    shipped.add("tiny_b", -2.5)
    (shipped.folder / "ensemble.card.json").write_text(json.dumps({
        "schema": "deepscan.ensemble-card", "members": ["tiny_a", "tiny_b"],
        "calibration": {"threshold": 0.6, "threshold_rule": "test"},
    }))
    shipped.seal()
    _, report = _scan_json(tmp_path, portrait_jpg, "--method", "ensemble")
    assert report["files"][0]["tracks"][0]["label"] == "real"  # 0.514 is below the card's 0.6
    assert report["custody"]["decision"]["threshold_source"] == "ensemble card"


def _offline_empty_hub_cache(tmp_path, monkeypatch):
    import huggingface_hub.constants as constants

    cache = tmp_path / "hub"
    cache.mkdir()
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)


def test_an_ensemble_member_that_fails_an_integrity_check_stops_the_ensemble(tmp_path, portrait_jpg, shipped,
                                                                             calibration_card):
    shipped.add("tiny_a", 2.0, calibration=calibration_card)
    shipped.add("tiny_b", -2.5)
    (shipped.folder / "tiny_b.safetensors").write_bytes(b"altered after release")
    result = run("scan", portrait_jpg, "--method", "ensemble")
    assert result.exit_code == 2 and len(stderr_lines(result)) == 1, result.stderr
    assert "ensemble member tiny_b" in result.stderr and "SHA256SUMS" in result.stderr
    assert "left out" not in result.stderr

    shipped.add("tiny_b", -2.5, calibration=dict(calibration_card, bias=0.0))  # its calibration check fails
    result = run("scan", portrait_jpg, "--method", "ensemble")
    assert result.exit_code == 2 and "ensemble member tiny_b" in result.stderr
    assert "calibration check fails" in result.stderr and len(stderr_lines(result)) == 1


def test_an_ensemble_member_whose_weights_cannot_be_had_is_left_out(tmp_path, portrait_jpg, shipped, monkeypatch,
                                                                    calibration_card):
    shipped.add("tiny_a", 2.0, calibration=calibration_card)
    release = tmp_path / "release"  # tiny_b's weights are on the hub only; offline and not cached here
    release.mkdir()
    card = shipped.card(shipped.weights("tiny_b", 1.0, folder=release),
                        hub={"repo_id": "lab/tiny-b", "filename": "tiny_b.safetensors"})
    (shipped.folder / card.name).write_bytes(card.read_bytes())
    shipped.seal()
    _offline_empty_hub_cache(tmp_path, monkeypatch)
    result, report = _scan_json(tmp_path, portrait_jpg, "--method", "ensemble")
    assert result.exit_code == 0, result.output
    assert "ensemble: left out tiny_b" in result.stderr and "offline" in result.stderr
    assert [m["name"] for m in report["custody"]["decision"]["members"]] == ["tiny_a"]


def test_ensemble_without_trained_members_or_with_weights_is_one_line(portrait_jpg, shipped):
    result = run("scan", portrait_jpg, "--method", "ensemble")
    assert result.exit_code == 2 and len(stderr_lines(result)) == 1
    assert "no detector has trained weights" in result.stderr
    result = run("scan", portrait_jpg, "--method", "ensemble", "--weights", "x.safetensors")
    assert result.exit_code == 2 and len(stderr_lines(result)) == 1 and "each member's own" in result.stderr


def test_the_summary_says_when_a_track_was_scored_on_part_of_its_faces(monkeypatch):
    from io import StringIO

    from rich.console import Console

    import deepscan.cli.summary as cli
    from deepscan.scan import FileResult
    from deepscan.verdicts import file_verdict, track_verdict

    track = track_verdict(3, [0.9, 0.2, 0.3, 0.95], [0, 1, 2, 3], 0.5,
                          outside_range=[["too small"], [], [], ["too blurred"]])
    result = FileResult(path="clip.mp4", kind="video", status="complete", tracks=[track],
                        verdict=file_verdict([track], trained=True))
    printed = StringIO()
    monkeypatch.setattr(cli, "out", Console(file=printed, width=200))
    cli.print_summary([result], trained=True)
    assert ("partly outside the reliable range clip.mp4, track 3: scored on the 2 of its 4 faces inside it "
            "(50% of its faces are outside)") in printed.getvalue()


def test_the_ensemble_judge_builds_each_planned_member_with_its_calibration(shipped, calibration_card):
    from deepscan.ensemble import plan_ensemble
    from deepscan.scan import Judge

    shipped.add("tiny_a", 2.0, calibration=calibration_card)
    shipped.add("tiny_b", -2.5)
    plan = plan_ensemble()
    judge = Judge.ensemble(plan)
    assert judge.is_ensemble and judge.name == "ensemble" and judge.trained
    assert [member.name for member in judge.members] == ["tiny_a", "tiny_b"]
    assert [member.input_size for member in judge.members] == [32, 48] and judge.crop_sizes == [32, 48]
    assert judge.members[0].calibration.threshold == 0.7 and not judge.members[1].calibration.calibrated
    assert (judge.threshold, judge.threshold_source) == (0.5, "default")
    chosen = Judge.ensemble(plan, 0.8)
    assert (chosen.threshold, chosen.threshold_source) == (0.8, "--threshold")


def test_the_summary_shows_a_file_name_that_is_not_utf8_escaped_as_the_errors_do(monkeypatch):
    import os
    from io import StringIO

    from rich.console import Console

    import deepscan.cli.summary as cli
    from deepscan.scan import FileResult
    from deepscan.verdicts import file_verdict, track_verdict

    name = os.fsdecode(b"bad\xffname\nclip.mp4")  # a byte that is not UTF-8 and a newline, as a folder walk gives them
    track = track_verdict(0, [0.9, 0.8], [0, 1], 0.5)
    result = FileResult(path=name, kind="video", status="complete", tracks=[track],
                        verdict=file_verdict([track], trained=True))
    printed = StringIO()
    monkeypatch.setattr(cli, "out", Console(file=printed, width=200))
    cli.print_summary([result], trained=True)
    assert "bad\\xffname\\nclip.mp4" in printed.getvalue()


def test_ensemble_without_a_member_leaves_it_out_and_drops_the_cards_threshold(tmp_path, portrait_jpg, shipped,
                                                                                calibration_card):
    import json

    shipped.add("tiny_a", 2.0, calibration=calibration_card)
    shipped.add("tiny_b", -2.5)
    (shipped.folder / "ensemble.card.json").write_text(json.dumps({
        "schema": "deepscan.ensemble-card", "members": ["tiny_a", "tiny_b"],
        "calibration": {"threshold": 0.6, "threshold_rule": "test"}}))
    shipped.seal()
    result, report = _scan_json(tmp_path, portrait_jpg, "--method", "ensemble")
    decision = report["custody"]["decision"]
    assert [m["name"] for m in decision["members"]] == ["tiny_a", "tiny_b"] and decision["threshold"] == 0.6

    result, report = _scan_json(tmp_path, portrait_jpg, "--method", "ensemble", "--without", "tiny_b")
    assert result.exit_code == 0, result.output
    assert "ensemble: left out tiny_b: left out by --without" in result.stderr
    decision = report["custody"]["decision"]
    assert [m["name"] for m in decision["members"]] == ["tiny_a"]
    # The card's 0.6 was chosen for the mean of both members: without one, the calibrated default, said so.
    assert decision["threshold"] == 0.5 and "--without" in decision["threshold_source"]


def test_without_is_checked_before_any_work(portrait_jpg, shipped, calibration_card):
    shipped.add("tiny_a", 2.0, calibration=calibration_card)
    result = run("scan", portrait_jpg, "--without", "tiny_a")
    assert result.exit_code == 2 and len(stderr_lines(result)) == 1 and "needs --method ensemble" in result.stderr
    result = run("scan", portrait_jpg, "--method", "ensemble", "--without", "nosuch")
    assert result.exit_code == 2 and len(stderr_lines(result)) == 1 and "--without" in result.stderr
    result = run("scan", portrait_jpg, "--method", "ensemble", "--without", "tiny_a")
    assert result.exit_code == 2 and len(stderr_lines(result)) == 1 and "no member" in result.stderr


def test_the_face_search_is_chosen_by_name_and_recorded(tmp_path, portrait_jpg):
    result, report = _scan_json(tmp_path, portrait_jpg)
    assert report["custody"]["parameters"]["face_search"] == "guided"  # the default for videos
    result, report = _scan_json(tmp_path, portrait_jpg, "--no-tile")  # the deprecated flag still means it
    assert result.exit_code == 0 and report["custody"]["parameters"]["face_search"] == "whole"
    result = run("scan", portrait_jpg, "--face-search", "everywhere")
    assert result.exit_code == 2 and len(stderr_lines(result)) == 1 and "guided, tiles, whole" in result.stderr

"""The faces a scan keeps for its report (deepscan.kept_faces) give the heat maps the file's decoding again gave:
the same faces, crops and figures, with the frame at display size."""

from __future__ import annotations

import dataclasses
from dataclasses import asdict

import numpy as np
import pytest

from deepscan.explain import explain_recorded_faces, suspicious_faces
from deepscan.kept_faces import KeepFaces, KeptFaces, display_frame
from deepscan.media.checksums import Checksums
from deepscan.media.synthetic import moving_portrait_clip
from deepscan.report.figures import _display_frame, face_panels
from deepscan.scan import ScanOptions, Scanner
from deepscan.scan_results import FaceResult, FileResult

pytestmark = pytest.mark.usefixtures("one_intra_op_thread")

TRACKS = 3


@pytest.fixture(scope="module")
def wide_clip(tmp_path_factory):
    """Two faces in 1280 x 720 frames: the frame panel shows them halved (960 pixels wide at most)."""
    path = tmp_path_factory.mktemp("kept") / "wide.mp4"
    return moving_portrait_clip(path, seconds=1.5, fps=8, size=(1280, 720), faces=2)


def _scan(detector, path, keep: KeepFaces | None, pipeline: bool = True):
    options = ScanOptions(method="tiny_cam", fps=4, device="cpu", pipeline=pipeline, runtime="eager")
    checksums = Checksums()
    with Scanner(detector, options, trained=False, checksums=checksums, keep_faces=keep) as scanner:
        result = scanner.scan_file(path)
    assert result.status == "complete", result.message
    return detector, options, checksums, result


def _same(first, second) -> bool:
    if isinstance(first, np.ndarray) or isinstance(second, np.ndarray):
        return np.array_equal(np.asarray(first), np.asarray(second), equal_nan=True)
    return first == second


def _same_panels(first: list, second: list) -> None:
    assert [panel.key for panel in first] == [panel.key for panel in second]
    for one, other in zip(first, second):
        for field in dataclasses.fields(one):
            assert _same(getattr(one, field.name), getattr(other, field.name)), (one.key, field.name)


@pytest.mark.parametrize("clip", ["two_face_clip", "wide_clip"])
def test_kept_faces_explain_as_the_decoded_frames_do(clip, request, monkeypatch, tiny_cam_detector):
    path = request.getfixturevalue(clip)
    detector, options, checksums, result = _scan(tiny_cam_detector(), path, KeepFaces(max_tracks=TRACKS))
    entry, parameters = result.to_dict(), asdict(options)
    assert "kept_faces" not in entry
    chosen = suspicious_faces(entry, max_tracks=TRACKS)
    assert chosen and len(result.kept_faces) == len(chosen)

    decoded = list(explain_recorded_faces(detector, entry, parameters, max_tracks=TRACKS, trained=False,
                                          checksums=checksums))

    def no_decoding(*args, **kwargs):
        raise AssertionError("the kept faces were decoded again")

    monkeypatch.setattr("deepscan.explain.recorded.recover_frames", no_decoding)
    kept = list(explain_recorded_faces(detector, entry, parameters, max_tracks=TRACKS, trained=False,
                                       checksums=checksums, kept=result.kept_faces))
    assert [face for face, _ in kept] == [face for face, _ in decoded] == chosen
    for (face, from_kept), (_, from_file) in zip(kept, decoded):
        assert from_kept.recorded_probability == from_file.recorded_probability == face["fake_probability"]
        assert np.array_equal(from_kept.crop, from_file.crop)
        assert from_kept.frame_shape == from_file.frame.shape
        assert np.array_equal(from_kept.frame, display_frame(from_file.frame))
        assert np.array_equal(from_kept.frame_heatmap, from_file.frame_heatmap, equal_nan=True)
        for mine, theirs in zip(_display_frame(from_kept.frame, from_kept.frame_heatmap),
                                _display_frame(from_file.frame, from_file.frame_heatmap)):
            assert np.array_equal(mine, theirs, equal_nan=True)
        _same_panels(face_panels(from_kept), face_panels(from_file))
    if clip == "wide_clip":
        assert kept[0][1].frame.shape == (360, 640, 3)  # halved: 1280 is more than 960 pixels wide


def test_the_serial_scan_keeps_the_faces_the_pipelined_scan_keeps(two_face_clip, tiny_cam_detector):
    keep = KeepFaces(per_track=2)
    *_, pipelined = _scan(tiny_cam_detector(), two_face_clip, keep)
    *_, serial = _scan(tiny_cam_detector(), two_face_clip, keep, pipeline=False)
    assert dataclasses.replace(pipelined, seconds=0.0) == dataclasses.replace(serial, seconds=0.0)
    assert len(pipelined.kept_faces) == len(suspicious_faces(pipelined.to_dict(), per_track=2)) > 0
    assert pipelined.kept_faces._tracks == serial.kept_faces._tracks


def test_a_scan_keeps_nothing_unless_asked(two_face_clip, tiny_cam_detector):
    *_, result = _scan(tiny_cam_detector(), two_face_clip, None)
    assert result.kept_faces is None


def _face(index: int, track: int, probability: float) -> FaceResult:
    return FaceResult(index, index / 4, track, (10.0, 10.0, 50.0, 50.0), 0.9, fake_probability=probability)


def test_the_kept_faces_are_the_ones_a_report_chooses_ties_to_the_earlier():
    class Pending:
        def __init__(self, face):
            self.face, self.kept = face, (np.zeros((4, 4, 3), np.uint8), view)

    from deepscan.kept_faces import FrameView

    view = FrameView(np.zeros((8, 8, 3), np.uint8))
    probabilities = {1: [0.2, 0.7, 0.7, float("nan"), 0.5, 0.9], 2: [0.4, 0.4, 0.1], 3: [0.3]}
    faces = [_face(index, track, p) for track, values in probabilities.items() for index, p in enumerate(values)]
    faces.sort(key=lambda face: face.frame_index)
    kept = KeptFaces(KeepFaces(per_track=2, max_tracks=2), input_size=4, margin=1.3)
    kept.offer([Pending(face) for face in faces])
    result = FileResult("x.mp4", "video", "complete", faces=faces)
    result.tracks = [dataclasses.make_dataclass("T", ["track_id", "score"])(track, score)
                     for track, score in ((1, 0.6), (2, 0.4), (3, 0.3))]
    kept.conclude(result.tracks)
    entry = {"faces": [asdict(face) for face in faces], "tracks": [vars(track) for track in result.tracks]}
    chosen = suspicious_faces(entry, per_track=2, max_tracks=2)
    assert [(face["frame_index"], face["track_id"]) for face in chosen] == [(5, 1), (1, 1), (0, 2), (1, 2)]
    assert all(kept.get(face["frame_index"], face["track_id"], face["fake_probability"]) for face in chosen)
    assert len(kept) == len(chosen)
    assert kept.get(2, 1, 0.7) is None  # the later of two equal faces is not kept

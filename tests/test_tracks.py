"""Face tracks: one per person, following moving faces across sampled frames."""

from __future__ import annotations

import numpy as np
import pytest

from deepscan.media.faces import Face, FaceDetector
from deepscan.media.tracks import FaceTracker, keypoint_distance
from deepscan.media.video import iter_frames

# Keypoints of a 100 px face whose box starts at (0, 0): eyes, nose, mouth, ears.
_UNIT_KEYPOINTS = np.array([[30, 35], [70, 35], [50, 55], [50, 75], [5, 45], [95, 45]], float)


def face_at(x: float, y: float, size: float = 100.0) -> Face:
    return Face(
        box=(x, y, x + size, y + size),
        score=0.9,
        keypoints=_UNIT_KEYPOINTS * (size / 100.0) + np.array([x, y]),
    )


def track_clip(path, sample_fps: float = 5.0):
    tracker = FaceTracker()
    frames = 0
    with FaceDetector() as detector:
        for frame in iter_frames(path, fps=sample_fps):
            tracker.update(frame.index, frame.time_s, detector.detect(frame.image))
            frames += 1
    return tracker.tracks(), frames


def test_one_moving_face_makes_one_track(portrait_clip):
    tracks, frames = track_clip(portrait_clip)
    assert frames == 10
    assert len(tracks) == 1
    assert len(tracks[0]) == frames
    times = [time_s for _, time_s, _ in tracks[0].detections]
    assert times == sorted(times)
    # The face really moved: the track follows it rather than standing still.
    centers = np.array([face.center for face in tracks[0].faces])
    assert np.ptp(centers[:, 0]) > 15


def test_two_moving_faces_make_two_tracks(two_face_clip):
    tracks, frames = track_clip(two_face_clip)
    assert len(tracks) == 2
    assert [len(track) for track in tracks] == [frames, frames]
    sides = []
    for track in tracks:
        xs = [face.center[0] for face in track.faces]
        assert max(xs) < 160 or min(xs) > 160  # each track stays with one person
        sides.append(xs[0] < 160)
    assert sorted(sides) == [False, True]


def test_ids_follow_positions_not_list_order():
    tracker = FaceTracker()
    first = tracker.update(0, 0.0, [face_at(0, 0), face_at(400, 0)])
    second = tracker.update(1, 0.5, [face_at(410, 5), face_at(8, 3)])
    assert second == [first[1], first[0]]


def test_a_face_speeding_up_is_followed_by_its_velocity():
    tracker = FaceTracker()
    positions = [0, 50, 150, 300, 500]
    ids = [tracker.update(i, i * 0.5, [face_at(x, 0)])[0] for i, x in enumerate(positions)]
    # From 150 to 300 px a 100 px face leaves its last box entirely; at the speed it had
    # reached it is where it was expected.
    assert ids == [0] * len(positions)
    assert len(tracker.tracks()) == 1


def test_a_jump_starts_a_new_track():
    tracker = FaceTracker()
    tracker.update(0, 0.0, [face_at(0, 0)])
    assert tracker.update(1, 0.5, [face_at(600, 300)]) == [1]


def test_a_long_gap_ends_the_track():
    tracker = FaceTracker(max_gap_s=2.0)
    tracker.update(0, 0.0, [face_at(0, 0)])
    assert tracker.update(1, 1.5, [face_at(2, 0)]) == [0]
    assert tracker.update(2, 4.0, [face_at(4, 0)]) == [1]
    assert [len(track) for track in tracker.tracks()] == [2, 1]


def test_a_face_twice_as_large_is_someone_else():
    tracker = FaceTracker()
    tracker.update(0, 0.0, [face_at(100, 100, size=50)])
    assert tracker.update(1, 0.5, [face_at(75, 75, size=120)]) == [1]


def test_frames_must_come_in_time_order():
    tracker = FaceTracker()
    tracker.update(3, 1.0, [])
    with pytest.raises(ValueError):
        tracker.update(2, 0.5, [face_at(0, 0)])


def test_keypoint_distance_is_relative_to_face_size():
    assert keypoint_distance(face_at(0, 0), face_at(10, 0)) == pytest.approx(0.1)
    assert keypoint_distance(face_at(0, 0, 200), face_at(20, 0, 200)) == pytest.approx(0.1)

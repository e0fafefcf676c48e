"""Linking faces across sampled frames into tracks: one track per person on screen.

Frames are sampled seconds apart, so a face may move a lot between two of them. Each face is
matched to the track whose last face it overlaps best (box IoU) or whose keypoints it lies closest
to (distance divided by face size), also comparing with where the track would be had it kept its
last velocity. Matching is one-to-one (Hungarian algorithm); unmatched faces start new tracks and
tracks unseen for longer than ``max_gap_s`` end.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy.optimize import linear_sum_assignment

from deepscan.media.faces import Face, box_iou

# Cost of a pair that must not be matched: larger than any allowed pair's cost.
_FORBIDDEN = 1e6


@dataclass
class Track:
    """One face followed over time: ``detections`` holds (frame_index, time_s, face), in order."""

    track_id: int
    detections: list[tuple[int, float, Face]] = field(default_factory=list)

    @property
    def first_time_s(self) -> float:
        return self.detections[0][1]

    @property
    def last_time_s(self) -> float:
        return self.detections[-1][1]

    @property
    def last_face(self) -> Face:
        return self.detections[-1][2]

    @property
    def faces(self) -> list[Face]:
        return [face for _, _, face in self.detections]

    def __len__(self) -> int:
        return len(self.detections)

    def predicted_offset(self, time_s: float) -> np.ndarray:
        """(dx, dy) the face moves from its last position by ``time_s`` at its last velocity."""
        if len(self.detections) < 2:
            return np.zeros(2)
        (_, earlier_s, earlier), (_, later_s, later) = self.detections[-2], self.detections[-1]
        if later_s <= earlier_s:
            return np.zeros(2)
        velocity = (np.array(later.center) - np.array(earlier.center)) / (later_s - earlier_s)
        return velocity * (time_s - later_s)


def keypoint_distance(first: Face, second: Face) -> float:
    """Mean distance between matching keypoints, in units of the faces' mean size."""
    scale = max((first.size + second.size) / 2, 1e-6)
    if len(first.keypoints) and len(first.keypoints) == len(second.keypoints):
        gaps = np.linalg.norm(first.keypoints - second.keypoints, axis=1)
        return float(gaps.mean() / scale)
    # No keypoints to compare: fall back on the box centres.
    return float(np.linalg.norm(np.subtract(first.center, second.center)) / scale)


def _shifted(face: Face, offset: np.ndarray) -> Face:
    dx, dy = float(offset[0]), float(offset[1])
    x0, y0, x1, y1 = face.box
    return Face(
        box=(x0 + dx, y0 + dy, x1 + dx, y1 + dy),
        score=face.score,
        keypoints=face.keypoints + np.array([dx, dy]),
    )


class FaceTracker:
    """Groups the faces of successive frames into :class:`Track` s; feed frames in time order."""

    def __init__(
        self,
        iou_threshold: float = 0.3,
        max_gap_s: float = 2.0,
        max_keypoint_distance: float = 0.75,
        max_size_ratio: float = 2.0,
    ) -> None:
        """A face may join a track when its box overlaps the track's last (or predicted) box by at
        least ``iou_threshold`` IoU, or its keypoints lie within ``max_keypoint_distance`` face
        sizes of the track's; and never when the two faces' sizes differ by more than
        ``max_size_ratio`` (a face does not double in size between two samples)."""
        self.iou_threshold = iou_threshold
        self.max_gap_s = max_gap_s
        self.max_keypoint_distance = max_keypoint_distance
        self.max_size_ratio = max_size_ratio
        self._tracks: list[Track] = []
        self._last_time_s: float | None = None

    def _active(self, time_s: float) -> list[Track]:
        return [track for track in self._tracks if time_s - track.last_time_s <= self.max_gap_s]

    def _pair_cost(self, track: Track, face: Face, time_s: float) -> float:
        last = track.last_face
        ratio = max(last.size, face.size) / max(min(last.size, face.size), 1e-6)
        if ratio > self.max_size_ratio:
            return _FORBIDDEN
        views = [last]
        offset = track.predicted_offset(time_s)
        if np.any(offset):
            views.append(_shifted(last, offset))
        iou = max(float(box_iou(view.box, np.array([face.box]))[0]) for view in views)
        distance = min(keypoint_distance(view, face) for view in views)
        if iou < self.iou_threshold and distance > self.max_keypoint_distance:
            return _FORBIDDEN
        # Both terms lie in [0, 1] for allowed pairs; lower is a better match.
        return (1.0 - iou) + min(distance / self.max_keypoint_distance, 1.0)

    def update(self, frame_index: int, time_s: float, faces: list[Face]) -> list[int]:
        """Add one frame's faces; returns the track id of each face, in the order given."""
        if self._last_time_s is not None and time_s < self._last_time_s:
            raise ValueError(
                f"frames must come in time order: {time_s} s after {self._last_time_s} s"
            )
        self._last_time_s = time_s
        active = self._active(time_s)
        assigned: list[Track | None] = [None] * len(faces)
        if active and faces:
            costs = np.array(
                [[self._pair_cost(track, face, time_s) for face in faces] for track in active]
            )
            for row, column in zip(*linear_sum_assignment(costs), strict=True):
                if costs[row, column] < _FORBIDDEN:
                    assigned[column] = active[row]
        ids = []
        for face, track in zip(faces, assigned, strict=True):
            if track is None:
                track = Track(track_id=len(self._tracks))
                self._tracks.append(track)
            track.detections.append((frame_index, time_s, face))
            ids.append(track.track_id)
        return ids

    def tracks(self) -> list[Track]:
        """Every track so far, ended or not, by id (ids count from 0 in order of appearance)."""
        return list(self._tracks)

"""Properties (hypothesis) of what every verdict rests on: face crops, frame sampling, track linking and
score aggregation, checked on generated inputs far beyond the hand-picked cases of the other test files."""

from __future__ import annotations

import math
import warnings
from contextlib import contextmanager
from fractions import Fraction
from random import Random
from types import SimpleNamespace
from unittest import mock

import av
import numpy as np
import pytest
from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st

from deepscan.media import video
from deepscan.media.faces import Face, box_iou, crop_face, face_square
from deepscan.media.tracks import FaceTracker
from deepscan.verdicts import (
    FAKE,
    INCONCLUSIVE,
    NO_FACE,
    REAL,
    UNTRAINED,
    file_verdict,
    member_agreement,
    track_verdict,
)

# Generated cases are small and pure (no model, no file), so a few hundred run in seconds; no deadline,
# because the machine these run on is shared and a slow example is not a wrong one.
FAST = settings(max_examples=150, deadline=None)


# --- crops ------------------------------------------------------------------------------------------------------


def coded_frame(height: int, width: int) -> np.ndarray:
    """A frame whose pixels name their own position (nearly uniquely), so a crop shows where it read from."""
    rows, columns = np.mgrid[0:height, 0:width]
    return np.stack([columns % 256, rows % 256, (7 * columns + 13 * rows) % 251], axis=2).astype(np.uint8)


@st.composite
def frames_and_faces(draw):
    """A frame of 1 x 1 px up to 60 x 60 (any aspect ratio) and a face box anywhere from well inside it to
    wholly outside it, of any aspect ratio and size from 0 px up to three times the frame."""
    height, width = draw(st.integers(1, 60)), draw(st.integers(1, 60))
    reach = 3 * max(height, width) + 3
    box_w = draw(st.floats(0, reach, allow_nan=False))
    box_h = draw(st.floats(0, reach, allow_nan=False))
    center_x = draw(st.floats(-width - box_w, 2 * width + box_w, allow_nan=False))
    center_y = draw(st.floats(-height - box_h, 2 * height + box_h, allow_nan=False))
    box = (center_x - box_w / 2, center_y - box_h / 2, center_x + box_w / 2, center_y + box_h / 2)
    return height, width, Face(box=box, score=0.9, keypoints=np.zeros((6, 2)))


margins = st.floats(0.5, 2.5, allow_nan=False)


def mirrored_square(frame: np.ndarray, square: tuple[float, ...]) -> np.ndarray:
    """The reference crop: the frame itself mirrored about its edges (as often as needed), cut at ``square``."""
    x0, y0, x1, y1 = (int(v) for v in square)
    height, width = frame.shape[:2]
    reach = max(0, -x0, -y0, x1 - width, y1 - height)
    whole = np.pad(frame, ((reach, reach), (reach, reach), (0, 0)), mode="reflect")
    return whole[y0 + reach : y1 + reach, x0 + reach : x1 + reach]


def misses_the_frame(square: tuple[float, ...], height: int, width: int) -> bool:
    x0, y0, x1, y1 = square
    return x1 <= 0 or y1 <= 0 or x0 >= width or y0 >= height


@FAST
@given(frames_and_faces(), st.integers(1, 64), margins)
def test_a_crop_always_has_the_requested_shape_and_type(case, size, margin):
    height, width, face = case
    crop = crop_face(coded_frame(height, width), face, size, margin)
    assert crop.shape == (size, size, 3)
    assert crop.dtype == np.uint8


@FAST
@given(frames_and_faces(), margins)
@example(case=(20, 20, Face((-18.0, 0.0, 2.0, 20.0), 0.9, np.zeros((6, 2)))), margin=1.3)  # mostly past the edge
def test_a_crop_is_the_frame_mirrored_at_its_edges(case, margin):
    """Unresized (output as large as the square), every pixel of the crop is the frame's pixel at that place,
    or, past an edge, the frame's mirror image there: never a pixel of nowhere, never a repeated strip."""
    height, width, face = case
    frame = coded_frame(height, width)
    square = face_square(face, margin)
    side = int(square[2] - square[0])
    assume(side <= 200)  # keep the reference's padded frame small
    crop = crop_face(frame, face, side, margin)
    if misses_the_frame(square, height, width):
        assert not crop.any()  # nothing of the frame to show: black, documented
    else:
        assert np.array_equal(crop, mirrored_square(frame, square))


@FAST
@given(frames_and_faces(), st.integers(1, 64), margins, st.integers(0, 255))
def test_a_crop_of_a_flat_frame_is_flat_at_any_size(case, size, margin, level):
    """Resizing included, a crop shows only the frame: no black border, no ringing from outside it."""
    height, width, face = case
    assume(not misses_the_frame(face_square(face, margin), height, width))
    frame = np.full((height, width, 3), level, np.uint8)
    assert (crop_face(frame, face, size, margin) == level).all()


@FAST
@given(frames_and_faces(), margins)
def test_the_square_is_whole_pixels_centred_on_the_box_at_margin_times_its_longer_side(case, margin):
    _, _, face = case
    x0, y0, x1, y1 = square = face_square(face, margin)
    assert all(float(value).is_integer() for value in square)
    side = x1 - x0
    assert side == y1 - y0 == max(1, round(margin * face.size))
    # Snapping to whole pixels moves the centre by at most half a pixel.
    assert abs((x0 + x1) / 2 - face.center[0]) <= 0.5
    assert abs((y0 + y1) / 2 - face.center[1]) <= 0.5


@FAST
@given(frames_and_faces(), st.floats(1.0, 2.5), st.integers(1, 64))
def test_with_a_margin_the_face_box_maps_inside_the_crop(case, margin, size):
    """A box point (x, y) lands at ((x - x0) * size / side, ...) in the crop; at a margin of 1 or more that is
    inside the crop, up to one frame pixel (the snapping of the square's side and corner to whole pixels)."""
    _, _, face = case
    x0, y0, x1, y1 = face_square(face, margin)
    scale = size / (x1 - x0)
    bx0, by0, bx1, by1 = face.box
    tolerance = 1.0 * scale
    assert (bx0 - x0) * scale >= -tolerance and (by0 - y0) * scale >= -tolerance
    assert (bx1 - x0) * scale <= size + tolerance and (by1 - y0) * scale <= size + tolerance


# --- frame sampling ---------------------------------------------------------------------------------------------


class _FakeFrame:
    """What iter_frames reads of a decoded PyAV frame."""

    rotation = 0
    time = None

    def __init__(self, pts: int):
        self.pts = pts

    def to_ndarray(self, format: str) -> np.ndarray:
        return np.zeros((1, 1, 3), np.uint8)


@contextmanager
def fake_video(pts: list[int], time_base: Fraction, start: int):
    """iter_frames over a stream whose frames carry exactly ``pts``: any time base, any frame rate, any gaps,
    with no encoder rounding the timestamps on the way (a real encode covers only a few of these)."""
    stream = SimpleNamespace(
        thread_type=None, start_time=start, time_base=time_base, average_rate=None, guessed_rate=None,
        frames=len(pts), duration=None,
    )
    container = mock.MagicMock(duration=None)
    container.__enter__.return_value = container
    container.decode.side_effect = lambda _stream: iter([_FakeFrame(p) for p in pts])
    with mock.patch.object(video, "_open_video", return_value=(container, stream)):
        yield


TIME_BASES = [Fraction(1, 25), Fraction(1, 1000), Fraction(1001, 30000), Fraction(1, 15360), Fraction(1, 90000),
              Fraction(1, 10**6), Fraction(1, 10**9)]
# Tiny (one frame a week), fractional, ordinary and huge sampling rates.
sampling_rates = st.one_of(
    st.floats(1e-6, 1e6, allow_nan=False, allow_infinity=False),
    st.sampled_from([2.0, 0.5, 30000 / 1001, 24.0, 1 / 3600, 1e6]),
)


@st.composite
def variable_rate_videos(draw):
    """Increasing timestamps with gaps of one tick of the time base up to hours, from a nonzero start."""
    time_base = draw(st.sampled_from(TIME_BASES))
    start = draw(st.integers(0, 10**6))
    gaps = draw(st.lists(st.one_of(st.integers(1, 50), st.integers(1, 10**8)), min_size=0, max_size=60))
    pts = [start + sum(gaps[:i]) for i in range(len(gaps) + 1)]
    return pts, time_base, start


# The sampler's tolerance for timestamps that went through a time base is 1e-6 s; a frame less than twice that
# before a tick may count as at the tick or before it, and the properties accept either.
TOLERANCE_S = Fraction(2, 10**6)


def sample(pts, time_base, start, fps):
    with fake_video(pts, time_base, start):
        return [frame.index for frame in video.iter_frames("fake.mkv", fps=fps)]


def tick_bins(pts, time_base, start, fps) -> list[range]:
    """For each frame, the 1/fps tick intervals it may count in: exactly its own, or also the next one when it
    lies within the tolerance before that tick. Exact arithmetic, so the reference has no rounding of its own."""
    rate = Fraction(fps)
    bins = []
    for p in pts:
        time = (p - start) * time_base
        bins.append(range(math.floor(time * rate), math.floor((time + TOLERANCE_S) * rate) + 1))
    return bins


def is_first_at_or_after_each_tick(kept: set[int], bins: list[range]) -> bool:
    """Whether some choice of each frame's interval (among those ``tick_bins`` allows) makes the kept frames
    exactly the first frame of every interval that holds one: one frame per tick, none skipped. Intervals are
    chosen in time order, so the possible states after each frame are the interval it was put in."""
    states: set[int | None] = {None}
    for index, allowed in enumerate(bins):
        states = {
            chosen
            for previous in states
            for chosen in allowed
            if (previous is None or chosen >= previous) and ((previous is None or chosen > previous) == (index in kept))
        }
        if not states:
            return False
    return True


@FAST
@given(variable_rate_videos(), sampling_rates)
@example(video_=([0, 33333, 66667, 100000], Fraction(1, 10**6), 0), fps=30.0)  # microsecond stamps off the ticks
# Two frames kept for one tick: both within 1e-6 s of it, so both passed a test in seconds...
@example(video_=([0, 9500, 9900], Fraction(1, 10**9), 0), fps=1e5)
# ... and a tick skipped: at one frame an hour, a tolerance in ticks is 3.6 ms, so a frame 2 ms before a tick
# moved the next tick one too far.
@example(video_=([0, 7_199_998_000_000, 7_200_500_000_000], Fraction(1, 10**9), 0), fps=1 / 3600)
def test_sampling_keeps_the_first_frame_at_or_after_each_tick(video_, fps):
    pts, time_base, start = video_
    assume(float((pts[-1] - start) * time_base) * fps < 1e9)  # float seconds x fps stays exact enough
    kept = sample(pts, time_base, start, fps)
    # Increasing, unique, and frames of the video.
    assert kept == sorted(set(kept)) and all(0 <= index < len(pts) for index in kept)
    assert kept[:1] == [0]  # the first frame always opens the first tick
    assert is_first_at_or_after_each_tick(set(kept), tick_bins(pts, time_base, start, fps))


@FAST
@given(variable_rate_videos(), sampling_rates)
def test_sampled_frames_are_about_one_tick_apart(video_, fps):
    """Stated as spacing, of consecutive kept frames: the later is at or after the first tick that follows the
    earlier (less the tolerance), and at most one tick plus the longest gap between frames of the video later."""
    pts, time_base, start = video_
    assume(float((pts[-1] - start) * time_base) * fps < 1e9)
    kept = sample(pts, time_base, start, fps)
    times = [(p - start) * time_base for p in pts]
    tick = 1 / Fraction(fps)
    for earlier, later in zip(kept, kept[1:]):
        next_tick = (math.floor(times[earlier] / tick) + 1) * tick
        assert times[later] >= next_tick - TOLERANCE_S
        longest_gap = max(b - a for a, b in zip(times[earlier:later], times[earlier + 1 : later + 1]))
        assert times[later] - times[earlier] <= tick + longest_gap + TOLERANCE_S


@FAST
@given(variable_rate_videos())
def test_every_frame_sampling_keeps_every_frame(video_):
    pts, time_base, start = video_
    assert sample(pts, time_base, start, None) == list(range(len(pts)))


@FAST
@given(variable_rate_videos(), st.sampled_from([math.inf, math.nan, 0.0, -1.0, 1e308, 5e-324]))
def test_extreme_sampling_rates_keep_every_frame_or_are_refused(video_, fps):
    """The CLI lets any float through its lower bound (``inf``, ``nan``): they must be refused before decoding,
    not crash part-way; a rate above any the clock can resolve keeps every frame."""
    pts, time_base, start = video_
    if not (math.isfinite(fps) and fps > 0):
        with pytest.raises(ValueError):
            sample(pts, time_base, start, fps)
    elif fps > 1e300:
        assert sample(pts, time_base, start, fps) == list(range(len(pts)))
    else:
        assert sample(pts, time_base, start, fps)[:1] == [0]


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    gaps=st.lists(st.integers(1, 30), min_size=1, max_size=12),
    fps=st.sampled_from([0.7, 2.0, 3.0, 25.0, 30000 / 1001]),
)
def test_a_real_variable_rate_file_samples_like_its_timestamps_say(tmp_path, gaps, fps):
    """The same reference on a real Matroska file (millisecond time base), so that the fake stream above is not
    the only one the properties hold for."""
    stamps = [sum(gaps[:i]) for i in range(len(gaps) + 1)]  # in 1/25 s, as muxed
    path = tmp_path / f"vfr-{len(gaps)}-{sum(gaps)}.mkv"
    with av.open(str(path), "w") as container:
        stream = container.add_stream("mjpeg", rate=25)
        stream.width, stream.height, stream.pix_fmt = 16, 16, "yuvj420p"
        for index, stamp in enumerate(stamps):
            frame = av.VideoFrame.from_ndarray(np.zeros((16, 16, 3), np.uint8), format="rgb24")
            frame.pts, frame.time_base = index, Fraction(1, 25)
            for packet in stream.encode(frame):
                packet.dts, packet.pts, packet.time_base = stamp, stamp, Fraction(1, 25)
                container.mux(packet)
        container.mux(stream.encode(None))
    frames = list(video.iter_frames(path, every_frame=True))
    assert [round(frame.time_s * 25) for frame in frames] == stamps
    kept = [frame.index for frame in video.iter_frames(path, fps=fps)]
    pts = [round(frame.time_s * 1000) for frame in frames]
    assert is_first_at_or_after_each_tick(set(kept), tick_bins(pts, Fraction(1, 1000), 0, fps))


# --- track linking ------------------------------------------------------------------------------------------------

# Keypoints of a face as shares of its box (eyes, nose, mouth, ears); dyadic, so that shifting a scene by whole
# pixels or scaling it by two moves every coordinate exactly and the invariance properties below are exact.
_KEYPOINT_SHARES = np.array(
    [[0.25, 0.375], [0.75, 0.375], [0.5, 0.5625], [0.5, 0.75], [0.0625, 0.4375], [0.9375, 0.4375]]
)


def face_box(x: float, y: float, width: float, height: float, keypoints: bool = True) -> Face:
    points = np.array([x, y]) + _KEYPOINT_SHARES * np.array([width, height]) if keypoints else np.zeros((0, 2))
    return Face(box=(x, y, x + width, y + height), score=0.9, keypoints=points)


def run_tracker(frames: list[tuple[float, list[Face]]], tracker: FaceTracker | None = None):
    """Feeds the frames; returns per frame the ids given, and the tracker."""
    tracker = tracker or FaceTracker()
    return [tracker.update(index, time_s, faces) for index, (time_s, faces) in enumerate(frames)], tracker


def grouping(frames, ids_per_frame) -> set[frozenset]:
    """Which faces ended up together, by where they are (frame and box), not by id number or list position."""
    groups: dict[int, set] = {}
    for frame_index, ((_, faces), ids) in enumerate(zip(frames, ids_per_frame, strict=True)):
        for face, track_id in zip(faces, ids, strict=True):
            groups.setdefault(track_id, set()).add((frame_index, face.box))
    return {frozenset(group) for group in groups.values()}


@st.composite
def crowded_scenes(draw, as_detected: bool = False):
    """Up to 5 faces on straight paths at any speed, appearing and vanishing at random, crossing each other,
    sometimes without keypoints; times in quarter seconds (0 to 3 s apart, repeats allowed). ``as_detected``:
    as the detector reports them, which never lists two faces of a frame overlapping by more than its
    non-maximum suppression allows (0.35 IoU) - where one face hides another, only one is seen."""
    paths = draw(st.lists(
        st.tuples(
            st.integers(-60, 60), st.integers(-60, 60),  # start: close enough to meet and cross
            st.integers(-120, 120), st.integers(-120, 120),  # velocity, px/s
            st.integers(8, 120), st.integers(8, 120),  # box size
            st.booleans(),  # keypoints
        ),
        min_size=1, max_size=5,
    ))
    steps = draw(st.lists(st.integers(0, 12), min_size=1, max_size=10))
    frames = []
    time_s = 0.0
    for step in steps:
        time_s += step / 4
        present = draw(st.lists(st.booleans(), min_size=len(paths), max_size=len(paths)))
        faces = [
            face_box(x + vx * time_s, y + vy * time_s, w, h, keypoints)
            for (x, y, vx, vy, w, h, keypoints), here in zip(paths, present, strict=True)
            if here
        ]
        if as_detected:
            seen: list[Face] = []
            for face in faces:
                if not seen or box_iou(face.box, np.array([f.box for f in seen])).max() <= 0.35:
                    seen.append(face)
            faces = seen
        frames.append((time_s, faces))
    return frames


@FAST
@given(crowded_scenes())
def test_every_face_gets_one_track_and_a_track_at_most_one_face_per_frame(frames):
    ids_per_frame, tracker = run_tracker(frames)
    tracks = tracker.tracks()
    for (_, faces), ids in zip(frames, ids_per_frame, strict=True):
        assert len(ids) == len(faces)
        assert len(set(ids)) == len(ids)  # two faces of one frame are two people
    # Ids count from 0 in order of first appearance, and each track holds exactly the faces given its id.
    assert [track.track_id for track in tracks] == list(range(len(tracks)))
    first_seen = [next(i for i, ids in enumerate(ids_per_frame) if track.track_id in ids) for track in tracks]
    assert first_seen == sorted(first_seen)
    for track in tracks:
        expected = [
            (frame_index, face)
            for frame_index, ((_, faces), ids) in enumerate(zip(frames, ids_per_frame))
            for face, track_id in zip(faces, ids)
            if track_id == track.track_id
        ]
        assert [(index, face) for index, _, face in track.detections] == expected
    assert sum(len(track) for track in tracks) == sum(len(faces) for _, faces in frames)


@FAST
@given(crowded_scenes())
def test_links_respect_the_gap_and_size_limits(frames):
    tracker = FaceTracker()
    run_tracker(frames, tracker)
    for track in tracker.tracks():
        for (_, earlier_s, earlier), (_, later_s, later) in zip(track.detections, track.detections[1:]):
            assert later_s - earlier_s <= tracker.max_gap_s  # an ended track is not picked up again
            assert max(earlier.size, later.size) <= tracker.max_size_ratio * min(earlier.size, later.size)


@FAST
@given(crowded_scenes(), st.integers(-5000, 5000), st.integers(-5000, 5000), st.integers(0, 10**5),
       st.sampled_from([0.25, 0.5, 2.0, 8.0]))
def test_linking_depends_on_the_scene_not_on_where_when_or_how_large(frames, dx, dy, dt, scale):
    """Shifting every face, shifting the clock, or scaling the picture by a power of two (a different
    resolution) links the same faces: the tracker measures overlap and distance relative to face size only.
    (Exact transforms, so the comparison needs no tolerance.)"""
    ids, _ = run_tracker(frames)
    moved_frames = [
        (time_s + dt, [face_box(scale * (f.box[0] + dx), scale * (f.box[1] + dy), scale * f.width,
                                scale * f.height, len(f.keypoints) > 0) for f in faces])
        for time_s, faces in frames
    ]
    moved_ids, _ = run_tracker(moved_frames)
    # Compared as groups of faces, not id numbers: two identical faces in one frame may swap ids (a tie).
    assert grouping(frames, moved_ids) == grouping(frames, ids)


@settings(max_examples=400, deadline=None)  # faces competing for one track are a small share of the scenes
@given(crowded_scenes(as_detected=True), st.randoms(use_true_random=False))
@example(  # two faces near one track: the nearer one takes it, whichever is listed first
    frames=[(0.0, [face_box(0, 0, 100, 100)]), (0.5, [face_box(-45, 0, 100, 100), face_box(30, 0, 100, 100)])],
    random=Random(0),
)
def test_linking_does_not_depend_on_the_order_faces_are_listed_in(frames, random):
    """The detector lists faces best score first; which faces form a track must not depend on that order
    (track numbers may: new tracks are numbered in list order)."""
    ids, _ = run_tracker(frames)
    for reorder in (lambda faces: faces[::-1], lambda faces: random.sample(faces, len(faces))):
        reordered = [(time_s, reorder(faces)) for time_s, faces in frames]
        reordered_ids, _ = run_tracker(reordered)
        assert grouping(reordered, reordered_ids) == grouping(frames, ids)


@st.composite
def people_in_their_own_lanes(draw):
    """1 to 4 people far apart, each drifting slowly (at most 0.15 face sizes per second on each axis, growing or
    shrinking at most 5% a second), each seen in a random subset of frames taken 0.01 to 3 s apart."""
    people = draw(st.lists(
        st.tuples(st.floats(20, 200), st.floats(-0.15, 0.15), st.floats(-0.15, 0.15), st.floats(-0.05, 0.05)),
        min_size=1, max_size=4,
    ))
    gaps = draw(st.lists(st.floats(0.01, 3.0), min_size=1, max_size=25))
    times = [sum(gaps[: i + 1]) for i in range(len(gaps))]
    seen = draw(st.lists(st.lists(st.booleans(), min_size=len(people), max_size=len(people)),
                         min_size=len(times), max_size=len(times)))
    frames, who = [], []
    for time_s, present in zip(times, seen, strict=True):
        faces, owners = [], []
        for person, ((size, vx, vy, growth), here) in enumerate(zip(people, present, strict=True)):
            if here:
                side = size * math.exp(growth * time_s)
                # Speeds are in face sizes of the moment, so the distance covered integrates the size.
                travelled = size * (math.expm1(growth * time_s) / growth if growth else time_s)
                cx, cy = 100_000 * person + vx * travelled, vy * travelled
                faces.append(face_box(cx - side / 2, cy - side / 2, side, side))
                owners.append(person)
        frames.append((time_s, faces))
        who.append(owners)
    return frames, who


@FAST
@given(people_in_their_own_lanes(), st.randoms(use_true_random=False))
def test_each_person_keeps_one_id_until_gone_longer_than_the_gap(scene, random):
    frames, who = scene
    order = [random.sample(range(len(faces)), len(faces)) for _, faces in frames]
    frames = [(time_s, [faces[i] for i in o]) for (time_s, faces), o in zip(frames, order)]
    who = [[owners[i] for i in o] for owners, o in zip(who, order)]
    tracker = FaceTracker()
    ids_per_frame, _ = run_tracker(frames, tracker)
    # Expected: one track per stretch of a person's appearances with no gap over max_gap_s inside it.
    stretch_of: dict[int, int] = {}
    last_seen: dict[int, float] = {}
    want: dict[int, set[tuple[int, int]]] = {}  # stretch -> (frame, person)
    got: dict[int, set[tuple[int, int]]] = {}  # track id -> (frame, person)
    for frame_index, ((time_s, _), owners, ids) in enumerate(zip(frames, who, ids_per_frame, strict=True)):
        for person, track_id in zip(owners, ids, strict=True):
            if person not in last_seen or time_s - last_seen[person] > tracker.max_gap_s:
                stretch_of[person] = len(want)
                want[len(want)] = set()
            last_seen[person] = time_s
            want[stretch_of[person]].add((frame_index, person))
            got.setdefault(track_id, set()).add((frame_index, person))
    assert sorted(map(sorted, got.values())) == sorted(map(sorted, want.values()))


# --- score aggregation ---------------------------------------------------------------------------------------------

probabilities = st.floats(0.0, 1.0, allow_nan=False)
SHORTFALLS = ("too small", "too blurred")


@st.composite
def track_faces(draw):
    """A track's faces: calibrated P(fake) in [0, 1], times, and (or not) what puts each outside the range."""
    count = draw(st.integers(1, 25))
    scores = draw(st.lists(probabilities, min_size=count, max_size=count))
    times = draw(st.lists(st.floats(0, 1e5, allow_nan=False), min_size=count, max_size=count))
    outside = draw(st.one_of(
        st.none(),
        st.lists(st.lists(st.sampled_from(SHORTFALLS), max_size=2, unique=True), min_size=count, max_size=count),
    ))
    return scores, times, outside


thresholds = st.floats(0.0, 1.0, allow_nan=False)


def verdict_of(faces, threshold, track_id=0):
    scores, times, outside = faces
    return track_verdict(track_id, scores, times, threshold, outside_range=outside, reliable_range="40 px")


@FAST
@given(track_faces(), thresholds)
def test_a_track_verdict_is_finite_and_consistent_for_any_probabilities(faces, threshold):
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a numpy "mean of empty slice" would mean a NaN on its way
        verdict = verdict_of(faces, threshold)
    numbers = [verdict.score, verdict.mean, verdict.max, verdict.share_above_threshold, verdict.start_s,
               verdict.end_s, verdict.share_outside_range]
    assert all(math.isfinite(number) for number in numbers)
    assert 0 <= verdict.score <= verdict.max <= 1 and 0 <= verdict.mean <= verdict.max
    assert 0 <= verdict.share_above_threshold <= 1 and 0 <= verdict.share_outside_range <= 1
    assert verdict.start_s <= verdict.end_s and verdict.faces == len(faces[0])
    if verdict.label != INCONCLUSIVE:
        assert verdict.label == (FAKE if verdict.score >= threshold else REAL)
    else:
        assert verdict.reason and all(faces[2])


@FAST
@given(track_faces(), thresholds, st.randoms(use_true_random=False))
def test_the_order_of_a_tracks_faces_does_not_change_its_verdict(faces, threshold, random):
    scores, times, outside = faces
    order = random.sample(range(len(scores)), len(scores))
    permuted = (
        [scores[i] for i in order], [times[i] for i in order], None if outside is None else [outside[i] for i in order]
    )
    before, after = verdict_of(faces, threshold), verdict_of(permuted, threshold)
    for name in ("score", "max", "share_above_threshold", "label", "reason", "judged_faces", "share_outside_range",
                 "start_s", "end_s", "faces"):
        assert getattr(after, name) == getattr(before, name), name
    # A float sum depends on its order in the last bits; the reported mean may differ by as much.
    assert after.mean == pytest.approx(before.mean, rel=1e-12, abs=1e-15)


@FAST
@given(track_faces(), thresholds, st.data())
def test_raising_one_faces_p_fake_never_lowers_the_track_or_file(faces, threshold, data):
    scores, times, outside = faces
    which = data.draw(st.integers(0, len(scores) - 1))
    raised = list(scores)
    raised[which] = data.draw(st.floats(scores[which], 1.0))
    before, after = verdict_of(faces, threshold), verdict_of((raised, times, outside), threshold)
    assert after.score >= before.score
    assert after.mean >= before.mean and after.max >= before.max
    assert after.share_above_threshold >= before.share_above_threshold
    if before.label in (FAKE, INCONCLUSIVE):
        assert after.label == before.label  # a fake track is not cleared, nor a range verdict changed, by it
    others = [verdict_of(data.draw(track_faces()), threshold, track_id=i) for i in range(1, data.draw(st.integers(1, 4)))]
    file_before = file_verdict([before, *others], trained=True)
    file_after = file_verdict([after, *others], trained=True)
    assert file_after.score >= file_before.score
    if file_before.label == FAKE:
        assert file_after.label == FAKE


@FAST
@given(st.lists(track_faces(), max_size=5), thresholds, st.booleans(), st.randoms(use_true_random=False))
def test_the_file_verdict_follows_its_tracks_whatever_their_order(all_faces, threshold, trained, random):
    tracks = [verdict_of(faces, threshold, track_id=i) for i, faces in enumerate(all_faces)]
    verdict = file_verdict(tracks, trained=trained)
    labels = {track.label for track in tracks}
    if not tracks:
        expected = NO_FACE
    elif not trained:
        expected = UNTRAINED
    else:
        expected = FAKE if FAKE in labels else INCONCLUSIVE if INCONCLUSIVE in labels else REAL
    assert verdict.label == expected
    assert verdict.score == (max(track.score for track in tracks) if tracks else None)
    assert sorted(verdict.fake_tracks) == [track.track_id for track in tracks if track.label == FAKE]
    shuffled = file_verdict(random.sample(tracks, len(tracks)), trained=trained)
    assert (shuffled.label, shuffled.score, sorted(shuffled.fake_tracks)) == (
        verdict.label, verdict.score, sorted(verdict.fake_tracks))


@FAST
@given(st.dictionaries(st.sampled_from(["faclue", "pel", "ralf"]), st.lists(probabilities, min_size=1, max_size=10)),
       thresholds, st.sampled_from([FAKE, REAL]), st.randoms(use_true_random=False))
def test_member_agreement_is_finite_and_order_free(members, threshold, decision, random):
    thresholds_by_name = dict.fromkeys(members, threshold)
    scored, agreement = member_agreement(members, thresholds_by_name, decision)
    assert 0.0 <= agreement <= 1.0
    assert all(math.isfinite(member["score"]) for member in scored.values())
    shuffled = {name: random.sample(values, len(values)) for name, values in members.items()}
    assert member_agreement(shuffled, thresholds_by_name, decision) == (scored, agreement)


def test_empty_input_has_a_defined_verdict():
    assert file_verdict([], trained=True).label == NO_FACE and file_verdict([], trained=True).score is None
    assert member_agreement({}, {}, FAKE) == ({}, 0.0)
    # A track is made of faces: one without any is a caller's error, said plainly (no NaN score, no numpy
    # warning, no "min() arg is an empty sequence").
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(ValueError, match="no face"):
            track_verdict(0, [], [], 0.5)
        with pytest.raises(ValueError, match="no face"):
            member_agreement({"faclue": []}, {"faclue": 0.5}, FAKE)

"""Video layer: streaming decode with true timestamps, sampling, encoding, and damaged files."""

from __future__ import annotations

import math
import pickle
import struct
import tracemalloc
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

from deepscan.media.errors import MediaError, PartialMediaError
from deepscan.media.video import encode_video, iter_frames, probe_video

FPS = 25
FRAMES = 50
GREY_STEP = 5  # frame i is a flat grey of level i * GREY_STEP, so a decoded frame names itself


def grey_frames(count: int = FRAMES, size: tuple[int, int] = (48, 64)):
    for index in range(count):
        yield np.full((*size, 3), index * GREY_STEP, dtype=np.uint8)


def noise_frames(count: int = FRAMES, seed: int = 0):
    # Noise does not compress, so the file is large enough to cut in meaningful places.
    rng = np.random.default_rng(seed)
    for _ in range(count):
        yield rng.integers(0, 256, (120, 160, 3), dtype=np.uint8)


def decoded_index(image: np.ndarray) -> int:
    return round(float(image.mean()) / GREY_STEP)


@pytest.fixture(scope="module")
def grey_clip(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("video") / "grey.mp4"
    encode_video(path, grey_frames(), fps=FPS)
    return path


@pytest.fixture(scope="module")
def damaged_dir(tmp_path_factory) -> Path:
    """Every kind of broken file the guide lists, made from clean noise clips."""
    folder = tmp_path_factory.mktemp("damaged")
    plain, faststart, webm = folder / "plain.mp4", folder / "faststart.mp4", folder / "clip.webm"
    encode_video(plain, noise_frames(), fps=FPS)
    encode_video(faststart, noise_frames(), fps=FPS, container_options={"movflags": "faststart"})
    encode_video(webm, noise_frames(), fps=FPS, codec="libvpx-vp9")
    plain_bytes, faststart_bytes = plain.read_bytes(), faststart.read_bytes()

    (folder / "empty.mp4").write_bytes(b"")
    (folder / "notes.mp4").write_text("these are meeting notes, not a video\n")
    # Without faststart the index sits at the end: half a file has frames but no index.
    (folder / "truncated.mp4").write_bytes(plain_bytes[: len(plain_bytes) // 2])
    (folder / "header_only.mp4").write_bytes(faststart_bytes[:100])
    (folder / "faststart_half.mp4").write_bytes(faststart_bytes[: len(faststart_bytes) // 2])
    third = len(faststart_bytes) // 3
    garbage = np.random.default_rng(1).integers(0, 256, third, dtype=np.uint8).tobytes()
    (folder / "corrupt_middle.mp4").write_bytes(
        faststart_bytes[:third] + garbage + faststart_bytes[2 * third :]
    )
    webm_bytes = webm.read_bytes()
    (folder / "webm_half.webm").write_bytes(webm_bytes[: len(webm_bytes) // 2])
    scrambled = np.random.default_rng(2).permutation(np.frombuffer(plain_bytes, dtype=np.uint8))
    (folder / "scrambled.mp4").write_bytes(scrambled.tobytes())
    # A codec tag no decoder knows: the container opens, the stream has no codec.
    (folder / "unknown_codec.mp4").write_bytes(faststart_bytes.replace(b"avc1", b"zzzz"))
    return folder


def test_every_frame_has_its_true_timestamp(grey_clip):
    frames = list(iter_frames(grey_clip, every_frame=True))
    assert [frame.index for frame in frames] == list(range(FRAMES))
    for frame in frames:
        assert frame.time_s == pytest.approx(frame.index / FPS, abs=1e-6)
        assert frame.image.shape == (48, 64, 3) and frame.image.dtype == np.uint8
        assert decoded_index(frame.image) == frame.index
    assert len(list(iter_frames(grey_clip, fps=None))) == FRAMES


@pytest.mark.parametrize("sample_fps", [2.0, 10.0, 3.0])
def test_fps_sampling_keeps_first_frame_at_or_after_each_tick(grey_clip, sample_fps):
    frames = list(iter_frames(grey_clip, fps=sample_fps))
    ticks = np.arange(0, FRAMES / FPS, 1 / sample_fps)
    expected = sorted({math.ceil(round(tick * FPS, 6)) for tick in ticks})
    assert [frame.index for frame in frames] == expected
    assert [decoded_index(frame.image) for frame in frames] == expected


def test_sampling_converts_only_the_frames_it_keeps_to_rgb(grey_clip, monkeypatch):
    """Every frame is decoded, but a frame the sampling skips is judged by its timestamp alone: the conversion to
    RGB, which costs more than decoding, is spent on kept frames only."""
    from deepscan.media import video

    converted, real_upright_rgb = [], video._upright_rgb
    monkeypatch.setattr(video, "_upright_rgb", lambda frame: (converted.append(frame.pts), real_upright_rgb(frame))[1])
    kept = list(iter_frames(grey_clip, fps=2.0))
    assert [frame.index for frame in kept] == [0, 13, 25, 38] and len(converted) == len(kept)


def test_sampling_faster_than_the_video_keeps_every_frame(grey_clip):
    assert len(list(iter_frames(grey_clip, fps=100))) == FRAMES


def test_fps_must_be_positive(grey_clip):
    with pytest.raises(ValueError):
        next(iter_frames(grey_clip, fps=0))


def test_probe_reads_headers(grey_clip):
    info = probe_video(grey_clip)
    assert (info.width, info.height) == (64, 48)
    assert info.fps == pytest.approx(FPS)
    assert info.frame_count == FRAMES
    assert info.duration_s == pytest.approx(FRAMES / FPS, abs=0.05)
    assert info.codec == "h264"
    assert info.rotation == 0


def test_decoding_streams_without_holding_frames(tmp_path):
    path = tmp_path / "longer.mp4"
    encode_video(path, (np.full((240, 320, 3), i % 256, np.uint8) for i in range(150)), fps=FPS)
    frame_bytes = 240 * 320 * 3
    tracemalloc.start()
    try:
        count = sum(1 for _ in iter_frames(path, every_frame=True))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert count == 150
    # Holding the video would need 150 frames; streaming needs about one at a time.
    assert peak < 10 * frame_bytes


def test_stopping_early_is_fine(grey_clip):
    frames = iter_frames(grey_clip, every_frame=True)
    first = next(frames)
    frames.close()
    assert first.index == 0


def test_encode_pads_odd_sizes_and_counts_frames(tmp_path):
    path = tmp_path / "odd.mp4"
    rows, columns = np.mgrid[0:49, 0:63]
    gradient = np.stack([rows * 5, columns * 4, 255 - columns * 4], axis=2).astype(np.uint8)
    assert encode_video(path, iter([gradient] * 5), fps=30000 / 1001, crf=0) == 5
    first = next(iter_frames(path, every_frame=True))
    assert first.image.shape == (50, 64, 3)
    assert np.abs(first.image[:49, :63].astype(int) - gradient).mean() < 4
    # The added row and column repeat the last ones.
    assert np.abs(first.image[49].astype(int) - first.image[48]).mean() < 4
    assert np.abs(first.image[:, 63].astype(int) - first.image[:, 62]).mean() < 4
    assert probe_video(path).fps == pytest.approx(30000 / 1001)


def test_crf_sets_the_quality(tmp_path):
    sizes = {}
    for crf in (18, 40):
        path = tmp_path / f"crf{crf}.mp4"
        encode_video(path, noise_frames(10), fps=FPS, crf=crf)
        sizes[crf] = path.stat().st_size
    assert sizes[40] < sizes[18] / 2


def test_encode_rejects_bad_frames(tmp_path):
    with pytest.raises(ValueError):
        encode_video(tmp_path / "none.mp4", [], fps=FPS)
    with pytest.raises(ValueError):
        encode_video(tmp_path / "float.mp4", [np.zeros((8, 8, 3), np.float32)], fps=FPS)
    with pytest.raises(ValueError):
        encode_video(
            tmp_path / "sizes.mp4", [np.zeros((8, 8, 3), np.uint8), np.zeros((8, 10, 3), np.uint8)]
        )


def _rotate_display_matrix(mp4: bytes) -> bytes:
    """Give the video track the display matrix a phone writes for portrait video (90 degrees cw)."""
    identity = struct.pack(">9I", 0x10000, 0, 0, 0, 0x10000, 0, 0, 0, 0x40000000)
    quarter_turn = struct.pack(">9I", 0, 0x10000, 0, 0xFFFF0000, 0, 0, 0, 0, 0x40000000)
    start = mp4.index(identity, mp4.index(b"tkhd"))
    return mp4[:start] + quarter_turn + mp4[start + len(identity) :]


def test_rotated_video_comes_out_upright(tmp_path):
    marked = np.zeros((48, 64, 3), np.uint8)
    marked[:8, :16] = 255  # a white block in the stored frame's top-left corner
    stored = tmp_path / "stored.mp4"
    encode_video(stored, [marked] * 3, fps=FPS)
    rotated = tmp_path / "rotated.mp4"
    rotated.write_bytes(_rotate_display_matrix(stored.read_bytes()))

    info = probe_video(rotated)
    assert (info.width, info.height, info.rotation) == (48, 64, 270)
    image = next(iter_frames(rotated)).image
    assert image.shape == (64, 48, 3)
    # Turned a quarter clockwise, the top-left corner goes to the top-right.
    assert image[:12, -6:].mean() > 200 and image[:12, :6].mean() < 50


BROKEN_AT_OPEN = [
    ("missing.mp4", "not found"),
    ("empty.mp4", "empty"),
    ("notes.mp4", "not a video"),
    ("truncated.mp4", "truncated"),
    ("header_only.mp4", "no video stream"),
    ("scrambled.mp4", "not a video"),
    ("unknown_codec.mp4", "codec"),
]


def _assert_one_line_naming(error: MediaError, name: str) -> None:
    message = str(error)
    assert "\n" not in message
    assert name in message


@pytest.mark.parametrize(("name", "reason"), BROKEN_AT_OPEN)
def test_unreadable_files_give_a_one_line_media_error(damaged_dir, name, reason):
    path = damaged_dir / name
    with pytest.raises(MediaError) as probed:
        probe_video(path)
    _assert_one_line_naming(probed.value, name)
    assert reason in str(probed.value)
    with pytest.raises(MediaError) as decoded:
        next(iter_frames(path))
    assert not isinstance(decoded.value, PartialMediaError)
    _assert_one_line_naming(decoded.value, name)


def test_a_folder_is_not_a_video(tmp_path):
    with pytest.raises(MediaError, match="folder"):
        probe_video(tmp_path)


def _decode_until_error(path: Path) -> tuple[int, PartialMediaError]:
    yielded = 0
    with pytest.raises(PartialMediaError) as caught:
        for _ in iter_frames(path, every_frame=True):
            yielded += 1
    return yielded, caught.value


@pytest.mark.parametrize("name", ["faststart_half.mp4", "corrupt_middle.mp4", "webm_half.webm"])
def test_video_broken_part_way_yields_frames_then_partial_error(damaged_dir, name):
    yielded, error = _decode_until_error(damaged_dir / name)
    assert 0 < yielded < FRAMES
    assert error.frames_decoded == yielded
    assert error.frames_expected == FRAMES
    _assert_one_line_naming(error, name)


def test_partial_error_survives_pickling():
    error = PartialMediaError("clip.mp4", "broke off", frames_decoded=7, frames_expected=50)
    copy = pickle.loads(pickle.dumps(error))
    assert (str(copy), copy.frames_decoded, copy.frames_expected) == (str(error), 7, 50)


def _mkv_at(path: Path, stamps: list[int], codec: str = "libx264") -> Path:
    """Grey frames of the clip at the given timestamps (time base 1/25): gaps make a variable frame rate. With
    MJPEG (no reordering) the packets' presentation times are set to ``stamps`` as they are, going back too."""
    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=FPS)
        stream.width, stream.height = 64, 48
        stream.pix_fmt = "yuvj420p" if codec == "mjpeg" else "yuv420p"
        for index, (image, stamp) in enumerate(zip(grey_frames(len(stamps)), stamps)):
            frame = av.VideoFrame.from_ndarray(image, format="rgb24")
            frame.pts, frame.time_base = (index if codec == "mjpeg" else stamp), Fraction(1, FPS)
            for packet in stream.encode(frame):
                if codec == "mjpeg":
                    packet.dts, packet.pts = index, max(stamps[index], index)  # pts may not precede dts
                container.mux(packet)
        container.mux(stream.encode(None))
    return path


def test_variable_frame_rate_without_a_frame_count_is_complete(tmp_path):
    # 8 frames over 2.4 s: Matroska keeps no frame count, and duration x rate guesses 61 frames.
    stamps = [0, 1, 2, 9, 10, 30, 31, 60]
    clip = _mkv_at(tmp_path / "vfr.mkv", stamps)
    times = [frame.time_s for frame in iter_frames(clip, every_frame=True)]  # no PartialMediaError
    assert times == pytest.approx([stamp / FPS for stamp in stamps])


def test_timestamps_that_go_back_still_decode_in_full(tmp_path):
    stamps = [0, 12, 13, 3, 4, 5, 20, 6]
    clip = _mkv_at(tmp_path / "backwards.mkv", stamps, codec="mjpeg")
    frames = list(iter_frames(clip, every_frame=True))
    assert [round(frame.time_s * FPS) for frame in frames] == [max(s, i) for i, s in enumerate(stamps)]
    sampled = [frame.time_s for frame in iter_frames(clip, fps=FPS)]  # sampling skips what goes back
    assert sampled == sorted(sampled)


def test_a_matroska_cut_short_is_still_partial_by_the_time_it_covers(tmp_path):
    data = _mkv_at(tmp_path / "long.mkv", list(range(0, 100, 2))).read_bytes()
    (tmp_path / "cut.mkv").write_bytes(data[: len(data) // 2])
    with pytest.raises(PartialMediaError):
        list(iter_frames(tmp_path / "cut.mkv", every_frame=True))


def test_a_header_announcing_huge_frames_is_refused_before_decoding(tmp_path):
    small = tmp_path / "small.mkv"
    encode_video(small, grey_frames(3, (16, 16)), fps=FPS, codec="ffv1", pix_fmt="yuv444p")
    # FFV1 keeps no size of its own: the container's pixel width and height (EBML 0xB0, 0xBA) are the size.
    data = small.read_bytes()
    data = data.replace(b"\xb0\x81\x10", b"\xb0\x82\x27\x10", 1).replace(b"\xba\x81\x10", b"\xba\x82\x27\x10", 1)
    huge = tmp_path / "huge.mkv"
    huge.write_bytes(data)
    with pytest.raises(MediaError, match="too large to decode safely: 10000 x 10000"):
        probe_video(huge)

"""Videos with PyAV: probe, stream frames (sampled by timestamp), encode.

A :class:`VideoReader` opens a file once for both: its headers (:attr:`VideoReader.info`, with the display
rotation of the first frame, which it keeps) and its frames (:meth:`VideoReader.frames`). Decoding streams
frame by frame, so memory stays flat whatever the length of the video. Every way a file can fail to open
becomes a one-line :class:`MediaError`; a video that breaks part-way yields the frames it could decode and
then raises :class:`PartialMediaError`. Writing videos is :mod:`deepscan.media.encode`.
"""

from __future__ import annotations

import errno
import math
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np

from deepscan.media.encode import encode_video  # noqa: F401 - where callers have always found it
from deepscan.media.errors import MediaError, PartialMediaError
from deepscan.media.files import check_regular
from deepscan.media.images import MAX_IMAGE_PIXELS

# A stream that decodes fewer than this share of the frames its header announces was cut short.
# Headers round durations and variable-frame-rate phones drift, so an exact count is not expected.
COMPLETE_STREAM_RATIO = 0.9

# Sampling ticks are compared with timestamps that went through a time base: absorb rounding.
_TICK_TOLERANCE_S = 1e-6


@dataclass(frozen=True)
class VideoInfo:
    """What a video's headers say; ``width`` and ``height`` are as displayed (rotation applied)."""

    path: Path
    width: int
    height: int
    fps: float
    duration_s: float | None
    frame_count: int | None
    codec: str
    rotation: int = 0  # degrees counter-clockwise that frames are turned by to display upright
    bit_rate: int | None = None  # bits per second of the video stream (else of the whole file); None: unknown


def expected_frame_count(duration_s: float | None, frame_count: int | None, fps: float | None) -> int | None:
    """How many frames sampling at ``fps`` (None: every frame) keeps of a video whose headers state
    ``duration_s`` and ``frame_count``; None: unknown."""
    if fps is None:
        return frame_count
    return int(duration_s * fps) + 1 if duration_s else None


@dataclass(frozen=True, eq=False)
class Frame:
    """One decoded frame: its index among all decoded frames, presentation time and RGB pixels."""

    index: int
    time_s: float
    image: np.ndarray


def _open_video(path: Path) -> tuple[av.container.InputContainer, av.video.stream.VideoStream]:
    """Open ``path`` and return the container and its first video stream, or raise MediaError."""
    check_regular(path)
    try:
        container = av.open(os.fspath(path), metadata_errors="ignore")
    except PermissionError:
        raise MediaError(path, "permission denied") from None
    except av.error.InvalidDataError:
        raise MediaError(
            path, "not a video or image deepscan can read (invalid or truncated data)"
        ) from None
    except av.FFmpegError as error:
        if isinstance(error, av.error.EOFError) or error.errno == errno.EIO:
            # A scan reads the whole file (its checksum) before this, so FFmpeg's "Input/output error" or
            # "End of file" here is about the data, not the disk: a header that breaks off or lies.
            raise MediaError(
                path, f"cannot be opened as a video (damaged or truncated data: {error.strerror})"
            ) from None
        raise MediaError(path, f"cannot be opened as a video ({error.strerror})") from None
    if not container.streams.video:
        container.close()
        # A faststart mp4 cut after its header opens "successfully" with no streams at all.
        raise MediaError(path, "no video stream (not a video, or the file is truncated)")
    stream = container.streams.video[0]
    if stream.codec_context is None:
        container.close()
        raise MediaError(path, "unsupported or unrecognised video codec (no decoder for it)")
    width, height = stream.codec_context.width, stream.codec_context.height
    if width * height > MAX_IMAGE_PIXELS:
        container.close()
        # The same bound as for images: a few bytes of header can announce frames of gigabytes each.
        raise MediaError(
            path,
            f"video frames too large to decode safely: {width} x {height} pixels "
            f"(over the limit of {MAX_IMAGE_PIXELS / 1e6:.0f} megapixels)",
        )
    return container, stream


def _expected_frames(stream: av.video.stream.VideoStream, container) -> int | None:
    """How many frames the headers promise: the stream's count, else duration times frame rate."""
    if stream.frames:
        return int(stream.frames)
    duration_s = _duration_s(stream, container)
    rate = stream.average_rate or stream.guessed_rate
    if duration_s and rate:
        return round(duration_s * float(rate))
    return None


def _duration_s(stream: av.video.stream.VideoStream, container) -> float | None:
    if stream.duration and stream.time_base:
        return float(stream.duration * stream.time_base)
    if container.duration:
        return container.duration / av.time_base
    return None


def _rotation_of(frame: av.VideoFrame) -> int:
    return round(frame.rotation / 90) * 90 % 360


def _upright_rgb(frame: av.VideoFrame) -> np.ndarray:
    image = frame.to_ndarray(format="rgb24")
    rotation = _rotation_of(frame)
    if rotation:
        # ``rotation`` is counter-clockwise, as is np.rot90; copy so the array is contiguous.
        image = np.ascontiguousarray(np.rot90(image, k=rotation // 90))
    return image


def check_sampling_rate(fps: float | None) -> None:
    """Refuse a rate the sampler cannot keep ticks at (None: every frame)."""
    # Not just ``fps <= 0``: NaN and infinity pass that test (and the CLI's lower bound) and would crash
    # part-way through the video instead.
    if fps is not None and not 0 < fps < math.inf:
        raise ValueError(f"fps must be positive and finite, or None, got {fps}")


class _Sampler:
    """Keeps the first frame at or after each ``1 / fps`` tick of its timestamp; every frame with no ``fps``."""

    def __init__(self, fps: float | None) -> None:
        self.fps = fps
        self.next_tick = 0  # the number of the next 1/fps tick a frame is wanted at

    def keeps(self, time_s: float) -> bool:
        if self.fps is None:
            return True
        # One number decides both whether the frame reaches the wanted tick and which tick comes next, with
        # the tolerance in seconds throughout. (Comparing in seconds but counting ticks with the tolerance in
        # ticks kept two frames for one tick, or none, near a tick.)
        ticks = (time_s + _TICK_TOLERANCE_S) * self.fps
        if ticks < self.next_tick:
            return False
        # Past the float range (a huge fps) every frame is a tick of its own.
        self.next_tick = math.floor(ticks) + 1 if math.isfinite(ticks) else math.inf
        return True


class VideoReader:
    """One video opened once: :attr:`info` (its headers) and :meth:`frames` (its frames, read once).

    Opening raises MediaError when the file cannot be opened as a video. The probe decodes the first frame for
    its display rotation and keeps it for :meth:`frames`, so that probing and decoding share one open. Use as
    a context manager (or call :meth:`close`).
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._container, self._stream = _open_video(self.path)
        try:
            self._stream.thread_type = "AUTO"
            self._decoder = self._container.decode(self._stream)
        except BaseException:
            self._container.close()
            raise
        self._peeked: av.VideoFrame | None = None  # the first frame, decoded by the probe, not yet given out
        self._first_error: av.FFmpegError | None = None  # what decoding the first frame failed with
        self._rotation: int | None = None  # the first frame's, once it is decoded
        self._read = False
        self._info: VideoInfo | None = None
        self.frames_decoded = 0

    def __enter__(self) -> VideoReader:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        self._container.close()

    @property
    def info(self) -> VideoInfo:
        """What the headers say, with the first frame's display rotation applied to the size."""
        if self._info is None:
            self._info = self._probe()
        return self._info

    def _probe(self) -> VideoInfo:
        stream, container = self._stream, self._container
        rate = stream.average_rate or stream.guessed_rate
        width, height = stream.codec_context.width, stream.codec_context.height
        rotation = self._first_frame_rotation()
        if rotation in (90, 270):
            width, height = height, width
        return VideoInfo(
            path=self.path, width=width, height=height, rotation=rotation,
            fps=float(rate) if rate else 0.0,
            duration_s=_duration_s(stream, container),
            frame_count=int(stream.frames) if stream.frames else None,
            codec=stream.codec_context.name,
            # The stream's own rate when the container states it; else the file's, which also counts audio.
            bit_rate=(stream.bit_rate or container.bit_rate or None),
        )

    def _first_frame_rotation(self) -> int:
        """Display rotation of the first frame (phones store portrait video sideways plus a matrix)."""
        if self._rotation is None and not self._read:
            try:
                self._peeked = next(self._decoder)
                self._rotation = _rotation_of(self._peeked)
            except StopIteration:
                pass
            except av.FFmpegError as error:
                self._first_error = error
        return self._rotation or 0

    def frames(self, fps: float | None = 2.0, every_frame: bool = False) -> Iterator[Frame]:
        """The frames in presentation order, upright, as RGB uint8 arrays; once per reader.

        With ``fps`` set, keeps the first frame at or after each ``1 / fps`` tick of its timestamp (a 24 fps
        video sampled at 2 fps yields the frames at 0, 0.5, 1.0 ... s); every frame is still decoded, only kept
        ones are converted to RGB. ``every_frame=True`` or ``fps=None`` yields all.

        Raises MediaError before any frame when none can be decoded, and PartialMediaError after the last good
        frame when decoding fails part-way or the stream holds clearly fewer frames than its header announces
        (and, where no index counts the frames, stops clearly short of its duration). :attr:`frames_decoded`
        counts every decoded frame, sampled or not.
        """
        check_sampling_rate(fps)
        if self._read:
            raise RuntimeError(f"{self.path}: the frames of a VideoReader are read once; open the video again")
        self._read = True
        sampler, time_of = _Sampler(None if every_frame else fps), self._clock()
        latest_s = 0.0
        for frame in self._decoded():
            index = self.frames_decoded - 1
            time_s = time_of(frame, index)
            latest_s = max(latest_s, time_s)
            if sampler.keeps(time_s):
                yield Frame(index=index, time_s=time_s, image=_upright_rgb(frame))
        self._check_complete(latest_s)

    def _decoded(self) -> Iterator[av.VideoFrame]:
        """Every frame the decoder gives, counted in :attr:`frames_decoded`; its failures as MediaErrors."""
        if self._first_error is not None:
            raise self._undecodable(self._first_error)
        frame, self._peeked = self._peeked, None
        while True:
            if frame is None:
                try:
                    frame = next(self._decoder)
                except StopIteration:
                    return
                except av.FFmpegError as error:
                    raise self._undecodable(error) from None
            if self._rotation is None:
                self._rotation = _rotation_of(frame)
            self.frames_decoded += 1
            yield frame
            frame = None

    def _undecodable(self, error: av.FFmpegError) -> MediaError:
        decoded = self.frames_decoded
        if decoded == 0:
            return MediaError(self.path, f"no frame could be decoded ({error.strerror}); the video is damaged")
        return PartialMediaError(
            self.path,
            f"video is damaged: decoding stopped after {decoded} frames ({error.strerror})",
            frames_decoded=decoded,
            frames_expected=_expected_frames(self._stream, self._container),
        )

    def _clock(self):
        """A frame's presentation time in seconds from the stream's start: ``time_of(frame, index)``."""
        start_pts, time_base = self._stream.start_time or 0, self._stream.time_base
        rate = self._stream.average_rate or self._stream.guessed_rate

        def time_of(frame: av.VideoFrame, index: int) -> float:
            if frame.pts is not None and time_base is not None:
                return float((frame.pts - start_pts) * time_base)
            if rate:
                return index / float(rate)
            return float(frame.time or 0.0)

        return time_of

    def _check_complete(self, latest_s: float) -> None:
        """Raise when the stream ended clearly short of what its headers announce (see :meth:`frames`)."""
        decoded, stream = self.frames_decoded, self._stream
        if decoded == 0:
            raise MediaError(self.path, "the video stream holds no decodable frame")
        expected = _expected_frames(stream, self._container)
        counted = bool(stream.frames)  # the index counts the frames; else ``expected`` is duration x rate
        rate = stream.average_rate or stream.guessed_rate
        duration_s = _duration_s(stream, self._container)
        if expected is not None and decoded < COMPLETE_STREAM_RATIO * expected and (
            counted or not _reaches_the_end(latest_s, duration_s, rate)
        ):
            raise PartialMediaError(
                self.path,
                f"video ends early: decoded {decoded} of the {expected} frames its header announces "
                "(truncated file?)",
                frames_decoded=decoded,
                frames_expected=expected,
            )


def _reaches_the_end(latest_s: float, duration_s: float | None, rate) -> bool:
    """Whether frames were decoded up to the end of the stated duration. Where no index counts the frames,
    duration times the average rate is only a guess at their number, and a variable-frame-rate video (a
    phone's, a screen recording's, one with gaps) holds far fewer: then time covered, not count, tells
    a complete stream from one cut short."""
    if not duration_s:
        return False
    frame_s = 1 / float(rate) if rate else 0.0
    return latest_s + frame_s >= COMPLETE_STREAM_RATIO * duration_s


def probe_video(path: str | os.PathLike[str]) -> VideoInfo:
    """A video's headers (and its first frame, for the display rotation), without decoding the rest."""
    with VideoReader(path) as video:
        return video.info


def iter_frames(
    path: str | os.PathLike[str], fps: float | None = 2.0, every_frame: bool = False
) -> Iterator[Frame]:
    """Stream a video's frames (:meth:`VideoReader.frames`), opening it on the first ``next()``: MediaError
    then, before any frame, when the file cannot be opened."""
    check_sampling_rate(fps)
    with VideoReader(path) as video:
        yield from video.frames(fps, every_frame)

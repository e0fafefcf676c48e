"""Videos with PyAV: probe, stream frames (sampled by timestamp), encode.

Decoding streams frame by frame, so memory stays flat whatever the length of the video. Every way
a file can fail to open becomes a one-line :class:`MediaError`; a video that breaks part-way yields
the frames it could decode and then raises :class:`PartialMediaError`.
"""

from __future__ import annotations

import errno
import itertools
import math
import os
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from deepscan.media.errors import MediaError, PartialMediaError
from deepscan.media.files import check_regular
from deepscan.media.images import MAX_IMAGE_PIXELS

# A stream that decodes fewer than this share of the frames its header announces was cut short.
# Headers round durations and variable-frame-rate phones drift, so an exact count is not expected.
COMPLETE_STREAM_RATIO = 0.9

# Sampling ticks are compared with timestamps that went through a time base: absorb rounding.
_TICK_TOLERANCE_S = 1e-6

# 4:2:0 chroma subsampling halves both dimensions, so these encoders need even frame sizes.
_EVEN_SIZE_PIXEL_FORMATS = frozenset({"yuv420p", "yuvj420p", "nv12", "yuv420p10le"})


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


def _first_frame_rotation(container, stream) -> int:
    """Display rotation of the first frame (phones store portrait video sideways plus a matrix)."""
    try:
        frame = next(container.decode(stream))
    except (StopIteration, av.FFmpegError):
        return 0
    return _rotation_of(frame)


def _rotation_of(frame: av.VideoFrame) -> int:
    return round(frame.rotation / 90) * 90 % 360


def probe_video(path: str | os.PathLike[str]) -> VideoInfo:
    """A video's headers (and its first frame, for the display rotation), without decoding it."""
    path = Path(path)
    container, stream = _open_video(path)
    with container:
        rate = stream.average_rate or stream.guessed_rate
        width, height = stream.codec_context.width, stream.codec_context.height
        info_fields = dict(
            fps=float(rate) if rate else 0.0,
            duration_s=_duration_s(stream, container),
            frame_count=int(stream.frames) if stream.frames else None,
            codec=stream.codec_context.name,
            # The stream's own rate when the container states it; else the file's, which also counts audio.
            bit_rate=(stream.bit_rate or container.bit_rate or None),
        )
        rotation = _first_frame_rotation(container, stream)
    if rotation in (90, 270):
        width, height = height, width
    return VideoInfo(path=path, width=width, height=height, rotation=rotation, **info_fields)


def _upright_rgb(frame: av.VideoFrame) -> np.ndarray:
    image = frame.to_ndarray(format="rgb24")
    rotation = _rotation_of(frame)
    if rotation:
        # ``rotation`` is counter-clockwise, as is np.rot90; copy so the array is contiguous.
        image = np.ascontiguousarray(np.rot90(image, k=rotation // 90))
    return image


def iter_frames(
    path: str | os.PathLike[str], fps: float | None = 2.0, every_frame: bool = False
) -> Iterator[Frame]:
    """Stream a video's frames in presentation order, upright, as RGB uint8 arrays.

    With ``fps`` set, keeps the first frame at or after each ``1 / fps`` tick of its timestamp (a
    24 fps video sampled at 2 fps yields the frames at 0, 0.5, 1.0 ... s); every frame is still
    decoded, only kept ones are converted to RGB. ``every_frame=True`` or ``fps=None`` yields all.

    Being a generator, it opens the file on the first ``next()``. Raises MediaError then, before
    any frame, when the file cannot be opened, and
    PartialMediaError after the last good frame when decoding fails part-way or the stream holds
    clearly fewer frames than its header announces (and, where no index counts the frames, stops
    clearly short of its duration). ``frames_decoded`` counts every decoded frame, sampled or not.
    """
    # Not just ``fps <= 0``: NaN and infinity pass that test (and the CLI's lower bound) and would crash
    # part-way through the video instead.
    if fps is not None and not 0 < fps < math.inf:
        raise ValueError(f"fps must be positive and finite, or None, got {fps}")
    keep_all = every_frame or fps is None
    path = Path(path)
    container, stream = _open_video(path)
    with container:
        stream.thread_type = "AUTO"
        start_pts = stream.start_time or 0
        time_base = stream.time_base
        rate = stream.average_rate or stream.guessed_rate
        expected = _expected_frames(stream, container)
        counted = bool(stream.frames)  # the index counts the frames; else ``expected`` is duration x rate
        duration_s = _duration_s(stream, container)
        next_tick = 0  # the number of the next 1/fps tick a frame is wanted at
        latest_s = 0.0
        decoded = 0
        frames = container.decode(stream)
        while True:
            try:
                frame = next(frames)
            except StopIteration:
                break
            except av.FFmpegError as error:
                if decoded == 0:
                    raise MediaError(
                        path, f"no frame could be decoded ({error.strerror}); the video is damaged"
                    ) from None
                raise PartialMediaError(
                    path,
                    f"video is damaged: decoding stopped after {decoded} frames ({error.strerror})",
                    frames_decoded=decoded,
                    frames_expected=expected,
                ) from None
            index = decoded
            decoded += 1
            if frame.pts is not None and time_base is not None:
                time_s = float((frame.pts - start_pts) * time_base)
            elif rate:
                time_s = index / float(rate)
            else:
                time_s = float(frame.time or 0.0)
            latest_s = max(latest_s, time_s)
            if not keep_all:
                # One number decides both whether the frame reaches the wanted tick and which tick comes
                # next, with the tolerance in seconds throughout. (Comparing in seconds but counting ticks
                # with the tolerance in ticks kept two frames for one tick, or none, near a tick.)
                ticks = (time_s + _TICK_TOLERANCE_S) * fps
                if ticks < next_tick:
                    continue
                # Past the float range (a huge fps) every frame is a tick of its own.
                next_tick = math.floor(ticks) + 1 if math.isfinite(ticks) else math.inf
            yield Frame(index=index, time_s=time_s, image=_upright_rgb(frame))
    if decoded == 0:
        raise MediaError(path, "the video stream holds no decodable frame")
    if expected is not None and decoded < COMPLETE_STREAM_RATIO * expected and (
        counted or not _reaches_the_end(latest_s, duration_s, rate)
    ):
        raise PartialMediaError(
            path,
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


def _frame_rate(fps: float | int | Fraction) -> Fraction:
    if fps <= 0:
        raise ValueError(f"fps must be positive, got {fps}")
    # 1001 covers the NTSC rates (30000/1001 for 29.97 fps) exactly.
    return Fraction(fps).limit_denominator(1001)


def encode_video(
    path: str | os.PathLike[str],
    frames: Iterable[np.ndarray],
    fps: float | int | Fraction = 25,
    codec: str = "libx264",
    crf: int | None = None,
    pix_fmt: str = "yuv420p",
    options: Mapping[str, str] | None = None,
    container_options: Mapping[str, str] | None = None,
) -> int:
    """Encode RGB uint8 frames (H x W x 3, all the same size) into a video; returns the frame count.

    ``frames`` may be any iterator: frames are encoded as they come, never held together. ``crf``
    sets constant-quality mode (libx264/libx265/libvpx-vp9: 0 best, 51 or 63 worst; H.264's
    default is 23). ``options`` go to the encoder as they are (e.g. ``{"preset": "ultrafast"}``),
    ``container_options`` to the muxer (``{"movflags": "faststart"}`` puts an mp4's index first).
    With a 4:2:0 ``pix_fmt`` an odd width or height is padded by repeating the last column or row,
    because the chroma planes need even sizes: crop decoded frames back if the exact size matters.
    """
    rate = _frame_rate(fps)
    encoder_options = {key: str(value) for key, value in (options or {}).items()}
    if crf is not None:
        encoder_options["crf"] = str(crf)
        if codec.startswith("libvpx"):
            # libvpx only honours crf as constant quality when no target bit rate is set.
            encoder_options.setdefault("b", "0")
    images = iter(frames)
    first = next(images, None)
    if first is None:
        raise ValueError("encode_video needs at least one frame")
    count = 0
    with av.open(os.fspath(path), mode="w", options=dict(container_options or {})) as container:
        stream = None
        for image in itertools.chain([first], images):
            image = _even_sized(_checked_rgb(image), pix_fmt)
            if stream is None:
                stream = container.add_stream(codec, rate=rate, options=encoder_options)
                stream.height, stream.width = image.shape[:2]
                stream.pix_fmt = pix_fmt
                size = image.shape
            elif image.shape != size:
                raise ValueError(f"frame {count} is {image.shape[:2]}, the first was {size[:2]}")
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="rgb24")
            frame.pts = count
            frame.time_base = 1 / rate
            container.mux(stream.encode(frame))
            count += 1
        container.mux(stream.encode(None))
    return count


def _checked_rgb(image: np.ndarray) -> np.ndarray:
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(
            f"frames must be H x W x 3 uint8 RGB arrays, got {image.shape} {image.dtype}"
        )
    return image


def _even_sized(image: np.ndarray, pix_fmt: str) -> np.ndarray:
    if pix_fmt not in _EVEN_SIZE_PIXEL_FORMATS:
        return image
    pad_rows, pad_cols = image.shape[0] % 2, image.shape[1] % 2
    if pad_rows or pad_cols:
        image = np.pad(image, ((0, pad_rows), (0, pad_cols), (0, 0)), mode="edge")
    return image

"""One way in to a media file: :func:`open_media` gives its kind, what its headers say and its frames.

Whatever a command does with a file (scan it, extract its faces, explain a frame of it), it reads the file
through a :class:`MediaSource`: the checksum once per command (:meth:`MediaSource.sha256`, with the command's
:class:`~deepscan.media.checksums.Checksums`), and the headers and frames through one decoder
(:attr:`MediaSource.info`, :meth:`MediaSource.frames`), so that probing a video is the start of decoding it, not
an open of its own. Nothing is opened before it is asked for, and every failure is a one-line MediaError.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from deepscan.media.checksums import Checksums
from deepscan.media.images import MediaKind, load_image, media_kind
from deepscan.media.video import Frame, VideoInfo, VideoReader


@dataclass(frozen=True)
class ImageInfo:
    """An image's size as displayed (EXIF orientation applied)."""

    path: Path
    width: int
    height: int


class MediaSource:
    """An image or a video, read on demand; see the module. Use as a context manager (or call :meth:`close`)."""

    def __init__(self, path: str | os.PathLike[str], kind: MediaKind, checksums: Checksums | None = None) -> None:
        self.path = Path(path)
        self.kind = kind
        self._checksums = checksums if checksums is not None else Checksums()
        self._video: VideoReader | None = None
        self._image: np.ndarray | None = None

    def __enter__(self) -> MediaSource:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        if self._video is not None:
            self._video.close()
        self._image = None

    def sha256(self) -> tuple[str, int]:
        """SHA-256 and size in bytes of the file, read once per command (pipes and devices refused unread)."""
        return self._checksums.sha256(self.path)

    @property
    def info(self) -> ImageInfo | VideoInfo:
        """What the file says of itself: an image's size (from its pixels, kept for :meth:`frames`), or a
        video's headers (:class:`~deepscan.media.video.VideoInfo`, from the decoder :meth:`frames` goes on with)."""
        if self.kind == "image":
            image = self._pixels()
            return ImageInfo(self.path, width=int(image.shape[1]), height=int(image.shape[0]))
        return self._reader().info

    def frames(self, fps: float | None = 2.0, every_frame: bool = False) -> Iterator[Frame]:
        """An image's one frame, or a video's frames sampled at ``fps`` (``None`` or ``every_frame``: all), as
        :meth:`deepscan.media.video.VideoReader.frames` gives them; once per source."""
        if self.kind == "image":
            yield Frame(index=0, time_s=0.0, image=self._pixels())
            return
        yield from self._reader().frames(fps, every_frame)

    def _pixels(self) -> np.ndarray:
        if self._image is None:
            self._image = load_image(self.path)
        return self._image

    def _reader(self) -> VideoReader:
        if self._video is None:
            self._video = VideoReader(self.path)
        return self._video


def open_media(
    path: str | os.PathLike[str], kind: MediaKind | None = None, checksums: Checksums | None = None
) -> MediaSource:
    """``path`` as a :class:`MediaSource`. ``kind``: ``"image"`` or ``"video"`` when already known, else by the
    extension, or for an unknown one by opening it (MediaError when it is neither). ``checksums``: the
    command's, so that a file is hashed once however often it is asked for (None: read at each ask)."""
    return MediaSource(path, kind or media_kind(path), checksums)

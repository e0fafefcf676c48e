"""What a scan finds, as plain data for the reports: each face (:class:`FaceResult`) and each file
(:class:`FileResult`, with :func:`media_record` of its media), and the interruption that carries a file's results
so far (:class:`ScanInterrupted`)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from typing import TYPE_CHECKING

from deepscan.media.source import ImageInfo
from deepscan.media.video import VideoInfo
from deepscan.reliability import bits_per_pixel
from deepscan.verdicts import FileVerdict, TrackVerdict

if TYPE_CHECKING:
    from deepscan.kept_faces import KeptFaces


@dataclass
class FaceResult:
    frame_index: int
    time_s: float
    track_id: int
    box: tuple[float, float, float, float]
    detection_score: float
    fake_probability: float = float("nan")  # calibrated; for the ensemble, the mean of its members'
    face_px: float | None = None  # the face box's longer side, in frame pixels
    sharpness: float | None = None  # variance of the Laplacian of the grey crop (deepscan.reliability)
    outside_range: list[str] = field(default_factory=list)  # "too small", "too blurred": outside the reliable range
    member_probabilities: dict[str, float] | None = None  # ensemble only: each member's calibrated P(fake)


@dataclass
class FileResult:
    path: str
    kind: str  # "video" or "image"
    status: str  # "complete", "partial" or "error"
    message: str | None = None
    sha256: str | None = None
    size_bytes: int | None = None
    media: dict = field(default_factory=dict)
    frames_scanned: int = 0
    faces: list[FaceResult] = field(default_factory=list)
    tracks: list[TrackVerdict] = field(default_factory=list)
    verdict: FileVerdict | None = None
    seconds: float = 0.0
    # Asked for (Scanner keep_faces): the faces a report explains, with their crops and frames; not in to_dict.
    kept_faces: KeptFaces | None = field(default=None, repr=False, compare=False)

    def to_dict(self) -> dict:
        record = asdict(replace(self, kept_faces=None))
        del record["kept_faces"]
        return record


def media_record(info: ImageInfo | VideoInfo) -> dict:
    """What a file's result records of its media: an image's size, a video's headers and compression."""
    if isinstance(info, ImageInfo):
        return {"width": info.width, "height": info.height}
    return {
        "width": info.width,
        "height": info.height,
        "fps": info.fps,
        "duration_s": info.duration_s,
        "frame_count": info.frame_count,
        "codec": info.codec,
        "bit_rate": info.bit_rate,
        "bits_per_pixel": bits_per_pixel(info.bit_rate, info.width, info.height, info.fps),
    }


class ScanInterrupted(Exception):
    """Ctrl-C during a file: carries that file's results so far (status ``partial``; ``complete`` or ``error`` when the
    file was done before Ctrl-C came but not yet handed out)."""

    def __init__(self, result: "FileResult"):
        super().__init__(result.path)
        self.result = result

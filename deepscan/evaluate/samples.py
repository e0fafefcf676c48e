"""Evaluation data: datasets -> the face samples a detector is measured on.

Data comes through the shared readers (``deepscan.data.sources``) and the face cache, so evaluation sees exactly
the faces training would (same detector, frames, crop margin). A *sample* is one face crop of one frame of one
media file; its *video* is the media file itself (its full path), never a folder name, so that two clips in one
folder, or two ``000.mp4`` in different folders, stay apart; frames stored as image files belong to the video
their labels CSV names in its ``video`` column (with their label: the two halves of a side-by-side demo are two
videos).
"""

from __future__ import annotations

import csv
import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from deepscan.data.framing import DEFAULT_CACHE_MARGIN, DEFAULT_MARGIN
from deepscan.errors import DeepscanError


class EvaluationError(DeepscanError, ValueError):
    """Data or options that cannot be evaluated; one line for the user."""


def _csv_has_split(path: Path) -> bool:
    try:
        with open(path, newline="") as handle:
            return "split" in (next(csv.reader(handle), None) or [])
    except (OSError, UnicodeDecodeError, csv.Error):
        return False


def dataset_source(path: Path, part: str, compression: str = "c23"):
    """The training reader's source spec for DATA, the layout recognised from what the path holds.

    ``part`` is ``test`` for DATA and ``val`` for --val: FF++ uses its official split of that name, Celeb-DF its
    test list (it has no validation split: --val must then be another dataset), a CSV its ``split`` column when
    it has one.
    """
    from deepscan.data.sources import CelebDFSource, FaceForensicsSource, FolderSource, VideoCSVSource

    if path.is_file() and path.suffix.lower() == ".csv":
        return VideoCSVSource(kind="video_csv", csv=path, split=part if _csv_has_split(path) else None)
    if not path.is_dir():
        raise EvaluationError(f"{path}: not a folder or a labels CSV")
    if (path / "original_sequences").is_dir() or (path / "manipulated_sequences").is_dir():
        return FaceForensicsSource(kind="faceforensics", root=path, split=part, compression=compression)
    if (path / "Celeb-synthesis").is_dir():
        if part != "test":
            raise EvaluationError(f"{path}: Celeb-DF has no validation split; pass another dataset to --val")
        return CelebDFSource(kind="celebdf", root=path, split="test")
    return FolderSource(kind="folder", path=path)


def manipulation_of(path: Path, label: int) -> str:
    """FF++ keeps each method's fakes under manipulated_sequences/<method>/; other layouts name none."""
    if label == 0:
        return "real"
    parts = path.parts
    if "manipulated_sequences" in parts:
        at = parts.index("manipulated_sequences")
        if at + 1 < len(parts):
            return parts[at + 1]
    return "fake"


@dataclass(frozen=True)
class Sample:
    key: str  # stable hash of what the detector sees (before any perturbation)
    dataset: str
    video: str  # the media file, or the video a labels CSV names for a frame file: frames of one video share it
    label: int
    manipulation: str
    frame_index: int
    face_path: Path  # cached crop (PNG)
    keypoints: np.ndarray = field(compare=False, repr=False)
    # What the bootstrap resamples whole: the source's group (a DFDC original with its fakes, one DeepFaceLive video
    # whose frames are files of their own). Empty: the media file alone.
    group: str = ""
    # The media file itself (its full path), where ``video`` names a clip of frame files; empty: ``video`` is the file.
    media: str = ""

    @property
    def resampling_unit(self) -> str:
        return self.group or self.video


@dataclass
class SampleSet:
    samples: list[Sample]
    media_files: int = 0
    faceless: list[str] = field(default_factory=list)  # media files with no face: no score, no verdict
    unreadable: int = 0


def collect_samples(
    data: Sequence[Path],
    part: str,
    *,
    input_size: int,
    frames_per_video: int = 8,
    margin: float = DEFAULT_MARGIN,
    cache_dir: Path | None = None,
    compression: str = "c23",
    on_item: Callable[[], None] | None = None,
    on_total: Callable[[int], None] | None = None,
) -> SampleSet:
    from deepscan.data.face_cache import ExtractionParams, FaceCache, extract_all
    from deepscan.data.framing import extraction_params
    from deepscan.data.sources import DataError, describe_source, list_media

    listed = []
    for path in data:
        try:
            source = dataset_source(Path(path), part, compression)
            items = list_media(source)
        except DataError as error:
            raise EvaluationError(str(error)) from None
        listed.extend((describe_source(source), item) for item in items)
    if on_total is not None:
        on_total(len(listed))

    def params_for(item) -> ExtractionParams:
        return extraction_params(item, input_size=input_size, margin=margin, cache_margin=DEFAULT_CACHE_MARGIN,
                                 frames_per_video=frames_per_video)

    cache = FaceCache(cache_dir)
    found, stats = extract_all(cache, [(item.path, item.kind, params_for(item)) for _, item in listed], on_item)
    result = SampleSet(samples=[], media_files=len(listed), unreadable=stats.failed)
    for dataset, item in listed:
        if item.path not in found:
            continue
        faces = found[item.path]
        if not faces:
            result.faceless.append(str(item.path))
        video = item.video or str(Path(item.path).resolve())
        for face in faces:
            identity = f"{face.path.parent.name}/{face.path.name}|{margin}|{input_size}"
            result.samples.append(
                Sample(
                    key=hashlib.sha256(identity.encode()).hexdigest(),
                    dataset=dataset,
                    video=video,
                    label=item.label,
                    manipulation=manipulation_of(Path(item.path), item.label),
                    frame_index=face.frame_index,
                    face_path=face.path,
                    keypoints=face.keypoints,
                    group=f"{dataset}|{item.group}",
                    media=str(Path(item.path).resolve()),
                )
            )
    return result


def load_face(sample: Sample, input_size: int, margin: float = DEFAULT_MARGIN) -> np.ndarray:
    from PIL import Image

    from deepscan.data.framing import Framing, frame_face

    with Image.open(sample.face_path) as image:
        crop = np.asarray(image.convert("RGB"))
    return frame_face(crop, sample.keypoints, DEFAULT_CACHE_MARGIN, input_size, Framing(scale=margin))[0]

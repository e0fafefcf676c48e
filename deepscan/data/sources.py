"""Dataset sources: their specs (as a recipe's ``data.train`` / ``data.val`` and ``deepscan evaluate`` give them)
and the media files each lists, with a label (1 = fake, 0 = real) and a *group* (the unit that must never
straddle training and validation: a video, an identity, an FF++ source/target pair).

Layouts:
- ``folder``: files under any folder named ``real`` or ``fake`` (any depth, case-insensitive); the nearest
  such ancestor gives the label. Group: the first folder below the label folder (a video's frames, a person),
  or the file's name without extension, so that ``real/0001.png`` and ``fake/0001.png`` stay together.
- ``real_images`` / ``real_videos``: every file is real. Group: its first sub-folder if it is in one (one
  person per folder, say), else its name without extension.
- ``faceforensics``: ``original_sequences/youtube/<c>/videos/<id>.mp4`` and
  ``manipulated_sequences/<method>/<c>/videos/<target>_<source>.mp4``; the official ``splits/<split>.json``
  lists ``[a, b]`` pairs: reals ``a``, ``b`` and fakes ``a_b``, ``b_a`` belong to the split. Group: the pair.
- ``celebdf``: ``Celeb-real/``, ``YouTube-real/`` and ``Celeb-synthesis/``; the test split is the list file
  (``<flag> <relative path>`` per line; the label comes from the folder, since Celeb-DF's flag means 1 = real),
  the training split every other video. Group: the source video (``id0_0003`` for ``id0_id16_0003``).
- ``video_csv``: a CSV with ``path`` and ``label`` (0/1 or real/fake) columns, optional ``split`` and
  ``group``; paths relative to ``root`` (default: the CSV's folder).
- ``bundle``: a face-crop bundle (``deepscan.data.bundle``, made by ``python -m deepscan.train.bundle make``):
  faces already extracted, listed with label, split, source name, group and keypoints. Its items are faces, not
  media: nothing is extracted, so training from a bundle needs neither PyAV nor MediaPipe, and this module
  imports the media package (which loads PyAV) only when a media file's kind must be told from its name.
"""

from __future__ import annotations

import csv
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Literal, Union

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationInfo

from deepscan.errors import DeepscanError


def resolve_path(value: Path | None, info: ValidationInfo) -> Path | None:
    """Relative paths are taken from the recipe's folder (``context['base_dir']``)."""
    if value is None:
        return None
    value = Path(value).expanduser()
    base_dir = (info.context or {}).get("base_dir")
    if not value.is_absolute() and base_dir is not None:
        value = Path(os.path.normpath(Path(base_dir) / value))
    return value


# Every key checked: an unknown key is refused. The training recipe schema builds on it too.
class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


RecipePath = Annotated[Path, AfterValidator(resolve_path)]


# --- source specs -------------------------------------------------------------------------------------------


class SourceBase(Strict):
    # Relative share of the training batches drawn from this source (sources are sampled by weight).
    weight: float = Field(default=1.0, gt=0.0)
    name: str | None = None


class FolderSource(SourceBase):
    """Face images or videos under ``real/`` and ``fake/`` folders, at any depth."""

    kind: Literal["folder"]
    path: RecipePath
    # True: find the face in each file and crop it; False: the files already are face crops.
    crop_faces: bool = True


class RealImagesSource(SourceBase):
    """A folder of authentic photos (searched recursively): every face found is a real face."""

    kind: Literal["real_images"]
    path: RecipePath
    crop_faces: bool = True


class RealVideosSource(SourceBase):
    """A folder of authentic videos (searched recursively): faces sampled from every video are real."""

    kind: Literal["real_videos"]
    path: RecipePath


FFPP_MANIPULATIONS = ("Deepfakes", "Face2Face", "FaceSwap", "NeuralTextures")


class FaceForensicsSource(SourceBase):
    """FaceForensics++ in its official download layout, with the official split JSONs."""

    kind: Literal["faceforensics"]
    root: RecipePath
    compression: Literal["raw", "c23", "c40"] = "c23"
    manipulations: list[str] = Field(default_factory=lambda: list(FFPP_MANIPULATIONS), min_length=1)
    split: Literal["train", "val", "test"] = "train"
    # Folder holding train.json / val.json / test.json; default: ``<root>/splits``.
    splits_dir: RecipePath | None = None
    include_real: bool = True


class CelebDFSource(SourceBase):
    """Celeb-DF (v2) in its download layout; the test split is its ``List_of_testing_videos.txt``."""

    kind: Literal["celebdf"]
    root: RecipePath
    split: Literal["train", "test"] = "train"
    test_list: RecipePath | None = None  # default: <root>/List_of_testing_videos.txt


class VideoCSVSource(SourceBase):
    """Videos (or images) listed in a CSV with columns ``path,label`` and optional ``split`` and ``group``."""

    kind: Literal["video_csv"]
    csv: RecipePath
    root: RecipePath | None = None  # default: the CSV's folder
    split: str | None = None  # keep only rows whose split column equals this
    # Keep only rows of these labels: [real] trains on a source's real faces alone (with SBI, the pseudo-fakes are
    # then the only fakes of that source).
    labels: list[Literal["real", "fake"]] | None = Field(default=None, min_length=1)
    # Column names, for label files that call them otherwise (``file`` in the shared data's labels.csv).
    path_column: str = "path"
    group_column: str = "group"
    # Frames stored as image files: rows with the same value here (and the same label) are frames of one video, which
    # evaluation's video levels then score as one. Without the column, or empty, each file is its own video.
    video_column: str = "video"
    # True: find the face in each image and crop it; False: the images already are face crops.
    crop_faces: bool = True


class BundleSource(SourceBase):
    """Face crops from a bundle folder (its ``manifest.json``): one split, optionally only some of its sources."""

    kind: Literal["bundle"]
    path: RecipePath
    split: Literal["train", "val"]
    # Source names of the manifest to keep (each may then get its own weight); None: all of them.
    sources: list[str] | None = Field(default=None, min_length=1)


Source = Annotated[
    Union[FolderSource, RealImagesSource, RealVideosSource, FaceForensicsSource, CelebDFSource, VideoCSVSource,
          BundleSource],
    Field(discriminator="kind"),
]


class DataError(DeepscanError, ValueError):
    """Training data that cannot be used; one line naming the file or folder."""


@dataclass(frozen=True)
class MediaItem:
    path: Path
    label: int  # 1 = fake, 0 = real
    kind: str  # "image" or "video"
    group: str
    crop_faces: bool = True
    video: str | None = None  # the video a frame stored as a file belongs to; None: the file is its own


# --- listing media -------------------------------------------------------------------------------------------


def _media_kind(path: Path) -> str | None:
    from deepscan.media.images import IMAGE_EXTENSIONS, VIDEO_EXTENSIONS

    suffix = path.suffix.lower()
    if suffix in IMAGE_EXTENSIONS:
        return "image"
    if suffix in VIDEO_EXTENSIONS:
        return "video"
    return None


def _walk(folder: Path) -> list[Path]:
    found = []
    for root, folders, files in os.walk(folder):
        folders[:] = sorted(name for name in folders if not name.startswith("."))
        found.extend(Path(root) / name for name in sorted(files) if not name.startswith("."))
    return found


def _require_folder(path: Path, what: str) -> None:
    if not path.is_dir():
        raise DataError(f"{path}: {what} not found (or not a folder)")


def _group_below(path: Path, base: Path) -> str:
    """A file's first folder below ``base`` (one person or video per folder), else its name without extension."""
    relative = path.relative_to(base)
    return relative.parts[0] if len(relative.parts) > 1 else relative.with_suffix("").as_posix()


def list_folder(source: FolderSource) -> list[MediaItem]:
    _require_folder(source.path, "data folder")
    items = []
    for path in _walk(source.path):
        kind = _media_kind(path)
        if kind is None:
            continue
        parts = path.relative_to(source.path).parts[:-1]
        label_at = next((i for i in range(len(parts) - 1, -1, -1) if parts[i].lower() in ("real", "fake")), None)
        if label_at is None:
            continue
        label = 1 if parts[label_at].lower() == "fake" else 0
        label_root = source.path.joinpath(*parts[: label_at + 1])
        below = path.relative_to(label_root)
        # Not the label folder itself: real/000.png and fake/000.png (often made from it) share a group.
        unit = below.parts[0] if len(below.parts) > 1 else below.stem
        group = f"{'/'.join(parts[:label_at])}:{unit}"
        items.append(MediaItem(path, label, kind, group, crop_faces=source.crop_faces or kind == "video"))
    if not items:
        raise DataError(f"{source.path}: no image or video under a real/ or fake/ folder")
    return items


def list_real(source: RealImagesSource | RealVideosSource) -> list[MediaItem]:
    wanted = "image" if isinstance(source, RealImagesSource) else "video"
    _require_folder(source.path, f"folder of real {wanted}s")
    crop = getattr(source, "crop_faces", True)
    items = [
        MediaItem(path, 0, wanted, f"{source.path}:{_group_below(path, source.path)}", crop_faces=crop)
        for path in _walk(source.path)
        if _media_kind(path) == wanted
    ]
    if not items:
        raise DataError(f"{source.path}: no {wanted} found")
    return items


def _read_split_pairs(path: Path) -> list[tuple[str, str]]:
    try:
        pairs = json.loads(path.read_text())
        return [(str(a), str(b)) for a, b in pairs]
    except FileNotFoundError:
        raise DataError(f"{path}: FaceForensics++ split file not found (the official splits/<split>.json)") from None
    except (ValueError, TypeError):
        raise DataError(f"{path}: not a FaceForensics++ split file (expected a JSON list of [id, id] pairs)") from None


def list_faceforensics(source: FaceForensicsSource) -> list[MediaItem]:
    _require_folder(source.root, "FaceForensics++ root")
    splits_dir = source.splits_dir or source.root / "splits"
    pairs = _read_split_pairs(splits_dir / f"{source.split}.json")
    real_dir = source.root / "original_sequences" / "youtube" / source.compression / "videos"
    items: list[MediaItem] = []
    missing: list[Path] = []

    def add(path: Path, label: int, group: str) -> None:
        if path.is_file():
            items.append(MediaItem(path, label, "video", group))
        else:
            missing.append(path)

    for a, b in pairs:
        group = f"ffpp:{a}_{b}"
        if source.include_real:
            add(real_dir / f"{a}.mp4", 0, group)
            add(real_dir / f"{b}.mp4", 0, group)
        for method in source.manipulations:
            fake_dir = source.root / "manipulated_sequences" / method / source.compression / "videos"
            add(fake_dir / f"{a}_{b}.mp4", 1, group)
            add(fake_dir / f"{b}_{a}.mp4", 1, group)
    if not items:
        example = missing[0] if missing else real_dir
        raise DataError(f"{source.root}: no FaceForensics++ video of the {source.split} split found (e.g. {example})")
    return items


CELEBDF_FOLDERS = {"Celeb-real": 0, "YouTube-real": 0, "Celeb-synthesis": 1}


def _celebdf_group(relative: str) -> str:
    folder, name = relative.split("/", 1)
    stem = Path(name).stem
    parts = stem.split("_")
    if folder == "Celeb-synthesis" and len(parts) == 3:  # id<target>_id<source>_<clip>: the target's video
        stem = f"{parts[0]}_{parts[2]}"
    return f"celebdf:{folder if folder == 'YouTube-real' else 'celeb'}:{stem}"


def list_celebdf(source: CelebDFSource) -> list[MediaItem]:
    _require_folder(source.root, "Celeb-DF root")
    list_file = source.test_list or source.root / "List_of_testing_videos.txt"
    try:
        lines = list_file.read_text().splitlines()
    except FileNotFoundError:
        raise DataError(f"{list_file}: Celeb-DF test list not found (List_of_testing_videos.txt)") from None
    test = set()
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        fields = line.split()
        if len(fields) != 2 or fields[1].split("/", 1)[0] not in CELEBDF_FOLDERS:
            raise DataError(f"{list_file}:{number}: expected '<0|1> <folder>/<video>.mp4'")
        test.add(fields[1])
    items = []
    for folder, label in CELEBDF_FOLDERS.items():
        directory = source.root / folder
        if not directory.is_dir():
            continue
        for path in sorted(directory.glob("*.mp4")):
            relative = f"{folder}/{path.name}"
            if (relative in test) == (source.split == "test"):
                items.append(MediaItem(path, label, "video", _celebdf_group(relative)))
    if not items:
        raise DataError(f"{source.root}: no Celeb-DF video of the {source.split} split found")
    return items


_LABELS = {"0": 0, "1": 1, "real": 0, "fake": 1}


def list_csv(source: VideoCSVSource) -> list[MediaItem]:
    root = source.root or source.csv.parent
    path_column, group_column = source.path_column, source.group_column
    try:
        with open(source.csv, newline="") as handle:
            rows = list(csv.DictReader(handle))
            columns = set(rows[0]) if rows else set()
    except FileNotFoundError:
        raise DataError(f"{source.csv}: labels CSV not found") from None
    except (OSError, UnicodeDecodeError, csv.Error) as error:
        raise DataError(f"{source.csv}: cannot read the CSV ({error})") from None
    if not {path_column, "label"} <= columns:
        raise DataError(f"{source.csv}: needs {path_column!r} and 'label' columns, has {sorted(columns) or 'none'}")
    items = []
    for number, row in enumerate(rows, start=2):
        if source.split is not None and (row.get("split") or "").strip() != source.split:
            continue
        label = _LABELS.get((row["label"] or "").strip().lower())
        if label is None:
            raise DataError(f"{source.csv}:{number}: label must be 0, 1, real or fake, not {row['label']!r}")
        if source.labels is not None and ("real", "fake")[label] not in source.labels:
            continue
        relative = (row[path_column] or "").strip()
        path = root / relative
        kind = _media_kind(path)
        if kind is None:
            raise DataError(f"{source.csv}:{number}: {relative!r} is not a video or image file name")
        if not path.is_file():
            raise DataError(f"{source.csv}:{number}: {path} not found")
        group = (row.get(group_column) or "").strip() or relative
        video = (row.get(source.video_column) or "").strip()
        items.append(MediaItem(path, label, kind, f"csv:{group}", crop_faces=source.crop_faces or kind == "video",
                               video=f"{source.csv}:{video}:{('real', 'fake')[label]}" if video else None))
    if not items:
        wanted = [f"split {source.split!r}"] if source.split else []
        wanted += [f"label {' or '.join(source.labels)}"] if source.labels else []
        raise DataError(f"{source.csv}: no rows" + (f" with {' and '.join(wanted)}" if wanted else ""))
    return items


def list_media(source) -> list[MediaItem]:
    from deepscan.data.bundle import list_bundle

    listers = {
        "folder": list_folder,
        "real_images": list_real,
        "real_videos": list_real,
        "faceforensics": list_faceforensics,
        "celebdf": list_celebdf,
        "video_csv": list_csv,
        "bundle": list_bundle,
    }
    return listers[source.kind](source)


def describe_source(source) -> str:
    where = getattr(source, "path", None) or getattr(source, "root", None) or getattr(source, "csv", None)
    chosen = getattr(source, "sources", None)
    return source.name or f"{source.kind}:{Path(where).name}" + (f"[{','.join(chosen)}]" if chosen else "")

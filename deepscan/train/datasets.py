"""One dataset interface over every kind of training data.

A recipe lists sources; each source lists media files with a label (1 = fake, 0 = real) and a *group* (the
unit that must never straddle training and validation: a video, an identity, an FF++ source/target pair).
Faces are extracted once through the face cache; the faces of all sources become ``FaceRecord`` objects, and
the epoch is made of *entries*: every face as it is, plus, when SBI is on, self-blended pseudo-fakes of the
real faces. Batches are planned per epoch from the seed alone (``plan_epoch``), each slot carrying its own
sample seed, so that any worker, rank or resumed run makes exactly the same sample.

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
"""

from __future__ import annotations

import csv
import hashlib
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from deepscan.errors import DeepscanError
from deepscan.media.images import IMAGE_EXTENSIONS, VIDEO_EXTENSIONS
from deepscan.train.recipe import (
    CelebDFSource,
    DataSpec,
    FaceForensicsSource,
    FolderSource,
    RealImagesSource,
    RealVideosSource,
    VideoCSVSource,
)


class DataError(DeepscanError, ValueError):
    """Training data that cannot be used; one line naming the file or folder."""


@dataclass(frozen=True)
class MediaItem:
    path: Path
    label: int  # 1 = fake, 0 = real
    kind: str  # "image" or "video"
    group: str
    crop_faces: bool = True


@dataclass(frozen=True)
class FaceRecord:
    image: Path  # cached crop (PNG)
    keypoints: np.ndarray  # (6, 2) in crop pixels, NaN if unknown
    label: int
    group: str
    source: int  # index of the source in its list


@dataclass(frozen=True)
class Entry:
    face: int  # index into the face records
    pseudo_fake: bool  # made into an SBI fake (always from a real face)

    def label(self, faces: Sequence[FaceRecord]) -> int:
        return 1 if self.pseudo_fake else faces[self.face].label


# --- listing media -------------------------------------------------------------------------------------------


def _media_kind(path: Path) -> str | None:
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
        relative = (row[path_column] or "").strip()
        path = root / relative
        kind = _media_kind(path)
        if kind is None:
            raise DataError(f"{source.csv}:{number}: {relative!r} is not a video or image file name")
        if not path.is_file():
            raise DataError(f"{source.csv}:{number}: {path} not found")
        group = (row.get(group_column) or "").strip() or relative
        items.append(MediaItem(path, label, kind, f"csv:{group}", crop_faces=source.crop_faces or kind == "video"))
    if not items:
        raise DataError(f"{source.csv}: no rows" + (f" with split {source.split!r}" if source.split else ""))
    return items


def list_media(source) -> list[MediaItem]:
    listers = {
        "folder": list_folder,
        "real_images": list_real,
        "real_videos": list_real,
        "faceforensics": list_faceforensics,
        "celebdf": list_celebdf,
        "video_csv": list_csv,
    }
    return listers[source.kind](source)


def describe_source(source) -> str:
    where = getattr(source, "path", None) or getattr(source, "root", None) or getattr(source, "csv", None)
    return source.name or f"{source.kind}:{Path(where).name}"


# --- splitting -----------------------------------------------------------------------------------------------


def split_groups(groups: Sequence[str], fraction: float, seed: int) -> set[str]:
    """The groups held out for validation: a seeded, stable ``fraction`` of them (at least one, if any)."""
    unique = sorted(set(groups))
    if fraction <= 0 or len(unique) < 2:
        return set()
    count = min(len(unique) - 1, max(1, round(fraction * len(unique))))
    ranked = sorted(unique, key=lambda group: hashlib.sha256(f"{seed}:{group}".encode()).hexdigest())
    return set(ranked[:count])


# --- entries and epochs --------------------------------------------------------------------------------------


def make_entries(faces: Sequence[FaceRecord], sbi_ratio: float | None, seed: int) -> list[Entry]:
    """Every face, plus ``round(ratio x reals)`` SBI pseudo-fakes of real faces (cycled in a seeded order)."""
    entries = [Entry(index, False) for index in range(len(faces))]
    reals = [index for index, face in enumerate(faces) if face.label == 0]
    if sbi_ratio and reals:
        count = int(round(sbi_ratio * len(reals)))
        order = np.random.default_rng([seed, 7]).permutation(len(reals))
        entries += [Entry(reals[order[i % len(reals)]], True) for i in range(count)]
    return entries


def sample_seed(seed: int, epoch: int, batch: int, slot: int) -> int:
    return int(np.random.SeedSequence([seed, epoch, batch, slot]).generate_state(1)[0])


@dataclass
class EpochPlan:
    """The batches of one epoch: lists of (entry index, sample seed); the same on every rank."""

    batches: list[list[tuple[int, int]]] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.batches)


def plan_epoch(
    labels: Sequence[int],
    weights: Sequence[float],
    batch_size: int,
    epoch: int,
    seed: int,
    balanced: bool,
    num_batches: int | None = None,
) -> EpochPlan:
    """Plan an epoch's batches from the seed alone (no state to save: resuming re-plans it identically).

    Uniform weights: each entry is drawn once per pass, in a fresh permutation (class-balanced batches use
    ``BalancedBatchSampler``). Uneven source weights: entries are drawn with replacement in proportion to
    their weight, within each class when batches are balanced.
    """
    from deepscan.train.sampling import BalancedBatchSampler

    labels = np.asarray(labels, dtype=np.int64)
    weights = np.asarray(weights, dtype=np.float64)
    total = len(labels)
    if total == 0:
        raise DataError("no training face: every source came out empty (no face found?)")
    if num_batches is None:
        num_batches = max(1, total // batch_size)
    uniform = bool(np.allclose(weights, weights[0]))
    epoch_seed = int(np.random.SeedSequence([seed, epoch]).generate_state(1)[0])
    rng = np.random.default_rng(epoch_seed)
    if balanced:
        half = batch_size // 2
        if uniform:
            sampler = BalancedBatchSampler(labels.tolist(), n_real=half, n_fake=batch_size - half,
                                           num_batches=num_batches, seed=epoch_seed)
            index_batches = list(iter(sampler))
        else:
            per_class = {}
            for label, count in ((0, half), (1, batch_size - half)):
                members = np.flatnonzero(labels == label)
                if not len(members):
                    raise DataError(f"balanced batches need {'real' if label == 0 else 'fake'} faces, and there are none")
                chosen = rng.choice(members, size=(num_batches, count), p=weights[members] / weights[members].sum())
                per_class[label] = chosen
            index_batches = []
            for row in range(num_batches):
                batch = np.concatenate([per_class[0][row], per_class[1][row]])
                index_batches.append(batch[rng.permutation(len(batch))].tolist())
    elif uniform:
        needed = num_batches * batch_size
        order = np.concatenate([rng.permutation(total) for _ in range(math.ceil(needed / total))])[:needed]
        index_batches = order.reshape(num_batches, batch_size).tolist()
    else:
        order = rng.choice(total, size=(num_batches, batch_size), p=weights / weights.sum())
        index_batches = order.tolist()
    return EpochPlan(
        [
            [(int(entry), sample_seed(seed, epoch, number, slot)) for slot, entry in enumerate(batch)]
            for number, batch in enumerate(index_batches)
        ]
    )


# --- the torch dataset ---------------------------------------------------------------------------------------


class FaceDataset:
    """Map-style dataset: key ``(entry index, sample seed)`` -> ``(image (3, S, S) float in [0, 1], label)``.

    ``train=True`` draws framing and photometric augmentation from the sample seed; ``train=False`` frames at the
    evaluation margin and seeds each pseudo-fake by its entry, so the validation set is the same every epoch.
    """

    def __init__(self, faces, entries, augmenter, sbi_spec, train: bool, seed: int = 0):
        self.faces = list(faces)
        self.entries = list(entries)
        self.augmenter = augmenter
        self.sbi_spec = sbi_spec
        self.train = train
        self.seed = seed

    def __len__(self) -> int:
        return len(self.entries)

    @property
    def labels(self) -> list[int]:
        return [entry.label(self.faces) for entry in self.entries]

    def keypoints_of(self, face: FaceRecord, size: int) -> np.ndarray:
        if np.isfinite(face.keypoints).all():
            return face.keypoints
        from deepscan.train.sbi import canonical_keypoints

        return canonical_keypoints(size, 1.0 / self.augmenter.cache_margin)

    def make(self, index: int, seed: int) -> tuple[np.ndarray, int]:
        """The uint8 (S, S, 3) sample and its label."""
        from PIL import Image

        from deepscan.train.sbi import self_blend

        entry = self.entries[index]
        face = self.faces[entry.face]
        with Image.open(face.image) as picture:
            crop = np.asarray(picture.convert("RGB"))
        rng = np.random.default_rng(seed if self.train else [self.seed, index])
        keypoints = self.keypoints_of(face, crop.shape[1])
        framing = self.augmenter.training_framing(rng) if self.train else self.augmenter.evaluation_framing()
        image, moved = self.augmenter.frame(crop, keypoints, framing)
        if entry.pseudo_fake:
            image = self_blend(image, moved, rng, self.sbi_spec).fake
        if self.train:
            image = self.augmenter.photometric(image, rng)
        return image, entry.label(self.faces)

    def __getitem__(self, key):
        import torch

        index, seed = key if isinstance(key, tuple) else (key, 0)
        image, label = self.make(index, seed)
        tensor = torch.from_numpy(np.array(image, dtype=np.uint8)).permute(2, 0, 1).float().div_(255.0)
        return tensor, torch.tensor(float(label))


@dataclass
class SourceSummary:
    name: str
    kind: str
    weight: float
    media: int = 0
    real_faces: int = 0
    fake_faces: int = 0
    failed: int = 0
    faceless: int = 0
    duplicates: int = 0  # files whose exact content was already used (in training, for validation files)

    def as_dict(self) -> dict:
        return dict(self.__dict__)


@dataclass
class PreparedData:
    """Faces for training and validation, with a description for the model card."""

    train_faces: list[FaceRecord]
    val_faces: list[FaceRecord]
    train_weights: list[float]  # per training face: its source's weight
    summaries: dict[str, list[SourceSummary]]


def list_sources(spec: DataSpec) -> dict[str, list[tuple[object, list[MediaItem]]]]:
    """Every source's media, as {"train": [(source, items)], "val": [...]} (val only when the recipe has one)."""
    listed = {"train": [(source, list_media(source)) for source in spec.train]}
    if spec.val:
        listed["val"] = [(source, list_media(source)) for source in spec.val]
    return listed


def extract_faces(listed, params_for, cache, shard: tuple[int, int] = (0, 1), on_progress=None) -> dict[str, int]:
    """Fill the face cache with this process's ``shard`` (rank, world size) of the listed files.

    ``params_for(item)`` gives an item's extraction parameters; ``on_progress(total)`` is called once with the
    number of files this process handles and may return a per-file callback. Returns the extraction counts.
    """
    from deepscan.train.face_cache import extract_all

    rank, world = shard
    every = [(item, params_for(item)) for part in listed.values() for _, items in part for item in items]
    mine = every[rank::world]
    tick = on_progress(len(mine)) if on_progress else None
    _, stats = extract_all(cache, [(item.path, item.kind, params) for item, params in mine], on_item=tick)
    return dict(stats.__dict__)


def collect_faces(listed, spec: DataSpec, params_for, cache, seed: int) -> PreparedData:
    """After extraction: read every item's faces from the cache and split training and validation.

    A file whose exact content was already taken is skipped (press photo sets repeat pictures under other
    names): a duplicate would weigh twice in training and, worse, could sit on both sides of the split.
    """
    from deepscan.media.errors import MediaError

    summaries: dict[str, list[SourceSummary]] = {}
    per_part: dict[str, list[tuple[FaceRecord, float, str]]] = {}
    seen: dict[str, set[str]] = {}
    for part, sources in listed.items():
        summaries[part] = []
        records: list[tuple[FaceRecord, float, str]] = []
        taken = seen.setdefault(part, set())
        for number, (source, items) in enumerate(sources):
            summary = SourceSummary(describe_source(source), source.kind, source.weight, media=len(items))
            for item in items:
                try:
                    digest = cache.content_hash(item.path)
                    faces = cache.lookup(item.path, params_for(item))
                except (MediaError, OSError):
                    faces = None
                if faces is None:
                    summary.failed += 1
                    continue
                if digest in taken or (part == "val" and digest in seen["train"]):
                    summary.duplicates += 1
                    continue
                taken.add(digest)
                summary.faceless += not faces
                for face in faces:
                    record = FaceRecord(face.path, face.keypoints, item.label, item.group, number)
                    records.append((record, source.weight, digest))
                    if item.label:
                        summary.fake_faces += 1
                    else:
                        summary.real_faces += 1
            summaries[part].append(summary)
        per_part[part] = records
    train = per_part["train"]
    if "val" in per_part:
        val = [record for record, _, _ in per_part["val"]]
    else:
        held_out = split_groups([record.group for record, _, _ in train], spec.val_fraction, seed)
        val = [record for record, _, _ in train if record.group in held_out]
        train = [entry for entry in train if entry[0].group not in held_out]
    if spec.max_val_faces is not None and len(val) > spec.max_val_faces:
        keep = np.sort(np.random.default_rng([seed, 11]).permutation(len(val))[: spec.max_val_faces])
        val = [val[i] for i in keep]
    return PreparedData(
        train_faces=[record for record, _, _ in train],
        val_faces=val,
        train_weights=[weight for _, weight, _ in train],
        summaries=summaries,
    )

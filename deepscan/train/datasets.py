"""One dataset interface over every kind of training data.

A recipe lists sources (``deepscan.data.sources``); each source lists media files with a label (1 = fake,
0 = real) and a *group* (the unit that must never straddle training and validation: a video, an identity, an
FF++ source/target pair).
Faces are extracted once through the face cache (a bundle source's faces are already extracted:
``deepscan.data.bundle``); the faces of all sources become ``FaceRecord`` objects, and
the epoch is made of *entries*: every face as it is, plus, when SBI is on, self-blended pseudo-fakes of the
real faces. Batches are planned per epoch from the seed alone (``plan_epoch``), each slot carrying its own
sample seed, so that any worker, rank or resumed run makes exactly the same sample.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from deepscan.data.sources import DataError, MediaItem, describe_source, list_media
from deepscan.train.recipe import DataSpec


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
    for source in [*spec.train, *(spec.val or [])]:
        _check_bundle_margin(source, spec.face.cache_margin)
    listed = {"train": [(source, list_media(source)) for source in spec.train]}
    if spec.val:
        listed["val"] = [(source, list_media(source)) for source in spec.val]
    return listed


def _check_bundle_margin(source, cache_margin: float) -> None:
    """A bundle's crops are framed like cached crops only when their margin is the recipe's cache margin."""
    if source.kind != "bundle":
        return
    from deepscan.data.bundle import bundle_margin

    margin = bundle_margin(source)
    if not math.isclose(margin, cache_margin, rel_tol=1e-6):
        raise DataError(f"{source.path}: the bundle's crops are {margin:g} times the face box, the recipe's "
                        f"data.face.cache_margin is {cache_margin:g}: set data.face.cache_margin: {margin:g}")


def extract_faces(listed, params_for, cache, shard: tuple[int, int] = (0, 1), on_progress=None) -> dict[str, int]:
    """Fill the face cache with this process's ``shard`` (rank, world size) of the listed files.

    ``params_for(item)`` gives an item's extraction parameters; ``on_progress(total)`` is called once with the
    number of files this process handles and may return a per-file callback. Returns the extraction counts.
    """
    from deepscan.data.face_cache import extract_all

    rank, world = shard
    # Bundled faces (kind "face") are extracted already: nothing to do, and no face detector to load for them.
    every = [(item, params_for(item)) for part in listed.values() for _, items in part for item in items
             if item.kind != "face"]
    mine = every[rank::world]
    tick = on_progress(len(mine)) if on_progress else None
    _, stats = extract_all(cache, [(item.path, item.kind, params) for item, params in mine], on_item=tick)
    return dict(stats.__dict__)


def _faces_of(item, cache, params_for) -> tuple[str, list | None]:
    """(content digest, faces with ``path`` and ``keypoints``) of a listed item: a bundled face is its own face."""
    if item.kind == "face":
        return item.sha256, [item]
    return cache.content_hash(item.path), cache.lookup(item.path, params_for(item))


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
                    digest, faces = _faces_of(item, cache, params_for)
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

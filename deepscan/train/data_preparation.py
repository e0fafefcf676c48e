"""A run's faces, from the recipe's sources to the datasets and loaders the epoch loop draws from.

Faces are extracted into the face cache first (each process takes its share of the files under torchrun), then
read back and split into training and validation, with the recipe's augmentation and SBI pseudo-fakes. What changes
here is what a run trains on; how it trains does not depend on it.
"""

from __future__ import annotations

import signal
from dataclasses import dataclass

import torch

from deepscan.data.sources import DataError
from deepscan.train.datasets import FaceDataset, collect_faces, extract_faces, list_sources, make_entries
from deepscan.train.distributed import DistributedContext, barrier, gather_objects
from deepscan.train.errors import TrainingError
from deepscan.train.progress import TrainingProgress
from deepscan.train.recipe import Recipe


@dataclass
class TrainingData:
    """The datasets of a run. ``train_weights``: each training entry's sampling weight (its source's weight);
    ``summaries``: per part (``train``, ``val``) what each source gave; ``val_split``: where validation comes from."""

    train_set: FaceDataset
    val_set: FaceDataset
    train_weights: list[float]
    summaries: dict
    val_split: str


class FacePreparation:
    """Extraction and datasets for ``recipe`` at ``input_size`` pixels; tells ``progress`` what it finds."""

    def __init__(self, recipe: Recipe, input_size: int, context: DistributedContext, progress: TrainingProgress):
        from deepscan.data.face_cache import FaceCache

        self.recipe, self.input_size, self.context, self.progress = recipe, input_size, context, progress
        self.cache = FaceCache(recipe.data.face.cache_dir)
        self.listed = list_sources(recipe.data)

    def params_for(self, item):
        """The extraction parameters of a listed item (its framing follows the recipe's face settings)."""
        from deepscan.data.framing import extraction_params

        face = self.recipe.data.face
        return extraction_params(
            item,
            input_size=self.input_size,
            margin=face.margin,
            cache_margin=face.cache_margin,
            frames_per_video=face.frames_per_video,
            faces_per_frame=face.faces_per_frame,
            min_score=face.min_score,
        )

    def extract(self) -> dict:
        """Fill the face cache (this process's share); returns the extraction counts of all processes together."""
        context, progress = self.context, self.progress

        def on_start(files: int):
            progress.on_extraction_start(files)
            return progress.on_file_extracted

        try:
            extraction = extract_faces(self.listed, self.params_for, self.cache, (context.rank, context.world_size),
                                       on_start)
        finally:
            progress.on_extraction_end()
        barrier(context)
        if context.enabled:
            totals = gather_objects(extraction, context)
            extraction = {key: sum(part[key] for part in totals) for key in totals[0]}
        self._say_what_was_extracted(extraction)
        return extraction

    def _say_what_was_extracted(self, extraction: dict) -> None:
        bundled = sum(item.kind == "face" for part in self.listed.values() for _, items in part for item in items)
        media = extraction["extracted"] + extraction["reused"] + extraction["failed"]
        if media or not bundled:
            self.progress.on_message(
                f"faces: {extraction['faces']} from {extraction['extracted'] + extraction['reused']} "
                f"files ({extraction['reused']} from the cache {self.cache.root}, {extraction['failed']} "
                f"unreadable, {extraction['faceless']} without a face)"
            )
        if bundled:
            self.progress.on_message(f"faces: {bundled} from face bundles (extracted already)")

    def datasets(self) -> TrainingData:
        """The training and validation datasets, from the cache (after :meth:`extract`)."""
        from deepscan.train.augment import FaceAugmenter

        recipe, spec = self.recipe, self.recipe.data
        prepared = collect_faces(self.listed, spec, self.params_for, self.cache, recipe.seed)
        sbi_ratio = spec.sbi.ratio if spec.sbi is not None and spec.sbi.enabled else None
        sbi_spec = spec.sbi if sbi_ratio else None
        try:
            augmenter = FaceAugmenter(recipe.augment, self.input_size, spec.face.margin, spec.face.cache_margin)
        except ValueError as error:
            raise TrainingError(str(error)) from None
        train_entries = make_entries(prepared.train_faces, sbi_ratio, recipe.seed)
        val_entries = make_entries(prepared.val_faces, 1.0 if sbi_ratio else None, recipe.seed + 1)
        seed = recipe.seed
        data = TrainingData(
            train_set=FaceDataset(prepared.train_faces, train_entries, augmenter, sbi_spec, train=True, seed=seed),
            val_set=FaceDataset(prepared.val_faces, val_entries, augmenter, sbi_spec, train=False, seed=seed),
            train_weights=[prepared.train_weights[entry.face] for entry in train_entries],
            summaries=prepared.summaries,
            val_split="recipe val sources" if spec.val else f"{spec.val_fraction:.0%} of the training groups, held out",
        )
        self._check_and_describe(data)
        return data

    def _check_and_describe(self, data: TrainingData) -> None:
        """Refuse training data without both classes; say what each split holds."""
        labels = data.train_set.labels
        if not labels:
            raise DataError("no training face: no face was found in the training data")
        if len(set(labels)) < 2:
            kind = "fake" if labels[0] == 0 else "real"
            raise DataError(f"the training data holds no {kind} face (real-only data needs data.sbi for pseudo-fakes)")
        val_labels = data.val_set.labels
        pseudo = sum(entry.pseudo_fake for entry in data.train_set.entries)
        self.progress.on_message(
            f"training: {labels.count(0)} real, {labels.count(1)} fake "
            f"({pseudo} SBI) | validation: {val_labels.count(0)} real, "
            f"{val_labels.count(1)} fake ({data.val_split})"
        )
        if not val_labels:
            self.progress.on_warning("no validation faces: the last epoch's weights are kept (no best-model selection)")


def _ignore_interrupts_in_worker(_worker_id: int) -> None:
    # Ctrl-C reaches the whole process group: workers ignore it and the main process stops at a step boundary.
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def face_loader(dataset: FaceDataset, batches: list[list], recipe: Recipe, device: torch.device):
    """A loader over ``batches`` (lists of dataset keys) that never draws from the global RNG: dropout uses it, and
    a resumed run must draw exactly what the uninterrupted one drew."""
    from torch.utils.data import DataLoader

    workers = recipe.num_workers
    return DataLoader(
        dataset,
        batch_sampler=batches,
        num_workers=workers,
        worker_init_fn=_ignore_interrupts_in_worker if workers else None,
        generator=torch.Generator().manual_seed(recipe.seed),
        pin_memory=device.type == "cuda",
    )

"""Raw fake-logits of face samples: scored once through the scan's own scoring path, cached by what decides them.

The *raw logits* are what is cached, in a SQLite file keyed by (model, sample, perturbation, strength), so that a
changed model card (a new calibration or threshold) takes effect at once and never meets a stale score: ``model``
is the weights' sha256 with the detector's input size and architecture settings (:func:`logit_cache_key`;
untrained detectors, whose random scores differ run to run, are never cached) and ``sample`` a hash of the face's
cache entry (the media file's sha256 and extraction parameters), its index, and the framing.
"""

from __future__ import annotations

import hashlib
import sqlite3
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from deepscan.evaluate.perturb import apply_perturbation
from deepscan.evaluate.samples import Sample, load_face


def logit_cache_key(weights_sha256: str | None, input_size: int, architecture: str | dict | None = None) -> str | None:
    """The ``model`` of the logit cache: what, besides the sample, decides a logit. The weights' sha256, and the
    input size and architecture settings the detector was built with (they come from the weights' metadata, or,
    for weights without it, from the model card, which may change). Not the calibration: logits are cached raw.
    None (nothing cached) for untrained weights."""
    if weights_sha256 is None:
        return None
    import json

    settings = architecture if isinstance(architecture, str) else json.dumps(architecture or {}, sort_keys=True)
    return f"{weights_sha256}|{int(input_size)}|{hashlib.sha256(settings.encode()).hexdigest()[:16]}"


def weights_architecture(resolved) -> str | dict | None:
    """The architecture settings ``build_detector`` takes from ``resolved`` weights (their metadata, else their
    model card's), for :func:`logit_cache_key`: a card that changes them must not meet logits of the old build."""
    from deepscan.weights import weights_metadata

    metadata = weights_metadata(resolved)
    if "detector_kwargs" in metadata:
        return metadata["detector_kwargs"]
    return resolved.card.detector.architecture_kwargs if resolved.card else None


class ScoreCache:
    """Raw fake-logits, keyed by (model, sample, perturbation, strength): on disk, and in memory for this run.
    ``path=None`` keeps them for this run only (what ``--no-score-cache`` gives): a logit scored once in a run is
    never scored again in it, so that an ensemble and its members evaluated together score each face once.

    The table is ``logits``; a ``scores`` table left in the file by earlier versions (calibration-blind
    sigmoid scores) is never read.
    """

    def __init__(self, path: Path | None):
        self.connection = None
        self.memory: dict[tuple[str, str, float], dict[str, float]] = {}
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            self.connection = sqlite3.connect(str(path), timeout=30)
            self.connection.execute(
                "CREATE TABLE IF NOT EXISTS logits (model TEXT, sample TEXT, perturbation TEXT, strength REAL,"
                " logit REAL, PRIMARY KEY (model, sample, perturbation, strength))"
            )

    def get(self, model: str | None, samples: Sequence[str], perturbation: str, strength: float) -> dict[str, float]:
        if model is None or not samples:
            return {}
        remembered = self.memory.get((model, perturbation, float(strength)), {})
        found = {key: remembered[key] for key in samples if key in remembered}
        if self.connection is None:
            return found
        wanted = [key for key in samples if key not in found]
        for start in range(0, len(wanted), 500):  # SQLite caps the number of bound parameters
            chunk = wanted[start : start + 500]
            rows = self.connection.execute(
                f"SELECT sample, logit FROM logits WHERE model = ? AND perturbation = ? AND strength = ?"
                f" AND sample IN ({','.join('?' * len(chunk))})",
                [model, perturbation, float(strength), *chunk],
            )
            found.update(rows.fetchall())
        return found

    def put(self, model: str | None, logits: dict[str, float], perturbation: str, strength: float) -> None:
        if model is None or not logits:
            return
        self.memory.setdefault((model, perturbation, float(strength)), {}).update(
            (key, float(value)) for key, value in logits.items())
        if self.connection is None:
            return
        with self.connection:
            self.connection.executemany(
                "INSERT OR REPLACE INTO logits VALUES (?, ?, ?, ?, ?)",
                [(model, key, perturbation, float(strength), float(value)) for key, value in logits.items()],
            )

    def close(self) -> None:
        if self.connection is not None:
            self.connection.close()


def perturbation_seed(sample_key: str, perturbation: str, strength: float) -> int:
    digest = hashlib.sha256(f"{sample_key}|{perturbation}|{strength:g}".encode()).digest()
    return int.from_bytes(digest[:8], "little")


def sample_logits(
    detector,
    model: str | None,
    samples: Sequence[Sample],
    condition: tuple[str, float],
    cache: ScoreCache,
    *,
    batch_size: int = 16,
    load: Callable[[Sample], np.ndarray] | None = None,
    on_batch: Callable[[int], None] | None = None,
) -> np.ndarray:
    """Raw fake-logit of every sample under ``condition`` (perturbation, strength): cached ones read, the rest
    scored (and cached under ``model``) through the scan's own :func:`deepscan.scan.face_logits`. The one scoring
    path: calibrated P(fake) is ``calibration.probability`` of these, as in :func:`evaluate_method`."""
    from deepscan.scan import face_logits

    perturbation, strength = condition
    input_size = detector.config.input_size
    load = load or (lambda sample: load_face(sample, input_size))
    known = cache.get(model, [s.key for s in samples], perturbation, strength)
    missing = [index for index, sample in enumerate(samples) if sample.key not in known]
    for start in range(0, len(missing), batch_size):
        chunk = [samples[index] for index in missing[start : start + batch_size]]
        images = [
            apply_perturbation(load(s), perturbation, strength, perturbation_seed(s.key, perturbation, strength))
            for s in chunk
        ]
        fresh = dict(zip((s.key for s in chunk), face_logits(detector, np.stack(images)).tolist()))
        cache.put(model, fresh, perturbation, strength)
        known.update(fresh)
        if on_batch is not None:
            on_batch(len(chunk))
    return np.array([known[s.key] for s in samples], dtype=np.float64)

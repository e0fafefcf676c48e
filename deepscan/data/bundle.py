"""Face-crop bundles: the training and validation faces of a recipe, already extracted, in one small folder.

A bundle is what a training run needs where the face cache, the media, PyAV and MediaPipe are not (a lent GPU
machine that receives a few tens of MiB): each face as a JPEG crop centred on its face box, ``margin`` times the
box, ``size`` pixels square (the face cache's framing, so the trainer frames it exactly as it frames a cached
crop), with its label, split, source name, group and 6 face keypoints in crop pixels (what SBI pseudo-fakes are
drawn from). ``python -m deepscan.train.bundle make`` writes one from recipes and the face cache; a recipe reads it
as a data source, ``{kind: bundle, path: ..., split: train}``.

Layout: ``manifest.json`` (format ``deepscan.face-bundle``) and the files it names, by paths relative to the
bundle folder (``faces/train/<source>/000123.jpg``); each face file is checked against its sha256 when it is
listed, and a path that leaves the folder is refused. The manifest also records how the faces were chosen
(recipes, crop, JPEG quality, and which training groups were left out to keep within the size budget).
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

import numpy as np

from deepscan.data.sources import BundleSource, DataError

BUNDLE_FORMAT = "deepscan.face-bundle"
BUNDLE_VERSION = 1
MANIFEST_NAME = "manifest.json"
SPLITS = ("train", "val")


@dataclass(frozen=True)
class BundledFace:
    """One face of a bundle, in the shape of a ``MediaItem`` whose kind is ``face`` (nothing to extract)."""

    path: Path
    label: int  # 1 = fake, 0 = real
    group: str
    source: str  # the source it was taken from (the manifest's name for it)
    sha256: str
    keypoints: np.ndarray = field(compare=False)  # (6, 2) in crop pixels; NaN where unknown
    kind: str = "face"
    crop_faces: bool = False


@dataclass(frozen=True)
class BundleManifest:
    folder: Path
    crop_size: int
    margin: float  # crop side / face box side
    faces: list[dict]
    raw: dict

    def sources(self, split: str) -> list[str]:
        return sorted({face["source"] for face in self.faces if face["split"] == split})


def _inside(folder: Path, relative: object) -> Path | None:
    """``folder / relative`` when ``relative`` is a plain relative POSIX path that stays inside ``folder``."""
    if not isinstance(relative, str) or not relative or "\\" in relative or "\x00" in relative:
        return None
    parts = PurePosixPath(relative).parts
    if relative.startswith("/") or any(part in ("..", ".") for part in parts):
        return None
    path = folder.joinpath(*parts)
    real = os.path.realpath(folder)
    return path if os.path.commonpath([os.path.realpath(path), real]) == real else None


def _check_face(face: object, number: int, where: str) -> dict:
    if not isinstance(face, dict):
        raise DataError(f"{where}: face {number} is not an object")
    missing = [key for key in ("file", "sha256", "label", "split", "source", "group") if key not in face]
    if missing:
        raise DataError(f"{where}: face {number} lacks {missing[0]!r}")
    if face["label"] not in (0, 1) or face["split"] not in SPLITS:
        raise DataError(f"{where}: face {number}: label must be 0 or 1 and split train or val")
    keypoints = face.get("keypoints")
    if keypoints is not None:
        points = np.asarray(keypoints, dtype=np.float64) if isinstance(keypoints, list) else None
        if points is None or points.shape != (6, 2) or not np.isfinite(points).all():
            raise DataError(f"{where}: face {number}: keypoints must be 6 finite [x, y] pairs or null")
    return face


def read_manifest(folder: Path) -> BundleManifest:
    """The bundle's manifest, checked (one-line DataError on any problem); face files are checked when listed."""
    folder = Path(folder)
    where = folder / MANIFEST_NAME
    try:
        data = json.loads(where.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DataError(f"{folder}: not a face bundle (no {MANIFEST_NAME}; make one with "
                        "`python -m deepscan.train.bundle make`)") from None
    except (OSError, UnicodeDecodeError, ValueError, RecursionError) as error:
        raise DataError(f"{where}: unreadable bundle manifest ({type(error).__name__})") from None
    if not isinstance(data, dict) or data.get("format") != BUNDLE_FORMAT or data.get("version") != BUNDLE_VERSION:
        raise DataError(f"{where}: not a {BUNDLE_FORMAT} manifest of version {BUNDLE_VERSION}")
    crop = data.get("crop")
    if not (isinstance(crop, dict) and isinstance(crop.get("size"), int) and crop["size"] > 0
            and isinstance(crop.get("margin"), (int, float)) and crop["margin"] > 1):
        raise DataError(f"{where}: crop must give a size in pixels and a margin above 1")
    faces = data.get("faces")
    if not isinstance(faces, list):
        raise DataError(f"{where}: faces must be a list")
    checked = [_check_face(face, number, str(where)) for number, face in enumerate(faces)]
    return BundleManifest(folder, int(crop["size"]), float(crop["margin"]), checked, data)


def _verified_path(manifest: BundleManifest, face: dict) -> Path:
    path = _inside(manifest.folder, face["file"])
    if path is None:
        raise DataError(f"{manifest.folder / MANIFEST_NAME}: face file {str(face['file'])[:80]!r} is not a path "
                        "inside the bundle; refused")
    try:
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError:
        raise DataError(f"{path}: face file of the bundle is missing or unreadable") from None
    if digest != str(face["sha256"]).lower():
        raise DataError(f"{path}: fails its sha256 check in the bundle manifest (altered or replaced)")
    return path


def list_bundle(source: BundleSource) -> list[BundledFace]:
    """The faces of ``source.split`` (and of ``source.sources``, when given), each verified by its sha256."""
    manifest = read_manifest(source.path)
    known = manifest.sources(source.split)
    unknown = sorted(set(source.sources or ()) - set(known))
    if unknown:
        raise DataError(f"{source.path}: the bundle's {source.split} split has no source {unknown[0]!r} "
                        f"(it has: {', '.join(known) or 'none'})")
    wanted = set(source.sources or known)
    items = []
    for face in manifest.faces:
        if face["split"] != source.split or face["source"] not in wanted:
            continue
        keypoints = face.get("keypoints")
        items.append(BundledFace(
            path=_verified_path(manifest, face),
            label=int(face["label"]),
            group=str(face["group"]),
            source=str(face["source"]),
            sha256=str(face["sha256"]).lower(),
            keypoints=np.full((6, 2), np.nan) if keypoints is None else np.asarray(keypoints, dtype=np.float64),
        ))
    if not items:
        raise DataError(f"{source.path}: the bundle holds no {source.split} face")
    return items


def bundle_margin(source: BundleSource) -> float:
    """The crop margin of a bundle's faces (the recipe's ``data.face.cache_margin`` must equal it)."""
    return read_manifest(source.path).margin

"""Faces extracted once from images and videos, kept on disk, reused by every later run.

Extraction runs the scan pipeline's face detector (BlazeFace) on an image, or on ``frames_per_video`` frames
spread evenly over a video, keeps the largest ``faces_per_frame`` faces of each frame, and stores each as a
square PNG crop (lossless: a JPEG cache would add compression traces of its own) whose side is
``cache_margin`` times the face box, with the face's 6 keypoints in crop pixels.

An entry is keyed by the file's sha256 and the extraction parameters, so a renamed or moved file is still
found, and a changed file or changed parameter is extracted anew. Hashing a large video costs a read, so the
hash of each path is remembered with its size and modification time. Entries are written to a temporary
folder and renamed into place: an interrupted extraction leaves nothing half-written, and several processes
(DDP ranks) can fill one cache at once.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import shutil
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Iterable

import numpy as np
from PIL import Image

from deepscan.runtime import atomic_write, face_cache_dir, sha256_file

logger = logging.getLogger(__name__)

CACHE_FORMAT = 1
# Crops of pre-cropped faces (crop_faces: false) are taken to show the face box times this margin, the
# convention of FaceForensics++ and of deepscan's own crops.
ASSUMED_CROP_MARGIN = 1.3


@dataclass(frozen=True)
class ExtractionParams:
    frames_per_video: int = 8
    faces_per_frame: int = 1
    cache_margin: float = 1.8
    cache_size: int = 320
    min_score: float = 0.5
    crop_faces: bool = True

    def key(self) -> str:
        fields = dict(asdict(self), format=CACHE_FORMAT)
        return hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()[:12]


@dataclass(frozen=True)
class CachedFace:
    path: Path  # the PNG crop
    keypoints: np.ndarray  # (6, 2) in crop pixels; NaN where no detection gave them
    frame_index: int
    score: float  # detection confidence (NaN for a pre-cropped face without a detection)


@dataclass
class ExtractionStats:
    extracted: int = 0  # media files processed now
    reused: int = 0  # media files found in the cache
    failed: int = 0  # unreadable media files (each logged)
    faceless: int = 0  # media files in which no face was found
    faces: int = 0


def _write_json_atomically(path: Path, data) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, json.dumps(data), concurrent=True)  # several processes (DDP ranks) may fill one cache


class FaceCache:
    """A folder of extracted faces; see the module docstring."""

    def __init__(self, root: Path | None = None):
        self.root = Path(root) if root is not None else face_cache_dir()

    # --- content hashes, remembered per path ---------------------------------------------------------------
    def content_hash(self, media: Path) -> str:
        media = Path(media).resolve()
        status = media.stat()
        note = self.root / "hashes" / (hashlib.sha256(str(media).encode()).hexdigest()[:24] + ".json")
        try:
            known = json.loads(note.read_text())
            if known["size"] == status.st_size and known["mtime_ns"] == status.st_mtime_ns:
                return known["sha256"]
        except (OSError, ValueError, KeyError, TypeError):
            pass
        digest = sha256_file(media)
        _write_json_atomically(note, {"path": str(media), "size": status.st_size, "mtime_ns": status.st_mtime_ns, "sha256": digest})
        return digest

    def entry_dir(self, digest: str, params: ExtractionParams) -> Path:
        return self.root / digest[:2] / f"{digest}-{params.key()}"

    def lookup(self, media: Path, params: ExtractionParams) -> list[CachedFace] | None:
        entry = self.entry_dir(self.content_hash(media), params)
        return self._read_entry(entry)

    @staticmethod
    def _read_entry(entry: Path) -> list[CachedFace] | None:
        try:
            listing = json.loads((entry / "faces.json").read_text())
        except (OSError, ValueError):
            return None
        return [
            CachedFace(
                path=entry / face["file"],
                keypoints=np.full((6, 2), np.nan)
                if face["keypoints"] is None
                else np.array(face["keypoints"], dtype=np.float64).reshape(6, 2),
                frame_index=int(face["frame"]),
                score=float("nan") if face["score"] is None else float(face["score"]),
            )
            for face in listing["faces"]
        ]

    # --- extraction ----------------------------------------------------------------------------------------
    def faces_for(
        self, media: Path, kind: str, params: ExtractionParams, detector: Callable[[], object]
    ) -> tuple[list[CachedFace], bool]:
        """The cached faces of ``media``, extracting them first if needed; returns (faces, was_cached).

        ``detector`` returns a ``deepscan.media.faces.FaceDetector`` (made lazily: a fully cached run never
        loads MediaPipe). Raises ``deepscan.media.errors.MediaError`` for an unreadable file.
        """
        digest = self.content_hash(media)
        entry = self.entry_dir(digest, params)
        cached = self._read_entry(entry)
        if cached is not None:
            return cached, True
        crops = self._extract(Path(media), kind, params, detector)
        entry.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(dir=entry.parent, prefix=".tmp-"))
        try:
            listing = []
            for number, (crop, keypoints, frame_index, score) in enumerate(crops):
                name = f"{number:04d}.png"
                Image.fromarray(crop).save(staging / name, compress_level=1)
                listing.append(
                    {
                        "file": name,
                        "keypoints": np.asarray(keypoints, dtype=np.float64).round(3).tolist()
                        if np.isfinite(keypoints).all()
                        else None,
                        "frame": int(frame_index),
                        "score": None if math.isnan(score) else round(float(score), 4),
                    }
                )
            (staging / "faces.json").write_text(
                json.dumps({"source": str(media), "sha256": digest, "params": asdict(params), "faces": listing})
            )
            try:
                os.rename(staging, entry)
            except OSError:  # another process finished the same entry first: keep theirs
                shutil.rmtree(staging, ignore_errors=True)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        result = self._read_entry(entry)
        return (result if result is not None else []), False

    def _extract(self, media: Path, kind: str, params: ExtractionParams, detector) -> list[tuple]:
        from deepscan.media import open_media
        from deepscan.media.errors import PartialMediaError

        with open_media(media, kind="image" if kind == "image" else "video") as source:
            if kind == "image":
                [frame] = source.frames()
                return self._faces_in_frame(frame.image, 0, params, detector)
            info = source.info
            wanted = params.frames_per_video
            duration = info.duration_s or (info.frame_count / info.fps if info.frame_count and info.fps else None)
            # Ticks spread evenly over the video; without a known duration, the first frames at 1 fps.
            rate = wanted / duration if duration else 1.0
            results: list[tuple] = []
            taken = 0
            try:
                for frame in source.frames(fps=rate):
                    results.extend(self._faces_in_frame(frame.image, frame.index, params, detector))
                    taken += 1
                    if taken >= wanted:
                        break
            except PartialMediaError as error:
                logger.warning("%s (keeping the %d frames read before it)", error, taken)
            return results

    def _faces_in_frame(self, image: np.ndarray, frame_index: int, params: ExtractionParams, detector) -> list[tuple]:
        from deepscan.media.faces import crop_face, face_square

        faces = [face for face in detector().detect(image) if face.score >= params.min_score]
        faces.sort(key=lambda face: face.size, reverse=True)
        if not params.crop_faces:
            return [self._precropped(image, faces[0] if faces else None, frame_index, params)]
        results = []
        for face in faces[: params.faces_per_frame]:
            x0, y0, x1, _ = face_square(face, params.cache_margin)
            scale = params.cache_size / (x1 - x0)
            crop = crop_face(image, face, params.cache_size, params.cache_margin)
            keypoints = (face.keypoints - np.array([x0, y0])) * scale
            results.append((crop, keypoints, frame_index, face.score))
        return results

    @staticmethod
    def _precropped(image: np.ndarray, face, frame_index: int, params: ExtractionParams) -> tuple:
        """A file that already is a face crop: widen it by mirroring to the cache margin, keep any keypoints."""
        height, width = image.shape[:2]
        side = max(height, width)
        grow = params.cache_margin / ASSUMED_CROP_MARGIN
        target = int(round(side * grow))
        pad_y, pad_x = (target - height) // 2, (target - width) // 2
        padded = np.pad(image, ((pad_y, target - height - pad_y), (pad_x, target - width - pad_x), (0, 0)), mode="reflect")
        crop = np.asarray(Image.fromarray(padded).resize((params.cache_size, params.cache_size), Image.Resampling.BICUBIC))
        scale = params.cache_size / target
        if face is None:
            return crop, np.full((6, 2), np.nan), frame_index, float("nan")
        keypoints = (face.keypoints + np.array([pad_x, pad_y])) * scale
        return crop, keypoints, frame_index, face.score


def extract_all(
    cache: FaceCache,
    media: Iterable[tuple[Path, str, ExtractionParams]],
    on_item: Callable[[], None] | None = None,
) -> tuple[dict[Path, list[CachedFace]], ExtractionStats]:
    """Faces of every (path, kind, params), extracting what the cache lacks with one face detector, made on
    first need; unreadable files are logged and skipped."""
    from deepscan.media.errors import MediaError

    stats = ExtractionStats()
    held: list = []

    def detector_for(params: ExtractionParams):
        def detector():
            if not held:
                from deepscan.media.faces import FaceDetector

                held.append(FaceDetector(min_score=params.min_score))
            return held[0]

        return detector

    found: dict[Path, list[CachedFace]] = {}
    try:
        for path, kind, params in media:
            try:
                faces, was_cached = cache.faces_for(path, kind, params, detector_for(params))
            except (MediaError, OSError) as error:
                logger.warning("skipping %s", str(error) or f"{path}: {type(error).__name__}")
                stats.failed += 1
            else:
                found[path] = faces
                stats.reused += was_cached
                stats.extracted += not was_cached
                stats.faceless += not faces
                stats.faces += len(faces)
            if on_item is not None:
                on_item()
    finally:
        for detector in held:
            detector.close()
    return found, stats

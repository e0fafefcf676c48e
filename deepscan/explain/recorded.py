"""Faces of a previous scan, recovered from its JSON report (``explain --from``, and the HTML report's heat maps).

The file is decoded again with the scan's own sampling parameters (:func:`recover_frames`): decoding is
deterministic, so the pixels are the ones that were scored, and nothing had to be kept in memory during the scan.
A scan of the same command may have kept those faces instead (``deepscan.kept_faces``: their crops and their frames
at display size): then the file is neither decoded nor read again.
A report on disk may come from anyone: the files it names are opened only inside :data:`REPORT_FOLDERS`, and only
when their sha256 is the one the scan recorded (for a scan of the same command, read once: its ``Checksums``).
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import TYPE_CHECKING, Iterator

import numpy as np

from deepscan.calibration import Calibration
from deepscan.detectors.base import Detector
from deepscan.explain.errors import ExplainError
from deepscan.explain.face import FaceExplanation, explain_face
from deepscan.explain.spectra import ReferenceSpectrum

if TYPE_CHECKING:
    from deepscan.kept_faces import KeptFace, KeptFaces
    from deepscan.media.checksums import Checksums
    from deepscan.media.faces import Face


def suspicious_faces(entry: dict, per_track: int = 1, max_tracks: int | None = None) -> list[dict]:
    """The most suspicious faces of one file of a report: the ``per_track`` highest-scored faces of each track,
    tracks in order of their score (highest first), at most ``max_tracks`` tracks."""
    tracks = sorted(entry.get("tracks") or [], key=lambda track: -track["score"])
    if max_tracks is not None:
        tracks = tracks[:max_tracks]
    chosen = []
    for track in tracks:
        faces = [
            face for face in entry.get("faces") or []
            if face["track_id"] == track["track_id"] and _scored(face.get("fake_probability"))
        ]
        chosen += sorted(faces, key=lambda face: -face["fake_probability"])[:per_track]
    return chosen


def _scored(probability: float | None) -> bool:
    """Faces left unscored (an interrupt) carry None in a JSON report and NaN in a live scan result."""
    return probability is not None and probability == probability


# A report on disk may come from anyone: the files it names are opened only inside these two folders, whatever
# "..", absolute paths or symbolic links it uses. Told in each refusal, so that the user knows where to stand.
REPORT_FOLDERS = "the report's folder and the working folder"


def _inside_report_folders(path: Path, report_path: Path) -> bool:
    target = os.path.realpath(path)
    for folder in (os.path.realpath(Path(report_path).parent), os.path.realpath(Path.cwd())):
        if os.path.commonpath([target, folder]) == folder:
            return True
    return False


def locate_media(recorded_path: str, report_path: Path | None = None) -> Path:
    """The recorded file as given at scan time (relative to the working folder), else beside the report. With a
    report on disk (``report_path``), a file outside :data:`REPORT_FOLDERS` is refused (ExplainError)."""
    path = Path(recorded_path)
    if report_path is None:
        return path  # a scan of this run: the paths are the user's own
    if not (path.exists() or path.is_absolute()):
        beside = report_path.parent / path
        path = beside if beside.exists() else path
    if not _inside_report_folders(path, report_path):
        raise ExplainError(
            f"{report_path}: refused: it names {recorded_path!r}, outside {REPORT_FOLDERS}; explain --from opens "
            "only files inside those (run it from a folder that holds the scanned files)"
        )
    return path


def check_report_paths(report: dict, report_path: Path) -> None:
    """Refuse, before anything is opened, a report that names any file outside :data:`REPORT_FOLDERS`."""
    for entry in report.get("files") or []:
        recorded = entry.get("path") if isinstance(entry, dict) else None
        if not isinstance(recorded, str) or not recorded:
            raise ExplainError(f"{report_path}: refused: a file entry has no path")
        locate_media(recorded, report_path)


def report_weights(report: dict, report_path: Path) -> str | None:
    """The weights a report was scanned with, to explain with the same: None for the detector's own. A report
    must not make explain fetch weights from the network or read them from elsewhere: an hf:// spec, or a file
    outside :data:`REPORT_FOLDERS`, is refused (the user may still pass them with --weights)."""
    spec = (report.get("custody", {}).get("parameters") or {}).get("weights")
    if spec is None:
        return None
    if not isinstance(spec, str) or spec.startswith("hf://") or not _inside_report_folders(Path(spec), report_path):
        raise ExplainError(
            f"{report_path}: refused: it names the weights {str(spec)!r}, from the network or outside "
            f"{REPORT_FOLDERS}; pass --weights to explain with them (or with others)"
        )
    return spec


def verify_media(entry: dict, path: Path, checksums: Checksums | None = None) -> None:
    """Chain of custody: the file must be the one that was scanned, byte for byte. ``checksums``: the command's,
    where it scanned the file itself (None: the file is read)."""
    from deepscan.media.checksums import Checksums
    from deepscan.media.errors import MediaError

    if not path.is_file():
        raise ExplainError(f"{path}: the scanned file is no longer there")
    expected = entry.get("sha256")
    if not isinstance(expected, str) or not re.fullmatch(r"[0-9a-fA-F]{64}", expected):
        raise ExplainError(f"{path}: the report records no sha256 for it: it cannot be shown to be the scanned file")
    try:
        digest, _size = (checksums if checksums is not None else Checksums()).sha256(path)
    except MediaError as error:
        raise ExplainError(str(error)) from None
    if digest != expected.lower():
        raise ExplainError(f"{path}: the file has changed since it was scanned (sha256 differs from the report)")


def recover_frames(path: Path, kind: str, frame_indices: set[int], parameters: dict) -> dict[int, np.ndarray]:
    """The frames a scan scored, by index, decoded again with the scan's own sampling.

    A video that breaks part-way gives the frames before the break, which is all a partial scan scored.
    """
    from deepscan.media import open_media
    from deepscan.media.errors import MediaError, PartialMediaError

    if kind == "image" and 0 not in frame_indices:
        return {}
    fps = None if parameters.get("every_frame") else parameters.get("fps", 2.0)
    found: dict[int, np.ndarray] = {}
    try:
        with open_media(path, kind="image" if kind == "image" else "video") as media:
            for frame in media.frames(fps=fps):
                if frame.index in frame_indices:
                    found[frame.index] = frame.image
                    if len(found) == len(frame_indices):
                        break
    except PartialMediaError:
        pass
    except MediaError as error:
        raise ExplainError(str(error)) from None
    return found


def recorded_face(face: dict) -> "Face":
    """A report's face record as the media layer's Face (crops only need its box)."""
    from deepscan.media.faces import Face

    return Face(box=tuple(face["box"]), score=float(face["detection_score"]), keypoints=np.zeros((6, 2)))


def face_label(path: Path, kind: str, face: dict) -> str:
    from deepscan.media.errors import shown_path

    name = shown_path(path.name)  # figures draw it: a byte that is not UTF-8 would fail them
    if kind == "image":
        return f"{name}, face {face['track_id']}"
    return f"{name}, track {face['track_id']} at {face['time_s']:.2f} s"


def explain_recorded_faces(
    detector: Detector,
    entry: dict,
    parameters: dict,
    *,
    per_track: int = 1,
    max_tracks: int | None = None,
    cam_method: str = "gradcam",
    trained: bool = True,
    reference: ReferenceSpectrum | None = None,
    report_path: Path | None = None,
    calibration: Calibration | None = None,
    checksums: Checksums | None = None,
    kept: KeptFaces | None = None,
) -> Iterator[tuple[dict, FaceExplanation]]:
    """Explain the most suspicious faces of one file of a scan report, recovering their frames from the file.
    ``calibration``: the weights', as in :func:`explain_face`; ``checksums``: the command's, where it scanned the
    file itself, so that it is not hashed again (:func:`verify_media`); ``kept``: the faces that scan kept of the
    file (``FileResult.kept_faces``): those are explained from their kept crop and frame, and the file is verified
    and decoded only for the others, if any."""
    from deepscan.media.faces import crop_face, face_square

    faces = suspicious_faces(entry, per_track, max_tracks)
    if not faces:
        return
    path = locate_media(entry["path"], report_path)
    size = detector.config.input_size
    margin = float(parameters.get("margin", 1.3))
    found = _kept_faces(kept, faces, size, margin)
    missing = {face["frame_index"] for face, kept_face in zip(faces, found) if kept_face is None}
    if missing:
        verify_media(entry, path, checksums)
    frames = recover_frames(path, entry["kind"], missing, parameters) if missing else {}
    for face, kept_face in zip(faces, found):
        located = recorded_face(face)
        if kept_face is not None:
            frame, crop, shape = kept_face.frame, kept_face.crop, kept_face.frame_shape
        elif (frame := frames.get(face["frame_index"])) is None:
            raise ExplainError(f"{path}: frame {face['frame_index']} could not be decoded again")
        else:
            crop, shape = crop_face(frame, located, size, margin), None
        yield face, explain_face(
            detector,
            crop,
            label=face_label(path, entry["kind"], face),
            cam_method=cam_method,
            trained=trained,
            frame=frame,
            frame_shape=shape,
            square=face_square(located, margin),
            box=tuple(face["box"]),
            reference=reference,
            recorded_probability=face.get("fake_probability"),
            calibration=calibration,
        )


def _kept_faces(kept: KeptFaces | None, faces: list[dict], size: int, margin: float) -> list[KeptFace | None]:
    """Each face's kept crop and frame (None: not kept), where the scan kept them at this crop size and margin."""
    if kept is None or (kept.input_size, kept.margin) != (size, margin):
        return [None] * len(faces)
    return [kept.get(face["frame_index"], face["track_id"], face.get("fake_probability")) for face in faces]

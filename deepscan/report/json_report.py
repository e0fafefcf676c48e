"""The versioned JSON scan report, with its chain-of-custody block.

Schema ``deepscan.scan-report`` version 2 (version 1 gave ``decision.reliable_range.min_sharpness``, one bound at
``sharpness_input_size``, where version 2 gives each bound at its own input size; readers here take both):

    {"schema": "deepscan.scan-report", "schema_version": 2,
     "partial": false, "files_planned": N,
     "custody": {deepscan_version, started_at, finished_at, host, python, torch, detector, weights, parameters,
                 decision: {method, threshold, threshold_source, reliable_range, sharpness_input_size,
                            members: [{name, paper, input_size, weights, model_card, calibration, reliable_range,
                                       reliability_note}]}},
                 (decision.reliable_range: {min_face_px, min_sharpness_at: {input size: bound}}, each sharpness
                  bound at the input size its member's card measured it; a member's own: {min_face_px,
                  min_sharpness} at its input_size; a face's ``sharpness`` is at sharpness_input_size)
     "summary": {files, complete, partial, errors, verdicts: {label: count}, interrupted},
     "files": [FileResult as dict: path, kind, status, message, sha256, size_bytes, media, frames_scanned,
               faces: [...per face...], tracks: [...per track...], verdict]}

``partial`` is true when the report holds fewer files than the ``files_planned`` the scan found to read: a folder
scan rewrites its report after each file (``finished_at`` null until the end), so a scan that was killed leaves
the report of the files done so far, and one stopped by Ctrl-C says ``interrupted`` too.

:func:`load_report` reads a report back (``explain --from``) and :func:`find_recent_report` finds the newest one in a
folder; both check the same :data:`SCHEMA` the writer puts in.
"""

from __future__ import annotations

import json
import platform
import socket
from collections import Counter
from dataclasses import asdict
from datetime import datetime, timezone
from pathlib import Path

import deepscan
from deepscan.runtime import atomic_write

SCHEMA = "deepscan.scan-report"  # written by build_report, checked by load_report
SCHEMA_VERSION = 2


def utc_now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def build_report(
    results: list,
    *,
    options,
    detector_config,
    weights,
    started_at: str,
    finished_at: str | None,
    interrupted: bool = False,
    decision: dict | None = None,
    files_planned: int | None = None,
) -> dict:
    """``weights`` offers ``custody()`` (a ResolvedWeights, or the ensemble's); ``decision`` is the scan judge's
    custody: calibration, threshold and reliable range of every detector that scored. ``finished_at`` is None
    while the scan goes on; ``files_planned`` is how many inputs it set out to read (default: those reported)."""
    import torch

    statuses = Counter(result.status for result in results)
    verdicts = Counter(result.verdict.label for result in results if result.verdict is not None)
    planned = len(results) if files_planned is None else files_planned
    return {
        "schema": SCHEMA,
        "schema_version": SCHEMA_VERSION,
        "partial": interrupted or finished_at is None or len(results) < planned,
        "files_planned": planned,
        "custody": {
            "deepscan_version": deepscan.__version__,
            "started_at": started_at,
            "finished_at": finished_at,
            "host": socket.gethostname(),
            "platform": platform.platform(),
            "python": platform.python_version(),
            "torch": torch.__version__,
            "detector": {"name": detector_config.name, "paper": detector_config.paper},
            "weights": weights.custody(),
            "parameters": asdict(options),
            "decision": decision,
        },
        "summary": {
            "files": len(results),
            "complete": statuses.get("complete", 0),
            "partial": statuses.get("partial", 0),
            "errors": statuses.get("error", 0),
            "verdicts": dict(verdicts),
            "interrupted": interrupted,
        },
        "files": [_finite(result.to_dict()) for result in results],
    }


def _finite(value):
    """JSON has no NaN: faces left unscored (an interrupt) carry null."""
    if isinstance(value, float) and value != value:
        return None
    if isinstance(value, dict):
        return {key: _finite(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(item) for item in value]
    return value


def write_report(report: dict, path: Path) -> None:
    """Write ``report`` to ``path`` atomically (:func:`deepscan.runtime.atomic_write`): whenever the process stops
    (Ctrl-C, SIGKILL, a crash), or the machine does, ``path`` holds the previous report or this one, complete,
    never a mix. Each process writes its own temporary: two scans may name the same report."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(report, indent=2, allow_nan=False)  # ASCII: a name that is not UTF-8 survives as an escape
    atomic_write(path, text.encode("ascii"), concurrent=True)


# --- reading a report back ----------------------------------------------------------------------------------


def load_report(path: Path) -> dict:
    """Read a scan report written by :func:`write_report`: refused in one line (ExplainError, for ``explain``) when
    it is unreadable, of another schema, or lacks what explain reads first."""
    from deepscan.explain import ExplainError

    try:
        report = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise ExplainError(f"{path}: no such report") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ExplainError(f"{path}: not a readable JSON report ({type(error).__name__})") from None
    if not isinstance(report, dict) or report.get("schema") != SCHEMA:
        raise ExplainError(f"{path}: not a deepscan scan report (schema {SCHEMA!r} expected)")
    # What explain reads before anything else, in the shape a scan writes it: a stranger's report that lacks it is
    # one line, not a KeyError.
    custody = report.get("custody")
    detector = custody.get("detector") if isinstance(custody, dict) else None
    if (not isinstance(detector, dict) or not isinstance(detector.get("name"), str)
            or not isinstance(custody.get("parameters"), dict) or not isinstance(report.get("files"), list)
            or not all(isinstance(entry, dict) for entry in report["files"])):
        raise ExplainError(f"{path}: not a complete scan report (custody.detector.name, custody.parameters and files "
                           "are needed)")
    return report


def find_recent_report(folder: Path) -> Path | None:
    """The newest scan report in ``folder``: its ``*.json`` files or a ``--report`` folder's ``report.json``."""
    from deepscan.explain import ExplainError

    candidates = sorted(folder.glob("*.json")) + sorted(folder.glob("*/report.json"))
    best: tuple[str, float, Path] | None = None
    for candidate in candidates:
        try:
            if candidate.stat().st_size > 200 * 1024 * 1024:  # not a report worth parsing to find out
                continue
            report = load_report(candidate)
        except (ExplainError, OSError):
            continue
        key = (str(report.get("custody", {}).get("finished_at", "")), candidate.stat().st_mtime, candidate)
        if best is None or key[:2] > best[:2]:
            best = key
    return best[2] if best else None

"""Exported detectors on disk: one folder per export, named by what made it, verified before every use.

An export is keyed by the runtime, the detector, its input size, the sha256 of its weights (of its state dict
when it has no weights file), the versions of the libraries that wrote it and of deepscan, and
:data:`EXPORT_FORMAT`: change any of them and the key, so the folder, changes, and the export is made anew.

    <cache_root>/runtimes/<runtime>/<detector>-<size>px-<key digest>/
        model.onnx, model.onnx.data          (or model.xml, model.bin)
        manifest.json                        the key, each file's sha256, the check against eager

A folder is written whole under a temporary name and renamed into place, so a reader sees a complete export
or none; the manifest is checked on every load (key, every file's sha256), and a folder that fails is exported
again, never used. A runtime that cannot express a detector is recorded too (a manifest with no files and the
reason), so that ``auto`` does not pay for a failing export on every scan; a new torch or deepscan tries again.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

from deepscan.runtime import atomic_write, cache_root, sha256_file

# Bump when the way exports are made changes (the preprocessing in the graph, the exporter's settings).
EXPORT_FORMAT = 1
MANIFEST = "manifest.json"
MANIFEST_SCHEMA = "deepscan.runtime-export"
RUNTIMES_CACHE = "runtimes"


def runtime_cache_dir(root: str | os.PathLike[str] | None = None) -> Path:
    """Where exports live: ``runtimes/`` under ``root`` (default: :func:`deepscan.runtime.cache_root`)."""
    return (Path(root) if root is not None else cache_root()) / RUNTIMES_CACHE


@dataclass(frozen=True)
class ExportKey:
    runtime: str
    detector: str
    input_size: int
    weights_sha256: str
    libraries: tuple[tuple[str, str], ...]  # (name, version) of every library that shapes the exported file
    deepscan: str
    export_format: int = EXPORT_FORMAT

    def as_dict(self) -> dict:
        return {**asdict(self), "libraries": dict(self.libraries)}

    def digest(self) -> str:
        return hashlib.sha256(json.dumps(self.as_dict(), sort_keys=True).encode()).hexdigest()

    def folder_name(self) -> str:
        return f"{self.detector}-{self.input_size}px-{self.digest()[:20]}"


@dataclass(frozen=True)
class Export:
    """A verified export: its folder, main file and what its manifest records."""

    folder: Path
    main: str | None  # the file a runtime opens (model.onnx, model.xml); None when ``unsupported``
    files: dict[str, str] = field(default_factory=dict)  # name -> sha256
    unsupported: str | None = None  # why the runtime cannot express the detector
    check_max_abs_dp: float | None = None  # max |P(fake) export - P(fake) eager| on the probe crops

    @property
    def path(self) -> Path:
        return self.folder / self.main

    @property
    def sha256(self) -> str | None:
        return self.files.get(self.main) if self.main else None


class ExportCache:
    def __init__(self, cache_dir: str | os.PathLike[str] | None = None):
        self.root = Path(cache_dir) if cache_dir is not None else runtime_cache_dir()

    def folder(self, key: ExportKey) -> Path:
        return self.root / key.runtime / key.folder_name()

    def load(self, key: ExportKey) -> Export | None:
        """The export for ``key`` when its folder passes every check, else None (missing, stale or corrupt)."""
        folder = self.folder(key)
        try:
            manifest = json.loads((folder / MANIFEST).read_text())
            if manifest.get("schema") != MANIFEST_SCHEMA or manifest.get("key_digest") != key.digest():
                return None
            files = {str(name): str(digest) for name, digest in manifest["files"].items()}
            for name, digest in files.items():
                if Path(name).name != name or sha256_file(folder / name) != digest:
                    return None
            main = manifest.get("main")
            if manifest.get("unsupported") is None and main not in files:
                return None
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            return None  # unreadable or malformed: as good as absent
        return Export(folder, main, files, manifest.get("unsupported"), manifest.get("check_max_abs_dp"))

    def store(self, key: ExportKey, write: Callable[[Path], tuple[str, dict]]) -> Export:
        """Run ``write(folder)`` into a fresh temporary folder (it returns the main file's name and what else the
        manifest records), seal it with a manifest and rename it into place; returns the verified export."""
        parent = self.root / key.runtime
        parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=".export-", dir=parent))
        try:
            main, extra = write(staging)
            self._seal(staging, key, main, extra)
            return self._publish(staging, key)
        finally:
            shutil.rmtree(staging, ignore_errors=True)

    def record_unsupported(self, key: ExportKey, reason: str) -> Export:
        return self.store(key, lambda folder: (None, {"unsupported": reason}))

    def _seal(self, staging: Path, key: ExportKey, main: str | None, extra: dict) -> None:
        files = {}
        for path in sorted(staging.iterdir()):
            with open(path, "rb") as handle:
                os.fsync(handle.fileno())  # exporters do not sync: the data is on disk before the folder is renamed
            files[path.name] = sha256_file(path)
        manifest = {"schema": MANIFEST_SCHEMA, "key": key.as_dict(), "key_digest": key.digest(), "main": main,
                    "files": files, "unsupported": None, **extra}
        atomic_write(staging / MANIFEST, json.dumps(manifest, indent=2, sort_keys=True))

    def _publish(self, staging: Path, key: ExportKey) -> Export:
        folder = self.folder(key)
        if folder.exists():  # stale or corrupt (load refused it): out of the way first, a rename cannot replace it
            aside = folder.with_name(f".stale-{folder.name}-{os.getpid()}")
            with contextlib.suppress(OSError):
                folder.rename(aside)
            shutil.rmtree(aside, ignore_errors=True)
        try:
            staging.rename(folder)
        except OSError:
            pass  # another process published the same export first: theirs is used if it checks out
        export = self.load(key)
        if export is None:
            raise OSError(f"could not write the export cache folder {folder}")
        return export

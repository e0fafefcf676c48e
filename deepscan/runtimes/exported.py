"""The exported runtimes (``onnx``, ``openvino``): exported once per cache key, checked against eager, opened.

Every export is checked before it is kept: the exported graph and the eager detector score the same probe crops,
and an export whose P(fake) differs from eager's by more than :data:`EXPORT_TOLERANCE` is refused as if the
runtime could not express the detector (recorded so, and ``auto`` falls back to eager). That check is what
stands behind weights nobody measured (``--weights``), where a runtime that is right for the shipped weights
could, through some converter's bug, be wrong.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable

from deepscan.runtimes import onnx, openvino
from deepscan.runtimes.base import (
    FaceRuntime,
    UnsupportedDetectorError,
    max_probability_gap,
    probe_crops,
    state_dict_sha256,
)
from deepscan.runtimes.cache import Export, ExportCache, ExportKey
from deepscan.runtimes.torch_runtimes import EagerRuntime

if TYPE_CHECKING:
    from deepscan.detectors.base import Detector

# The bound the scan's scores must keep on any runtime: |P(fake) - P(fake) eager| on the same crop.
EXPORT_TOLERANCE = 1e-3


@dataclass(frozen=True)
class ExportFormat:
    name: str
    library_versions: Callable[[], tuple[tuple[str, str], ...]]
    export: Callable[["Detector", Path, int], str]
    runtime: Callable[..., FaceRuntime]


FORMATS = {
    onnx.NAME: ExportFormat(onnx.NAME, onnx.library_versions, onnx.export, onnx.OnnxRuntime),
    openvino.NAME: ExportFormat(openvino.NAME, openvino.library_versions, openvino.export, openvino.OpenVinoRuntime),
}


def export_key(fmt: str, detector: "Detector", *, weights_sha256: str | None, input_size: int) -> ExportKey:
    """What an export of ``detector`` for ``fmt`` is keyed by (see :mod:`deepscan.runtimes.cache`)."""
    from deepscan import __version__

    return ExportKey(
        runtime=fmt,
        detector=detector.config.name,
        input_size=input_size,
        weights_sha256=weights_sha256 or state_dict_sha256(detector),
        libraries=FORMATS[fmt].library_versions(),
        deepscan=__version__,
    )


def ensure_export(fmt: str, detector: "Detector", *, weights_sha256: str | None, input_size: int,
                  cache_dir: str | Path | None = None, threads: int = 1) -> Export:
    """The cached export of ``detector`` for ``fmt``, made (and checked) first when the cache has no sound one.
    Raises UnsupportedDetectorError when ``fmt`` cannot express the detector (now, or as recorded earlier)."""
    key = export_key(fmt, detector, weights_sha256=weights_sha256, input_size=input_size)
    cache = ExportCache(cache_dir)
    export = cache.load(key) or _export(FORMATS[fmt], key, detector, input_size, cache, threads)
    if export.unsupported:
        raise UnsupportedDetectorError(export.unsupported)
    return export


def _export(fmt: ExportFormat, key: ExportKey, detector: "Detector", input_size: int, cache: ExportCache,
            threads: int) -> Export:
    probe = probe_crops(input_size)
    reference = EagerRuntime(detector, input_size=input_size).logits(probe)

    def write(folder: Path) -> tuple[str, dict]:
        main = fmt.export(detector, folder, input_size)
        gap = max_probability_gap(fmt.runtime(folder / main, input_size=input_size, threads=threads).logits(probe),
                                  reference)
        if not gap <= EXPORT_TOLERANCE:
            raise UnsupportedDetectorError(
                f"{fmt.name} changes the scores of detector {key.detector!r} (P(fake) off by {gap:.2g} from "
                f"eager on probe crops; the bound is {EXPORT_TOLERANCE:g})"
            )
        return main, {"check_max_abs_dp": gap}

    try:
        return cache.store(key, write)
    except UnsupportedDetectorError as error:
        cache.record_unsupported(key, str(error))  # so that auto does not export again on every scan
        raise


def open_export(fmt: str, export: Export, *, input_size: int, threads: int) -> FaceRuntime:
    return FORMATS[fmt].runtime(export.path, input_size=input_size, threads=threads, sha256=export.sha256,
                                check_max_abs_dp=export.check_max_abs_dp)

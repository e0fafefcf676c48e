"""A small detector registry in the manner of timm: one entrypoint per detector, its config beside it.

    @register_detector(DetectorConfig(name="faclue", paper="...", input_size=224))
    def faclue(**kwargs) -> FAClue:
        return FAClue(**kwargs)

``create_detector("faclue")`` builds it; keyword arguments override the entrypoint's defaults.
Registration happens when ``deepscan.detectors`` is imported, which the functions here do on demand
so that importing this module stays cheap.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Callable

if TYPE_CHECKING:
    from deepscan.detectors.base import Detector, DetectorConfig

_ENTRYPOINTS: dict[str, tuple[Callable[..., "Detector"], "DetectorConfig"]] = {}


class UnknownDetectorError(KeyError):
    def __str__(self) -> str:  # KeyError would quote the whole message
        return self.args[0]


def register_detector(config: "DetectorConfig") -> Callable:
    def decorate(entrypoint: Callable[..., "Detector"]) -> Callable[..., "Detector"]:
        if config.name in _ENTRYPOINTS:
            raise ValueError(f"detector {config.name!r} is registered twice")
        _ENTRYPOINTS[config.name] = (entrypoint, config)
        return entrypoint

    return decorate


def _load_builtin_detectors() -> None:
    importlib.import_module("deepscan.detectors")


def list_detectors() -> list[str]:
    _load_builtin_detectors()
    return sorted(_ENTRYPOINTS)


def get_config(name: str) -> "DetectorConfig":
    _load_builtin_detectors()
    if name not in _ENTRYPOINTS:
        known = ", ".join(sorted(_ENTRYPOINTS))
        raise UnknownDetectorError(f"unknown detector {name!r} (known: {known})")
    return _ENTRYPOINTS[name][1]


def create_detector(name: str, **kwargs) -> "Detector":
    """Build a registered detector with random (or backbone-pretrained) weights."""
    config = get_config(name)
    entrypoint, _ = _ENTRYPOINTS[name]
    detector = entrypoint(**kwargs)
    detector.config = config
    return detector

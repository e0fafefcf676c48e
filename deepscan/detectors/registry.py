"""A small detector registry in the manner of timm: one entrypoint per detector, its config beside it.

    @register_detector(DetectorConfig(name="faclue", paper="...", input_size=224))
    def faclue(**kwargs) -> FAClue:
        return FAClue(**kwargs)

``create_detector("faclue")`` builds it; keyword arguments override the entrypoint's defaults.
Entrypoints register when their modules are imported: ``deepscan/detectors/__init__.py`` imports this module,
then every detector module, so importing ``deepscan.detectors`` (or anything inside it) registers them all.
This module imports no detector, so there is no import cycle.
"""

from __future__ import annotations

from typing import Callable

from deepscan.detectors.base import Detector, DetectorConfig
from deepscan.errors import DeepscanError

_ENTRYPOINTS: dict[str, tuple[Callable[..., Detector], DetectorConfig]] = {}


class UnknownDetectorError(DeepscanError, KeyError):
    def __str__(self) -> str:  # KeyError would quote the whole message
        return self.args[0]


def register_detector(config: DetectorConfig) -> Callable:
    def decorate(entrypoint: Callable[..., Detector]) -> Callable[..., Detector]:
        if config.name in _ENTRYPOINTS:
            raise ValueError(f"detector {config.name!r} is registered twice")
        _ENTRYPOINTS[config.name] = (entrypoint, config)
        return entrypoint

    return decorate


def list_detectors() -> list[str]:
    return sorted(_ENTRYPOINTS)


def get_config(name: str) -> DetectorConfig:
    if name not in _ENTRYPOINTS:
        known = ", ".join(sorted(_ENTRYPOINTS))
        raise UnknownDetectorError(f"unknown detector {name!r} (known: {known})")
    return _ENTRYPOINTS[name][1]


def create_detector(name: str, **kwargs) -> Detector:
    """Build a registered detector with random (or backbone-pretrained) weights."""
    config = get_config(name)
    entrypoint, _ = _ENTRYPOINTS[name]
    detector = entrypoint(**kwargs)
    detector.config = config
    return detector

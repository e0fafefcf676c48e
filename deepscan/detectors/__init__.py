"""The detectors, one module per paper, and their registry (laid out as timm's ``timm.models``).

The registry is imported first; importing each detector module then registers its entrypoints, so importing
this package, or any module inside it, registers them all. Use ``from deepscan.detectors import create_detector``.
"""

from deepscan.detectors.registry import (  # noqa: F401
    UnknownDetectorError,
    create_detector,
    get_config,
    list_detectors,
    register_detector,
)

from deepscan.detectors import faclue  # noqa: F401, E402  (registers on import)
from deepscan.detectors import pel  # noqa: F401, E402
from deepscan.detectors import mclcr  # noqa: F401, E402
from deepscan.detectors import ralf  # noqa: F401, E402
from deepscan.detectors import sficonv  # noqa: F401, E402

__all__ = ["UnknownDetectorError", "create_detector", "get_config", "list_detectors", "register_detector"]

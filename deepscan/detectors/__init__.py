"""The detectors, one module per paper. Importing this package registers them all."""

from deepscan.detectors import faclue  # noqa: F401
from deepscan.detectors import pel  # noqa: F401
from deepscan.detectors import mclcr  # noqa: F401
from deepscan.detectors import ralf  # noqa: F401
from deepscan.detectors import sficonv  # noqa: F401

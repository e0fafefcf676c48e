"""deepscan: tells whether the faces in a video or image were forged, and shows why."""

__version__ = "0.1.0"

"""Media in: read videos and images, find faces, follow them in time (no detector knowledge).

:func:`open_media` is the way in to a file: its kind, what its headers say, its frames (:mod:`.source`). It is
imported on first use, so that the light modules of the package (``errors``, ``files``) stay light to import.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from deepscan.media.source import MediaSource, open_media

__all__ = ["MediaSource", "open_media"]


def __getattr__(name: str):
    if name in __all__:
        from deepscan.media import source

        return getattr(source, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

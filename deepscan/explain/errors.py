"""The one error an explanation raises: something it cannot be made from, told in one line."""

from __future__ import annotations

from deepscan.errors import DeepscanError


class ExplainError(DeepscanError):
    """Something an explanation cannot be made from; the message is one line for the user."""

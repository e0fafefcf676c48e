"""What goes wrong with detector weights, in one line for the user: the errors, and the words that say what to do."""

from __future__ import annotations

from deepscan.errors import DeepscanError


def what_to_do(repo_id: str | None = None) -> str:
    """The ways out when trained weights cannot be found, for the end of a one-line error."""
    where = f" from {repo_id}" if repo_id else ""
    return f"pass --weights FILE, or go online to fetch them{where}, or train your own with `deepscan train`"


def untrained_warning(name: str, what: str = "scores") -> str:
    """The one warning for a detector with random weights (``what``: what of its output means nothing)."""
    return (f"detector {name} has no trained weights: its {what} are random and mean nothing. Pass --weights, or "
            "train one with `deepscan train`.")


class WeightsError(DeepscanError):
    """A weights file that cannot be used; the message is one line for the user."""


class IntegrityError(WeightsError):
    """Weights or a model card that fail a check of what they must be: their ``SHA256SUMS`` line, the sha256 their
    card states, the card's calibration check. Never a reason to carry on without them: someone altered them."""


class WeightsUnavailableError(WeightsError):
    """Trained weights that cannot be had here and now (not bundled, not cached, and the hub offline or not
    answering): the only weights failure an ensemble may leave a member out for."""

"""The errors a user can fix, and the exit codes of the command line: defined here once.

Every user-facing error subclasses :class:`DeepscanError`: its ``str()`` is one line ready to show, and its
``exit_code`` is what the command line exits with when it ends a command (``deepscan.cli`` catches them in one
place). Errors that callers also catch by a built-in type keep it as a second base (``ValueError``, ``KeyError``,
``RuntimeError``). Imports nothing, so that any module may raise them.
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_INCOMPLETE = 1  # some input could not be read in full
EXIT_USAGE = 2  # a usage, data, recipe or weights problem the user can fix (one line)
EXIT_INTERNAL = 3  # a bug: "internal error" (DEEPSCAN_DEBUG=1 shows the traceback)
EXIT_INTERRUPTED = 130  # Ctrl-C: what was done so far is kept


class DeepscanError(Exception):
    """A problem the user can fix; ``str()`` is one line for them, ``exit_code`` the command line's exit code."""

    exit_code: int = EXIT_USAGE

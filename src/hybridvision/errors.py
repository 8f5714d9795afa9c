"""The one exception type for bad user input.

Anything a user gave us that is wrong (a malformed annotation, a missing image, an unknown model
name, a corrupt checkpoint) raises :class:`UserInputError` with a message that names the file,
the record and the fix. The CLI prints that message on one line and exits non-zero, never a
traceback.
"""

from __future__ import annotations

__all__ = ["UserInputError", "DataError"]


class UserInputError(Exception):
    """Bad input from the user. ``str(err)`` is the whole, one-line message shown to them."""

    def __init__(self, message: str, *, findings: list[str] | None = None):
        super().__init__(message)
        self.findings = list(findings or [])


class DataError(UserInputError):
    """A dataset (annotations or images) that cannot be used as given."""

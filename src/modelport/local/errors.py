"""The one error of the local platform that is the user's to fix (a port taken, a binary missing,
no checkout): ``modelport up`` prints its message as one line, without a traceback."""

from __future__ import annotations


class PlatformError(Exception):
    """Something the user must fix before the platform can start (one line)."""

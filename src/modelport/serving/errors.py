"""Errors of the model server: a model that cannot be loaded, and a request that is wrong."""

from __future__ import annotations


class ModelLoadError(Exception):
    """The model (or its requirements) cannot be fetched, installed or loaded: the server exits.

    ``message`` is one human paragraph that says what failed and what to do; it is what the
    process prints before it exits non-zero.
    """

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InputError(Exception):
    """A prediction request the model cannot answer: HTTP 400 (or ``status``) with ``message``."""

    def __init__(self, message: str, status: int = 400, code: str = "bad_input") -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.code = code


class Disconnected(Exception):
    """The client went away while its request was being read: nothing is answered."""

"""Errors that reach users as JSON ``{"code", "message"}`` with a fitting HTTP status.

Every layer raises these; the API maps them to responses, the CLI prints them as one line.
The ``code`` strings are stable: clients may switch on them.
"""

from __future__ import annotations


class ModelportError(Exception):
    status: int = 400
    code: str = "bad_request"

    def __init__(self, message: str, *, code: str | None = None, status: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        if status is not None:
            self.status = status

    def to_dict(self) -> dict[str, str]:
        return {"code": self.code, "message": self.message}


class BadRequest(ModelportError):
    status, code = 400, "bad_request"


class Unauthorized(ModelportError):
    status, code = 401, "unauthorized"


class NotFound(ModelportError):
    status, code = 404, "not_found"


class Conflict(ModelportError):
    status, code = 409, "conflict"


class TooLarge(ModelportError):
    status, code = 413, "too_large"


class Invalid(ModelportError):
    status, code = 422, "validation_error"


class Unavailable(ModelportError):
    status, code = 503, "unavailable"

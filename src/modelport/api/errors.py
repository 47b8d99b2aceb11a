"""Every error leaves as JSON ``{"code", "message"}``; nothing leaks a stack trace."""

from __future__ import annotations

from aws_lambda_powertools import Logger
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from modelport.domain.errors import ModelportError

logger = Logger(service="modelport")

_HTTP_CODES = {
    404: "not_found", 405: "method_not_allowed", 413: "too_large", 415: "unsupported_media_type",
    400: "bad_request", 401: "unauthorized", 403: "forbidden",
}


def _describe(error: dict) -> str:
    where = ".".join(str(p) for p in error.get("loc", ()) if p != "body") or "body"
    return f"{where}: {error.get('msg', 'invalid')}"


def install(app: FastAPI) -> None:
    @app.exception_handler(ModelportError)
    async def _modelport(_: Request, exc: ModelportError) -> JSONResponse:
        return JSONResponse(exc.to_dict(), status_code=exc.status)

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        errors = exc.errors()
        if any(e.get("type") == "json_invalid" for e in errors):
            return JSONResponse({"code": "malformed_json", "message": "the body is not valid JSON"}, 400)
        message = "; ".join(_describe(e) for e in errors[:5])
        return JSONResponse({"code": "validation_error", "message": message}, 422)

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = _HTTP_CODES.get(exc.status_code, "error")
        return JSONResponse({"code": code, "message": str(exc.detail)}, exc.status_code, headers=exc.headers)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        logger.exception("unhandled error", extra={"path": request.url.path})
        return JSONResponse({"code": "internal_error", "message": "internal error; it has been logged"}, 500)

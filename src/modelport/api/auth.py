"""Who is calling: the JWT ``sub`` that API Gateway's authorizer verified (in Lambda), else the
owner of the ``Authorization: Bearer <api key>`` (locally and for programmatic clients)."""

from __future__ import annotations

from typing import Any

from fastapi import Request

from modelport.domain.errors import Unauthorized
from modelport.services.users import owner_of_key


def _jwt_subject(request: Request) -> str | None:
    # Mangum puts the API Gateway event in the ASGI scope; only API Gateway can put it there.
    event: dict[str, Any] | None = request.scope.get("aws.event")
    if not event:
        return None
    claims = event.get("requestContext", {}).get("authorizer", {}).get("jwt", {}).get("claims", {})
    sub = claims.get("sub")
    return str(sub) if sub else None


def current_owner(request: Request) -> str:
    subject = _jwt_subject(request)
    if subject:
        return subject
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthorized(
            "missing credentials: send 'Authorization: Bearer <api key>' (create one with `modelport users create`)",
            code="missing_credentials",
        )
    owner = owner_of_key(request.app.state.store, token.strip())
    if owner is None:
        raise Unauthorized("the API key is not valid", code="invalid_api_key")
    return str(owner)

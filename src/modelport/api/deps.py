"""Shared request dependencies: the store, the object store, paging, the caller."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Header, Query, Request

from modelport.api.auth import current_owner
from modelport.api.idempotency import Idempotency
from modelport.artifacts.storage import ObjectStore
from modelport.settings import Settings
from modelport.store.repository import Store

Owner = Annotated[str, Depends(current_owner)]


def get_store(request: Request) -> Store:
    return request.app.state.store  # type: ignore[no-any-return]


def get_objects(request: Request) -> ObjectStore:
    state = request.app.state
    if getattr(state, "objects", None) is None:  # created on first use: most requests never need S3
        state.objects = ObjectStore(state.settings)
    return state.objects  # type: ignore[no-any-return]


def get_settings_dep(request: Request) -> Settings:
    return request.app.state.settings  # type: ignore[no-any-return]


def get_idempotency(request: Request) -> Idempotency:
    return request.app.state.idempotency  # type: ignore[no-any-return]


StoreDep = Annotated[Store, Depends(get_store)]
IdempotencyDep = Annotated[Idempotency, Depends(get_idempotency)]
IdempotencyKey = Annotated[
    str | None,
    Header(alias="Idempotency-Key", description="retries with the same key get the first answer, not a duplicate"),
]
ObjectsDep = Annotated[ObjectStore, Depends(get_objects)]
SettingsDep = Annotated[Settings, Depends(get_settings_dep)]


class Paging:
    def __init__(
        self, settings: SettingsDep, limit: Annotated[int | None, Query(ge=1)] = None,
        cursor: Annotated[str | None, Query(max_length=2048)] = None,
    ) -> None:
        self.limit = min(limit or settings.page_size_default, settings.page_size_max)
        self.cursor = cursor


PagingDep = Annotated[Paging, Depends(Paging)]

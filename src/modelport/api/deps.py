"""Shared request dependencies: the store, the object store, paging, the caller."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Header, Query, Request

from modelport.api.auth import current_owner
from modelport.api.idempotency import Idempotency
from modelport.artifacts.storage import ObjectStore
from modelport.settings import Settings
from modelport.store.repository import Store

Owner = Annotated[str, Depends(current_owner)]


# The trivial getters are ``async def`` so that FastAPI calls them in the event loop: a plain
# ``def`` dependency costs a hop to the thread pool on every request. The ones that may block (the
# caller's key lookup, the object store's first client) stay plain functions and run in the pool.


async def get_store(request: Request) -> Store:
    return request.app.state.store  # type: ignore[no-any-return]


def get_objects(request: Request) -> ObjectStore:
    state = request.app.state
    if getattr(state, "objects", None) is None:  # created on first use: most requests never need S3
        state.objects = ObjectStore(state.settings)
    return state.objects  # type: ignore[no-any-return]


async def get_settings_dep(request: Request) -> Settings:
    return request.app.state.settings  # type: ignore[no-any-return]


async def get_idempotency(request: Request) -> Idempotency:
    return request.app.state.idempotency  # type: ignore[no-any-return]


StoreDep = Annotated[Store, Depends(get_store)]
IdempotencyDep = Annotated[Idempotency, Depends(get_idempotency)]
IdempotencyKey = Annotated[
    str | None,
    Header(alias="Idempotency-Key", description="retries with the same key get the first answer, not a duplicate"),
]
ObjectsDep = Annotated[ObjectStore, Depends(get_objects)]
SettingsDep = Annotated[Settings, Depends(get_settings_dep)]


@dataclass(frozen=True)
class Paging:
    limit: int
    cursor: str | None


async def paging(
    settings: SettingsDep, limit: Annotated[int | None, Query(ge=1)] = None,
    cursor: Annotated[str | None, Query(max_length=2048)] = None,
) -> Paging:
    return Paging(limit=min(limit or settings.page_size_default, settings.page_size_max), cursor=cursor)


PagingDep = Annotated[Paging, Depends(paging)]

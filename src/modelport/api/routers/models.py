"""/api/v1/models"""

from __future__ import annotations

from fastapi import APIRouter, Response

from modelport.api.deps import (
    IdempotencyDep,
    IdempotencyKey,
    ObjectsDep,
    Owner,
    PagingDep,
    SettingsDep,
    StoreDep,
)
from modelport.api.schemas import ModelCreate, ModelOut, ModelUpdate, PageOut, VersionCreate, VersionOut
from modelport.domain.entities import Model, Version
from modelport.services import models
from modelport.services.deployments import check_replicas

router = APIRouter(tags=["models"])


def model_out(model: Model) -> ModelOut:
    return ModelOut.model_validate(model.model_dump())


def version_out(version: Version) -> VersionOut:
    return VersionOut.model_validate(version.model_dump())


@router.post("/models", status_code=201, response_model=ModelOut)
def create_model(
    body: ModelCreate, owner: Owner, store: StoreDep, idempotency: IdempotencyDep,
    idempotency_key: IdempotencyKey = None,
) -> ModelOut:
    return idempotency.create(
        owner, "create_model", idempotency_key, body.model_dump(mode="json"),
        lambda: model_out(store.create_model(owner, body.name, body.description)), ModelOut,
    )


@router.get("/models", response_model=PageOut[ModelOut])
def list_models(owner: Owner, store: StoreDep, paging: PagingDep) -> PageOut[ModelOut]:
    page = store.list_models(owner, paging.limit, paging.cursor)
    return PageOut[ModelOut](items=[model_out(m) for m in page.items], next_cursor=page.next_cursor)


@router.get("/models/{model_id}", response_model=ModelOut)
def get_model(model_id: int, owner: Owner, store: StoreDep) -> ModelOut:
    return model_out(store.get_model(owner, model_id))


@router.patch("/models/{model_id}", response_model=ModelOut)
def update_model(model_id: int, body: ModelUpdate, owner: Owner, store: StoreDep, settings: SettingsDep) -> ModelOut:
    if body.auto_deploy is not None:
        check_replicas(body.auto_deploy.replicas, settings)
    return model_out(store.update_model(owner, model_id, description=body.description, auto_deploy=body.auto_deploy))


@router.delete("/models/{model_id}", status_code=204)
def delete_model(model_id: int, owner: Owner, store: StoreDep, objects: ObjectsDep) -> Response:
    models.delete_model(store, objects, owner, model_id)
    return Response(status_code=204)


@router.post("/models/{model_id}/versions", status_code=201, response_model=VersionOut)
def create_version(
    model_id: int, owner: Owner, store: StoreDep, idempotency: IdempotencyDep, idempotency_key: IdempotencyKey = None,
    body: VersionCreate | None = None,
) -> VersionOut:
    label = body.version if body else None
    trusted = body.trusted_globals if body else []
    return idempotency.create(
        owner, "create_version", idempotency_key, {"model_id": model_id, "version": label, "trusted_globals": trusted},
        lambda: version_out(store.create_version(owner, model_id, label, trusted)), VersionOut,
    )


@router.get("/models/{model_id}/versions", response_model=PageOut[VersionOut])
def list_versions(model_id: int, owner: Owner, store: StoreDep, paging: PagingDep) -> PageOut[VersionOut]:
    page = store.list_versions(owner, model_id, paging.limit, paging.cursor)
    return PageOut[VersionOut](items=[version_out(v) for v in page.items], next_cursor=page.next_cursor)

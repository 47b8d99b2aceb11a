"""/api/v1/deployments and /api/v1/versions/{version_id}/deployments"""

from __future__ import annotations

from fastapi import APIRouter, Query

from modelport.api.deps import (
    IdempotencyDep,
    IdempotencyKey,
    Owner,
    PagingDep,
    SettingsDep,
    StoreDep,
)
from modelport.api.schemas import (
    DeploymentCreate,
    DeploymentOut,
    DeploymentUpdate,
    MetricsOut,
    PageOut,
    RolloutIn,
    ShadowIn,
    TokenOut,
)
from modelport.domain.entities import Deployment
from modelport.services import deployments, metrics, rollouts, shadows
from modelport.services.shadows import ShadowReport

router = APIRouter(tags=["deployments"])


def deployment_out(deployment: Deployment) -> DeploymentOut:
    return DeploymentOut.model_validate(deployment.model_dump())


@router.post("/versions/{version_id}/deployments", status_code=201, response_model=DeploymentOut)
def create_deployment(
    version_id: int, owner: Owner, store: StoreDep, settings: SettingsDep, idempotency: IdempotencyDep,
    idempotency_key: IdempotencyKey = None, body: DeploymentCreate | None = None,
) -> DeploymentOut:
    replicas = deployments.check_replicas((body or DeploymentCreate()).replicas, settings)
    return idempotency.create(
        owner, "create_deployment", idempotency_key, {"version_id": version_id, "replicas": replicas},
        lambda: deployment_out(deployments.create_deployment(store, settings, owner, version_id, replicas)),
        DeploymentOut,
    )


@router.get("/deployments", response_model=PageOut[DeploymentOut])
def list_deployments(owner: Owner, store: StoreDep, paging: PagingDep) -> PageOut[DeploymentOut]:
    page = store.list_deployments(owner, paging.limit, paging.cursor)
    return PageOut[DeploymentOut](items=[deployment_out(d) for d in page.items], next_cursor=page.next_cursor)


@router.get("/deployments/{deployment_id}", response_model=DeploymentOut)
def get_deployment(deployment_id: int, owner: Owner, store: StoreDep) -> DeploymentOut:
    return deployment_out(store.get_deployment(owner, deployment_id))


@router.patch("/deployments/{deployment_id}", response_model=DeploymentOut)
def update_deployment(
    deployment_id: int, body: DeploymentUpdate, owner: Owner, store: StoreDep, settings: SettingsDep
) -> DeploymentOut:
    if body.rollout is not None:
        assert body.version_id is not None  # the schema's rule
        if body.replicas is not None:
            deployments.update_deployment(store, settings, owner, deployment_id, replicas=body.replicas)
        return deployment_out(rollouts.start_canary(store, owner, deployment_id, body.version_id, body.rollout))
    return deployment_out(deployments.update_deployment(
        store, settings, owner, deployment_id, replicas=body.replicas, version_id=body.version_id
    ))


@router.post("/deployments/{deployment_id}/rollout/promote", response_model=DeploymentOut)
def promote_rollout(deployment_id: int, owner: Owner, store: StoreDep) -> DeploymentOut:
    """All requests to the canary's version now; the stable release is upgraded to it."""
    return deployment_out(rollouts.promote(store, owner, deployment_id))


@router.post("/deployments/{deployment_id}/rollout/abort", response_model=DeploymentOut)
def abort_rollout(deployment_id: int, owner: Owner, store: StoreDep) -> DeploymentOut:
    """All requests back to the stable version; the canary's release is removed."""
    return deployment_out(rollouts.abort(store, owner, deployment_id))


@router.put("/deployments/{deployment_id}/shadow", response_model=DeploymentOut)
def start_shadow(deployment_id: int, body: ShadowIn, owner: Owner, store: StoreDep) -> DeploymentOut:
    """Run ``version_id`` beside the live version on a copy of ``percent`` % of the answered
    requests; callers get the live answer. The deployer starts it; ``GET`` reports."""
    return deployment_out(shadows.start_shadow(store, owner, deployment_id, body))


@router.get("/deployments/{deployment_id}/shadow", response_model=ShadowReport)
def shadow_report(deployment_id: int, owner: Owner, store: StoreDep) -> ShadowReport:
    """Copies mirrored and dropped, agreement, candidate errors and both sides' latency, from the
    metrics samples since the shadow started."""
    return shadows.shadow_report(store, owner, deployment_id)


@router.delete("/deployments/{deployment_id}/shadow", response_model=DeploymentOut)
def stop_shadow(deployment_id: int, owner: Owner, store: StoreDep) -> DeploymentOut:
    return deployment_out(shadows.stop_shadow(store, owner, deployment_id))


@router.post("/deployments/{deployment_id}/shadow/promote", response_model=DeploymentOut)
def promote_shadow(deployment_id: int, owner: Owner, store: StoreDep, body: RolloutIn | None = None
                   ) -> DeploymentOut:
    """The shadow's version becomes a canary (the body: its steps and limits, as for PATCH)."""
    return deployment_out(shadows.promote_shadow(store, owner, deployment_id, body or RolloutIn()))


@router.delete("/deployments/{deployment_id}", status_code=202, response_model=DeploymentOut)
def delete_deployment(deployment_id: int, owner: Owner, store: StoreDep) -> DeploymentOut:
    return deployment_out(deployments.delete_deployment(store, owner, deployment_id))


@router.post("/deployments/{deployment_id}/token", status_code=201, response_model=TokenOut)
def issue_token(deployment_id: int, owner: Owner, store: StoreDep) -> TokenOut:
    """Protect the prediction URL: a new token (shown once) replaces any earlier one. The deployer
    rolls it out; until then the URL answers as before."""
    token = deployments.issue_token(store, owner, deployment_id)
    return TokenOut(deployment_id=deployment_id, protected=True, token=token)


@router.get("/deployments/{deployment_id}/token", response_model=TokenOut)
def token_status(deployment_id: int, owner: Owner, store: StoreDep) -> TokenOut:
    deployment = store.get_deployment(owner, deployment_id)
    return TokenOut(deployment_id=deployment_id, protected=deployment.predict_token_sha256 is not None)


@router.delete("/deployments/{deployment_id}/token", response_model=TokenOut)
def remove_token(deployment_id: int, owner: Owner, store: StoreDep) -> TokenOut:
    """Open the prediction URL to anyone again."""
    deployments.remove_token(store, owner, deployment_id)
    return TokenOut(deployment_id=deployment_id, protected=False)


@router.get("/deployments/{deployment_id}/metrics", response_model=MetricsOut)
def deployment_metrics(
    deployment_id: int, owner: Owner, store: StoreDep, settings: SettingsDep,
    window: str = Query(default="1h", description="how far back: 15m, 1h, 6h, 24h ..."),
) -> MetricsOut:
    """Per-minute requests, errors, p50/p99 latency, batch sizes and replicas ready, as the
    deployer's sampler read them from the model servers."""
    series = metrics.deployment_metrics(store, settings, owner, deployment_id, window)
    return MetricsOut.model_validate(series.model_dump())

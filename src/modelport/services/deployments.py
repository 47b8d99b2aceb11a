"""Deployments as a user changes them: create, scale or move to another version, protect with a
token, delete. The rules live here; the store's conditions make them hold under races.

Rules:
- replicas lie within ``REPLICAS_MIN``..``REPLICAS_MAX`` (one check for every way in: API, CLI,
  auto-deploy settings);
- a FAILED deployment cannot be changed (delete it and deploy again), nor one being deleted;
- a change that changes nothing is not a change (no new generation, no rollout);
- a version change stays within the deployment's model;
- prediction tokens are minted here and shown once; only their sha256 is stored and rolled out.
"""

from __future__ import annotations

import hashlib
import secrets

from modelport.domain.entities import Deployment, DeploymentStatus, Version
from modelport.domain.errors import BadRequest, Conflict, Invalid
from modelport.settings import Settings
from modelport.store.repository import Store

TOKEN_PREFIX = "mpt_"
CONCURRENT_WRITE_RETRIES = 8


def check_replicas(replicas: int, settings: Settings) -> int:
    if not settings.replicas_min <= replicas <= settings.replicas_max:
        raise Invalid(
            f"replicas must be between {settings.replicas_min} and {settings.replicas_max}, got {replicas}",
            code="replicas_out_of_range",
        )
    return replicas


def create_deployment(
    store: Store, settings: Settings, owner: str, version_id: int, replicas: int, *, follow_latest: bool = False
) -> Deployment:
    """A PENDING deployment of a READY version; the deployer takes it from the table's stream."""
    check_replicas(replicas, settings)
    return store.create_deployment(
        owner, version_id, replicas, url_for=settings.deployment_url, follow_latest=follow_latest
    )


def ensure_changeable(deployment: Deployment) -> None:
    if deployment.status == DeploymentStatus.DELETING:
        raise Conflict(f"deployment {deployment.id} is being deleted", code="deployment_deleting")
    if deployment.status == DeploymentStatus.FAILED:
        raise Conflict(
            f"deployment {deployment.id} failed ({deployment.status_message}); delete it and deploy again",
            code="deployment_failed",
        )


def too_busy(deployment_id: int) -> Conflict:
    """Every retry of a conditional write lost its race."""
    return Conflict(f"deployment {deployment_id} is changing too fast; try again", code="concurrent_update")


def rollout_in_progress(deployment: Deployment) -> Conflict:
    assert deployment.rollout is not None
    return Conflict(f"deployment {deployment.id} has a canary of version {deployment.rollout.candidate_version_id} "
                    "in progress; promote or abort it first", code="rollout_in_progress")


def shadow_running(deployment: Deployment) -> Conflict:
    assert deployment.shadow is not None
    return Conflict(f"deployment {deployment.id} has a shadow of version {deployment.shadow.version_id} running; "
                    "promote it to a canary (POST .../shadow/promote) or stop it (DELETE .../shadow) first",
                    code="shadow_running")


def ensure_converged(deployment: Deployment, what: str) -> None:
    """READY and the deployer done with the last change: what a canary starts from."""
    if deployment.status != DeploymentStatus.READY or deployment.observed_generation < deployment.generation:
        raise Conflict(f"deployment {deployment.id} is {deployment.status.value}; {what} starts from a READY "
                       "deployment", code="deployment_not_ready")


def deployable_version(store: Store, owner: str, deployment: Deployment, version_id: int) -> Version:
    """``version_id``, READY and of the deployment's model (a deployment serves one model)."""
    version = store.ready_version(owner, version_id)
    if version.model_id != deployment.model_id:
        raise BadRequest(f"version {version_id} belongs to another model; a deployment serves one model",
                         code="version_of_other_model")
    return version


def update_deployment(
    store: Store, settings: Settings, owner: str, deployment_id: int, *,
    replicas: int | None = None, version_id: int | None = None,
) -> Deployment:
    """Record a new desired state. Concurrent calls each land (re-read and re-applied on a lost race)."""
    if replicas is not None:
        check_replicas(replicas, settings)
    for _ in range(CONCURRENT_WRITE_RETRIES):
        current = store.get_deployment(owner, deployment_id)
        ensure_changeable(current)
        change_version = version_id is not None and version_id != current.version_id
        if change_version and current.rollout is not None and current.rollout.progressing:
            raise rollout_in_progress(current)
        if change_version and current.shadow is not None and current.shadow.running:
            raise shadow_running(current)
        change_replicas = replicas is not None and replicas != current.replicas
        if not (change_version or change_replicas):
            return current
        if change_version:
            assert version_id is not None
            deployable_version(store, owner, current, version_id)
        changed = store.change_deployment(
            current, replicas=replicas if change_replicas else None, version_id=version_id if change_version else None,
        )
        if changed is not None:
            return changed
    raise too_busy(deployment_id)


def delete_deployment(store: Store, owner: str, deployment_id: int) -> Deployment:
    """DELETING: the deployer uninstalls, then the record goes. Asking again changes nothing."""
    return store.request_delete(owner, deployment_id)


def issue_token(store: Store, owner: str, deployment_id: int) -> str:
    """Protect the prediction URL: a new token (returned once) replaces any earlier one. The
    deployer rolls it out; until then the URL answers as before."""
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    store.set_predict_token(owner, deployment_id, hashlib.sha256(token.encode()).hexdigest())
    return token


def remove_token(store: Store, owner: str, deployment_id: int) -> Deployment:
    """Open the prediction URL to anyone again."""
    return store.set_predict_token(owner, deployment_id, None)

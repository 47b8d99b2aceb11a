"""Shadow traffic as users start, read, stop and promote it.

Rules:
- a shadow starts on a READY deployment with no canary in progress, of a READY version of the same
  model other than the one it serves; asking again for the same version and settings is the same
  shadow (nothing changes), another version or percent replaces it (its report starts afresh);
- while a shadow runs the deployment's version cannot be changed by other means (stop or promote
  it first); replicas can;
- ``stop`` ends it (the deployer removes its release and the live servers stop copying); a stopped
  shadow's report stays readable until another starts;
- ``promote`` turns it into a canary of the same version in one write (the shadow ends, the canary
  starts: ``services.rollouts``' rules from then on);
- the report is made of the metrics samples since the shadow started (until it stopped): what the
  live servers counted of the copies, and what the candidate's servers measured; no samples yet
  is a report of zeros, not an error;
- every change is a conditional write on the generation read (``Store.write_shadow``).
"""

from __future__ import annotations

import time
from datetime import UTC, datetime

from pydantic import BaseModel, Field

from modelport.domain.entities import Deployment, DeploymentStatus
from modelport.domain.errors import BadRequest, Conflict
from modelport.domain.rollouts import CanaryRequest, Rollout, Shadow, ShadowRequest, ShadowState, shadow_release
from modelport.domain.serving_metrics import Counters, Figures, quantile_ms
from modelport.services.deployments import (
    CONCURRENT_WRITE_RETRIES,
    deployable_version,
    ensure_changeable,
    ensure_converged,
    rollout_in_progress,
    too_busy,
)
from modelport.store.repository import Store


def start_shadow(store: Store, owner: str, deployment_id: int, request: ShadowRequest, *,
                 now: datetime | None = None) -> Deployment:
    for _ in range(CONCURRENT_WRITE_RETRIES):
        current = store.get_deployment(owner, deployment_id)
        ensure_changeable(current)
        running = current.shadow if current.shadow is not None and current.shadow.running else None
        if running is not None and ShadowRequest(**running.model_dump(include=set(ShadowRequest.model_fields))) \
                == request:
            return current  # asked again: the same shadow
        if current.rollout is not None and current.rollout.progressing:
            raise rollout_in_progress(current)
        if current.status != DeploymentStatus.READY:
            raise Conflict(f"deployment {deployment_id} is {current.status.value}; a shadow starts on a READY "
                           "deployment", code="deployment_not_ready")
        if request.version_id == current.version_id:
            raise BadRequest(f"deployment {deployment_id} already serves version {request.version_id}; a shadow "
                             "runs another version beside it", code="shadow_of_same_version")
        deployable_version(store, owner, current, request.version_id)
        shadow = Shadow(**request.model_dump(), started_at=now or datetime.now(UTC))
        changed = store.write_shadow(current, shadow)
        if changed is not None:
            return changed
    raise too_busy(deployment_id)


def _running(store: Store, owner: str, deployment_id: int) -> tuple[Deployment, Shadow]:
    current = store.get_deployment(owner, deployment_id)
    ensure_changeable(current)
    if current.shadow is None or not current.shadow.running:
        raise Conflict(f"deployment {deployment_id} has no shadow running", code="no_shadow")
    return current, current.shadow


def stop_shadow(store: Store, owner: str, deployment_id: int, *, reason: str = "stopped by the owner",
                now: datetime | None = None) -> Deployment:
    for _ in range(CONCURRENT_WRITE_RETRIES):
        current, shadow = _running(store, owner, deployment_id)
        stopped = shadow.model_copy(update={"state": ShadowState.STOPPED, "reason": reason,
                                            "stopped_at": now or datetime.now(UTC)})
        changed = store.write_shadow(current, stopped)
        if changed is not None:
            return changed
    raise too_busy(deployment_id)


def promote_shadow(store: Store, owner: str, deployment_id: int, request: CanaryRequest, *,
                   now: datetime | None = None) -> Deployment:
    """The shadow's version becomes a canary beside the stable one, in one write."""
    for _ in range(CONCURRENT_WRITE_RETRIES):
        current, shadow = _running(store, owner, deployment_id)
        ensure_converged(current, "a canary")
        started = now or datetime.now(UTC)
        rollout = Rollout(**request.model_dump(), candidate_version_id=shadow.version_id,
                          stable_version_id=current.version_id, started_at=started, step_started_at=started)
        promoted = shadow.model_copy(update={"state": ShadowState.PROMOTED, "stopped_at": started,
                                             "reason": "promoted to a canary"})
        changed = store.write_shadow(current, promoted, rollout=rollout)
        if changed is not None:
            return changed
    raise too_busy(deployment_id)


class ShadowReport(BaseModel):
    deployment_id: int
    shadow: Shadow
    sampled_at: datetime | None = Field(description="the last metrics sample the figures include; None: none yet")
    mirrored: int = Field(description="copies sent to the candidate")
    dropped: int = Field(description="copies not sent because the queue was full (callers never wait)")
    candidate_errors: int = Field(description="copies the candidate answered with an error, late or not at all")
    rows_compared: int
    agreement: float | None = Field(description="share of compared rows with the same answer (label, or within "
                                    "the tolerance for a regressor)")
    proba_mean_abs_diff: float | None = Field(description="mean |p_live - p_candidate| over rows that asked for "
                                              "probabilities")
    live: Figures = Field(description="the live servers' answers to callers")
    candidate: Figures = Field(description="the candidate's servers, answering the copies (several may go in "
                               "one call)")
    copy_p50_ms: float | None = Field(description="the calls to the candidate as the live servers timed them")
    copy_p99_ms: float | None


def shadow_report(store: Store, owner: str, deployment_id: int, *, now: float | None = None) -> ShadowReport:
    deployment = store.get_deployment(owner, deployment_id)
    shadow = deployment.shadow
    if shadow is None:
        raise Conflict(f"deployment {deployment_id} has no shadow; start one with PUT .../shadow", code="no_shadow")
    until = shadow.stopped_at.timestamp() if shadow.stopped_at else (time.time() if now is None else now)
    samples = [s for s in store.metrics_samples(deployment_id, shadow.started_at.timestamp())
               if s.sampled_at <= until]
    release = deployment.k8s_service_name
    live = sum((s.counters for s in samples if s.release == release), Counters())
    candidate = sum((s.counters for s in samples if s.release == shadow_release(release)), Counters())
    rows = live.shadow_agreed + live.shadow_disagreed
    last = max((s.sampled_at for s in samples), default=None)
    return ShadowReport(
        deployment_id=deployment_id, shadow=shadow,
        sampled_at=datetime.fromtimestamp(last, UTC) if last is not None else None,
        mirrored=live.shadow_compared + live.shadow_failed, dropped=live.shadow_dropped,
        candidate_errors=live.shadow_failed, rows_compared=rows,
        agreement=live.shadow_agreed / rows if rows else None,
        proba_mean_abs_diff=live.shadow_proba_abs_diff / live.shadow_proba_rows if live.shadow_proba_rows else None,
        live=Figures.of(live), candidate=Figures.of(candidate),
        copy_p50_ms=quantile_ms(0.5, live.shadow_latency), copy_p99_ms=quantile_ms(0.99, live.shadow_latency),
    )


"""Canary rollouts as users start and end them, and as the deployer's decider moves them.

Rules:
- a canary starts on a READY deployment with no canary in progress, to a READY version of the
  same model other than the one it serves; the stable version keeps serving beside it;
- while a canary progresses, the version cannot be changed by other means (promote or abort
  first); replicas can;
- ``promote`` and ``abort`` are the owner's early decisions; ``evaluate`` is the deployer's, from the
  metrics samples of the candidate's and the stable release since the step began
  (``domain.rollouts.decide``);
- every decision is a conditional write on the generation read (``Store.write_rollout``): of two
  deciders working from the same state, one lands and the other finds the record changed and
  does nothing, so duplicated, reordered or retried runs never take two decisions for one step.
"""

from __future__ import annotations

from datetime import UTC, datetime

from aws_lambda_powertools import Logger

from modelport.domain.entities import Deployment, DeploymentStatus
from modelport.domain.errors import BadRequest, Conflict
from modelport.domain.rollouts import CanaryRequest, Decision, Rollout, RolloutState, Verdict, canary_release, decide
from modelport.domain.serving_metrics import total
from modelport.services.deployments import (
    CONCURRENT_WRITE_RETRIES,
    deployable_version,
    ensure_changeable,
    ensure_converged,
    shadow_running,
    too_busy,
)
from modelport.store.repository import Store

logger = Logger(service="modelport")


def start_canary(store: Store, owner: str, deployment_id: int, version_id: int, request: CanaryRequest, *,
                 now: datetime | None = None) -> Deployment:
    for _ in range(CONCURRENT_WRITE_RETRIES):
        current = store.get_deployment(owner, deployment_id)
        ensure_changeable(current)
        if current.rollout and current.rollout.progressing:
            if current.rollout.candidate_version_id == version_id:
                return current  # asked again: the same canary
            raise Conflict(f"deployment {deployment_id} already has a canary of version "
                           f"{current.rollout.candidate_version_id}; promote or abort it first",
                           code="rollout_in_progress")
        if current.shadow is not None and current.shadow.running:
            raise shadow_running(current)
        ensure_converged(current, "a canary")
        if version_id == current.version_id:
            raise BadRequest(f"deployment {deployment_id} already serves version {version_id}",
                             code="canary_of_same_version")
        deployable_version(store, owner, current, version_id)
        started = now or datetime.now(UTC)
        rollout = Rollout(**request.model_dump(), candidate_version_id=version_id,
                          stable_version_id=current.version_id, started_at=started, step_started_at=started)
        changed = store.write_rollout(current, rollout)
        if changed is not None:
            return changed
    raise too_busy(deployment_id)


def _progressing(store: Store, owner: str, deployment_id: int) -> tuple[Deployment, Rollout]:
    current = store.get_deployment(owner, deployment_id)
    ensure_changeable(current)
    if current.rollout is None or not current.rollout.progressing:
        raise Conflict(f"deployment {deployment_id} has no canary in progress", code="no_rollout")
    return current, current.rollout


def promote(store: Store, owner: str, deployment_id: int) -> Deployment:
    """The owner's call: all traffic to the candidate now."""
    for _ in range(CONCURRENT_WRITE_RETRIES):
        current, rollout = _progressing(store, owner, deployment_id)
        changed = _apply(store, current, rollout, Verdict.PROMOTE, "promoted by the owner")
        if changed is not None:
            return changed
    raise too_busy(deployment_id)


def abort(store: Store, owner: str, deployment_id: int) -> Deployment:
    """The owner's call: all traffic back to the stable version, the candidate removed."""
    for _ in range(CONCURRENT_WRITE_RETRIES):
        current, rollout = _progressing(store, owner, deployment_id)
        changed = _apply(store, current, rollout, None, "aborted by the owner")
        if changed is not None:
            return changed
    raise too_busy(deployment_id)


def _apply(store: Store, current: Deployment, rollout: Rollout, verdict: Verdict | None, reason: str, *,
           now: datetime | None = None, decision: Rollout | None = None) -> Deployment | None:
    """Write the rollout's next state; None if the record changed since it was read."""
    now = now or datetime.now(UTC)
    base = decision or rollout
    if verdict == Verdict.ADVANCE:
        return store.write_rollout(current, base.model_copy(update={
            "step": rollout.step + 1, "step_started_at": now, "reason": reason}))
    if verdict == Verdict.PROMOTE:
        promoted = base.model_copy(update={"state": RolloutState.PROMOTED, "step": len(rollout.steps),
                                           "reason": reason})
        return store.write_rollout(current, promoted, version_id=rollout.candidate_version_id)
    state = RolloutState.ROLLED_BACK if verdict == Verdict.ROLL_BACK else RolloutState.ABORTED
    return store.write_rollout(current, base.model_copy(update={"state": state, "reason": reason}))


def evaluate(store: Store, *, now: datetime | None = None) -> list[tuple[int, Decision]]:
    """The deployer's decisions for every canary in progress, from the metrics samples."""
    now = now or datetime.now(UTC)
    decisions = []
    for deployment in store.all_deployments():
        rollout = deployment.rollout
        if rollout is None or not rollout.progressing or deployment.status != DeploymentStatus.READY \
                or deployment.observed_generation < deployment.generation:
            continue  # not yet serving the step's weight: nothing measured of it
        samples = store.metrics_samples(deployment.id, rollout.step_started_at.timestamp())
        release = deployment.k8s_service_name
        candidate = total(s for s in samples if s.release == canary_release(release))
        stable = total(s for s in samples if s.release == release)
        decision = decide(rollout, candidate, stable, now)
        if decision.verdict == Verdict.HOLD:
            continue
        measured = rollout.model_copy(update={"candidate": candidate, "stable": stable})
        written = _apply(store, deployment, rollout, decision.verdict, decision.reason, now=now, decision=measured)
        if written is not None:
            logger.info("rollout decision", extra={"deployment_id": deployment.id, "verdict": decision.verdict,
                                                   "reason": decision.reason})
            decisions.append((deployment.id, decision))
    return decisions

"""Level-triggered reconcile: read the record as it is now, compare the desired state with the
cluster, converge, write the truth back. A replayed, duplicated or out-of-order stream record
only ever leads here, so it is harmless: the record, not the event, says what to do.

Rules (issue 4 / the seed):
- create or change -> DEPLOYING (first install) or UPDATING, ``deploy``, then READY with the
  URL, in a write that lands only while the record still asks for the generation deployed;
- a first install that fails -> the release is removed, the record FAILED with a reason a user
  can act on and a TTL (``FAILED_RECORD_TTL_SECONDS``; 0 deletes it at once, the seed's rule);
- an update that fails -> rolled back to the last good revision, READY again on the previous
  version and replicas, with a message saying why the update failed;
- DELETING -> uninstall, then the record goes; if the cluster stays unreachable past the
  retries the record goes anyway (the seed's rule) and the leftover release is logged for the sweep.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any, Protocol, TypeVar

from aws_lambda_powertools import Logger

from modelport.deploy.driver import ClusterDriver, ClusterError, DeploySpec, ReleaseInfo
from modelport.domain.entities import (
    TRANSIENT_STATUSES,
    Deployment,
    DeploymentStatus,
    Version,
    VersionStatus,
)
from modelport.domain.paths import parse_s3_path
from modelport.domain.rollouts import Rollout, RolloutState, Shadow, ShadowState, canary_release, shadow_release
from modelport.settings import Settings

logger = Logger(service="modelport")
T = TypeVar("T")

#: time kept in hand beyond helm's own timeout before starting an install in a Lambda batch
SAFETY_MARGIN_SECONDS = 30


class Action(StrEnum):
    NOTHING = "nothing"  # already converged, or not the deployer's to act on
    DEPLOYED = "deployed"
    FAILED = "failed"
    ROLLED_BACK = "rolled_back"
    DELETED = "deleted"
    SUPERSEDED = "superseded"  # a newer desired state arrived meanwhile; its own event follows
    REMOVED_ORPHAN = "removed_orphan"


@dataclass
class Outcome:
    deployment_id: int
    action: Action
    message: str = ""


class DeploymentRecords(Protocol):
    """What the deployer needs of the table (``store.repository.Store`` is the implementation; the
    unit tests use ``tests/support/deployment_records.py``, an in-memory fake). Every write is
    conditional: None or False means it did not land because the record changed meanwhile (a newer
    desired state, a deletion)."""

    def find_deployment(self, deployment_id: int) -> Deployment | None: ...

    def find_version(self, version_id: int) -> Version | None: ...

    def all_deployments(self) -> list[Deployment]: ...

    def set_deployment_status(
        self, deployment_id: int, status: DeploymentStatus, message: str | None, *,
        generation: int | None = None, observed_generation: int | None = None,
        deployed: tuple[int, int] | None = None, restore: tuple[int, int] | None = None,
    ) -> Deployment | None: ...

    def fail_deployment(
        self, deployment_id: int, message: str, *, generation: int, expires_in: int
    ) -> Deployment | None: ...

    def delete_deployment_record(self, deployment_id: int, *, generation: int | None = None) -> bool: ...

    def request_reinstall(self, deployment_id: int, *, generation: int) -> bool: ...

    def write_rollout(self, current: Deployment, rollout: Rollout, *, version_id: int | None = None
                      ) -> Deployment | None: ...

    def write_shadow(self, current: Deployment, shadow: Shadow, *, rollout: Rollout | None = None
                     ) -> Deployment | None: ...


class NotEnoughTime(Exception):
    """The install could outlive the function: leave the record for a retry, do not start it."""


def build_spec(deployment: Deployment, version: Version, settings: Settings) -> DeploySpec:
    """The driver's view of a deployment: the version's S3 path parsed, settings applied."""
    assert version.s3_path is not None
    bucket, key = parse_s3_path(version.s3_path)
    requirements = version.requirements_artifact
    image = settings.model_server_image
    return DeploySpec(
        deployment_id=deployment.id,
        namespace=deployment.namespace,
        release=deployment.k8s_service_name,
        model_bucket=bucket,
        model_key=key,
        model_sha256=version.model_artifact.sha256 if version.model_artifact else None,
        model_version_id=version.model_artifact.version_id if version.model_artifact else None,
        requirements_key=requirements.key if requirements else None,
        requirements_sha256=requirements.sha256 if requirements else None,
        requirements_version_id=requirements.version_id if requirements else None,
        trusted_globals=tuple(version.trusted_globals),
        predict_token_sha256=deployment.predict_token_sha256,
        replicas=deployment.replicas,
        image=image,
        ingress_host=settings.ingress_host,
        ingress_base_path=settings.ingress_base_path,
        ingress_class_name=settings.ingress_class_name,
        s3_endpoint=settings.cluster_s3_endpoint or None,
        s3_use_ssl=settings.cluster_s3_use_ssl,
        s3_region=settings.aws_region,
        s3_access_key=settings.minio_access_key,
        s3_secret_key=settings.minio_secret_key,
        timeout_seconds=settings.helm_timeout_seconds,
        labels={"modelport.io/owner-namespace": deployment.namespace},
    )


class Reconciler:
    def __init__(
        self, store: DeploymentRecords, driver: ClusterDriver, settings: Settings,
        *, sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.store = store
        self.driver = driver
        self.settings = settings
        self._sleep = sleep

    # -------------------------------------------------------------- cluster calls with retries
    def _with_retries(self, what: str, call: Callable[[], T]) -> T:
        """Retry what fails because the cluster could not be reached; raise the last error."""
        attempts = max(1, self.settings.cluster_retries)
        for attempt in range(1, attempts + 1):
            try:
                return call()
            except ClusterError as exc:
                if not exc.retryable or attempt == attempts:
                    raise
                delay = self.settings.cluster_retry_backoff_seconds * 2 ** (attempt - 1)
                logger.warning(f"{what}: cluster unreachable, retry {attempt}/{attempts - 1} in {delay:.1f}s",
                               extra={"error": exc.message})
                self._sleep(delay)
        raise AssertionError("unreachable")

    # -------------------------------------------------------------- one deployment
    def reconcile(self, deployment_id: int, *, seconds_left: float | None = None) -> Outcome:
        deployment = self.store.find_deployment(deployment_id)
        if deployment is None:
            return Outcome(deployment_id, Action.NOTHING, "no record")
        if deployment.status == DeploymentStatus.DELETING:
            return self._delete(deployment)
        if deployment.status == DeploymentStatus.FAILED:
            return Outcome(deployment_id, Action.NOTHING, "failed; expires")
        if deployment.status == DeploymentStatus.READY and deployment.observed_generation >= deployment.generation:
            return Outcome(deployment_id, Action.NOTHING, "converged")
        needed = self.settings.helm_timeout_seconds + SAFETY_MARGIN_SECONDS
        if seconds_left is not None and seconds_left < needed:
            raise NotEnoughTime(f"deployment {deployment_id}: {seconds_left:.0f}s left, an install may take {needed}s")
        return self._converge(deployment)

    def _converge(self, deployment: Deployment) -> Outcome:
        first_install = deployment.deployed_version_id is None
        generation = deployment.generation
        working = DeploymentStatus.DEPLOYING if first_install else DeploymentStatus.UPDATING
        version = self.store.find_version(deployment.version_id)
        if version is None or version.status != VersionStatus.READY or not version.s3_path:
            problem = f"version {deployment.version_id} is not READY with an uploaded artifact"
            return self._failed(deployment, generation, first_install, problem)
        message = (
            f"installing version {version.version} with {deployment.replicas} replica(s)" if first_install
            else f"rolling out version {version.version} with {deployment.replicas} replica(s)"
        )
        if self.store.set_deployment_status(deployment.id, working, message, generation=generation) is None:
            return Outcome(deployment.id, Action.SUPERSEDED)
        spec = build_spec(deployment, version, self.settings)
        shadow = deployment.shadow
        if shadow is not None and shadow.running:
            shadow_ended = self._start_shadow(deployment, shadow)
            if shadow_ended is not None:
                return shadow_ended
            spec = spec.model_copy(update={"mirror_release": shadow_release(spec.release),
                                           "mirror_percent": shadow.percent, "mirror_tolerance": shadow.tolerance})
        try:
            self._with_retries(f"deploy {spec.release}", lambda: self.driver.deploy(spec))
        except ClusterError as exc:
            return self._failed(deployment, generation, first_install, _describe(exc))
        if shadow is not None and not shadow.running:  # the live servers copy no more: the shadow can go
            self._remove_trial(spec.namespace, shadow_release(spec.release))
        canary_ended = self._converge_canary(deployment, spec)
        if canary_ended is not None:
            return canary_ended
        written = self.store.set_deployment_status(
            deployment.id, DeploymentStatus.READY, trial_message(deployment), generation=generation,
            observed_generation=generation, deployed=(deployment.version_id, deployment.replicas),
        )
        if written is None:
            return Outcome(deployment.id, Action.SUPERSEDED, "deployed, but a newer state was asked meanwhile")
        logger.info("deployment ready", extra={"deployment_id": deployment.id, "release": spec.release})
        return Outcome(deployment.id, Action.DEPLOYED)

    def _converge_canary(self, deployment: Deployment, stable: DeploySpec) -> Outcome | None:
        """The candidate's release beside the stable one at the step's weight while a canary
        progresses; gone otherwise. A candidate that cannot start ends the canary (rolled back)."""
        rollout, name = deployment.rollout, canary_release(stable.release)
        if rollout is None:
            return None  # never had a canary
        if not rollout.progressing:
            self._remove_trial(stable.namespace, name)
            return None
        problem = self._install_trial(deployment, rollout.candidate_version_id, name, rollout.weight, "candidate",
                                      canary_weight=rollout.weight)
        if problem is None:
            return None
        self._remove_trial(stable.namespace, name)
        ended = rollout.model_copy(update={"state": RolloutState.ROLLED_BACK, "reason": problem})
        if self.store.write_rollout(deployment, ended) is None:
            return Outcome(deployment.id, Action.SUPERSEDED, problem)
        return Outcome(deployment.id, Action.ROLLED_BACK, problem)  # its own stream record converges it

    def _start_shadow(self, deployment: Deployment, shadow: Shadow) -> Outcome | None:
        """The shadow's release (no ingress, a share of the live replicas) ready before the live
        servers copy to it. One that cannot start ends the shadow (stopped, with the reason)."""
        name = shadow_release(deployment.k8s_service_name)
        problem = self._install_trial(deployment, shadow.version_id, name, shadow.percent, "shadow",
                                      ingress_enabled=False, predict_token_sha256=None,
                                      mirrored_by=deployment.k8s_service_name)
        if problem is None:
            return None
        self._remove_trial(deployment.namespace, name)
        ended = shadow.model_copy(update={"state": ShadowState.STOPPED, "reason": problem,
                                          "stopped_at": datetime.now(UTC)})
        if self.store.write_shadow(deployment, ended) is None:
            return Outcome(deployment.id, Action.SUPERSEDED, problem)
        return Outcome(deployment.id, Action.ROLLED_BACK, problem)  # its own stream record converges it

    def _install_trial(self, deployment: Deployment, version_id: int, name: str, percent: int, what: str,
                       **changes: Any) -> str | None:
        """A canary's or shadow's release ``name`` of ``version_id``, with that share of the live
        replicas (at least one) and ``changes`` to its spec; the problem when it cannot be, else None."""
        candidate = self.store.find_version(version_id)
        if candidate is None or candidate.status != VersionStatus.READY or not candidate.s3_path:
            return f"version {version_id} is no longer READY with an uploaded artifact"
        spec = build_spec(deployment, candidate, self.settings).model_copy(update={
            "release": name, "replicas": max(1, -(-deployment.replicas * percent // 100)), **changes})
        try:
            self._with_retries(f"deploy {name}", lambda: self.driver.deploy(spec))
        except ClusterError as exc:
            return f"the {what} did not start: {_describe(exc)}"
        return None

    def _remove_trial(self, namespace: str, name: str) -> None:
        """A canary's or shadow's release gone (idempotent); if the cluster refuses, the sweep's job."""
        try:
            self._with_retries(f"remove {name}", lambda: self.driver.remove(namespace, name))
        except ClusterError as exc:
            logger.warning("release not removed; the sweep will", extra={"release": name, "error": exc.message})

    def _failed(self, deployment: Deployment, generation: int, first_install: bool, reason: str) -> Outcome:
        ns, release = deployment.namespace, deployment.k8s_service_name
        if first_install:
            try:
                self._with_retries(f"remove {release}", lambda: self.driver.remove(ns, release))
            except ClusterError as exc:
                logger.warning("could not remove a failed release; the sweep will", extra={
                    "release": release, "namespace": ns, "error": exc.message})
            message = f"deployment failed: {reason}"
            ttl = self.settings.failed_record_ttl_seconds
            if ttl <= 0:
                self.store.delete_deployment_record(deployment.id, generation=generation)
                logger.warning(message, extra={"deployment_id": deployment.id})
                return Outcome(deployment.id, Action.FAILED, message)
            written = self.store.fail_deployment(deployment.id, message, generation=generation, expires_in=ttl)
            if written is None:
                return Outcome(deployment.id, Action.SUPERSEDED, message)
            return Outcome(deployment.id, Action.FAILED, message)
        # a failed update never takes a serving deployment down
        try:
            self._with_retries(f"rollback {release}", lambda: self.driver.rollback(ns, release))
        except ClusterError as exc:
            logger.warning("rollback failed", extra={"release": release, "error": exc.message})
        old_version, old_replicas = deployment.deployed_version_id, deployment.deployed_replicas
        assert old_version is not None and old_replicas is not None
        old = self.store.find_version(old_version)
        label = old.version if old else str(old_version)
        message = (
            f"update failed: {reason}; rolled back, still serving version {label} with {old_replicas} replica(s)"
        )
        written = self.store.set_deployment_status(
            deployment.id, DeploymentStatus.READY, message, generation=generation,
            restore=(old_version, old_replicas),
        )
        return Outcome(deployment.id, Action.ROLLED_BACK if written else Action.SUPERSEDED, message)

    def _delete(self, deployment: Deployment) -> Outcome:
        ns, release = deployment.namespace, deployment.k8s_service_name
        if deployment.rollout is not None:  # a canary's release, if one is left (else the sweep's)
            self._remove_trial(ns, canary_release(release))
        if deployment.shadow is not None:  # and a shadow's
            self._remove_trial(ns, shadow_release(release))
        try:
            self._with_retries(f"uninstall {release}", lambda: self.driver.remove(ns, release))
        except ClusterError as exc:
            if not exc.retryable:
                raise
            logger.warning(
                "cluster unreachable: deleting the record anyway; the sweep removes the leftover release",
                extra={"leftover_release": release, "namespace": ns, "error": exc.message},
            )
        self.store.delete_deployment_record(deployment.id)
        return Outcome(deployment.id, Action.DELETED)

    def remove_leftover(self, namespace: str, release: str) -> Outcome | None:
        """A REMOVE stream record: the record is gone; make sure its release is too."""
        try:
            removed = self.driver.remove(namespace, release)
        except ClusterError as exc:
            logger.warning("leftover release not removed", extra={"release": release, "error": exc.message})
            return None
        return Outcome(0, Action.REMOVED_ORPHAN, f"{namespace}/{release}") if removed else None

    def _report_health(self, deployment: Deployment, release: ReleaseInfo) -> None:
        """READY never hides replicas that stopped being ready after the rollout (a crash loop):
        the record's message says so while it lasts, and is cleared once all are ready again."""
        current = deployment.status_message or ""
        if release.problem:
            wanted: str | None = DEGRADED + release.problem
        elif current.startswith(DEGRADED):
            wanted = None
        else:
            return
        if wanted != (deployment.status_message or None):
            self.store.set_deployment_status(deployment.id, DeploymentStatus.READY, wanted,
                                             generation=deployment.generation)

    # -------------------------------------------------------------- the sweep
    def sweep(self, *, now: datetime | None = None, stuck_before: datetime | None = None) -> list[Outcome]:
        """Uninstall modelport releases with no record; re-drive records stuck in a transient
        status longer than the helm timeout (or since before ``stuck_before``: a deployer that
        started then knows nothing earlier is still being worked on), and READY records whose
        release is missing."""
        now = now or datetime.now(UTC)
        outcomes: list[Outcome] = []
        # releases first: a release is installed only after its record is written, so every
        # release listed here has its record in the scan that follows (no live release looks orphaned)
        releases = self.driver.list_releases()
        deployments = {d.id: d for d in self.store.all_deployments()}
        present = {(r.namespace, r.release): r for r in releases}
        for release in releases:
            owner = deployments.get(release.deployment_id or 0)
            orphan = owner is None or release.namespace != owner.namespace or release.release not in owner.release_names
            if orphan and self.driver.remove(release.namespace, release.release):
                outcomes.append(Outcome(release.deployment_id or 0, Action.REMOVED_ORPHAN,
                                            f"{release.namespace}/{release.release}"))
        stuck_after = timedelta(seconds=self.settings.helm_timeout_seconds + SAFETY_MARGIN_SECONDS)
        for deployment in deployments.values():
            changed = deployment.status_changed_at or deployment.updated_at
            stuck = deployment.status in TRANSIENT_STATUSES and (
                now - changed > stuck_after or (stuck_before is not None and changed < stuck_before)
            )
            missing = (
                deployment.status == DeploymentStatus.READY
                and (deployment.namespace, deployment.k8s_service_name) not in present
            )
            if not (stuck or missing):
                if deployment.status == DeploymentStatus.READY:
                    self._report_health(deployment, present[(deployment.namespace, deployment.k8s_service_name)])
                continue
            if missing and not self.store.request_reinstall(deployment.id, generation=deployment.generation):
                continue  # changed meanwhile: its own stream record drives it
            try:
                outcomes.append(self.reconcile(deployment.id))
            except ClusterError as exc:
                outcomes.append(Outcome(deployment.id, Action.NOTHING, f"still unreachable: {exc.message}"))
        return outcomes


DEGRADED = "degraded: "


def trial_message(deployment: Deployment) -> str | None:
    """The status message of a converged deployment with a canary or a shadow (None: neither)."""
    parts = [m for m in (rollout_message(deployment.rollout), shadow_message(deployment.shadow)) if m]
    return "; ".join(parts) or None


def shadow_message(shadow: Shadow | None) -> str | None:
    if shadow is None:
        return None
    if shadow.running:
        return f"shadow: version id {shadow.version_id} gets a copy of {shadow.percent}% of requests"
    if shadow.state == ShadowState.PROMOTED:
        return None  # the canary's message says what happens now
    return f"shadow of version id {shadow.version_id} stopped ({shadow.reason})"


def rollout_message(rollout: Rollout | None) -> str | None:
    """The status message a canary gives the record once converged."""
    if rollout is None:
        return None
    candidate = f"version id {rollout.candidate_version_id}"
    if rollout.progressing:
        return (f"canary: {candidate} gets {rollout.weight}% of requests "
                f"(step {rollout.step + 1} of {len(rollout.steps)})")
    if rollout.state == RolloutState.PROMOTED:
        return f"canary promoted: {candidate} serves all requests ({rollout.reason})"
    verb = "rolled back" if rollout.state == RolloutState.ROLLED_BACK else "aborted"
    return (f"canary {verb}: all requests to version id {rollout.stable_version_id} again; "
            f"{candidate} removed ({rollout.reason})")


def _describe(exc: ClusterError) -> str:
    if exc.pod_reason and exc.pod_reason not in exc.message:
        return f"{exc.message} (pod: {exc.pod_reason})"
    return exc.message


@dataclass
class SweepReport:
    outcomes: list[Outcome] = field(default_factory=list)

    def lines(self) -> list[str]:
        return [f"{o.action.value:15} deployment {o.deployment_id} {o.message}".rstrip() for o in self.outcomes]


def sweep(store: DeploymentRecords, driver: ClusterDriver, settings: Settings, *,
          stuck_before: datetime | None = None) -> SweepReport:
    return SweepReport(Reconciler(store, driver, settings).sweep(stuck_before=stuck_before))

"""The records a user owns, as plain pydantic models, and the rules of their statuses."""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum

from pydantic import BaseModel, Field

from modelport.domain.rollouts import Rollout, Shadow, canary_release, shadow_release


def utcnow() -> datetime:
    now = datetime.now(UTC)
    return now.replace(microsecond=now.microsecond // 1000 * 1000)


class VersionStatus(StrEnum):
    PENDING_UPLOAD = "PENDING_UPLOAD"
    READY = "READY"
    REJECTED = "REJECTED"


class DeploymentStatus(StrEnum):
    PENDING = "PENDING"  # recorded; the deployer has not acted yet
    DEPLOYING = "DEPLOYING"  # first install in progress
    UPDATING = "UPDATING"  # a new desired state is being rolled out
    READY = "READY"  # serving the recorded version and replicas
    FAILED = "FAILED"  # first install failed; release removed; record expires (TTL)
    DELETING = "DELETING"  # release being removed; then the record goes


#: statuses in which the deployer still has work to do
TRANSIENT_STATUSES = frozenset(
    {DeploymentStatus.PENDING, DeploymentStatus.DEPLOYING, DeploymentStatus.UPDATING, DeploymentStatus.DELETING}
)


class AutoDeploy(BaseModel):
    enabled: bool = False
    replicas: int = 1


class Artifact(BaseModel):
    """One stored file of a version."""

    key: str
    size: int
    sha256: str
    etag: str | None = None
    # the S3 object version that was checked (the bucket is versioned): what every replica fetches,
    # so a later write to the key (an old presigned URL used again) changes nothing that serves
    version_id: str | None = None


class Model(BaseModel):
    id: int
    owner: str
    name: str
    description: str | None = None
    auto_deploy: AutoDeploy = Field(default_factory=AutoDeploy)
    created_at: datetime
    updated_at: datetime


class Version(BaseModel):
    id: int
    model_id: int
    owner: str
    version: str
    status: VersionStatus = VersionStatus.PENDING_UPLOAD
    status_message: str | None = None
    s3_path: str | None = None
    model_artifact: Artifact | None = None
    requirements_artifact: Artifact | None = None
    #: globals the owner trusts beyond the allow-list, for this version's file only (module.Name)
    trusted_globals: list[str] = Field(default_factory=list)
    deployments: int = 0  # deployments whose desired version is this one
    created_at: datetime
    updated_at: datetime


class Deployment(BaseModel):
    id: int
    owner: str
    namespace: str
    model_id: int
    version_id: int
    replicas: int
    k8s_service_name: str
    url: str
    status: DeploymentStatus = DeploymentStatus.PENDING
    status_message: str | None = None
    # desired-state counter: every change of version or replicas adds one; the deployer writes
    # back the generation it converged to, and never overwrites a newer desired state.
    generation: int = 1
    observed_generation: int = 0
    # what the cluster last served successfully (for rollback of a failed update)
    deployed_version_id: int | None = None
    deployed_replicas: int | None = None
    follow_latest: bool = False  # auto-deploy moves this deployment to each new READY version
    predict_token_sha256: str | None = None  # set: the prediction URL needs the deployment's token
    rollout: Rollout | None = None  # a canary beside the stable version, or the last one's outcome
    shadow: Shadow | None = None  # a candidate given copies of requests, or the last one's outcome
    status_changed_at: datetime | None = None
    created_at: datetime
    updated_at: datetime


    @property
    def release_names(self) -> tuple[str, ...]:
        """The releases this deployment should have: its own, its canary's while one progresses and
        its shadow's while one runs."""
        names = [self.k8s_service_name]
        if self.rollout is not None and self.rollout.progressing:
            names.append(canary_release(self.k8s_service_name))
        if self.shadow is not None and self.shadow.running:
            names.append(shadow_release(self.k8s_service_name))
        return tuple(names)


def release_name(deployment_id: int, created_at: datetime) -> str:
    """The seed's ``model-{id}-{unix time}`` Helm release / Service name."""
    return f"model-{deployment_id}-{int(created_at.timestamp())}"

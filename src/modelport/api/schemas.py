"""Request and response bodies of the HTTP API (pydantic v2; unknown fields are refused)."""

from __future__ import annotations

from datetime import datetime
from typing import Generic, TypeVar

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from modelport.domain.entities import AutoDeploy, DeploymentStatus, VersionStatus
from modelport.domain.pickle_policy import parse_trusted_globals
from modelport.domain.rollouts import CanaryRequest, Rollout, Shadow, ShadowRequest

T = TypeVar("T")


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ModelCreate(Strict):
    name: str = Field(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
    description: str | None = Field(default=None, max_length=2000)


class ModelUpdate(Strict):
    description: str | None = Field(default=None, max_length=2000)
    auto_deploy: AutoDeploy | None = None


class ModelOut(BaseModel):
    id: int
    name: str
    description: str | None
    auto_deploy: AutoDeploy
    created_at: datetime
    updated_at: datetime


class VersionCreate(Strict):
    version: str | None = Field(default=None, min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9._+-]*$")
    #: the owner's own classes this version's model file may use beyond modelport's allow-list
    trusted_globals: list[str] = Field(default_factory=list, max_length=32)

    @field_validator("trusted_globals")
    @classmethod
    def _trusted(cls, value: list[str]) -> list[str]:
        return list(parse_trusted_globals(value))


class ArtifactOut(BaseModel):
    size: int
    sha256: str
    version_id: str | None = Field(default=None, description="the S3 object version that was checked and is served")


class VersionOut(BaseModel):
    id: int
    model_id: int
    version: str
    status: VersionStatus
    status_message: str | None
    s3_path: str | None
    model_artifact: ArtifactOut | None
    requirements_artifact: ArtifactOut | None
    trusted_globals: list[str] = []
    created_at: datetime
    updated_at: datetime


class DeploymentCreate(Strict):
    replicas: int = 1


class RolloutIn(CanaryRequest):
    """How to move to ``version_id``: a canary (``domain.rollouts``). Without it, all at once."""

    model_config = ConfigDict(extra="forbid")


class ShadowIn(ShadowRequest):
    """``PUT /deployments/{id}/shadow``: run ``version_id`` beside the live version on copies."""

    model_config = ConfigDict(extra="forbid")


class DeploymentUpdate(Strict):
    replicas: int | None = None
    version_id: int | None = Field(default=None, ge=1)
    rollout: RolloutIn | None = None

    @model_validator(mode="after")
    def _rollout_needs_a_version(self) -> DeploymentUpdate:
        if self.rollout is not None and self.version_id is None:
            raise ValueError("a rollout moves the deployment to version_id: give it")
        return self


class DeploymentOut(BaseModel):
    """The seed's fields, plus status and status_message."""

    id: int
    version_id: int
    k8s_service_name: str
    url: str
    replicas: int
    created_at: datetime
    updated_at: datetime
    status: DeploymentStatus
    status_message: str | None
    rollout: Rollout | None = Field(
        default=None, description="the canary in progress, or how the last one ended (state, reason, figures)"
    )
    shadow: Shadow | None = Field(
        default=None, description="the shadow running (GET .../shadow has its figures), or how the last one ended"
    )


class PageOut(BaseModel, Generic[T]):
    items: list[T]
    next_cursor: str | None = None


class ErrorOut(BaseModel):
    code: str
    message: str


class UploadUrlRequest(Strict):
    requirements: bool = False
    auto_deploy: bool = False


class PresignedPostOut(BaseModel):
    """POST ``fields`` (in order) plus the file as the last form field ``file`` to ``url``."""

    url: str
    fields: dict[str, str]
    key: str


class UploadUrlOut(BaseModel):
    model: PresignedPostOut
    requirements: PresignedPostOut | None
    expires_in: int
    max_bytes: int


class MeOut(BaseModel):
    """Who the credentials belong to, and where their deployments run."""

    owner: str
    namespace: str


class TokenOut(BaseModel):
    """Whether a deployment's prediction URL needs its token; the token itself only when issued."""

    deployment_id: int
    protected: bool
    token: str | None = Field(default=None, description="shown once, when issued; send as 'Authorization: Bearer'")


class MetricsPointOut(BaseModel):
    """One minute of a deployment's traffic, as its model servers counted it."""

    at: datetime = Field(description="the minute's start (UTC)")
    requests: int = Field(description="prediction requests answered")
    errors: int = Field(description="of them, answered with a 5xx code")
    error_rate: float | None = Field(description="errors / requests; null without requests")
    p50_ms: float | None
    p99_ms: float | None
    mean_batch_rows: float | None = Field(description="rows per model call (micro-batches merge requests)")
    replicas_ready: int


class MetricsOut(BaseModel):
    deployment_id: int
    window_seconds: int
    interval_seconds: int
    sampled_at: datetime | None = Field(description="the last sample in the window; null: none yet")
    points: list[MetricsPointOut] = Field(description="minutes with a sample, oldest first")

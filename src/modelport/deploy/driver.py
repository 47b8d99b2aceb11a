"""The cluster driver interface: how the deployer reaches whatever runs the model servers.

Two drivers implement it: ``HelmDriver`` (``deploy/helm.py``; a Kubernetes cluster through the
helm and kubectl binaries) and a process-based local driver for the local platform. Nothing here
knows about helm: the reconcile logic speaks only these types, so it runs the same on either.

Contract, for every driver:

- ``deploy(spec)`` installs or upgrades the release ``spec.release`` in ``spec.namespace``
  (creating the namespace) and returns once it is ready (``DEPLOYED``) or raises ``ClusterError``.
  It never rolls back or removes anything by itself: the caller decides (``remove`` after a failed
  first install, ``rollback`` after a failed update).
- ``remove(namespace, release)`` is idempotent: True if something was removed, False if there was
  nothing to remove.
- ``status`` answers None for an unknown release.
- ``list_releases`` lists modelport's releases (labelled ``modelport.io/managed=true``) in
  ``user-*`` namespaces only.
- ``scrape(namespace, release)`` reads ``/metrics`` of each of the release's running model
  servers (in a cluster through the API server's pod proxy, as the API never reaches pods
  itself); a pod that cannot be read is listed with its error, not left out silently.
- ``ClusterError.retryable`` says whether trying again later can help (cluster unreachable,
  throttled, operation in progress) or not (the release itself failed: bad values, a pod that
  never becomes ready); its message is meant for the user and says what to do.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Protocol, runtime_checkable

from pydantic import BaseModel, ConfigDict, Field

from modelport.domain.errors import ModelportError

MANAGED_LABEL = "modelport.io/managed"
DEPLOYMENT_ID_LABEL = "modelport.io/deployment-id"
NAMESPACE_PREFIX = "user-"


class ReleasePhase(StrEnum):
    DEPLOYED = "deployed"  # installed and ready
    PENDING = "pending"  # an install, upgrade or rollback is under way
    FAILED = "failed"  # the last operation failed
    SUPERSEDED = "superseded"  # an older revision (only in history)
    UNINSTALLING = "uninstalling"
    UNKNOWN = "unknown"


class DeploySpec(BaseModel):
    """Everything a driver needs to run one deployment's model server."""

    model_config = ConfigDict(frozen=True)

    deployment_id: int = Field(ge=1)
    namespace: str = Field(min_length=1, max_length=63, description="the owner's namespace, user-{owner}")
    release: str = Field(min_length=1, max_length=53, description="the release name (k8s_service_name)")

    model_bucket: str = Field(min_length=1)
    model_key: str = Field(min_length=1)
    model_sha256: str | None = None
    model_version_id: str | None = Field(default=None, description="the S3 object version the checks read")
    model_name: str = "model"
    requirements_key: str | None = None
    requirements_sha256: str | None = None
    requirements_version_id: str | None = None
    trusted_globals: tuple[str, ...] = Field(default=(), description="the version owner's trust list (module.Name)")
    predict_token_sha256: str | None = Field(
        default=None, description="set: the prediction URL needs the deployment's token (its sha256 only)"
    )

    replicas: int = Field(default=1, ge=0)
    canary_weight: int | None = Field(
        default=None, ge=0, le=100,
        description="set: this release is a canary beside the deployment's stable one, given this share of requests",
    )
    mirror_release: str | None = Field(
        default=None, description="set: copy answered requests to this release's servers (a shadow, same namespace)"
    )
    mirror_percent: int = Field(default=100, ge=1, le=100)
    mirror_tolerance: float = Field(default=1e-6, ge=0)
    mirrored_by: str | None = Field(default=None, description="set: this release is the shadow of that one")
    image: str = Field(description="the model server image reference, repository:tag or repository@sha256:...")

    ingress_enabled: bool = True
    ingress_host: str = "localhost"
    ingress_base_path: str = "/api/v1/predict"
    ingress_class_name: str | None = "nginx"

    s3_endpoint: str | None = Field(default="minio:9000", description="as pods reach it; None means AWS S3")
    s3_use_ssl: bool = False
    s3_region: str = "us-east-1"
    s3_existing_secret: str | None = Field(default=None, description="a Secret with the credentials, if any")
    # credentials: kept out of repr() and model_dump(), so a logged spec never shows them
    s3_access_key: str | None = Field(default=None, repr=False, exclude=True)
    s3_secret_key: str | None = Field(default=None, repr=False, exclude=True)

    timeout_seconds: int = Field(default=300, ge=1, description="how long the release may take to become ready")
    labels: dict[str, str] = Field(default_factory=dict, description="extra release labels")

    @property
    def path(self) -> str:
        """The ingress path ``{base_path}/{deployment_id}``."""
        return "/" + "/".join(p for p in (self.ingress_base_path.strip("/"), str(self.deployment_id)) if p)


class ReleaseStatus(BaseModel):
    """What the cluster says about one release."""

    namespace: str
    release: str
    phase: ReleasePhase
    revision: int = 0
    message: str = Field(default="", description="helm's description of the last operation, or the failure")
    pod_reason: str | None = Field(default=None, description="why a pod is not ready, e.g. ImagePullBackOff: ...")
    deployment_id: int | None = None
    updated_at: datetime | None = None

    @property
    def ready(self) -> bool:
        return self.phase == ReleasePhase.DEPLOYED


class ReleaseInfo(BaseModel):
    """One modelport release, as listed."""

    namespace: str
    release: str
    phase: ReleasePhase
    revision: int
    deployment_id: int | None = None
    chart: str = ""
    updated_at: datetime | None = None
    problem: str | None = Field(
        default=None, description="why some of its replicas are not ready now (a crash loop, say); None: all are"
    )


class PodMetrics(BaseModel):
    """One model server's ``/metrics`` text as scraped, or why it could not be read."""

    pod: str = Field(description="the pod's name (locally: the release and replica number)")
    text: str | None = None
    error: str | None = None


class ClusterError(ModelportError):
    """The cluster could not do what was asked.

    ``retryable`` is True when the same call may succeed later (unreachable API server, timeouts
    talking to it, another operation in progress) and False when the release itself failed.
    ``pod_reason`` carries the failing pod's reason when it could be read.
    """

    status = 503
    code = "cluster_error"

    def __init__(
        self,
        message: str,
        *,
        retryable: bool,
        pod_reason: str | None = None,
        detail: str | None = None,
    ) -> None:
        super().__init__(message, code="cluster_unreachable" if retryable else "release_failed")
        self.retryable = retryable
        self.pod_reason = pod_reason
        self.detail = detail  # the raw tool output, for logs only

    def __repr__(self) -> str:
        return f"ClusterError({self.message!r}, retryable={self.retryable})"


@runtime_checkable
class ClusterDriver(Protocol):
    """What the deployer needs from a cluster. Implementations must be safe to call from several
    threads at once (a batch's records are reconciled concurrently)."""

    def deploy(self, spec: DeploySpec) -> ReleaseStatus:
        """Install or upgrade, wait until ready. Raises ClusterError."""
        ...

    def remove(self, namespace: str, release: str) -> bool:
        """Uninstall; True if something was removed, False if nothing was there. Raises ClusterError."""
        ...

    def status(self, namespace: str, release: str) -> ReleaseStatus | None:
        """The release's current status, None if there is no such release. Raises ClusterError."""
        ...

    def list_releases(self) -> list[ReleaseInfo]:
        """modelport's releases in user-* namespaces. Raises ClusterError."""
        ...

    def scrape(self, namespace: str, release: str) -> list[PodMetrics]:
        """``/metrics`` of each running model server of the release ([] for an unknown release).
        Raises ClusterError when the cluster cannot be reached."""
        ...

    def rollback(self, namespace: str, release: str) -> ReleaseStatus:
        """Return to the last revision that was deployed successfully and wait until ready.
        Raises ClusterError (also when there is no earlier good revision)."""
        ...

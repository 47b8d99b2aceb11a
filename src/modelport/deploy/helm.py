"""``HelmDriver``: the cluster driver for Kubernetes, and the only code in modelport that runs helm
(and kubectl, to read why a pod is not ready).

- Binaries: settings ``HELM_BIN``/``KUBECTL_BIN``, else the k8s-tools Lambda layer
  (``/opt/helm/helm``, ``/opt/kubectl/kubectl``), else PATH, else the tools that
  ``modelport.local.tools.ensure_tools()`` installs.
- Cluster access: settings ``KUBECONFIG`` (a path) or ``KUBECONFIG_SECRET_ARN`` (a Secrets Manager
  secret holding the kubeconfig, written once per process to a 0600 file).
- The chart: settings ``CHART_PATH``, else ``charts/model-serving`` found beside the package, the
  working directory or the Lambda task root.
- Values go to helm in a 0600 temporary file, never on the command line (they hold credentials).
- Helm's own ``--timeout`` bounds the wait; the subprocess gets a little more, so helm can report.

Helm 4 flags: ``--wait=watcher`` (kstatus), ``--server-side`` (``auto`` by default; the emulator the
tests use needs ``false``) and ``--rollback-on-failure`` (the successor of ``--atomic``, not used:
the reconcile logic decides between rollback and removal itself).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tempfile
import threading
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from aws_lambda_powertools import Logger

from modelport.deploy.driver import (
    DEPLOYMENT_ID_LABEL,
    MANAGED_LABEL,
    NAMESPACE_PREFIX,
    ClusterError,
    DeploySpec,
    PodMetrics,
    ReleaseInfo,
    ReleasePhase,
    ReleaseStatus,
)
from modelport.deploy.eks import TOKEN_LIFETIME_SECONDS, with_eks_tokens
from modelport.domain.model_server import parse_failure
from modelport.settings import Settings

logger = Logger(service="modelport")

LAYER_HELM = "/opt/helm/helm"
LAYER_KUBECTL = "/opt/kubectl/kubectl"
CHART_DIR = Path("charts") / "model-serving"
POD_SELECTOR_LABEL = "app.kubernetes.io/instance"

# how much longer than helm's own --timeout the subprocess may run (helm reports, cleans up)
SUBPROCESS_GRACE_SECONDS = 30
# timeout for quick calls that do not wait for resources (status, list, history, kubectl)
QUICK_TIMEOUT_SECONDS = 60

ServerSide = Literal["auto", "true", "false"]

_UNREACHABLE = re.compile(
    r"connection refused|no such host|i/o timeout|tls handshake timeout|network is unreachable|"
    r"no route to host|connection reset by peer|kubernetes cluster unreachable|server is currently unable|"
    r"dial tcp|goaway|unexpected eof|too many requests|etcdserver|http2: client connection lost|"
    r"the server was unable to return a response",
    re.IGNORECASE,
)
_IN_PROGRESS = re.compile(r"another operation \(install/upgrade/rollback\) is in progress", re.IGNORECASE)
_NOT_READY = re.compile(
    r"context deadline exceeded|timed out waiting|resource not ready|not ready|timeout waiting", re.IGNORECASE
)
_FORBIDDEN = re.compile(r"\bforbidden\b|unauthorized|you must be logged in", re.IGNORECASE)
_NOT_FOUND = re.compile(r"release: not found|not found", re.IGNORECASE)
_SCHEMA = re.compile(r"values don't meet the specifications of the schema|execution error at", re.IGNORECASE)

_secret_kubeconfig_lock = threading.Lock()
#: secret ARN -> (file, the secret's text, when a token in the file was made; None: no token)
_secret_kubeconfig: dict[str, tuple[Path, str, float | None]] = {}


# --- locating things ---------------------------------------------------------------------------


def find_binary(setting: str | None, layer_path: str, name: str) -> str:
    if setting:
        return setting
    if os.access(layer_path, os.X_OK):
        return layer_path
    found = shutil.which(name)
    if found:
        return found
    raise ClusterError(
        f"{name} is not installed here: set {name.upper()}_BIN, put it on PATH, or run `modelport tools`",
        retryable=False,
    )


def find_chart(setting: str | None) -> Path:
    if setting:
        return Path(setting)
    here = Path(__file__).resolve()
    candidates = [parent / CHART_DIR for parent in here.parents]
    candidates.append(Path.cwd() / CHART_DIR)
    if task_root := os.environ.get("LAMBDA_TASK_ROOT"):
        candidates.append(Path(task_root) / CHART_DIR)
    candidates.append(Path("/opt") / CHART_DIR)
    for candidate in candidates:
        if (candidate / "Chart.yaml").is_file():
            return candidate
    raise ClusterError(
        "the model-serving chart was not found; set CHART_PATH to the charts/model-serving directory",
        retryable=False,
    )


def kubeconfig_from_secret(arn: str, region: str | None = None, endpoint: str | None = None) -> Path:
    """The kubeconfig from Secrets Manager, in a 0600 temporary file: the secret is read once per
    process; an EKS ``aws eks get-token`` user is replaced by a token made here (Lambda has no AWS
    CLI, see deploy/eks.py), and the file is rewritten before that token expires."""
    with _secret_kubeconfig_lock:
        cached = _secret_kubeconfig.get(arn)
        fresh = cached is not None and cached[0].is_file() and (
            cached[2] is None or time.monotonic() - cached[2] < TOKEN_LIFETIME_SECONDS
        )
        if cached is not None and fresh:
            return cached[0]
        text = cached[1] if cached is not None else _read_secret(arn, region, endpoint)
        rendered = with_eks_tokens(text, region or os.environ.get("AWS_REGION", "us-east-1"))
        path = cached[0] if cached is not None else Path(
            tempfile.mkstemp(prefix="modelport-kubeconfig-", suffix=".yaml")[1]
        )
        path.write_text(rendered)
        os.chmod(path, 0o600)
        _secret_kubeconfig[arn] = (path, text, time.monotonic() if rendered != text else None)
        return path


def _read_secret(arn: str, region: str | None, endpoint: str | None = None) -> str:
    import boto3
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        client = boto3.client("secretsmanager", region_name=region, endpoint_url=endpoint)
        answer = client.get_secret_value(SecretId=arn)
    except (BotoCoreError, ClientError) as exc:
        raise ClusterError(f"could not read the kubeconfig secret: {exc}", retryable=True) from exc
    text = answer.get("SecretString")
    return str(text) if text is not None else answer["SecretBinary"].decode("utf-8")


# --- values ----------------------------------------------------------------------------------


def split_image(image: str) -> tuple[str, str, str]:
    """``repo:tag`` / ``repo@sha256:...`` / ``repo`` -> (repository, tag, digest)."""
    digest = ""
    if "@" in image:
        image, digest = image.split("@", 1)
    repository, tag = image, ""
    last = image.rsplit("/", 1)[-1]
    if ":" in last:
        repository, tag = image.rsplit(":", 1)
    return repository, tag, digest


def chart_values(spec: DeploySpec) -> dict[str, Any]:
    """The chart's values contract (charts/model-serving/values.yaml) for one deployment."""
    repository, tag, digest = split_image(spec.image)
    image: dict[str, Any] = {"repository": repository, "pullPolicy": "IfNotPresent"}
    if tag:
        image["tag"] = tag
    if digest:
        image["digest"] = digest
    model: dict[str, Any] = {"bucket": spec.model_bucket, "key": spec.model_key, "name": spec.model_name}
    if spec.model_sha256:
        model["sha256"] = spec.model_sha256
    if spec.model_version_id:
        model["versionId"] = spec.model_version_id
    if spec.requirements_key:
        model["requirementsKey"] = spec.requirements_key
    if spec.requirements_sha256:
        model["requirementsSha256"] = spec.requirements_sha256
    if spec.requirements_version_id:
        model["requirementsVersionId"] = spec.requirements_version_id
    if spec.trusted_globals:
        model["trustedGlobals"] = ",".join(spec.trusted_globals)
    s3: dict[str, Any] = {"endpoint": spec.s3_endpoint or "", "useSSL": spec.s3_use_ssl, "region": spec.s3_region}
    if spec.s3_existing_secret:
        s3["existingSecret"] = spec.s3_existing_secret
    elif spec.s3_access_key and spec.s3_secret_key:
        s3["accessKey"] = spec.s3_access_key
        s3["secretKey"] = spec.s3_secret_key
    ingress: dict[str, Any] = {
        "enabled": spec.ingress_enabled,
        "host": spec.ingress_host,
        "basePath": "/" + spec.ingress_base_path.strip("/"),
    }
    if spec.ingress_class_name is not None:
        ingress["className"] = spec.ingress_class_name
    if spec.canary_weight is not None:
        ingress["canaryWeight"] = spec.canary_weight
    values: dict[str, Any] = {
        "deploymentId": spec.deployment_id,
        "image": image,
        "replicaCount": spec.replicas,
        "model": model,
        "s3": s3,
        "ingress": ingress,
    }
    if spec.predict_token_sha256:
        values["auth"] = {"tokenSha256": spec.predict_token_sha256}
    if spec.mirror_release:
        values["mirror"] = {"release": spec.mirror_release, "percent": spec.mirror_percent,
                            "tolerance": spec.mirror_tolerance}
    if spec.mirrored_by:
        values["mirroredBy"] = spec.mirrored_by
    return values


# --- parsing helm's answers ------------------------------------------------------------------


def _last_error_line(stderr: str) -> str:
    lines = [line.strip() for line in stderr.strip().splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("Error:")]
    line = errors[-1] if errors else (lines[-1] if lines else "")
    line = line.removeprefix("Error:").strip()
    for prefix in ("UPGRADE FAILED:", "INSTALLATION FAILED:", "uninstall:", "ROLLBACK FAILED:"):
        line = line.removeprefix(prefix).strip()
    return line


def _phase(status: str) -> ReleasePhase:
    status = status.lower()
    if status == "deployed":
        return ReleasePhase.DEPLOYED
    if status == "failed":
        return ReleasePhase.FAILED
    if status == "superseded":
        return ReleasePhase.SUPERSEDED
    if status == "uninstalling":
        return ReleasePhase.UNINSTALLING
    if status.startswith("pending"):
        return ReleasePhase.PENDING
    return ReleasePhase.UNKNOWN


def _time(value: Any) -> datetime | None:
    if not isinstance(value, str) or not value:
        return None
    text = value.strip()
    # helm list: "2026-11-27 15:10:27.123456789 +0000 UTC"; helm status: RFC 3339
    match = re.match(r"(\d{4}-\d{2}-\d{2})[ T](\d{2}:\d{2}:\d{2})(\.\d+)?\s*(Z|[+-]\d{2}:?\d{2})?", text)
    if not match:
        return None
    fraction = (match.group(3) or "")[:7]
    zone = match.group(4) or "+00:00"
    zone = "+00:00" if zone == "Z" else zone
    try:
        return datetime.fromisoformat(f"{match.group(1)}T{match.group(2)}{fraction}{zone}")
    except ValueError:
        return None


def _deployment_id_from(release: dict[str, Any]) -> int | None:
    config = release.get("config") or {}
    value = config.get("deploymentId")
    if value is not None and str(value).isdigit():
        return int(value)
    labels = release.get("labels") or {}
    value = labels.get(DEPLOYMENT_ID_LABEL)
    if value is not None and str(value).isdigit():
        return int(value)
    match = re.fullmatch(r"model-(\d+)-\d+", str(release.get("name", "")))
    return int(match.group(1)) if match else None


def status_from_release(release: dict[str, Any]) -> ReleaseStatus:
    info = release.get("info") or {}
    return ReleaseStatus(
        namespace=release.get("namespace", ""),
        release=release.get("name", ""),
        phase=_phase(str(info.get("status", ""))),
        revision=int(release.get("version") or 0),
        message=str(info.get("description", "")),
        deployment_id=_deployment_id_from(release),
        updated_at=_time(info.get("last_deployed")),
    )


def _http_port(pod: dict[str, Any]) -> int:
    """The model server's port: the container port named ``http`` (the chart's), else the first."""
    ports = [p for c in (pod.get("spec") or {}).get("containers") or [] for p in c.get("ports") or []]
    named = [p for p in ports if p.get("name") == "http"] or ports
    return int(named[0]["containerPort"]) if named else 8080


def pod_reason_from(pods: dict[str, Any]) -> str | None:
    """The most telling reason a pod is not ready, from ``kubectl get pods -o json``."""
    found: list[tuple[int, str]] = []
    for pod in pods.get("items", []):
        name = pod.get("metadata", {}).get("name", "pod")
        status = pod.get("status") or {}
        for condition in status.get("conditions") or []:
            if condition.get("type") == "PodScheduled" and condition.get("status") == "False":
                text = f"{condition.get('reason', 'Unschedulable')}: {condition.get('message', '')}".rstrip(": ")
                found.append((2, f"pod {name}: {text}"))
        container_statuses = (status.get("initContainerStatuses") or []) + (status.get("containerStatuses") or [])
        for container in container_statuses:
            if container.get("ready"):
                continue
            state = container.get("state") or {}
            waiting = state.get("waiting") or {}
            terminated = state.get("terminated") or (container.get("lastState") or {}).get("terminated") or {}
            reason = waiting.get("reason") or terminated.get("reason")
            if not reason:
                continue
            message = waiting.get("message") or ""
            if terminated:
                exit_info = f"exit code {terminated.get('exitCode')}"
                last = terminated.get("message") or ""
                last = parse_failure(last) or last  # the model server's failure line, as its reason
                message = "; ".join(part for part in (message, f"last run ended with {exit_info}", last) if part)
            rank = 1 if reason in ("ContainerCreating", "PodInitializing") else 3
            text = f"{reason}: {message}" if message else reason
            found.append((rank, f"pod {name}: {text}"))
    if not found:
        return None
    found.sort(key=lambda item: -item[0])
    return found[0][1]


def _advice(pod_reason: str | None) -> str:
    if not pod_reason:
        return ""
    if "ImagePull" in pod_reason or "ErrImage" in pod_reason or "InvalidImageName" in pod_reason:
        return " Check that the model server image exists and the cluster may pull it."
    if "Cannot download" in pod_reason:
        return " The model server cannot read the model: check the cluster's S3 endpoint and credentials."
    if "CrashLoopBackOff" in pod_reason or "exit code" in pod_reason:
        return " The model server keeps exiting: check the model file and requirements.txt."
    if "Unschedulable" in pod_reason:
        return " The cluster has no room for the requested replicas: try fewer replicas."
    return ""


# --- the driver --------------------------------------------------------------------------------


class HelmDriver:
    """The ClusterDriver for Kubernetes through helm.

    ``server_side`` and ``openapi_validation`` exist for the tests' API emulator (``"false"`` and
    ``False``); production keeps helm's defaults. ``extra_args`` are appended to every
    ``helm upgrade``.
    """

    def __init__(
        self,
        *,
        settings: Settings,
        helm_bin: str | None = None,
        kubectl_bin: str | None = None,
        kubeconfig: str | Path | None = None,
        chart: str | Path | None = None,
        server_side: ServerSide | None = None,
        openapi_validation: bool | None = None,
        extra_args: Sequence[str] = (),
        work_dir: str | Path | None = None,
        stale_lock_seconds: float | None = None,
    ) -> None:
        self.settings = settings
        s = self.settings
        self.helm = helm_bin or find_binary(s.helm_bin, LAYER_HELM, "helm")
        self.kubectl = kubectl_bin or find_binary(s.kubectl_bin, LAYER_KUBECTL, "kubectl")
        self._kubeconfig = Path(kubeconfig) if kubeconfig else None
        self._chart = Path(chart) if chart else None
        self.server_side: ServerSide = server_side or s.helm_server_side
        self.openapi_validation = s.helm_openapi_validation if openapi_validation is None else openapi_validation
        self.extra_args = list(extra_args)
        # a pending-* release older than this is a dead helm's lock (default: timeout + 2 x grace)
        self.stale_lock_seconds = stale_lock_seconds
        self.work_dir = Path(work_dir) if work_dir else Path(tempfile.mkdtemp(prefix="modelport-helm-"))
        self.work_dir.mkdir(parents=True, exist_ok=True)

    # ---- plumbing ---------------------------------------------------------------------------

    @property
    def chart(self) -> Path:
        if self._chart is None:
            self._chart = find_chart(self.settings.chart_path)
        return self._chart

    def kubeconfig(self) -> Path | None:
        if self._kubeconfig is not None:
            return self._kubeconfig
        if self.settings.kubeconfig:
            return Path(self.settings.kubeconfig)
        if self.settings.kubeconfig_secret_arn:
            return kubeconfig_from_secret(self.settings.kubeconfig_secret_arn, self.settings.aws_region,
                                          self.settings.secrets_manager_endpoint)
        return None

    def _env(self) -> dict[str, str]:
        env = dict(os.environ)
        kubeconfig = self.kubeconfig()
        if kubeconfig is not None:
            env["KUBECONFIG"] = str(kubeconfig)
        # Lambda has a read-only home: keep helm's cache, config and data under the work dir.
        for name, sub in (("HELM_CACHE_HOME", "cache"), ("HELM_CONFIG_HOME", "config"), ("HELM_DATA_HOME", "data")):
            env.setdefault(name, str(self.work_dir / "helm" / sub))
        env.setdefault("HOME", str(self.work_dir))
        return env

    def _run(self, binary: str, args: Sequence[str], timeout: float) -> subprocess.CompletedProcess[str]:
        command = [binary, *args]
        try:
            return subprocess.run(
                command, capture_output=True, text=True, timeout=timeout, env=self._env(), check=False
            )
        except subprocess.TimeoutExpired as exc:
            raise ClusterError(
                f"{Path(binary).name} did not finish within {int(timeout)} s; the cluster may be overloaded "
                "or unreachable. It will be tried again.",
                retryable=True,
                detail=str(exc.stderr or ""),
            ) from exc
        except OSError as exc:
            raise ClusterError(f"could not run {binary}: {exc}", retryable=False) from exc

    def _helm(self, args: Sequence[str], timeout: float = QUICK_TIMEOUT_SECONDS) -> subprocess.CompletedProcess[str]:
        return self._run(self.helm, args, timeout)

    def _mode_flags(self) -> list[str]:
        return [] if self.server_side == "auto" else [f"--server-side={self.server_side}"]

    def _classify(self, stderr: str, action: str, namespace: str, release: str) -> ClusterError:
        """A failed helm run -> ClusterError, retryable for cluster trouble, not for release trouble."""
        detail = _last_error_line(stderr) or "helm failed without a message"
        if _UNREACHABLE.search(stderr):
            return ClusterError(
                f"the Kubernetes cluster could not be reached ({detail}); it will be tried again.",
                retryable=True,
                detail=stderr,
            )
        if _IN_PROGRESS.search(stderr):
            return ClusterError(
                f"another helm operation on release {release} is still under way; it will be tried again.",
                retryable=True,
                detail=stderr,
            )
        if _FORBIDDEN.search(stderr):
            return ClusterError(
                f"the cluster refused modelport's credentials ({detail}); an operator must fix the kubeconfig "
                "or its permissions.",
                retryable=False,
                detail=stderr,
            )
        if _SCHEMA.search(stderr):
            return ClusterError(f"the deployment's settings were rejected: {detail}", retryable=False, detail=stderr)
        return ClusterError(f"{action} of release {release} failed: {detail}", retryable=False, detail=stderr)

    # ---- the interface ----------------------------------------------------------------------

    def deploy(self, spec: DeploySpec) -> ReleaseStatus:
        try:
            return self._upgrade_install(spec)
        except ClusterError as error:
            if not (error.detail and _IN_PROGRESS.search(error.detail) and self._clear_stale_lock(spec)):
                raise
        return self._upgrade_install(spec)

    def _clear_stale_lock(self, spec: DeploySpec) -> bool:
        """A release left ``pending-*`` by a helm that was killed (e.g. a Lambda that timed out) blocks
        every later operation. Once it is older than any live helm could be, undo it: roll back to
        the last deployed revision, or uninstall a first install that never finished. True if done."""
        status = self.status(spec.namespace, spec.release)
        if status is None or status.phase != ReleasePhase.PENDING or status.updated_at is None:
            return False
        stale_after = (
            self.stale_lock_seconds
            if self.stale_lock_seconds is not None
            else spec.timeout_seconds + 2 * SUBPROCESS_GRACE_SECONDS
        )
        age = (datetime.now(tz=UTC) - status.updated_at).total_seconds()
        if age < stale_after:
            return False
        deployed_before = any(
            entry.phase in (ReleasePhase.DEPLOYED, ReleasePhase.SUPERSEDED) and entry.revision != status.revision
            for entry in self.history(spec.namespace, spec.release)
        )
        logger.warning(
            "clearing a stale pending release",
            extra={"release": spec.release, "namespace": spec.namespace, "age_seconds": int(age),
                   "action": "rollback" if deployed_before else "uninstall"},
        )  # fmt: skip
        if deployed_before:
            self.rollback(spec.namespace, spec.release)
        else:
            self.remove(spec.namespace, spec.release)
        return True

    def _upgrade_install(self, spec: DeploySpec) -> ReleaseStatus:
        labels = {MANAGED_LABEL: "true", DEPLOYMENT_ID_LABEL: str(spec.deployment_id), **spec.labels}
        values_dir = Path(tempfile.mkdtemp(prefix="values-", dir=self.work_dir))
        values_file = values_dir / "values.json"
        try:
            fd = os.open(values_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as handle:
                json.dump(chart_values(spec), handle)
            args = [
                "upgrade", "--install", spec.release, str(self.chart),
                "--namespace", spec.namespace, "--create-namespace",
                "--wait=watcher", "--timeout", f"{spec.timeout_seconds}s",
                "--values", str(values_file),
                "--labels", ",".join(f"{k}={v}" for k, v in labels.items()),
                "--output", "json",
                *self._mode_flags(),
                *([] if self.openapi_validation else ["--disable-openapi-validation"]),
                *self.extra_args,
            ]  # fmt: skip
            logger.info("helm upgrade --install", extra={"release": spec.release, "namespace": spec.namespace})
            result = self._helm(args, timeout=spec.timeout_seconds + SUBPROCESS_GRACE_SECONDS)
        finally:
            shutil.rmtree(values_dir, ignore_errors=True)
        if result.returncode != 0:
            raise self._release_failure(result.stderr, "install or upgrade", spec.namespace, spec.release,
                                        spec.timeout_seconds)  # fmt: skip
        try:
            status = status_from_release(json.loads(result.stdout))
        except (json.JSONDecodeError, ValueError):
            status = self.status(spec.namespace, spec.release) or ReleaseStatus(
                namespace=spec.namespace, release=spec.release, phase=ReleasePhase.UNKNOWN
            )
        logger.info(
            "release deployed",
            extra={"release": spec.release, "namespace": spec.namespace, "revision": status.revision},
        )
        return status

    def _release_failure(self, stderr: str, action: str, namespace: str, release: str, timeout: int) -> ClusterError:
        error = self._classify(stderr, action, namespace, release)
        if error.retryable:
            logger.warning("cluster unreachable", extra={"release": release, "namespace": namespace, "error": stderr})
            return error
        pod_reason = self.pod_reason(namespace, release)
        if _NOT_READY.search(stderr):
            message = f"the model server did not become ready within {timeout} s"
            message += f" ({pod_reason})." if pod_reason else "."
            message += _advice(pod_reason)
        else:
            message = error.message + (f" ({pod_reason})" if pod_reason else "")
        logger.warning(
            "release failed", extra={"release": release, "namespace": namespace, "error": stderr, "pod": pod_reason}
        )
        return ClusterError(message, retryable=False, pod_reason=pod_reason, detail=stderr)

    def _kubectl(self, *args: str) -> subprocess.CompletedProcess[str]:
        return self._run(self.kubectl, [*args, "--request-timeout", "10s", "--cache-dir",
                                        str(self.work_dir / "kube-cache")], timeout=20)

    def _pods(self, namespace: str, release: str) -> dict[str, Any] | None:
        """``kubectl get pods`` of one release as JSON; None where kubectl cannot tell."""
        result = self._kubectl("get", "pods", "--namespace", namespace, "--selector",
                               f"{POD_SELECTOR_LABEL}={release}", "--output", "json")
        if result.returncode != 0:
            return None
        try:
            return dict(json.loads(result.stdout))
        except json.JSONDecodeError:
            return None

    def pod_reason(self, namespace: str, release: str) -> str | None:
        """Why the release's pods are not ready, where kubectl can read it; None otherwise."""
        try:
            pods = self._pods(namespace, release)
        except ClusterError:
            return None
        return None if pods is None else pod_reason_from(pods)

    def scrape(self, namespace: str, release: str) -> list[PodMetrics]:
        """Each running pod's ``/metrics`` through the API server's pod proxy
        (``/api/v1/namespaces/{ns}/pods/{pod}:{port}/proxy/metrics``, which needs ``pods/proxy`` get)."""
        pods = self._pods(namespace, release)
        if pods is None:
            raise ClusterError(f"could not list the pods of release {release}", retryable=True)
        scraped = []
        for pod in pods.get("items", []):
            name = str((pod.get("metadata") or {}).get("name", ""))
            if (pod.get("status") or {}).get("phase") != "Running" or not name:
                continue
            port = _http_port(pod)
            result = self._kubectl("get", "--raw", f"/api/v1/namespaces/{namespace}/pods/{name}:{port}/proxy/metrics")
            if result.returncode == 0:
                scraped.append(PodMetrics(pod=name, text=result.stdout))
            else:
                scraped.append(PodMetrics(pod=name, error=_last_error_line(result.stderr) or "no answer"))
        return scraped

    def remove(self, namespace: str, release: str) -> bool:
        timeout = self.settings.helm_timeout_seconds
        args = ["uninstall", release, "--namespace", namespace, "--wait=watcher", "--timeout", f"{timeout}s"]
        result = self._helm(args, timeout=timeout + SUBPROCESS_GRACE_SECONDS)
        if result.returncode == 0:
            logger.info("release removed", extra={"release": release, "namespace": namespace})
            return True
        error = self._classify(result.stderr, "uninstall", namespace, release)
        if not error.retryable and _NOT_FOUND.search(result.stderr):
            return False
        raise error

    def status(self, namespace: str, release: str) -> ReleaseStatus | None:
        result = self._helm(["status", release, "--namespace", namespace, "--output", "json"])
        if result.returncode != 0:
            error = self._classify(result.stderr, "status", namespace, release)
            if not error.retryable and _NOT_FOUND.search(result.stderr):
                return None
            raise error
        status = status_from_release(json.loads(result.stdout))
        if status.phase == ReleasePhase.FAILED:
            status = status.model_copy(update={"pod_reason": self.pod_reason(namespace, release)})
        return status

    def history(self, namespace: str, release: str) -> list[ReleaseStatus]:
        """The release's revisions, oldest first; empty if there is no such release."""
        result = self._helm(["history", release, "--namespace", namespace, "--output", "json", "--max", "256"])
        if result.returncode != 0:
            error = self._classify(result.stderr, "history", namespace, release)
            if not error.retryable and _NOT_FOUND.search(result.stderr):
                return []
            raise error
        entries = json.loads(result.stdout or "[]")
        return [
            ReleaseStatus(
                namespace=namespace,
                release=release,
                phase=_phase(str(entry.get("status", ""))),
                revision=int(entry.get("revision") or 0),
                message=str(entry.get("description", "")),
                updated_at=_time(entry.get("updated")),
            )
            for entry in entries
        ]

    def rollback(self, namespace: str, release: str) -> ReleaseStatus:
        history = self.history(namespace, release)
        if not history:
            raise ClusterError(f"release {release} does not exist; there is nothing to roll back", retryable=False)
        current = max(entry.revision for entry in history)
        good = [
            e.revision
            for e in history
            if e.revision != current and e.phase in (ReleasePhase.DEPLOYED, ReleasePhase.SUPERSEDED)
        ]
        if not good:
            raise ClusterError(
                f"release {release} has no earlier revision that was deployed; there is nothing to roll back to",
                retryable=False,
            )
        target = max(good)
        timeout = self.settings.helm_timeout_seconds
        args = [
            "rollback", release, str(target), "--namespace", namespace,
            "--wait=watcher", "--timeout", f"{timeout}s", *self._mode_flags(),
        ]  # fmt: skip
        logger.info("helm rollback", extra={"release": release, "namespace": namespace, "revision": target})
        result = self._helm(args, timeout=timeout + SUBPROCESS_GRACE_SECONDS)
        if result.returncode != 0:
            raise self._release_failure(result.stderr, "rollback", namespace, release, timeout)
        return self.status(namespace, release) or ReleaseStatus(
            namespace=namespace, release=release, phase=ReleasePhase.UNKNOWN
        )

    def list_releases(self) -> list[ReleaseInfo]:
        args = [
            "list", "--all-namespaces", "--deployed", "--failed", "--pending", "--uninstalling",
            "--max", "0", "--output", "json", "--selector", f"{MANAGED_LABEL}=true",
        ]  # fmt: skip
        result = self._helm(args)
        if result.returncode != 0:
            raise self._classify(result.stderr, "list", "", "")
        problems = self._pod_problems()
        releases = []
        for entry in json.loads(result.stdout or "[]"):
            namespace = str(entry.get("namespace", ""))
            if not namespace.startswith(NAMESPACE_PREFIX):
                continue
            releases.append(
                ReleaseInfo(
                    namespace=namespace,
                    release=str(entry.get("name", "")),
                    phase=_phase(str(entry.get("status", ""))),
                    revision=int(entry.get("revision") or 0),
                    deployment_id=_deployment_id_from(entry),
                    chart=str(entry.get("chart", "")),
                    updated_at=_time(entry.get("updated")),
                    problem=problems.get((namespace, str(entry.get("name", "")))),
                )
            )
        return releases

    def _pod_problems(self) -> dict[tuple[str, str], str]:
        """(namespace, release) -> why some of its pods are not ready, from one kubectl call for all
        of modelport's pods; empty where kubectl cannot tell (the listing does not depend on it)."""
        try:
            result = self._kubectl("get", "pods", "--all-namespaces", "--selector",
                                   "app.kubernetes.io/part-of=modelport", "--output", "json")
            pods = json.loads(result.stdout) if result.returncode == 0 else {}
        except (ClusterError, json.JSONDecodeError):
            return {}
        by_release: dict[tuple[str, str], list[dict[str, Any]]] = {}
        for pod in pods.get("items", []):
            meta = pod.get("metadata") or {}
            release = (meta.get("labels") or {}).get(POD_SELECTOR_LABEL)
            if release:
                by_release.setdefault((str(meta.get("namespace", "")), str(release)), []).append(pod)
        found = {key: pod_reason_from({"items": items}) for key, items in by_release.items()}
        return {key: reason for key, reason in found.items() if reason}

"""HelmDriver with the real helm (and kubectl) binaries against the Kubernetes API emulator and
the real charts/model-serving chart."""

from __future__ import annotations

import base64
import json
import subprocess
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from modelport.deploy.driver import ClusterDriver, ClusterError, DeploySpec, ReleasePhase
from modelport.deploy.helm import HelmDriver, chart_values, pod_reason_from, split_image
from modelport.local.tools import Tools
from tests.support.kube_emulator import KubeEmulator, PodProblem, Readiness

GOOD_IMAGE = "ghcr.io/modelport/model-server:0.1.0"
BAD_IMAGE = "ghcr.io/modelport/model-server:does-not-exist"


@pytest.fixture()
def chart(repo_root: Path) -> Path:
    chart = repo_root / "charts" / "model-serving"
    assert (chart / "Chart.yaml").is_file(), "charts/model-serving is missing"
    return chart


@pytest.fixture()
def driver(kube_cluster: KubeEmulator, tools: Tools, chart: Path) -> HelmDriver:
    return kube_cluster.helm_driver(helm=tools.helm, kubectl=tools.kubectl, chart=chart)


def image_of(deployment: Mapping[str, Any]) -> str:
    return str(deployment["spec"]["template"]["spec"]["containers"][0]["image"])


def ready_unless_bad_image(deployment: Mapping[str, Any]) -> Readiness:
    if image_of(deployment) == BAD_IMAGE:
        return PodProblem("ImagePullBackOff", f'Back-off pulling image "{BAD_IMAGE}"')
    return True


def make_spec(deployment_id: int = 7, namespace: str = "user-alice", **changes: Any) -> DeploySpec:
    fields: dict[str, Any] = {
        "deployment_id": deployment_id,
        "namespace": namespace,
        "release": f"model-{deployment_id}-1700000000",
        "model_bucket": "models",
        "model_key": f"models/3/versions/{deployment_id}/model.joblib",
        "model_sha256": "a" * 64,
        "replicas": 1,
        "image": GOOD_IMAGE,
        "s3_endpoint": "minio:9000",
        "s3_access_key": "AKIAEXAMPLE",
        "s3_secret_key": "very-secret-key",
        "timeout_seconds": 20,
    }
    fields.update(changes)
    return DeploySpec(**fields)


def env_of(deployment: Mapping[str, Any]) -> dict[str, Any]:
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container.get("env", [])}


def test_helm_driver_is_a_cluster_driver(driver: HelmDriver) -> None:
    assert isinstance(driver, ClusterDriver)


def test_deploy_creates_the_release_objects(driver: HelmDriver, kube_cluster: KubeEmulator) -> None:
    spec = make_spec()
    argv: list[list[str]] = []
    run = driver._run

    def recording_run(binary: str, args: Any, timeout: float) -> subprocess.CompletedProcess[str]:
        argv.append([binary, *args])
        return run(binary, args, timeout)

    driver._run = recording_run  # type: ignore[method-assign]

    status = driver.deploy(spec)

    assert status.phase == ReleasePhase.DEPLOYED and status.ready
    assert (status.revision, status.deployment_id, status.namespace) == (1, 7, "user-alice")
    assert "user-alice" in kube_cluster.namespaces()
    deployment = kube_cluster.get("Deployment", "user-alice", spec.release)
    assert deployment is not None
    assert deployment["spec"]["replicas"] == 1
    assert image_of(deployment) == GOOD_IMAGE
    env = env_of(deployment)
    assert env["MODEL_URI"] == f"s3://models/{spec.model_key}"
    assert env["MINIO_ENDPOINT"] == "minio:9000"
    assert kube_cluster.get("Service", "user-alice", spec.release) is not None
    ingress = kube_cluster.get("Ingress", "user-alice", spec.release)
    assert ingress is not None
    paths = [p["path"] for rule in ingress["spec"]["rules"] for p in rule["http"]["paths"]]
    assert paths == ["/api/v1/predict/7"]
    assert ingress["spec"]["ingressClassName"] == "nginx"
    # the credentials went to the chart's Secret, never onto a command line
    secrets = {s["metadata"]["name"]: s for s in kube_cluster.objects("Secret", "user-alice")}
    credentials = [s for s in secrets.values() if s.get("type") != "helm.sh/release.v1"]
    assert credentials
    decoded = {base64.b64decode(v).decode() for s in credentials for v in (s.get("data") or {}).values()}
    assert {"AKIAEXAMPLE", "very-secret-key"} <= decoded
    assert not any("very-secret-key" in arg for command in argv for arg in command)
    # the release record carries modelport's labels
    release_secret = secrets[f"sh.helm.release.v1.{spec.release}.v1"]
    labels = release_secret["metadata"]["labels"]
    assert labels["modelport.io/managed"] == "true" and labels["modelport.io/deployment-id"] == "7"
    assert driver.status("user-alice", spec.release) == status.model_copy(update={"pod_reason": None})


def test_upgrade_changes_replicas(driver: HelmDriver, kube_cluster: KubeEmulator) -> None:
    spec = make_spec()
    driver.deploy(spec)
    status = driver.deploy(spec.model_copy(update={"replicas": 3}))
    assert (status.phase, status.revision) == (ReleasePhase.DEPLOYED, 2)
    deployment = kube_cluster.get("Deployment", "user-alice", spec.release)
    assert deployment is not None
    assert deployment["spec"]["replicas"] == 3 and deployment["status"]["readyReplicas"] == 3
    assert len(kube_cluster.objects("Pod", "user-alice")) == 3


def test_a_release_that_never_becomes_ready_fails_with_the_pod_reason(
    driver: HelmDriver, kube_cluster: KubeEmulator
) -> None:
    kube_cluster.readiness = ready_unless_bad_image
    spec = make_spec(image=BAD_IMAGE, timeout_seconds=3)
    with pytest.raises(ClusterError) as caught:
        driver.deploy(spec)
    error = caught.value
    assert error.retryable is False
    assert "did not become ready within 3 s" in error.message
    assert "ImagePullBackOff" in error.message and BAD_IMAGE in error.message
    assert error.pod_reason is not None and "ImagePullBackOff" in error.pod_reason
    status = driver.status("user-alice", spec.release)
    assert status is not None and status.phase == ReleasePhase.FAILED
    assert status.pod_reason is not None and "ImagePullBackOff" in status.pod_reason
    # the caller cleans up a failed first install
    assert driver.remove("user-alice", spec.release) is True
    assert kube_cluster.objects("Deployment", "user-alice") == []
    assert driver.status("user-alice", spec.release) is None


def test_a_crash_loop_reports_the_last_exit(driver: HelmDriver, kube_cluster: KubeEmulator) -> None:
    kube_cluster.readiness = lambda deployment: PodProblem(
        "CrashLoopBackOff", "model.joblib does not match its sha256", exit_code=1
    )
    with pytest.raises(ClusterError) as caught:
        driver.deploy(make_spec(timeout_seconds=3))
    assert "CrashLoopBackOff" in caught.value.message
    assert "exit code 1" in caught.value.message and "sha256" in caught.value.message
    # the listing tells which releases have pods that are not ready, and why (the sweep's view)
    [listed] = driver.list_releases()
    assert listed.problem is not None and "CrashLoopBackOff" in listed.problem


def test_healthy_releases_list_no_problem(driver: HelmDriver, kube_cluster: KubeEmulator) -> None:
    driver.deploy(make_spec())
    assert [r.problem for r in driver.list_releases()] == [None]


def test_rollback_returns_to_the_last_good_revision(driver: HelmDriver, kube_cluster: KubeEmulator) -> None:
    kube_cluster.readiness = ready_unless_bad_image
    spec = make_spec()
    driver.deploy(spec)
    driver.deploy(spec.model_copy(update={"replicas": 2}))
    with pytest.raises(ClusterError):
        driver.deploy(spec.model_copy(update={"image": BAD_IMAGE, "replicas": 3, "timeout_seconds": 3}))

    status = driver.rollback("user-alice", spec.release)

    assert (status.phase, status.revision) == (ReleasePhase.DEPLOYED, 4)
    assert "2" in status.message  # "Rollback to 2"
    deployment = kube_cluster.get("Deployment", "user-alice", spec.release)
    assert deployment is not None
    assert image_of(deployment) == GOOD_IMAGE and deployment["spec"]["replicas"] == 2
    assert deployment["status"]["readyReplicas"] == 2
    assert [h.phase for h in driver.history("user-alice", spec.release)] == [
        ReleasePhase.SUPERSEDED,
        ReleasePhase.SUPERSEDED,
        ReleasePhase.FAILED,
        ReleasePhase.DEPLOYED,
    ]


def test_rollback_without_a_good_revision_is_refused(driver: HelmDriver) -> None:
    with pytest.raises(ClusterError) as caught:
        driver.rollback("user-alice", "model-404-1700000000")
    assert caught.value.retryable is False
    driver.deploy(make_spec())
    with pytest.raises(ClusterError, match="no earlier revision"):
        driver.rollback("user-alice", make_spec().release)


def test_remove_is_idempotent(driver: HelmDriver, kube_cluster: KubeEmulator) -> None:
    spec = make_spec()
    assert driver.remove("user-alice", spec.release) is False  # nothing there, namespace missing too
    driver.deploy(spec)
    assert driver.remove("user-alice", spec.release) is True
    for kind in ("Deployment", "Service", "Ingress", "Secret", "Pod"):
        assert kube_cluster.objects(kind, "user-alice") == [], kind
    assert driver.remove("user-alice", spec.release) is False
    assert driver.status("user-alice", spec.release) is None


def test_list_finds_only_modelport_releases(
    driver: HelmDriver, kube_cluster: KubeEmulator, tools: Tools, chart: Path
) -> None:
    driver.deploy(make_spec(1, "user-alice"))
    driver.deploy(make_spec(2, "user-bob"))
    driver.deploy(make_spec(3, "team-infra"))  # modelport's labels, but not a user namespace
    # a release someone else installed in a user namespace, without modelport's labels
    foreign = subprocess.run(
        [
            str(tools.helm), "upgrade", "--install", "other", str(chart), "-n", "user-carol", "--create-namespace",
            "--set", "deploymentId=9,model.bucket=models,model.key=k/model.joblib", "--server-side=false",
            "--disable-openapi-validation", "--kubeconfig", str(kube_cluster.kubeconfig),
        ],
        capture_output=True, text=True, timeout=60, env=driver._env(),
    )  # fmt: skip
    assert foreign.returncode == 0, foreign.stderr

    releases = driver.list_releases()

    assert sorted((r.namespace, r.release, r.deployment_id) for r in releases) == [
        ("user-alice", "model-1-1700000000", 1),
        ("user-bob", "model-2-1700000000", 2),
    ]
    assert all(r.phase == ReleasePhase.DEPLOYED and r.revision == 1 for r in releases)


def test_an_unreachable_cluster_is_retryable(driver: HelmDriver, kube_cluster: KubeEmulator) -> None:
    spec = make_spec()
    driver.deploy(spec)
    kube_cluster.stop()
    for call in (
        lambda: driver.deploy(spec.model_copy(update={"replicas": 2})),
        lambda: driver.status("user-alice", spec.release),
        lambda: driver.remove("user-alice", spec.release),
        driver.list_releases,
    ):
        with pytest.raises(ClusterError) as caught:
            call()
        assert caught.value.retryable is True
        assert "could not be reached" in caught.value.message
    kube_cluster.start()  # same port, same objects
    assert driver.deploy(spec.model_copy(update={"replicas": 2})).revision == 2


# --- pure helpers --------------------------------------------------------------------------------


def test_chart_values_follow_the_contract() -> None:
    values = chart_values(make_spec(requirements_key="r.txt", requirements_sha256="b" * 64))
    assert values["deploymentId"] == 7 and values["replicaCount"] == 1
    assert values["image"] == {
        "repository": "ghcr.io/modelport/model-server",
        "tag": "0.1.0",
        "pullPolicy": "IfNotPresent",
    }
    assert values["model"]["requirementsKey"] == "r.txt" and values["model"]["sha256"] == "a" * 64
    assert values["s3"]["accessKey"] == "AKIAEXAMPLE" and values["s3"]["useSSL"] is False
    assert values["ingress"] == {
        "enabled": True,
        "host": "localhost",
        "basePath": "/api/v1/predict",
        "className": "nginx",
    }
    with_secret = chart_values(make_spec(s3_existing_secret="minio-creds"))
    assert with_secret["s3"]["existingSecret"] == "minio-creds" and "accessKey" not in with_secret["s3"]
    assert "trustedGlobals" not in values["model"]  # the plain allow-list unless the version's owner trusts more
    trusting = chart_values(make_spec(trusted_globals=("mypkg.A", "mypkg.sub.B")))
    assert trusting["model"]["trustedGlobals"] == "mypkg.A,mypkg.sub.B"


def test_split_image() -> None:
    assert split_image("repo:5000/a/b:1.2") == ("repo:5000/a/b", "1.2", "")
    assert split_image("repo:5000/a/b") == ("repo:5000/a/b", "", "")
    assert split_image("a/b@sha256:abc") == ("a/b", "", "sha256:abc")


def test_pod_reason_prefers_the_telling_reason() -> None:
    def pod(name: str, waiting: dict[str, str]) -> dict[str, Any]:
        statuses = [{"ready": False, "state": {"waiting": waiting}}]
        return {"metadata": {"name": name}, "status": {"containerStatuses": statuses}}

    pods = {
        "items": [
            pod("p1", {"reason": "ContainerCreating"}),
            pod("p2", {"reason": "ErrImagePull", "message": "not found"}),
        ]
    }
    assert pod_reason_from(pods) == "pod p2: ErrImagePull: not found"
    assert pod_reason_from({"items": []}) is None


def test_a_release_left_pending_by_a_killed_helm_is_cleared(
    kube_cluster: KubeEmulator, tools: Tools, chart: Path
) -> None:
    driver = kube_cluster.helm_driver(helm=tools.helm, kubectl=tools.kubectl, chart=chart, stale_lock_seconds=0)
    kube_cluster.readiness = ready_unless_bad_image
    spec = make_spec()
    values = kube_cluster.directory / "values.json"
    values.write_text(json.dumps(chart_values(spec.model_copy(update={"image": BAD_IMAGE}))))
    helm = subprocess.Popen(
        [
            str(tools.helm), "upgrade", "--install", spec.release, str(chart), "-n", spec.namespace,
            "--create-namespace", "--wait=watcher", "--timeout", "60s", "-f", str(values),
            "--server-side=false", "--disable-openapi-validation",
        ],
        env=driver._env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        kube_cluster.wait_for(
            "Deployment", spec.namespace, lambda deployments: any("status" in d for d in deployments), timeout=30
        )
    finally:
        helm.kill()
        helm.wait()
    status = driver.status(spec.namespace, spec.release)
    assert status is not None and status.phase == ReleasePhase.PENDING

    deployed = driver.deploy(spec)

    assert deployed.phase == ReleasePhase.DEPLOYED
    deployment = kube_cluster.get("Deployment", spec.namespace, spec.release)
    assert deployment is not None and image_of(deployment) == GOOD_IMAGE


def test_a_spec_never_shows_its_credentials() -> None:
    spec = make_spec()
    assert "very-secret-key" not in repr(spec) and "very-secret-key" not in json.dumps(spec.model_dump())
    assert spec.model_copy(update={"replicas": 2}).s3_secret_key == "very-secret-key"


def test_the_kubeconfig_can_come_from_secrets_manager(
    kube_cluster: KubeEmulator, tools: Tools, chart: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from moto import mock_aws

    from modelport.deploy import helm as helm_module
    from modelport.settings import Settings

    monkeypatch.delenv("KUBECONFIG", raising=False)
    monkeypatch.setattr(helm_module, "_secret_kubeconfig", {})
    with mock_aws():
        import boto3

        client = boto3.client("secretsmanager", region_name="us-east-1")
        arn = client.create_secret(Name="modelport/kubeconfig", SecretString=kube_cluster.kubeconfig.read_text())["ARN"]
        settings = Settings(kubeconfig_secret_arn=arn, helm_bin=str(tools.helm), kubectl_bin=str(tools.kubectl))
        driver = HelmDriver(
            settings=settings,
            chart=chart,
            server_side="false",
            openapi_validation=False,
            work_dir=kube_cluster.directory,
        )
        assert driver.deploy(make_spec()).revision == 1
        path = driver.kubeconfig()
        assert path is not None and path != kube_cluster.kubeconfig
        assert path.stat().st_mode & 0o777 == 0o600
        assert driver.kubeconfig() == path  # fetched once per process
    assert [r.release for r in driver.list_releases()] == [make_spec().release]

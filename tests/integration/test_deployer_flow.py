"""The deployer end to end: records written to DynamoDB Local, its real stream read by the poller
that feeds functions/deployer/app.py, the real helm binary installing charts/model-serving into
the Kubernetes API emulator (tests/support/kube_emulator.py; no real API server can run here)."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from modelport.deploy.helm import HelmDriver
from modelport.deploy.reconcile import Action, Reconciler, build_spec
from modelport.domain.entities import Artifact, Deployment, DeploymentStatus, utcnow
from modelport.local.processes import ServerProcess
from modelport.local.streams import StreamPoller, StreamSourceConfig
from modelport.local.tools import Tools
from modelport.services import deployments, users
from modelport.settings import Settings
from modelport.store.records import ensure_table
from modelport.store.repository import Store
from tests.support.functions import load_function
from tests.support.kube_emulator import KubeEmulator, PodProblem, Readiness

OWNER = "alice"
NS = "user-alice"


def model_uri(deployment: Mapping[str, Any]) -> str:
    env = deployment["spec"]["template"]["spec"]["containers"][0]["env"]
    return next(e["value"] for e in env if e["name"] == "MODEL_URI")


def never_ready_when_broken(deployment: Mapping[str, Any]) -> Readiness:
    if "broken" in model_uri(deployment):
        return PodProblem("CrashLoopBackOff", "back-off restarting failed container", exit_code=1)
    return True


class Flow:
    def __init__(self, store: Store, cluster: KubeEmulator, settings: Settings, driver: HelmDriver) -> None:
        self.store = store
        self.cluster = cluster
        self.settings = settings
        self.driver = driver
        self.model_id = store.create_model(OWNER, f"iris-{uuid.uuid4().hex[:6]}", None).id

    def version(self, key: str) -> int:
        version = self.store.create_version(OWNER, self.model_id, None)
        self.store.set_version_artifacts(
            version.id, s3_path=f"s3://models/{key}/model.joblib",
            model_artifact=Artifact(key=f"{key}/model.joblib", size=1, sha256="c" * 64), requirements_artifact=None,
        )
        return version.id

    def wait(self, deployment_id: int, check: Callable[[Deployment | None], bool], timeout: float = 60) -> Any:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            current = self.store.find_deployment(deployment_id)
            if check(current):
                return current
            time.sleep(0.1)
        raise AssertionError(f"deployment {deployment_id} never got there: {self.store.find_deployment(deployment_id)}")

    def settled(self, deployment_id: int, status: DeploymentStatus) -> Deployment:
        return self.wait(  # type: ignore[no-any-return]
            deployment_id,
            lambda d: d is not None and d.status == status and d.observed_generation >= d.generation,
        )

    def k8s(self, kind: str, name: str) -> dict[str, Any] | None:
        return self.cluster.get(kind, NS, name)


@pytest.fixture()
def flow(
    dynamodb_local: ServerProcess, kube_cluster: KubeEmulator, tools: Tools, repo_root: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[Flow]:
    env = {
        "TABLE_NAME": f"deployer-{uuid.uuid4().hex[:8]}", "DYNAMODB_ENDPOINT": dynamodb_local.url,
        "HELM_TIMEOUT_SECONDS": "6", "CLUSTER_RETRIES": "2", "CLUSTER_RETRY_BACKOFF_SECONDS": "0.1",
        "FAILED_RECORD_TTL_SECONDS": "3600", "MINIO_ACCESS_KEY": "AKIAEXAMPLE", "MINIO_SECRET_KEY": "s3cr3t",
        "CLUSTER_DRIVER": "helm",
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    settings = Settings()  # as the function's entry point builds them, from that environment
    ensure_table(settings)
    kube_cluster.readiness = never_ready_when_broken
    driver = kube_cluster.helm_driver(helm=tools.helm, kubectl=tools.kubectl, chart=repo_root / "charts/model-serving",
                                      settings=settings)
    store = Store(settings)
    poller = StreamPoller(
        table_name=settings.table_name, handler=load_function("deployer").build(settings, store=store, driver=driver),
        endpoint_url=dynamodb_local.url, config=StreamSourceConfig.from_template("deployer"),
    ).start()
    users.create_user(store, OWNER)
    yield Flow(store, kube_cluster, settings, driver)
    poller.stop()


def test_create_scale_and_delete_through_the_stream(flow: Flow):
    version_id = flow.version("models/1/versions/1")
    deployment = deployments.create_deployment(flow.store, flow.store.settings, OWNER, version_id, 1)
    release = deployment.k8s_service_name

    ready = flow.settled(deployment.id, DeploymentStatus.READY)
    assert ready.url == f"http://localhost:30080/api/v1/predict/{deployment.id}"
    assert NS in flow.cluster.namespaces()
    k8s_deployment = flow.k8s("Deployment", release)
    assert k8s_deployment is not None and k8s_deployment["spec"]["replicas"] == 1
    assert model_uri(k8s_deployment) == "s3://models/models/1/versions/1/model.joblib"
    assert flow.k8s("Service", release) is not None
    ingress = flow.k8s("Ingress", release)
    assert ingress is not None
    paths = [p["path"] for rule in ingress["spec"]["rules"] for p in rule["http"]["paths"]]
    assert paths == [f"/api/v1/predict/{deployment.id}"]
    secrets = [s for s in flow.cluster.objects("Secret", NS) if s["metadata"]["name"] == f"{release}-s3"]
    assert len(secrets) == 1
    assert "s3cr3t" not in str(k8s_deployment)  # credentials only through the Secret

    deployments.update_deployment(flow.store, flow.store.settings, OWNER, deployment.id, replicas=3)
    scaled = flow.settled(deployment.id, DeploymentStatus.READY)
    assert scaled.deployed_replicas == 3
    assert flow.k8s("Deployment", release)["spec"]["replicas"] == 3  # type: ignore[index]

    flow.store.request_delete(OWNER, deployment.id)
    flow.wait(deployment.id, lambda d: d is None)
    assert flow.k8s("Deployment", release) is None
    assert flow.k8s("Ingress", release) is None


def test_a_release_that_never_becomes_ready_fails_and_is_removed(flow: Flow):
    deployment = deployments.create_deployment(flow.store, flow.store.settings, OWNER, flow.version("broken"), 1)
    failed = flow.settled(deployment.id, DeploymentStatus.FAILED)
    assert failed.status_message and "CrashLoopBackOff" in failed.status_message
    assert flow.k8s("Deployment", deployment.k8s_service_name) is None
    assert flow.store.get_version(OWNER, deployment.version_id).deployments == 0


def test_an_update_that_never_becomes_ready_rolls_back_and_keeps_serving(flow: Flow):
    good = flow.version("good")
    deployment = deployments.create_deployment(flow.store, flow.store.settings, OWNER, good, 2)
    flow.settled(deployment.id, DeploymentStatus.READY)
    broken = flow.version("broken-v2")
    deployments.update_deployment(flow.store, flow.store.settings, OWNER, deployment.id, version_id=broken)

    after = flow.wait(
        deployment.id, lambda d: d is not None and d.status == DeploymentStatus.READY and bool(d.status_message)
    )
    assert (after.version_id, after.replicas) == (good, 2)
    assert "rolled back" in after.status_message
    k8s_deployment = flow.k8s("Deployment", deployment.k8s_service_name)
    assert k8s_deployment is not None and "good" in model_uri(k8s_deployment)
    assert k8s_deployment["status"].get("readyReplicas") == 2


def test_unreachable_cluster_is_retried_then_the_record_goes_and_the_release_follows(flow: Flow):
    deployment = deployments.create_deployment(flow.store, flow.store.settings, OWNER, flow.version("models/9"), 1)
    flow.settled(deployment.id, DeploymentStatus.READY)
    flow.cluster.stop()
    try:
        flow.store.request_delete(OWNER, deployment.id)
        flow.wait(deployment.id, lambda d: d is None)  # the seed's rule: the record goes anyway
    finally:
        flow.cluster.start()
    # the leftover release goes once the cluster answers (the REMOVE record, or else the sweep)
    Reconciler(flow.store, flow.driver, flow.settings).sweep()
    flow.cluster.wait_for("Deployment", NS, lambda objs: not objs, timeout=30)


def test_the_sweep_uninstalls_releases_without_a_record(flow: Flow):
    driver = flow.driver
    orphan = build_spec(
        Deployment(id=4242, owner=OWNER, namespace=NS, model_id=1, version_id=1, replicas=1,
                   k8s_service_name="model-4242-1700000000", url="http://x", created_at=utcnow(), updated_at=utcnow()),
        flow.store.get_version(OWNER, flow.version("orphan")), flow.settings,
    )
    driver.deploy(orphan)
    assert flow.k8s("Deployment", orphan.release) is not None
    outcomes = Reconciler(flow.store, driver, flow.settings).sweep()
    assert [(o.action, o.deployment_id) for o in outcomes] == [(Action.REMOVED_ORPHAN, 4242)]
    assert flow.k8s("Deployment", orphan.release) is None

"""The helm path with real containers: the real helm binary installs charts/model-serving into the
Kubernetes emulator, whose pods the kubelet stand-in runs as containers of the image `make image`
builds (tests/support/kubelet.py), reached through the ingress stand-in (tests/support/ingress.py).
The model server in each container fetches its model from SeaweedFS (a real S3 that checks
signatures) with the credentials of the chart's Secret, as a pod would."""

from __future__ import annotations

import hashlib
import io
import subprocess
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import joblib
import pytest
from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression

from modelport.artifacts.storage import ObjectStore
from modelport.deploy.driver import DeploySpec, ReleasePhase
from modelport.deploy.helm import HelmDriver
from modelport.deploy.reconcile import Reconciler
from modelport.domain.entities import Deployment, DeploymentStatus
from modelport.domain.rollouts import Rollout, RolloutState, Shadow, ShadowState, canary_release, shadow_release
from modelport.domain.serving_metrics import parse
from modelport.local.tools import Tools
from modelport.settings import Settings
from tests.conftest import ClusterS3, ContainerCluster
from tests.support.deployment_records import InMemoryDeploymentRecords
from tests.support.models import IRIS_ROWS, train_iris
from tests.support.rollouts import pod_ready

pytestmark = [pytest.mark.integration, pytest.mark.containers]

NS = "user-alice"


@pytest.fixture(scope="module")
def models(cluster_s3: ClusterS3, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """An iris model, and a file that is no model at all, in the bucket."""
    store = ObjectStore(Settings(minio_endpoint=cluster_s3.url, minio_access_key="testing",
                                 minio_secret_key="testing"))
    store.ensure_bucket()
    path, model = train_iris(tmp_path_factory.mktemp("iris") / "model.joblib")
    with path.open("rb") as stream:
        store.put("models/1/versions/1/model.joblib", stream)
    broken = b"this is not a model"
    store.put("models/1/versions/2/model.joblib", io.BytesIO(broken))
    # another version whose answers tell it apart: the classes numbered the other way round
    data = load_iris()
    flipped_path = tmp_path_factory.mktemp("flipped") / "model.joblib"
    joblib.dump(LogisticRegression(max_iter=500).fit(data.data, 2 - data.target), flipped_path)
    with flipped_path.open("rb") as stream:
        store.put("models/1/versions/3/model.joblib", stream)
    return {"iris": "models/1/versions/1/model.joblib", "broken": "models/1/versions/2/model.joblib",
            "flipped": "models/1/versions/3/model.joblib",
            "sha256": {"iris": hashlib.sha256(path.read_bytes()).hexdigest(),
                       "broken": hashlib.sha256(broken).hexdigest(),
                       "flipped": hashlib.sha256(flipped_path.read_bytes()).hexdigest()},
            "answers": model.predict(IRIS_ROWS).tolist()}


@pytest.fixture()
def driver(container_cluster: ContainerCluster, tools: Tools, repo_root: Path) -> HelmDriver:
    return container_cluster.emulator.helm_driver(helm=tools.helm, kubectl=tools.kubectl,
                                                  chart=repo_root / "charts/model-serving")


def spec(cluster_s3: ClusterS3, image: str, key: str, deployment_id: int = 7, **changes: Any) -> DeploySpec:
    fields: dict[str, Any] = {
        "deployment_id": deployment_id, "namespace": NS, "release": f"model-{deployment_id}-{uuid.uuid4().hex[:6]}",
        "model_bucket": "models", "model_key": key, "replicas": 1, "image": image,
        "s3_endpoint": cluster_s3.in_cluster, "s3_access_key": "testing", "s3_secret_key": "testing",
        "timeout_seconds": 90,
    }  # fmt: skip
    fields.update(changes)
    return DeploySpec(**fields)


def predict_url(cluster: ContainerCluster, deployment_id: int) -> str:
    return cluster.ingress_url.replace("127.0.0.1", "localhost") + f"/api/v1/predict/{deployment_id}"


def test_a_release_serves_through_the_ingress_from_a_real_container(
    driver: HelmDriver, container_cluster: ContainerCluster, cluster_s3: ClusterS3, model_server_image: str,
    models: dict[str, Any],
) -> None:
    release = spec(cluster_s3, model_server_image, models["iris"])
    status = driver.deploy(release)
    assert status.phase == ReleasePhase.DEPLOYED
    (container,) = container_cluster.kubelet.containers(NS)
    config, host = container.attrs["Config"], container.attrs["HostConfig"]
    assert config["User"] == "10001:10001"
    assert host["ReadonlyRootfs"] is True
    assert host["CapDrop"] == ["ALL"]
    assert "/tmp" in host["Tmpfs"]
    answer = httpx.post(predict_url(container_cluster, 7) + "/predict", json={"instances": IRIS_ROWS}, timeout=30)
    assert answer.status_code == 200, answer.text
    assert answer.json()["predictions"] == models["answers"]
    # the deployer's metrics sampler reads the pod's own /metrics through the API server's pod proxy
    (pod,) = driver.scrape(NS, release.release)
    assert pod.error is None and pod.text is not None, pod
    counters = parse(pod.text)
    assert (counters.requests, counters.errors, counters.ready) == (1, 0, 1)
    assert driver.scrape(NS, "no-such-release") == []


# --------------------------------------------------------------------------- through the deployer


@dataclass
class Deployer:
    """The deployer's reconciler (records in memory) over the helm driver and real containers."""

    records: InMemoryDeploymentRecords
    reconciler: Reconciler
    cluster: ContainerCluster
    models: dict[str, Any]

    def version(self, name: str) -> int:
        key, sha256 = self.models[name], self.models["sha256"][name]
        version = self.records.add_version(key=key.removesuffix("/model.joblib"))
        assert version.model_artifact is not None
        artifact = version.model_artifact.model_copy(update={"key": key, "sha256": sha256})
        self.records.versions[version.id] = version.model_copy(update={"model_artifact": artifact})
        return version.id

    def record(self, deployment_id: int) -> Deployment:
        found = self.records.find_deployment(deployment_id)
        assert found is not None
        return found

    def containers(self) -> list[Any]:
        return self.cluster.kubelet.containers(NS)

    def pods(self) -> list[dict[str, Any]]:
        return self.cluster.emulator.objects("Pod", NS)

    def until_containers(self, ids: set[str]) -> None:
        """Removing a container takes its stop: await it (the pods are gone from the API at once)."""
        deadline = time.monotonic() + 60
        while (left := {c.id for c in self.cluster.kubelet.containers(NS, all=True)}) != ids:
            assert time.monotonic() < deadline, f"containers {left}, expected {ids}"
            time.sleep(0.2)

    def until_no_container(self) -> None:
        self.until_containers(set())


@pytest.fixture()
def deployer(driver: HelmDriver, container_cluster: ContainerCluster, cluster_s3: ClusterS3,
             model_server_image: str, models: dict[str, Any]) -> Deployer:
    settings = Settings(cluster_s3_endpoint=cluster_s3.in_cluster, minio_access_key="testing",
                        minio_secret_key="testing", model_server_image=model_server_image,
                        helm_timeout_seconds=30, cluster_retries=1, cluster_retry_backoff_seconds=0.1)
    records = InMemoryDeploymentRecords()
    return Deployer(records, Reconciler(records, driver, settings), container_cluster, models)


def hammer(url: str, stop: threading.Event, results: list[int]) -> None:
    with httpx.Client(timeout=30) as client:
        while not stop.is_set():
            try:
                results.append(client.post(url, json={"instances": IRIS_ROWS}).status_code)
            except httpx.HTTPError:
                results.append(0)


def test_scale_an_update_that_cannot_load_and_delete_with_real_containers(deployer: Deployer) -> None:
    good = deployer.version("iris")
    deployment = deployer.records.add_deployment(good, replicas=1)
    deployer.reconciler.reconcile(deployment.id)
    assert deployer.record(deployment.id).status == DeploymentStatus.READY
    url = predict_url(deployer.cluster, deployment.id) + "/predict"

    # scale to 2: two containers, each serving the model on its own address
    deployer.records.change(deployment.id, replicas=2)
    deployer.reconciler.reconcile(deployment.id)
    assert deployer.record(deployment.id).status == DeploymentStatus.READY
    serving = deployer.containers()
    assert len(serving) == 2
    for pod in deployer.pods():
        direct = httpx.post(f"http://{pod['status']['podIP']}:8080/api/v1/predict/{deployment.id}/predict",
                            json={"instances": IRIS_ROWS}, timeout=30)
        assert direct.json()["predictions"] == deployer.models["answers"]

    # an update whose model cannot load: rolled back, and the old containers serve throughout
    stop, results = threading.Event(), []
    traffic = threading.Thread(target=hammer, args=(url, stop, results))
    traffic.start()
    try:
        deployer.records.change(deployment.id, version_id=deployer.version("broken"))
        deployer.reconciler.reconcile(deployment.id)
    finally:
        stop.set()
        traffic.join()
    record = deployer.record(deployment.id)
    assert record.status == DeploymentStatus.READY and record.version_id == good
    assert "rolled back" in (record.status_message or ""), record.status_message
    assert results and set(results) == {200}, f"{len(results)} requests, failures: {[r for r in results if r != 200]}"
    # the same two containers served throughout; the candidate's, stopping, goes
    deployer.until_containers({c.id for c in serving})

    # delete: the record goes, the containers with it, and the URL answers 404
    deployer.records.request_delete(deployment.id)
    deployer.reconciler.reconcile(deployment.id)
    assert deployer.records.find_deployment(deployment.id) is None
    deployer.until_no_container()
    assert httpx.post(url, json={"instances": IRIS_ROWS}, timeout=30).status_code == 404


def test_a_canary_is_its_own_release_the_ingress_splits_by_its_weight_and_promotion_cleans_up(
    deployer: Deployer,
) -> None:
    stable, candidate = deployer.version("iris"), deployer.version("flipped")
    deployment = deployer.records.add_deployment(stable, replicas=1)
    deployer.reconciler.reconcile(deployment.id)
    url = predict_url(deployer.cluster, deployment.id) + "/predict"
    row = IRIS_ROWS[2]  # class 0 for the stable version, 2 for the candidate

    def answers(n: int) -> Counter[int]:
        with httpx.Client(timeout=30) as client:
            return Counter(client.post(url, json={"instances": [row]}).json()["predictions"][0] for _ in range(n))

    now = datetime.now(UTC)
    rollout = Rollout(steps=[25], candidate_version_id=candidate, stable_version_id=stable, started_at=now,
                      step_started_at=now)
    deployer.records.write_rollout(deployer.record(deployment.id), rollout)
    deployer.reconciler.reconcile(deployment.id)
    record = deployer.record(deployment.id)
    assert record.status == DeploymentStatus.READY and "25% of requests" in (record.status_message or "")
    canary = canary_release(record.k8s_service_name)
    (ingress,) = [i for i in deployer.cluster.emulator.objects("Ingress", NS) if i["metadata"]["name"] == canary]
    assert ingress["metadata"]["annotations"]["nginx.ingress.kubernetes.io/canary-weight"] == "25"
    assert len(deployer.containers()) == 2
    assert answers(40) == Counter({0: 30, 2: 10})  # exactly a quarter to the candidate's own container
    (pod,) = deployer.reconciler.driver.scrape(NS, canary)
    assert pod.text is not None and parse(pod.text).requests == 10  # what the decisions are taken from

    # promotion: the stable release moves to the candidate's version, the canary's release goes;
    # callers see no failure on the way
    stop, results = threading.Event(), []
    traffic = threading.Thread(target=hammer, args=(url, stop, results))
    traffic.start()
    try:
        promoted = rollout.model_copy(update={"state": RolloutState.PROMOTED, "step": 1, "reason": "promoted"})
        deployer.records.write_rollout(deployer.record(deployment.id), promoted, version_id=candidate)
        deployer.reconciler.reconcile(deployment.id)
    finally:
        stop.set()
        traffic.join()
    assert results and set(results) == {200}, f"failures: {[r for r in results if r != 200]}"
    record = deployer.record(deployment.id)
    assert record.version_id == candidate and "promoted" in (record.status_message or "")
    assert answers(8) == Counter({2: 8})
    assert [i["metadata"]["name"] for i in deployer.cluster.emulator.objects("Ingress", NS)] == [
        record.k8s_service_name]
    deadline = time.monotonic() + 60
    while len(deployer.cluster.kubelet.containers(NS, all=True)) != 1:
        assert time.monotonic() < deadline, deployer.cluster.kubelet.containers(NS, all=True)
        time.sleep(0.2)


def test_a_shadow_is_its_own_release_without_an_ingress_and_stopping_it_leaves_only_the_live_one(
    deployer: Deployer,
) -> None:
    """A shadow through helm and real containers: its own release, no Ingress; the live pods copy
    to it by its Service's name (reached through the emulator's cluster DNS and kube-proxy
    stand-ins) and count how it agrees; stopping it leaves only the live release."""
    stable, candidate = deployer.version("iris"), deployer.version("flipped")
    deployment = deployer.records.add_deployment(stable, replicas=1)
    deployer.reconciler.reconcile(deployment.id)
    url = predict_url(deployer.cluster, deployment.id) + "/predict"
    live_release = deployer.record(deployment.id).k8s_service_name
    name = shadow_release(live_release)

    def server_env(release: str) -> dict[str, str]:
        (found,) = [d for d in deployer.cluster.emulator.objects("Deployment", NS)
                    if d["metadata"]["name"] == release]
        return {e["name"]: e.get("value", "") for e in found["spec"]["template"]["spec"]["containers"][0]["env"]}

    shadow = Shadow(version_id=candidate, started_at=datetime.now(UTC))
    deployer.records.write_shadow(deployer.record(deployment.id), shadow)
    deployer.reconciler.reconcile(deployment.id)
    record = deployer.record(deployment.id)
    assert record.status == DeploymentStatus.READY, record
    assert record.status_message == f"shadow: version id {candidate} gets a copy of 100% of requests"
    assert [i["metadata"]["name"] for i in deployer.cluster.emulator.objects("Ingress", NS)] == [live_release]
    assert server_env(live_release)["MIRROR_URL"] == f"http://{name}:80"
    assert "MIRROR_URL" not in server_env(name)
    deadline = time.monotonic() + 60  # the live release rolled to pods that copy: the old one stops
    while len(deployer.cluster.kubelet.containers(NS, all=True)) != 2:
        assert time.monotonic() < deadline, deployer.cluster.kubelet.containers(NS, all=True)
        time.sleep(0.2)
    with httpx.Client(timeout=30) as client:
        for _ in range(10):
            assert client.post(url, json={"instances": IRIS_ROWS}).json()["predictions"] == deployer.models["answers"]
    deadline = time.monotonic() + 60
    while True:
        (live_pod,) = deployer.reconciler.driver.scrape(NS, live_release)
        counters = parse(live_pod.text or "")
        if counters.shadow_compared + counters.shadow_failed + counters.shadow_dropped == 10:
            break
        assert time.monotonic() < deadline, counters
        time.sleep(0.2)
    assert (counters.shadow_compared, counters.shadow_failed, counters.shadow_dropped) == (10, 0, 0)
    # the flipped model answers 2 - label: it agrees on the rows labelled 1 only
    agreeing = sum(1 for label in deployer.models["answers"] if label == 1)
    assert (counters.shadow_agreed, counters.shadow_disagreed) == (10 * agreeing, 10 * (len(IRIS_ROWS) - agreeing))
    (shadow_pod,) = deployer.reconciler.driver.scrape(NS, name)
    assert shadow_pod.text is not None and 1 <= parse(shadow_pod.text).requests <= 10  # the copies, a few per call
    assert 'endpoint="mirror"' in shadow_pod.text and 'endpoint="predict"' not in shadow_pod.text  # no caller's

    stopped = shadow.model_copy(update={"state": ShadowState.STOPPED, "reason": "stopped by the owner",
                                        "stopped_at": datetime.now(UTC)})
    deployer.records.write_shadow(deployer.record(deployment.id), stopped)
    deployer.reconciler.reconcile(deployment.id)
    record = deployer.record(deployment.id)
    assert record.status == DeploymentStatus.READY
    assert record.status_message == f"shadow of version id {candidate} stopped (stopped by the owner)"
    assert [r.release for r in deployer.reconciler.driver.list_releases()] == [live_release]
    assert "MIRROR_URL" not in server_env(live_release)
    deadline = time.monotonic() + 60
    while len(deployer.cluster.kubelet.containers(NS, all=True)) != 1:
        assert time.monotonic() < deadline, deployer.cluster.kubelet.containers(NS, all=True)
        time.sleep(0.2)
    answer = httpx.post(url, json={"instances": IRIS_ROWS}, timeout=30)
    assert answer.json()["predictions"] == deployer.models["answers"]


@pytest.mark.parametrize(("case", "reason"), [
    ("wrong secret", "access denied (403): check MINIO_ACCESS_KEY and MINIO_SECRET_KEY"),
    # the crash loop's reason, whether the container is between two runs (CrashLoopBackOff) or in one
    ("crash loop", "last run ended with exit code 1; Cannot load the model file model.joblib"),
    ("missing image", "ImagePullBackOff"),
])
def test_a_first_install_that_cannot_serve_fails_with_the_pods_reason_and_leaves_nothing_running(
    deployer: Deployer, case: str, reason: str,
) -> None:
    settings = deployer.reconciler.settings
    changes = {"wrong secret": {"minio_access_key": "not-the-key"}, "crash loop": {},
               "missing image": {"model_server_image": "ghcr.io/modelport/model-server:does-not-exist"}}[case]
    # a shorter wait: nothing here can become ready
    deployer.reconciler.settings = settings.model_copy(update={**changes, "helm_timeout_seconds": 20})
    version = deployer.version("broken" if case == "crash loop" else "iris")
    deployment = deployer.records.add_deployment(version, replicas=1)
    deployer.reconciler.reconcile(deployment.id)
    record = deployer.record(deployment.id)
    assert record.status == DeploymentStatus.FAILED
    assert reason in (record.status_message or ""), record.status_message
    deployer.until_no_container()
    assert deployer.pods() == []


def test_the_sweep_reports_a_container_killed_behind_its_back_until_it_is_restarted(deployer: Deployer) -> None:
    deployment = deployer.records.add_deployment(deployer.version("iris"), replicas=1)
    deployer.reconciler.reconcile(deployment.id)
    assert deployer.record(deployment.id).status == DeploymentStatus.READY
    (container,) = deployer.containers()
    emulator = deployer.cluster.emulator
    with deployer.cluster.kubelet.holding_restarts():
        container.kill()
        emulator.wait_for("Pod", NS, lambda pods: len(pods) == 1 and not pod_ready(pods[0]))
        deployer.reconciler.sweep()
        message = deployer.record(deployment.id).status_message or ""
        assert message.startswith("degraded: ") and "exit code 137" in message, message
        # no ready endpoint behind the Ingress meanwhile: 503, as ingress-nginx answers
        url = predict_url(deployer.cluster, deployment.id) + "/predict"
        assert httpx.post(url, json={"instances": IRIS_ROWS}, timeout=30).status_code == 503
    emulator.wait_for("Pod", NS, lambda pods: len(pods) == 1 and pod_ready(pods[0]), timeout=60)
    deployer.reconciler.sweep()
    record = deployer.record(deployment.id)
    assert record.status == DeploymentStatus.READY and record.status_message is None
    assert deployer.pods()[0]["status"]["containerStatuses"][0]["restartCount"] == 1


# --------------------------------------------------------------------------- the kubelet itself


POD_MANIFEST = """
apiVersion: apps/v1
kind: Deployment
metadata: {name: echo, namespace: user-alice}
spec:
  replicas: 1
  selector: {matchLabels: {app: echo}}
  template:
    metadata: {labels: {app: echo}}
    spec:
      securityContext: {runAsNonRoot: true, runAsUser: 10001, runAsGroup: 10001}
      containers:
        - name: echo
          image: IMAGE
          command: ["python", "-m", "http.server", "8080"]
          ports: [{name: http, containerPort: 8080}]
          env:
            - name: TOKEN
              valueFrom: {secretKeyRef: {name: echo-secret, key: token}}
          readinessProbe: {httpGet: {path: /, port: http}, periodSeconds: 1}
"""


def test_a_missing_secret_keeps_the_pod_waiting_as_a_kubelet_would_until_it_exists(
    container_cluster: ContainerCluster, tools: Tools, model_server_image: str, tmp_path: Path,
) -> None:
    emulator = container_cluster.emulator
    env = {"KUBECONFIG": str(emulator.kubeconfig), "HOME": str(tmp_path)}

    def kubectl(*args: str, stdin: str | None = None) -> str:
        done = subprocess.run([tools.kubectl, *args], input=stdin, capture_output=True, text=True, env=env,
                              timeout=60, check=False)
        assert done.returncode == 0, done.stderr
        return done.stdout

    kubectl("create", "namespace", NS)
    kubectl("apply", "-f", "-", stdin=POD_MANIFEST.replace("IMAGE", model_server_image))

    def waiting(pods: list[dict[str, Any]]) -> bool:
        states = [c.get("state", {}) for p in pods for c in p.get("status", {}).get("containerStatuses", [])]
        return any(s.get("waiting", {}).get("reason") == "CreateContainerConfigError" for s in states)

    (pod,) = emulator.wait_for("Pod", NS, waiting)
    assert pod["status"]["containerStatuses"][0]["state"]["waiting"]["message"] == 'secret "echo-secret" not found'
    assert container_cluster.kubelet.containers(NS) == []
    kubectl("create", "secret", "generic", "echo-secret", "--namespace", NS, "--from-literal=token=s3cr3t")
    (pod,) = emulator.wait_for("Pod", NS, lambda pods: len(pods) == 1 and pod_ready(pods[0]), timeout=60)
    (container,) = container_cluster.kubelet.containers(NS)
    assert "TOKEN=s3cr3t" in container.attrs["Config"]["Env"]
    assert container.attrs["Config"]["User"] == "10001:10001"

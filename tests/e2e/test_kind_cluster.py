"""The deployer's flow on a real Kubernetes cluster (kind), where Docker and kind exist.

It is the same flow as tests/integration/test_deployer_flow.py, with HelmDriver's production
defaults (no emulator flags), the model server image built from the Dockerfile and loaded into
kind, the model in the cluster's MinIO, and a prediction through ingress-nginx on port 30080.
This machine has no Docker engine: the test reports that it did not run, and why.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import time
import uuid
from pathlib import Path

import boto3
import httpx
import pytest

from modelport.deploy.helm import HelmDriver
from modelport.deploy.reconcile import Action, Reconciler
from modelport.domain.entities import Artifact, DeploymentStatus
from modelport.local.processes import ServerProcess
from modelport.local.tools import Tools
from modelport.services import deployments, users
from modelport.settings import Settings
from modelport.store.records import ensure_table
from modelport.store.repository import Store
from tests.support.models import IRIS_ROWS, train_iris

IMAGE = "modelport/model-server:kind-test"


def _docker_works() -> bool:
    if not (shutil.which("docker") and shutil.which("kind")):
        return False
    return subprocess.run(["docker", "info"], capture_output=True).returncode == 0


pytestmark = [
    pytest.mark.kind,
    pytest.mark.skipif(not _docker_works(), reason="needs kind and a Docker engine; kind is not installed here "
                       "(its node image needs a registry); the container tests cover the helm path meanwhile"),
]


@pytest.fixture(scope="module")
def kind_cluster(repo_root: Path, tools: Tools) -> dict[str, str]:
    env = {**os.environ, "MODELPORT_TOOLS_DIR": str(tools.root)}
    out = subprocess.run(["bash", str(repo_root / "infra/kind/up.sh")], env=env, check=True,
                         capture_output=True, text=True)
    kubeconfig = out.stdout.strip().splitlines()[-1]
    subprocess.run(["docker", "build", "-t", IMAGE, str(repo_root)], check=True)
    subprocess.run(["kind", "load", "docker-image", IMAGE, "--name", "modelport"], check=True)
    return {"kubeconfig": kubeconfig}


def test_deploy_predict_scale_delete_on_kind(
    kind_cluster: dict[str, str], dynamodb_local: ServerProcess, tools: Tools, repo_root: Path, tmp_path: Path
):
    settings = Settings(
        table_name=f"kind-{uuid.uuid4().hex[:6]}", dynamodb_endpoint=dynamodb_local.url,
        minio_endpoint="localhost:30900", minio_access_key="modelport", minio_secret_key="modelport-secret",
        cluster_s3_endpoint="minio.minio.svc:9000", model_server_image=IMAGE, helm_timeout_seconds=300,
        kubeconfig=kind_cluster["kubeconfig"],
    )
    ensure_table(settings)
    store = Store(settings)
    users.create_user(store, "alice")
    path, model = train_iris(tmp_path / "model.joblib")
    s3 = boto3.client("s3", endpoint_url="http://localhost:30900", aws_access_key_id="modelport",
                      aws_secret_access_key="modelport-secret", region_name="us-east-1")
    m = store.create_model("alice", "iris", None)
    v = store.create_version("alice", m.id, None)
    key = f"models/{m.id}/versions/{v.id}/model.joblib"
    s3.upload_file(str(path), "models", key)
    store.set_version_artifacts(
        v.id, s3_path=f"s3://models/{key}", requirements_artifact=None,
        model_artifact=Artifact(
            key=key, size=path.stat().st_size, sha256=hashlib.sha256(path.read_bytes()).hexdigest()
        ),
    )
    driver = HelmDriver(settings=settings, helm_bin=str(tools.helm), kubectl_bin=str(tools.kubectl),
                        chart=repo_root / "charts/model-serving")
    reconciler = Reconciler(store, driver, settings)

    deployment = deployments.create_deployment(store, store.settings, "alice", v.id, 1)
    assert reconciler.reconcile(deployment.id).action == Action.DEPLOYED
    assert store.get_deployment("alice", deployment.id).status == DeploymentStatus.READY
    deadline = time.monotonic() + 60
    while True:  # the ingress controller picks the new Ingress up within seconds
        answer = httpx.post(f"{deployment.url}/predict", json={"instances": IRIS_ROWS}, timeout=10)
        if answer.status_code == 200 or time.monotonic() > deadline:
            break
        time.sleep(1)
    assert answer.json()["predictions"] == model.predict(IRIS_ROWS).tolist()

    deployments.update_deployment(store, store.settings, "alice", deployment.id, replicas=2)
    assert reconciler.reconcile(deployment.id).action == Action.DEPLOYED
    store.request_delete("alice", deployment.id)
    assert reconciler.reconcile(deployment.id).action == Action.DELETED
    assert httpx.post(f"{deployment.url}/predict", json={"instances": IRIS_ROWS}, timeout=10).status_code == 404

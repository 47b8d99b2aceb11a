"""The seed's Testing section through the helm driver and real containers: ``modelport up
--kubeconfig`` (a subprocess, driven over HTTP only) deploys with the real helm binary into the
Kubernetes emulator, whose pods the kubelet stand-in runs as containers of the image ``make image``
builds, and every prediction goes through the ingress stand-in at the record's URL. A deployment is
READY here because its container answered its readiness probe, not because a policy said so."""

from __future__ import annotations

import time
import uuid
from pathlib import Path

import httpx
import pytest

from modelport.local.processes import ServerProcess
from tests.conftest import ClusterS3, ContainerCluster
from tests.support.models import IRIS_ROWS, train_iris
from tests.support.up import start_up, upload_and_deploy, wait_status

pytestmark = [pytest.mark.e2e, pytest.mark.containers]

V2_BODY = {"inputs": [{"name": "input-0", "shape": [len(IRIS_ROWS), 4], "datatype": "FP64",
                       "data": [x for row in IRIS_ROWS for x in row]}]}


def until(check: object, what: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not check():  # type: ignore[operator]
        assert time.monotonic() < deadline, what
        time.sleep(0.2)


def test_the_seed_testing_section_through_helm_and_real_containers(
    tmp_path: Path, container_cluster: ContainerCluster, cluster_s3: ClusterS3, model_server_image: str,
    dynamodb_local: ServerProcess,
) -> None:
    model_path, model = train_iris(tmp_path / "model.joblib")
    expected = [int(v) for v in model.predict(IRIS_ROWS)]
    ingress_port = int(container_cluster.ingress_url.rsplit(":", 1)[1])
    kubelet = container_cluster.kubelet
    up = start_up(
        tmp_path, "--ephemeral", "--kubeconfig", str(container_cluster.emulator.kubeconfig),
        "--dynamodb-endpoint", dynamodb_local.url, "--s3-endpoint", cluster_s3.url, gateway_port=ingress_port,
        env_extra={
            "TABLE_NAME": f"containers-{uuid.uuid4().hex[:8]}", "CLUSTER_S3_ENDPOINT": cluster_s3.in_cluster,
            "MODEL_SERVER_IMAGE": model_server_image, "HELM_SERVER_SIDE": "false",
            "HELM_OPENAPI_VALIDATION": "false", "HELM_TIMEOUT_SECONDS": "90",
        },
    )  # fmt: skip
    try:
        with up.client() as client:
            # upload, deploy, READY once the container is ready; the URL is the ingress's
            created = upload_and_deploy(client, model_path)
            deployment_id = created["id"]
            url = wait_status(client, deployment_id)["url"]
            assert url == f"http://localhost:{ingress_port}/api/v1/predict/{deployment_id}"
            (container,) = kubelet.containers()
            assert container.attrs["Config"]["Image"] == model_server_image
            # the model's own answers on the three protocols
            seed = httpx.post(url + "/predict", json={"instances": IRIS_ROWS}, timeout=30)
            assert seed.status_code == 200, seed.text
            assert seed.json()["predictions"] == expected
            v1 = httpx.post(url + "/v1/models/model:predict", json={"instances": IRIS_ROWS}, timeout=30)
            assert v1.json()["predictions"] == expected, v1.text
            v2 = httpx.post(url + "/v2/models/model/infer", json=V2_BODY, timeout=30)
            assert v2.json()["outputs"][0]["data"] == expected, v2.text
            # scale to 2: two containers, both serving
            assert client.patch(f"/deployments/{deployment_id}", json={"replicas": 2}).status_code == 200
            wait_status(client, deployment_id, replicas=2)
            until(lambda: len(kubelet.containers()) == 2, "the second container never started")
            for _ in range(4):
                answer = httpx.post(url + "/predict", json={"instances": IRIS_ROWS}, timeout=30)
                assert answer.json()["predictions"] == expected
            # a protected URL: 401 without the token once the deployer has rolled it out
            issued = client.post(f"/deployments/{deployment_id}/token")
            assert issued.status_code == 201, issued.text
            token = issued.json()["token"]
            until(lambda: httpx.post(url + "/predict", json={"instances": IRIS_ROWS}, timeout=30).status_code == 401,
                  "the token was never rolled out")
            with_token = httpx.post(url + "/predict", json={"instances": IRIS_ROWS},
                                    headers={"Authorization": f"Bearer {token}"}, timeout=30)
            assert with_token.json()["predictions"] == expected
            wait_status(client, deployment_id, replicas=2)
            # delete: the record goes, then the containers, and the URL answers 404
            assert client.delete(f"/deployments/{deployment_id}").status_code == 202
            until(lambda: client.get(f"/deployments/{deployment_id}").status_code == 404, "the record stayed")
            until(lambda: not kubelet.containers(all=True), "containers were left behind")
            assert httpx.post(url + "/predict", json={"instances": IRIS_ROWS}, timeout=30).status_code == 404
    finally:
        assert up.stop() == 0, "\n".join(up.lines[-30:])

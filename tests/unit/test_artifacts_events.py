"""S3 event parsing and the artifacts handler fed the sample events of events/ (moto in-process)."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import boto3
import pytest
from moto import mock_aws

from modelport.artifacts.storage import ObjectStore
from modelport.domain.entities import VersionStatus
from modelport.domain.paths import parse_artifact_key
from modelport.local.sqs import LambdaContext
from modelport.services import users
from modelport.services.artifact_events import ArtifactEvents, ObjectCreated, decode_key, object_records
from modelport.settings import Settings
from modelport.store.records import ensure_table
from modelport.store.repository import Store
from tests.support.functions import load_function as load_handler
from tests.support.models import train_iris

ROOT = Path(__file__).resolve().parents[2]
EVENTS = ROOT / "events"


def sample(name: str) -> dict:
    return json.loads((EVENTS / name).read_text())


@pytest.mark.parametrize(
    ("raw", "key"),
    [
        ("models/3/versions/5/model.joblib", "models/3/versions/5/model.joblib"),
        ("models%2F3%2Fversions%2F5%2Fmodel.joblib", "models/3/versions/5/model.joblib"),
        ("models/3/versions/5/my+model.joblib", "models/3/versions/5/my model.joblib"),
        ("models/3/versions/5/a%2Bb.txt", "models/3/versions/5/a+b.txt"),
        ("models/1/versions/2/caf%C3%A9", "models/1/versions/2/café"),
    ],
)
def test_keys_are_decoded_as_aws_documents(raw: str, key: str) -> None:
    assert decode_key(raw) == key


def test_sample_events_parse() -> None:
    encoded = sample("artifacts-encoded-key.json")
    [record] = object_records(json.loads(encoded["Records"][0]["body"]))
    assert parse_artifact_key(record.key) == (3, 5, "model.joblib")
    test_event = sample("artifacts-s3-test-event.json")
    assert object_records(json.loads(test_event["Records"][0]["body"])) == []
    both = sample("artifacts-model-and-requirements.json")
    names = [r.key.rsplit("/", 1)[1] for m in both["Records"] for r in object_records(json.loads(m["body"]))]
    assert sorted(names) == ["model.joblib", "requirements.txt"]


def load_function() -> ModuleType:
    return load_handler("artifacts")


@pytest.fixture()
def moto_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[Settings]:
    bucket = json.loads(sample("artifacts-model-uploaded.json")["Records"][0]["body"])["Records"][0]["s3"][
        "bucket"]["name"]
    for name in ("MINIO_ENDPOINT", "DYNAMODB_ENDPOINT", "MINIO_ACCESS_KEY", "MINIO_SECRET_KEY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("TABLE_NAME", f"unit-{uuid.uuid4().hex[:6]}")
    monkeypatch.setenv("MINIO_BUCKET_NAME", bucket)
    with mock_aws():
        settings = Settings()
        ensure_table(settings)
        boto3.client("s3", region_name="us-east-1").create_bucket(Bucket=bucket)
        yield settings


def test_sample_put_event_makes_the_version_ready(moto_env: Settings, tmp_path: Path) -> None:
    """events/artifacts-model-uploaded.json names models/3/versions/5/model.joblib: make it exist."""
    store = Store(moto_env)
    users.create_user(store, "alice")
    models = [store.create_model("alice", f"m{i}", None) for i in range(3)]
    versions = [store.create_version("alice", models[2].id, None) for _ in range(5)]
    assert (models[2].id, versions[4].id) == (3, 5)
    path, _ = train_iris(tmp_path / "model.joblib")
    boto3.client("s3", region_name="us-east-1").put_object(
        Bucket=moto_env.minio_bucket_name, Key="models/3/versions/5/model.joblib", Body=path.read_bytes()
    )

    function = load_function()
    event = sample("artifacts-model-uploaded.json")
    answer = function.handler(event, LambdaContext(function_name="artifacts"))
    assert answer == {"batchItemFailures": []}
    version = store.find_version(5)
    assert version is not None and version.status == VersionStatus.READY
    assert version.model_artifact is not None and version.model_artifact.size == path.stat().st_size

    # the same event again changes nothing; an S3 test event and an unknown version are no failures
    assert function.handler(event, LambdaContext()) == {"batchItemFailures": []}
    assert store.find_version(5) == version
    assert function.handler(sample("artifacts-s3-test-event.json"), LambdaContext()) == {"batchItemFailures": []}
    unknown = json.loads(json.dumps(event).replace("versions/5/", "versions/77/"))
    assert function.handler(unknown, LambdaContext()) == {"batchItemFailures": []}


def test_an_upload_whose_event_was_lost_becomes_ready_on_recovery(moto_env: Settings, tmp_path: Path) -> None:
    """The object is in the bucket but its event never came (a queue lost at a stop): the recovery
    sweep handles it as the event would, and the event arriving later changes nothing."""
    store = Store(moto_env)
    users.create_user(store, "alice")
    model = store.create_model("alice", "iris", None)
    lost, never_uploaded = (store.create_version("alice", model.id, None) for _ in range(2))
    path, _ = train_iris(tmp_path / "model.joblib")
    key = f"models/{model.id}/versions/{lost.id}/model.joblib"
    boto3.client("s3", region_name="us-east-1").put_object(Bucket=moto_env.minio_bucket_name, Key=key,
                                                            Body=path.read_bytes())
    events = ArtifactEvents(store, ObjectStore(moto_env), moto_env)
    assert [(o.action, o.version_id) for o in events.recover()] == [("ready", lost.id)]
    ready = store.find_version(lost.id)
    assert ready is not None and ready.status == VersionStatus.READY
    assert store.find_version(never_uploaded.id).status == VersionStatus.PENDING_UPLOAD  # nothing to find
    assert events.recover() == []  # READY now: not looked at again
    late = events.handle(ObjectCreated(bucket=moto_env.minio_bucket_name, key=key))
    assert late.action == "unchanged" and store.find_version(lost.id) == ready

"""The control-plane API over real HTTP, on DynamoDB Local and moto's S3 server."""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Callable
from pathlib import Path

import boto3
import httpx
import pytest

from tests.integration.conftest import ControlPlane
from tests.support.models import train_iris

SEED_DEPLOYMENT_FIELDS = {"id", "version_id", "k8s_service_name", "url", "replicas", "created_at", "updated_at"}


@pytest.fixture(scope="module")
def model_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path, _ = train_iris(tmp_path_factory.mktemp("model") / "model.joblib")
    return path


@pytest.fixture()
def alice(control_plane: ControlPlane) -> httpx.Client:
    return control_plane.client(control_plane.create_user())


@pytest.fixture()
def bob(control_plane: ControlPlane) -> httpx.Client:
    return control_plane.client(control_plane.create_user())


def new_model(client: httpx.Client, name: str = "iris") -> dict:
    response = client.post("/api/v1/models", json={"name": name, "description": "iris classifier"})
    assert response.status_code == 201, response.text
    return response.json()


def ready_version(client: httpx.Client, model_id: int, model_file: Path, requirements: bytes | None = None) -> dict:
    version = client.post(f"/api/v1/models/{model_id}/versions", json={})
    assert version.status_code == 201, version.text
    assert version.json()["status"] == "PENDING_UPLOAD"
    files = {"model_file": ("model.joblib", model_file.read_bytes())}
    if requirements is not None:
        files["requirements_file"] = ("requirements.txt", requirements)
    uploaded = client.post(f"/api/v1/versions/{version.json()['id']}/upload", files=files)
    assert uploaded.status_code == 200, uploaded.text
    return uploaded.json()


def test_seed_flow_up_to_a_pending_deployment(control_plane: ControlPlane, alice: httpx.Client, model_file: Path):
    model = new_model(alice)
    version = ready_version(alice, model["id"], model_file, requirements=b"scikit-learn>=1.3\n")

    assert version["status"] == "READY"
    bucket = control_plane.settings.minio_bucket_name
    key = f"models/{model['id']}/versions/{version['id']}/model.joblib"
    assert version["s3_path"] == f"s3://{bucket}/{key}"
    assert version["model_artifact"]["sha256"] == hashlib.sha256(model_file.read_bytes()).hexdigest()
    assert version["model_artifact"]["size"] == model_file.stat().st_size
    assert version["requirements_artifact"]["size"] == len(b"scikit-learn>=1.3\n")
    s3 = boto3.client("s3", endpoint_url=control_plane.settings.s3_endpoint_url, region_name="us-east-1")
    assert s3.get_object(Bucket=bucket, Key=key)["Body"].read() == model_file.read_bytes()

    created = alice.post(f"/api/v1/versions/{version['id']}/deployments", json={"replicas": 2})
    assert created.status_code == 201, created.text
    deployment = created.json()
    assert set(deployment) == SEED_DEPLOYMENT_FIELDS | {"status", "status_message", "rollout", "shadow"}
    assert deployment["rollout"] is None
    assert deployment["status"] == "PENDING"
    assert deployment["replicas"] == 2
    assert deployment["version_id"] == version["id"]
    assert deployment["url"] == f"http://localhost:30080/api/v1/predict/{deployment['id']}"
    assert deployment["k8s_service_name"].startswith(f"model-{deployment['id']}-")
    assert deployment["created_at"].endswith("Z") or deployment["created_at"].endswith("+00:00")

    assert alice.get(f"/api/v1/deployments/{deployment['id']}").json() == deployment
    listed = alice.get("/api/v1/deployments").json()
    assert [d["id"] for d in listed["items"]] == [deployment["id"]]

    # the version is in use now: its artifact cannot be replaced, its model cannot be deleted
    again = alice.post(
        f"/api/v1/versions/{version['id']}/upload", files={"model_file": ("model.joblib", model_file.read_bytes())}
    )
    assert again.status_code == 409 and again.json()["code"] == "version_in_use"
    assert alice.delete(f"/api/v1/models/{model['id']}").json()["code"] == "model_in_use"

    deleting = alice.delete(f"/api/v1/deployments/{deployment['id']}")
    assert deleting.status_code == 202
    assert deleting.json()["status"] == "DELETING"
    assert alice.patch(f"/api/v1/deployments/{deployment['id']}", json={"replicas": 1}).status_code == 409


def test_another_users_ids_answer_404_everywhere(alice: httpx.Client, bob: httpx.Client, model_file: Path):
    model = new_model(alice, "private")
    version = ready_version(alice, model["id"], model_file)
    deployment = alice.post(f"/api/v1/versions/{version['id']}/deployments", json={"replicas": 1}).json()
    m, v, d = model["id"], version["id"], deployment["id"]
    upload = {"model_file": ("model.joblib", model_file.read_bytes())}

    attempts = [
        bob.get(f"/api/v1/models/{m}"),
        bob.patch(f"/api/v1/models/{m}", json={"description": "mine now"}),
        bob.delete(f"/api/v1/models/{m}"),
        bob.post(f"/api/v1/models/{m}/versions", json={}),
        bob.get(f"/api/v1/models/{m}/versions"),
        bob.get(f"/api/v1/versions/{v}"),
        bob.post(f"/api/v1/versions/{v}/upload", files=upload),
        bob.post(f"/api/v1/versions/{v}/deployments", json={"replicas": 1}),
        bob.get(f"/api/v1/deployments/{d}"),
        bob.patch(f"/api/v1/deployments/{d}", json={"replicas": 3}),
        bob.delete(f"/api/v1/deployments/{d}"),
    ]
    for response in attempts:
        assert response.status_code == 404, (response.request.method, response.request.url, response.text)
        assert response.json()["code"].endswith("not_found")
    # the same answer as for ids that do not exist
    assert bob.get("/api/v1/models/999999").json()["code"] == attempts[0].json()["code"]
    assert bob.get("/api/v1/models").json()["items"] == []
    assert bob.get("/api/v1/deployments").json()["items"] == []
    # and nothing of alice's changed
    assert alice.get(f"/api/v1/deployments/{d}").json()["replicas"] == 1
    assert alice.get(f"/api/v1/deployments/{d}").json()["status"] == "PENDING"


def test_concurrent_patches_lose_nothing(alice: httpx.Client, model_file: Path):
    model = new_model(alice, "racy")
    first = ready_version(alice, model["id"], model_file)
    second = ready_version(alice, model["id"], model_file)
    deployment = alice.post(f"/api/v1/versions/{first['id']}/deployments", json={"replicas": 1}).json()
    url = f"/api/v1/deployments/{deployment['id']}"

    for replicas, version_id in [(3, second["id"]), (5, first["id"]), (2, second["id"])]:
        barrier = threading.Barrier(2)
        answers: list[httpx.Response] = []

        def patch(body: dict, barrier: threading.Barrier = barrier, answers: list = answers) -> None:
            barrier.wait()
            answers.append(alice.patch(url, json=body))

        threads = [
            threading.Thread(target=patch, args=({"replicas": replicas},)),
            threading.Thread(target=patch, args=({"version_id": version_id},)),
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert [a.status_code for a in answers] == [200, 200], [a.text for a in answers]
        current = alice.get(url).json()
        assert (current["replicas"], current["version_id"]) == (replicas, version_id)

    # the counts that guard re-uploads followed every move: only `second` is in use now
    reupload = {"model_file": ("model.joblib", model_file.read_bytes())}
    assert alice.post(f"/api/v1/versions/{first['id']}/upload", files=reupload).status_code == 200
    assert alice.post(f"/api/v1/versions/{second['id']}/upload", files=reupload).status_code == 409


def test_pagination_walks_every_model_once(alice: httpx.Client):
    names = {f"paged-{i}" for i in range(5)}
    for name in names:
        new_model(alice, name)
    seen: list[str] = []
    cursor = None
    pages = 0
    while True:
        params = {"limit": 2, **({"cursor": cursor} if cursor else {})}
        page = alice.get("/api/v1/models", params=params).json()
        seen += [m["name"] for m in page["items"]]
        pages += 1
        cursor = page["next_cursor"]
        if not cursor:
            break
    assert sorted(seen) == sorted(names)
    assert pages >= 3


@pytest.mark.parametrize(
    ("method", "path", "kwargs", "status", "code"),
    [
        ("post", "/api/v1/models", {"content": b"{not json", "headers": {"content-type": "application/json"}},
         400, "malformed_json"),
        ("post", "/api/v1/models", {"json": {"name": 42}}, 422, "validation_error"),
        ("post", "/api/v1/models", {"json": {"name": "ok", "colour": "red"}}, 422, "validation_error"),
        ("post", "/api/v1/models", {"json": {"name": "../etc"}}, 422, "validation_error"),
        ("post", "/api/v1/models", {"json": {}}, 422, "validation_error"),
        ("get", "/api/v1/models/abc", {}, 422, "validation_error"),
        ("get", "/api/v1/models/0", {}, 404, "model_not_found"),
        ("get", "/api/v1/models?limit=0", {}, 422, "validation_error"),
        ("get", "/api/v1/models?cursor=garbage", {}, 400, "bad_cursor"),
        ("get", "/api/v1/deployments/123456789", {}, 404, "deployment_not_found"),
        ("get", "/api/v1/nowhere", {}, 404, "not_found"),
        ("put", "/api/v1/models", {}, 405, "method_not_allowed"),
    ],
)
def test_bad_requests_get_clear_errors(alice: httpx.Client, method, path, kwargs, status, code):
    response = getattr(alice, method)(path, **kwargs)
    assert response.status_code == status, response.text
    body = response.json()
    assert body["code"] == code
    assert body["message"]


def test_bad_deployment_requests(alice: httpx.Client, model_file: Path):
    model = new_model(alice, "strict")
    pending = alice.post(f"/api/v1/models/{model['id']}/versions", json={"version": "draft"}).json()
    refused = alice.post(f"/api/v1/versions/{pending['id']}/deployments", json={"replicas": 1})
    assert refused.status_code == 409
    assert refused.json()["code"] == "version_not_ready"
    assert "PENDING_UPLOAD" in refused.json()["message"]

    version = ready_version(alice, model["id"], model_file)
    for replicas in (-1, 0, 10_000, "two", 1.5):
        bad = alice.post(f"/api/v1/versions/{version['id']}/deployments", json={"replicas": replicas})
        assert bad.status_code == 422, (replicas, bad.text)
    assert alice.post(f"/api/v1/versions/{version['id']}/deployments", json={"replicas": 1, "gpu": True}).status_code \
        == 422
    deployment = alice.post(f"/api/v1/versions/{version['id']}/deployments", json={}).json()
    assert deployment["replicas"] == 1
    assert alice.patch(f"/api/v1/deployments/{deployment['id']}", json={"replicas": -3}).status_code == 422
    assert alice.patch(f"/api/v1/deployments/{deployment['id']}", json={"version_id": pending["id"]}).json()["code"] \
        == "version_not_ready"
    duplicate = alice.post(f"/api/v1/models/{model['id']}/versions", json={"version": "draft"})
    assert duplicate.status_code == 409 and duplicate.json()["code"] == "version_exists"
    assert alice.post("/api/v1/models", json={"name": "strict"}).json()["code"] == "model_exists"


def test_bad_uploads(alice: httpx.Client, model_file: Path, control_plane: ControlPlane):
    model = new_model(alice, "uploads")
    version = alice.post(f"/api/v1/models/{model['id']}/versions", json={}).json()
    url = f"/api/v1/versions/{version['id']}/upload"

    not_pickle = alice.post(url, files={"model_file": ("model.joblib", b"just some text")})
    assert (not_pickle.status_code, not_pickle.json()["code"]) == (400, "not_a_model_file")
    empty = alice.post(url, files={"model_file": ("model.joblib", b"")})
    assert (empty.status_code, empty.json()["code"]) == (400, "empty_file")
    missing = alice.post(url, files={"requirements_file": ("requirements.txt", b"numpy\n")})
    assert missing.status_code == 422
    bad_req = alice.post(
        url, files={"model_file": ("model.joblib", model_file.read_bytes()),
                    "requirements_file": ("requirements.txt", b"numpy\n-e git+https://example.com/x.git\n")},
    )
    assert (bad_req.status_code, bad_req.json()["code"]) == (400, "bad_requirements")
    assert "line 2" in bad_req.json()["message"]
    limit = control_plane.settings.max_upload_bytes
    too_big = alice.post(url, files={"model_file": ("model.joblib", b"\x80" + b"0" * limit)})
    assert (too_big.status_code, too_big.json()["code"]) == (413, "file_too_large")
    # nothing of the failed attempts stuck to the version
    after = alice.get(f"/api/v1/versions/{version['id']}").json()
    assert after["status"] == "PENDING_UPLOAD" and after["s3_path"] is None


def test_requests_without_valid_credentials_are_refused(control_plane: ControlPlane):
    for client in (control_plane.client(None), control_plane.client("mp_not-a-key")):
        response = client.get("/api/v1/models")
        assert response.status_code == 401
        assert response.json()["code"] in {"missing_credentials", "invalid_api_key"}
    # health and the API's description need no key
    assert control_plane.client(None).get("/healthz").json()["status"] == "ok"
    spec = control_plane.client(None).get("/api/v1/openapi.json").json()
    assert "/api/v1/versions/{version_id}/deployments" in spec["paths"]


def test_delete_model_removes_versions_and_artifacts(
    control_plane: ControlPlane, alice: httpx.Client, model_file: Path
):
    model = new_model(alice, "short-lived")
    version = ready_version(alice, model["id"], model_file)
    assert alice.delete(f"/api/v1/models/{model['id']}").status_code == 204
    assert alice.get(f"/api/v1/versions/{version['id']}").status_code == 404
    assert alice.get(f"/api/v1/models/{model['id']}").status_code == 404
    s3 = boto3.client("s3", endpoint_url=control_plane.settings.s3_endpoint_url, region_name="us-east-1")
    listed = s3.list_objects_v2(Bucket=control_plane.settings.minio_bucket_name, Prefix=f"models/{model['id']}/")
    assert listed.get("KeyCount", 0) == 0
    # the name is free again
    assert alice.post("/api/v1/models", json={"name": "short-lived"}).status_code == 201


def test_public_base_url_setting_shapes_deployment_urls(
    control_plane_factory: Callable[..., ControlPlane], model_file: Path
):
    plane = control_plane_factory(PUBLIC_BASE_URL="https://models.example.com/")
    client = plane.client(plane.create_user())
    model = new_model(client)
    version = ready_version(client, model["id"], model_file)
    deployment = client.post(f"/api/v1/versions/{version['id']}/deployments", json={"replicas": 1}).json()
    assert deployment["url"] == f"https://models.example.com/api/v1/predict/{deployment['id']}"


def test_me_names_the_caller_and_their_namespace(control_plane: ControlPlane):
    client = control_plane.client(control_plane.create_user("carol-42"))
    assert client.get("/api/v1/me").json() == {"owner": "carol-42", "namespace": "user-carol-42"}
    assert control_plane.client(None).get("/api/v1/me").status_code == 401


def test_an_idempotency_key_makes_a_retried_create_harmless(alice: httpx.Client, model_file: Path):
    model = new_model(alice, "retried")
    version = ready_version(alice, model["id"], model_file)
    url = f"/api/v1/versions/{version['id']}/deployments"
    key = {"Idempotency-Key": "deploy-7f3a"}

    first = alice.post(url, json={"replicas": 2}, headers=key)
    again = alice.post(url, json={"replicas": 2}, headers=key)
    assert first.status_code == again.status_code == 201
    assert again.json() == first.json()
    assert [d["id"] for d in alice.get("/api/v1/deployments").json()["items"]].count(first.json()["id"]) == 1
    assert len([d for d in alice.get("/api/v1/deployments").json()["items"] if d["version_id"] == version["id"]]) == 1

    reused = alice.post(url, json={"replicas": 3}, headers=key)
    assert (reused.status_code, reused.json()["code"]) == (422, "idempotency_key_reused")
    # keys belong to their owner and operation: the same key elsewhere is a new request
    other = alice.post(f"/api/v1/models/{model['id']}/versions", json={}, headers=key)
    assert other.status_code == 201
    bad = alice.post(url, json={"replicas": 1}, headers={"Idempotency-Key": "x" * 300})
    assert (bad.status_code, bad.json()["code"]) == (422, "bad_idempotency_key")
    # without a key, each request creates
    assert alice.post(url, json={"replicas": 1}).json()["id"] != first.json()["id"]


def test_a_failed_request_leaves_its_idempotency_key_free(alice: httpx.Client, model_file: Path):
    model = new_model(alice, "later")
    pending = alice.post(f"/api/v1/models/{model['id']}/versions", json={}).json()
    key = {"Idempotency-Key": "after-upload"}
    url = f"/api/v1/versions/{pending['id']}/deployments"
    assert alice.post(url, json={"replicas": 1}, headers=key).status_code == 409  # not READY yet
    alice.post(f"/api/v1/versions/{pending['id']}/upload",
               files={"model_file": ("model.joblib", model_file.read_bytes())})
    assert alice.post(url, json={"replicas": 1}, headers=key).status_code == 201


def test_a_deployment_token_is_issued_once_and_can_be_removed(alice: httpx.Client, bob: httpx.Client,
                                                               model_file: Path):
    model = new_model(alice, "guarded")
    version = ready_version(alice, model["id"], model_file)
    deployment = alice.post(f"/api/v1/versions/{version['id']}/deployments", json={"replicas": 1}).json()
    url = f"/api/v1/deployments/{deployment['id']}/token"
    assert alice.get(url).json() == {"deployment_id": deployment["id"], "protected": False, "token": None}

    issued = alice.post(url)
    assert issued.status_code == 201 and issued.json()["token"].startswith("mpt_")
    assert alice.get(url).json()["protected"] is True and alice.get(url).json()["token"] is None
    rotated = alice.post(url).json()["token"]
    assert rotated != issued.json()["token"]
    for attempt in (bob.get(url), bob.post(url), bob.delete(url)):
        assert attempt.status_code == 404
    assert alice.delete(url).json()["protected"] is False
    assert alice.get(url).json()["protected"] is False

"""functions/api/app.py as Lambda runs it: API Gateway HTTP API (payload 2.0) events from events/,
the caller being the JWT `sub` of the authorizer context; AWS on moto in-process."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import boto3
import pytest
from moto import mock_aws

from modelport.local.streams import LocalLambdaContext
from modelport.store.records import ensure_table
from modelport.store.repository import Store
from tests.support.functions import load_function

EVENTS = Path(__file__).resolve().parents[2] / "events"


def event(name: str) -> dict:
    return json.loads((EVENTS / f"{name}.json").read_text())


@pytest.fixture()
def api(monkeypatch: pytest.MonkeyPatch) -> Iterator[ModuleType]:
    monkeypatch.setenv("TABLE_NAME", "lambda-unit")
    monkeypatch.setenv("MINIO_BUCKET_NAME", "models")
    monkeypatch.delenv("DYNAMODB_ENDPOINT", raising=False)
    monkeypatch.delenv("MINIO_ENDPOINT", raising=False)
    with mock_aws():
        module = load_function("api")
        settings = module.asgi.app.state.settings
        ensure_table(settings)
        boto3.client("s3", region_name="us-east-1").create_bucket(Bucket="models")
        store: Store = module.asgi.app.state.store
        model = store.create_model("user-alice", "seeded", None)
        for _ in range(5):  # the sample events name version 5
            store.create_version("user-alice", model.id, None)
        yield module


def invoke(module: ModuleType, name: str) -> tuple[int, dict]:
    response = module.handler(event(name), LocalLambdaContext("api", 30))
    return response["statusCode"], json.loads(response["body"] or "null")


def test_every_sample_event_gets_its_answer(api: ModuleType):
    status, body = invoke(api, "api-healthz")
    assert (status, body["status"]) == (200, "ok")
    status, body = invoke(api, "api-openapi")
    assert status == 200 and "/api/v1/models" in body["paths"]
    status, body = invoke(api, "api-unauthenticated")
    assert (status, body["code"]) == (401, "missing_credentials")

    status, body = invoke(api, "api-create-model")
    assert (status, body["name"]) == (201, "iris-classifier")
    status, body = invoke(api, "api-list-models")
    assert status == 200 and {m["name"] for m in body["items"]} == {"seeded", "iris-classifier"}
    status, body = invoke(api, "api-get-model-not-found")
    assert (status, body["code"]) == (404, "model_not_found")

    status, body = invoke(api, "api-upload-multipart")
    assert (status, body["id"], body["status"]) == (200, 5, "READY")
    assert body["requirements_artifact"]["size"] == len("scikit-learn==1.9.1\n")

    status, body = invoke(api, "api-create-deployment")
    assert (status, body["id"], body["status"], body["replicas"]) == (201, 1, "PENDING", 1)
    status, body = invoke(api, "api-patch-deployment")
    assert (status, body["replicas"]) == (200, 2)
    status, body = invoke(api, "api-delete-deployment")
    assert (status, body["status"]) == (202, "DELETING")


def test_the_jwt_subject_is_the_owner(api: ModuleType):
    invoke(api, "api-create-model")
    other = event("api-list-models")
    other["requestContext"]["authorizer"]["jwt"]["claims"]["sub"] = "auth0|someone-else"
    response = api.handler(other, LocalLambdaContext("api", 30))
    assert json.loads(response["body"])["items"] == []


def test_the_openapi_document_is_complete_and_the_same_however_it_is_reached(api: ModuleType):
    """FastAPI builds the document on its first request, and a route's effective context on the
    first request that reaches its router: whichever comes first, /api/v1/openapi.json lists every
    operation under /api/v1 with the same operation ids, and /docs loads it."""
    from fastapi.routing import APIRoute

    from modelport.api.app import API_PREFIX, create_app
    from modelport.api.routers import deployments, models, versions

    assert invoke(api, "api-list-models")[0] == 200  # routes reached before the document is built
    status, served = invoke(api, "api-openapi")
    assert status == 200
    untouched = create_app(api.asgi.app.state.settings).openapi()  # built before any request
    assert json.dumps(served, sort_keys=False) == json.dumps(untouched, sort_keys=False)

    expected = {("get", f"{API_PREFIX}/me"), ("get", "/healthz")}
    for router in (models.router, versions.router, deployments.router):
        for route in router.routes:
            assert isinstance(route, APIRoute)
            expected |= {(method.lower(), API_PREFIX + route.path) for method in route.methods}
    operations = {(method, path) for path, item in served["paths"].items() for method in item}
    assert operations == expected
    operation_ids = [op["operationId"] for item in served["paths"].values() for op in item.values()]
    assert len(set(operation_ids)) == len(operation_ids)
    assert all("_api_v1_" in op_id for op_id in operation_ids if op_id != "healthz_healthz_get")

    docs = event("api-openapi")
    docs["rawPath"] = docs["requestContext"]["http"]["path"] = "/docs"
    docs["routeKey"] = "GET /docs"
    response = api.handler(docs, LocalLambdaContext("api", 30))
    assert response["statusCode"] == 200 and f"{API_PREFIX}/openapi.json" in response["body"]

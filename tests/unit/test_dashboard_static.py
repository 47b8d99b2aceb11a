"""The dashboard's static files as the API serves them (no auth on them; data calls need the key),
and that the package build ships them."""

from __future__ import annotations

import re
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from moto import mock_aws

from modelport.api.app import create_app
from modelport.settings import Settings

UI = Path(__file__).resolve().parents[2] / "src" / "modelport" / "api" / "ui"


@pytest.fixture()
def client() -> Iterator[TestClient]:
    with mock_aws():
        yield TestClient(create_app(Settings(table_name="ui-unit", minio_bucket_name="models")))


def test_ui_without_a_slash_redirects_relatively(client: TestClient) -> None:
    answer = client.get("/ui", follow_redirects=False)
    assert answer.status_code == 307 and answer.headers["location"] == "ui/"


def test_the_index_and_its_modules_are_served_without_credentials(client: TestClient) -> None:
    index = client.get("/ui/")
    assert index.status_code == 200 and index.headers["content-type"].startswith("text/html")
    assert "<title>modelport</title>" in index.text
    referenced = re.findall(r'(?:src|href)="\./([^"]+)"', index.text)
    assert "app.js" in referenced and "style.css" in referenced
    for name in referenced:
        assert client.get(f"/ui/{name}").status_code == 200, name
    script = client.get("/ui/app.js")
    assert script.headers["content-type"].split(";")[0] in ("text/javascript", "application/javascript")
    for imported in re.findall(r'from "\./([^"]+)"', script.text):  # every module app.js imports is there
        assert client.get(f"/ui/{imported}").status_code == 200, imported


def test_data_calls_still_need_the_key_and_a_missing_file_is_a_json_404(client: TestClient) -> None:
    assert client.get("/api/v1/models").status_code == 401
    missing = client.get("/ui/nothing-here.js")
    assert missing.status_code == 404 and missing.json()["code"] == "not_found"


def test_the_key_never_goes_into_a_url() -> None:
    """The key is held in sessionStorage and sent as the bearer header, never in a query string."""
    sources = "\n".join(p.read_text() for p in UI.glob("*.js"))
    assert "sessionStorage" in sources and "localStorage" not in sources
    assert not re.search(r"[?&](api_)?key=", sources)


def test_the_wheel_ships_the_dashboard(tmp_path: Path) -> None:
    root = UI.parents[3]
    subprocess.run([sys.executable, "-m", "uv", "build", "--wheel", "--out-dir", str(tmp_path), str(root)],
                   check=True, capture_output=True, timeout=240)
    wheel = next(tmp_path.glob("modelport-*.whl"))
    names = set(zipfile.ZipFile(wheel).namelist())
    for path in UI.iterdir():
        assert f"modelport/api/ui/{path.name}" in names, path.name


def test_the_bucket_lets_the_dashboard_post_uploads() -> None:
    """A browser's presigned POST with upload progress is preflighted; the bucket must answer it."""
    from modelport.artifacts.storage import BROWSER_UPLOAD_CORS, ObjectStore

    with mock_aws():
        store = ObjectStore(Settings(table_name="ui-unit", minio_bucket_name="models"))
        store.ensure_bucket()
        rules = store.client.get_bucket_cors(Bucket="models")["CORSRules"]
    assert [{k: v for k, v in r.items() if k != "ID"} for r in rules] == BROWSER_UPLOAD_CORS["CORSRules"]


def test_the_lambda_handler_serves_the_files_through_api_gateway(monkeypatch: pytest.MonkeyPatch) -> None:
    """GET /ui, /ui/ and a module as API Gateway (HTTP API, payload 2.0) hands them to the API function."""
    import json

    from modelport.local.streams import LocalLambdaContext
    from tests.support.functions import load_function

    monkeypatch.setenv("TABLE_NAME", "ui-lambda")
    monkeypatch.setenv("MINIO_BUCKET_NAME", "models")
    monkeypatch.delenv("DYNAMODB_ENDPOINT", raising=False)
    monkeypatch.delenv("MINIO_ENDPOINT", raising=False)
    sample = json.loads((UI.parents[3] / "events" / "api-healthz.json").read_text())

    def get(path: str, route: str) -> dict:
        event = json.loads(json.dumps(sample))
        event["rawPath"] = event["requestContext"]["http"]["path"] = path
        event["routeKey"] = event["requestContext"]["routeKey"] = route
        event["headers"]["accept"] = "*/*"
        return dict(module.handler(event, LocalLambdaContext("api", 30)))

    with mock_aws():
        module = load_function("api")
        redirect = get("/ui", "GET /ui")
        assert redirect["statusCode"] == 307 and redirect["headers"]["location"] == "ui/"
        index = get("/ui/", "GET /ui/{proxy+}")
        assert index["statusCode"] == 200 and "<title>modelport</title>" in index["body"]
        script = get("/ui/app.js", "GET /ui/{proxy+}")
        assert script["statusCode"] == 200 and not script["isBase64Encoded"] and "import " in script["body"]


def test_a_store_without_bucket_cors_still_gets_its_bucket() -> None:
    """MinIO answers PutBucketCors with NotImplemented (it allows every origin itself)."""
    from unittest.mock import MagicMock

    from botocore.exceptions import ClientError

    from modelport.artifacts.storage import ObjectStore

    client = MagicMock()
    client.exceptions.ClientError = ClientError
    client.put_bucket_cors.side_effect = ClientError(
        {"Error": {"Code": "NotImplemented", "Message": "A header you provided implies functionality that is not "
                   "implemented"}}, "PutBucketCors")
    ObjectStore(Settings(table_name="ui-unit", minio_bucket_name="models"), client).ensure_bucket()
    client.put_bucket_versioning.assert_called_once()
    denied = {"Error": {"Code": "AccessDenied", "Message": "no"}}
    client.put_bucket_cors.side_effect = ClientError(denied, "PutBucketCors")  # type: ignore[arg-type]
    with pytest.raises(ClientError):
        ObjectStore(Settings(table_name="ui-unit", minio_bucket_name="models"), client).ensure_bucket()

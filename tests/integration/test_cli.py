"""The ``modelport`` CLI as users run it: a subprocess per command, against the real API process
(DynamoDB Local + moto's S3 server), with its config file in tmp_path. Uploads go the presigned way
and turn READY through the real artifacts function behind the bucket's S3 -> SQS notifications."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import pickle
import stat
import subprocess
import sys
import tomllib
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3
import httpx
import joblib
import pytest

from modelport.cli.client import ApiClient, wait_until
from modelport.local.processes import ServerProcess, free_port, start
from modelport.local.sqs import SqsEventSource, setup_upload_events
from modelport.local.tools import Tools
from tests.integration.conftest import ControlPlane
from tests.support.kube_emulator import KubeEmulator
from tests.support.models import IRIS_ROWS, train_iris

ROOT = Path(__file__).resolve().parents[2]


def artifacts_worker(plane: ControlPlane, moto_server: ServerProcess) -> SqsEventSource:
    """What the platform runs behind the bucket: S3 ObjectCreated -> SQS -> functions/artifacts,
    so presigned uploads go READY or REJECTED as they do in AWS."""
    kwargs = {"endpoint_url": moto_server.url, "region_name": "us-east-1",
              "aws_access_key_id": "testing", "aws_secret_access_key": "testing"}
    sqs = boto3.client("sqs", **kwargs)
    queues = setup_upload_events(
        boto3.client("s3", **kwargs), sqs, plane.settings.minio_bucket_name, f"cli-uploads-{uuid.uuid4().hex[:8]}",
        visibility_timeout=30,
    )
    spec = importlib.util.spec_from_file_location(
        f"artifacts_fn_{uuid.uuid4().hex[:8]}", ROOT / "functions" / "artifacts" / "app.py"
    )
    assert spec is not None and spec.loader is not None
    function = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(function)
    return SqsEventSource(
        sqs, queues.queue_url, function.build(plane.settings), batch_size=10, wait_seconds=1, function_name="artifacts",
    ).start()


@pytest.fixture(scope="module")
def platform(control_plane: ControlPlane, moto_server: ServerProcess) -> Iterator[ControlPlane]:
    worker = artifacts_worker(control_plane, moto_server)
    yield control_plane
    worker.stop()


@dataclass
class Cli:
    config: Path
    env: dict[str, str] = field(default_factory=dict)

    def __call__(self, *args: str, extra_env: dict[str, str] | None = None, timeout: float = 120) -> Result:
        env = {k: v for k, v in os.environ.items() if not k.startswith("MODELPORT_")}
        env.update({"MODELPORT_CONFIG": str(self.config), "COLUMNS": "200", "NO_COLOR": "1"})
        env.update(self.env)
        env.update(extra_env or {})
        done = subprocess.run(
            [sys.executable, "-m", "modelport.cli", *args], env=env, capture_output=True, text=True, timeout=timeout,
        )
        return Result(done.returncode, done.stdout, done.stderr)

    def json(self, *args: str) -> Any:
        result = self(*args, "--json")
        assert result.code == 0, result
        return json.loads(result.stdout)


@dataclass
class Result:
    code: int
    stdout: str
    stderr: str

    @property
    def error_line(self) -> str:
        """The error as the CLI promises it: exactly one line on stderr starting with 'error:'."""
        errors = [line for line in self.stderr.splitlines() if line.startswith("error:")]
        assert len(errors) == 1, self
        assert "Traceback" not in self.stderr, self
        return errors[0]


@pytest.fixture(scope="module")
def model_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path, _ = train_iris(tmp_path_factory.mktemp("model") / "model.joblib")
    return path


def logged_in(control_plane: ControlPlane, config: Path) -> Cli:
    cli = Cli(config)
    key = control_plane.create_user()
    result = cli("login", "--endpoint", control_plane.url, "--api-key", key)
    assert result.code == 0, result
    return cli


@pytest.fixture()
def alice(platform: ControlPlane, tmp_path: Path) -> Cli:
    return logged_in(platform, tmp_path / "alice" / "config.toml")


@pytest.fixture()
def bob(platform: ControlPlane, tmp_path: Path) -> Cli:
    return logged_in(platform, tmp_path / "bob" / "config.toml")


def ready_version(cli: Cli, model_file: Path, name: str = "iris") -> dict[str, Any]:
    """A model and a READY version, by `modelport upload` (presigned POST, then the wait)."""
    model = cli.json("models", "create", name)
    version = cli.json("upload", str(model["id"]), str(model_file), "--timeout", "60")
    assert version["status"] == "READY", version
    return version


# -------------------------------------------------------------------------------------------- login


def test_login_stores_the_config_and_status_reports_it(control_plane: ControlPlane, tmp_path: Path) -> None:
    config = tmp_path / "cfg" / "config.toml"
    key = control_plane.create_user()
    cli = Cli(config)

    result = cli("login", "--endpoint", control_plane.url + "/", "--api-key", key)

    assert result.code == 0, result
    assert str(config) in result.stdout
    stored = tomllib.loads(config.read_text())
    assert stored == {"endpoint": control_plane.url, "api_key": key}
    assert stat.S_IMODE(config.stat().st_mode) == 0o600

    status = cli.json("status")
    assert status["endpoint"] == control_plane.url
    assert status["reachable"] is True and status["authenticated"] is True
    assert key not in json.dumps(status)  # the key is masked


def test_login_with_a_bad_key_is_refused_and_stores_nothing(control_plane: ControlPlane, tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    result = Cli(config)("login", "--endpoint", control_plane.url, "--api-key", "mp_not-a-key")

    assert result.code == 1, result
    assert "API key" in result.error_line and "not valid" in result.error_line
    assert result.stderr.strip() == result.error_line
    assert not config.exists()


def test_environment_overrides_the_config_file(control_plane: ControlPlane, alice: Cli) -> None:
    result = alice("models", "list", extra_env={"MODELPORT_API_KEY": "mp_wrong"})
    assert result.code == 1
    assert "not valid" in result.error_line


def test_without_a_config_the_cli_says_to_log_in(tmp_path: Path) -> None:
    result = Cli(tmp_path / "none.toml")("models", "list")
    assert result.code == 2
    assert "modelport login" in result.error_line


def test_an_unreachable_endpoint_exits_3_with_one_line(tmp_path: Path) -> None:
    endpoint = f"http://127.0.0.1:{free_port()}"
    cli = Cli(tmp_path / "config.toml")

    result = cli("models", "list", extra_env={"MODELPORT_ENDPOINT": endpoint, "MODELPORT_API_KEY": "mp_x"})
    assert result.code == 3, result
    assert "cannot connect" in result.error_line and endpoint in result.error_line

    login = cli("login", "--endpoint", endpoint, "--api-key", "mp_x")
    assert login.code == 3 and "cannot connect" in login.error_line

    status = cli("status", extra_env={"MODELPORT_ENDPOINT": endpoint, "MODELPORT_API_KEY": "mp_x"})
    assert status.code == 3


# -------------------------------------------------------------------------------------------- users


def fresh_terminal(tmp_path: Path) -> dict[str, str]:
    """No AWS credentials, no table named: a terminal opened beside `modelport up`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "MODELPORT_"))}
    env.pop("DYNAMODB_ENDPOINT", None)
    env.pop("TABLE_NAME", None)
    env["HOME"] = str(tmp_path / "home")  # no ~/.aws either
    return env


def run_cli(env: dict[str, str], *args: str) -> Result:
    done = subprocess.run([sys.executable, "-m", "modelport.cli", *args], env=env, capture_output=True, text=True,
                          timeout=120)
    return Result(done.returncode, done.stdout, done.stderr)


def test_users_create_without_credentials_or_a_platform_is_one_line(tmp_path: Path) -> None:
    env = {**fresh_terminal(tmp_path), "MODELPORT_CONFIG": str(tmp_path / "none.toml")}
    result = run_cli(env, "users", "create", "carol")
    assert result.code == 2, result
    assert "no AWS credentials" in result.error_line


def test_users_create_against_a_stopped_platform_says_so(tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    stopped = f"http://127.0.0.1:{free_port()}"
    config.write_text(f'endpoint = "http://localhost:8000"\napi_key = "mp_x"\ntable_for = "http://localhost:8000"\n'
                      f'table_endpoint = "{stopped}"\ntable_name = "modelport"\n')
    result = run_cli({**fresh_terminal(tmp_path), "MODELPORT_CONFIG": str(config)}, "users", "create", "carol")
    assert result.code == 3, result
    assert "not running" in result.error_line and "modelport up" in result.error_line


def test_users_create_refuses_a_taken_or_bad_name_in_one_line(control_plane: ControlPlane, tmp_path: Path) -> None:
    env = {**os.environ, "MODELPORT_CONFIG": str(tmp_path / "none.toml"),
           "DYNAMODB_ENDPOINT": str(control_plane.settings.dynamodb_endpoint),
           "TABLE_NAME": control_plane.settings.table_name}
    name = f"dave{uuid.uuid4().hex[:6]}"
    created = run_cli(env, "users", "create", name)
    assert created.code == 0, created
    key = created.stdout.strip()
    assert httpx.get(control_plane.url + "/api/v1/me", headers={"Authorization": f"Bearer {key}"}).json()["owner"] \
        == name
    taken = run_cli(env, "users", "create", name)
    assert taken.code == 1 and "exists" in taken.error_line, taken
    bad = run_cli(env, "users", "create", "no spaces/please")
    assert bad.code == 2, bad
    assert bad.error_line


# ------------------------------------------------------------------------------------------- models


def test_models_create_list_show_delete(alice: Cli) -> None:
    created = alice.json("models", "create", "iris", "--description", "iris classifier")
    assert created["name"] == "iris" and created["description"] == "iris classifier"

    listed = alice.json("models", "list")
    assert [m["id"] for m in listed] == [created["id"]]
    assert alice.json("models", "show", str(created["id"])) == created

    human = alice("models", "list")
    assert human.code == 0 and "iris classifier" in human.stdout

    deleted = alice("models", "delete", str(created["id"]))
    assert deleted.code == 0, deleted
    assert alice.json("models", "list") == []
    gone = alice("models", "show", str(created["id"]))
    assert gone.code == 1
    assert f"model {created['id']} not found" in gone.error_line


def test_api_validation_errors_are_one_line(alice: Cli) -> None:
    result = alice("models", "create", "not a valid name!")
    assert result.code == 1
    assert "name" in result.error_line


def test_usage_errors_exit_2(alice: Cli, tmp_path: Path) -> None:
    assert alice("models", "show", "not-a-number").code == 2
    assert alice("upload", "1", str(tmp_path / "missing.joblib")).code == 2
    assert alice("predict", "1", "--data", "{not json").code == 2


def test_another_users_ids_are_not_found(alice: Cli, bob: Cli, model_file: Path) -> None:
    version = ready_version(alice, model_file)
    deployment = alice.json("deploy", str(version["id"]))

    for args in (
        ("models", "show", str(version["model_id"])),
        ("versions", "show", str(version["id"])),
        ("versions", "list", str(version["model_id"])),
        ("deploy", str(version["id"])),
        ("deployments", "show", str(deployment["id"])),
        ("deployments", "scale", str(deployment["id"]), "2"),
        ("deployments", "delete", str(deployment["id"])),
    ):
        result = bob(*args)
        assert result.code == 1, (args, result)
        assert "not found" in result.error_line, (args, result)
    assert alice.json("deployments", "show", str(deployment["id"]))["replicas"] == 1


# ---------------------------------------------------------------------------- versions and upload


def test_versions_create_list_show(alice: Cli) -> None:
    model = alice.json("models", "create", "iris")
    created = alice.json("versions", "create", str(model["id"]), "--version", "1.0.0")
    assert created["version"] == "1.0.0" and created["status"] == "PENDING_UPLOAD"
    assert [v["id"] for v in alice.json("versions", "list", str(model["id"]))] == [created["id"]]
    assert alice.json("versions", "show", str(created["id"])) == created


def test_upload_through_the_presigned_post_waits_for_ready(
    platform: ControlPlane, alice: Cli, model_file: Path, tmp_path: Path
) -> None:
    model = alice.json("models", "create", "iris")
    requirements = tmp_path / "requirements.txt"
    requirements.write_text("scikit-learn>=1.3\n")

    version = alice.json(
        "upload", str(model["id"]), str(model_file), "--requirements", str(requirements), "--version", "v1",
        "--timeout", "60",
    )

    assert version["status"] == "READY" and version["version"] == "v1"
    assert version["model_artifact"]["size"] == model_file.stat().st_size
    assert version["requirements_artifact"]["size"] == requirements.stat().st_size
    bucket = platform.settings.minio_bucket_name
    key = f"models/{model['id']}/versions/{version['id']}/model.joblib"
    assert version["s3_path"] == f"s3://{bucket}/{key}"
    s3 = boto3.client("s3", endpoint_url=platform.settings.s3_endpoint_url, region_name="us-east-1")
    assert s3.get_object(Bucket=bucket, Key=key)["Body"].read() == model_file.read_bytes()

    human = alice("versions", "list", str(model["id"]))
    assert human.code == 0 and "READY" in human.stdout and "v1" in human.stdout


def test_upload_with_auto_deploy_prints_the_deployment(alice: Cli, model_file: Path) -> None:
    model = alice.json("models", "create", "iris")
    answer = alice.json("upload", str(model["id"]), str(model_file), "--auto-deploy", "--timeout", "60")
    assert answer["version"]["status"] == "READY"
    assert answer["deployment"]["version_id"] == answer["version"]["id"]
    assert answer["deployment"]["status"] == "PENDING"
    assert [d["id"] for d in alice.json("deployments", "list")] == [answer["deployment"]["id"]]


def test_upload_no_wait_returns_before_the_checks(alice: Cli, model_file: Path) -> None:
    model = alice.json("models", "create", "iris")
    version = alice.json("upload", str(model["id"]), str(model_file), "--no-wait")
    assert version["status"] == "PENDING_UPLOAD"


class _Malicious:
    def __reduce__(self) -> tuple[Any, ...]:
        return (os.system, ("echo pwned",))


def test_a_rejected_upload_exits_4_with_the_reason(alice: Cli, tmp_path: Path) -> None:
    model = alice.json("models", "create", "iris")
    evil = tmp_path / "model.joblib"
    evil.write_bytes(pickle.dumps(_Malicious()))

    result = alice("upload", str(model["id"]), str(evil), "--timeout", "60")

    assert result.code == 4, result
    assert "REJECTED" in result.error_line


def test_upload_falls_back_to_the_direct_upload_on_an_older_server(platform: ControlPlane, model_file: Path) -> None:
    """A server without the upload-url route (the framework's 404): the client uploads through the API."""
    key = platform.create_user()
    real = httpx.HTTPTransport()

    def older_server(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/upload-url"):
            return httpx.Response(404, json={"code": "not_found", "message": "Not Found"})
        return real.handle_request(request)

    api = ApiClient(platform.url, key)
    api.http = httpx.Client(
        base_url=platform.url, headers={"Authorization": f"Bearer {key}"}, transport=httpx.MockTransport(older_server),
        timeout=30,
    )
    with api:
        model = api.create_model("iris", None)
        version = api.create_version(model["id"], None)
        assert api.upload_targets(version["id"], requirements=False, auto_deploy=False) is None
        sent: list[int] = []
        uploaded = api.upload_direct(version["id"], model_file, None, sent.append)
    assert uploaded["status"] == "READY"
    assert uploaded["model_artifact"]["size"] == model_file.stat().st_size == sum(sent)


# -------------------------------------------------------------------------------------- deployments


def test_deploy_scale_list_delete(alice: Cli, model_file: Path) -> None:
    version = ready_version(alice, model_file)

    deployment = alice.json("deploy", str(version["id"]), "--replicas", "2")
    assert deployment["status"] == "PENDING"
    assert deployment["replicas"] == 2 and deployment["version_id"] == version["id"]
    assert deployment["url"].endswith(f"/api/v1/predict/{deployment['id']}")

    human = alice("deployments", "show", str(deployment["id"]))
    assert human.code == 0 and deployment["url"] in human.stdout and "PENDING" in human.stdout

    scaled = alice.json("deployments", "scale", str(deployment["id"]), "3")
    assert scaled["replicas"] == 3
    assert [d["id"] for d in alice.json("deployments", "list")] == [deployment["id"]]
    assert alice.json("deployments", "show", str(deployment["id"]))["replicas"] == 3

    too_many = alice("deployments", "scale", str(deployment["id"]), "1000")
    assert too_many.code == 1 and "replicas" in too_many.error_line

    in_use = alice("models", "delete", str(version["model_id"]))
    assert in_use.code == 1, in_use

    deleted = alice.json("deployments", "delete", str(deployment["id"]))
    assert deleted["status"] == "DELETING"


def test_shadow_commands_refuse_in_one_line_what_the_api_refuses(alice: Cli, bob: Cli, model_file: Path) -> None:
    version = ready_version(alice, model_file)
    deployment = alice.json("deploy", str(version["id"]))
    other = alice.json("versions", "create", str(version["model_id"]))
    did = str(deployment["id"])

    pending = alice("deployments", "shadow", did, str(other["id"]))  # no deployer here: it stays PENDING
    assert pending.code == 1 and "a shadow starts on a READY deployment" in pending.error_line, pending
    for command in ("shadow-report", "shadow-stop", "shadow-promote"):
        none = alice("deployments", command, did)
        assert none.code == 1 and "has no shadow" in none.error_line, (command, none)
    bad = alice("deployments", "shadow", did, str(other["id"]), "--percent", "0")
    assert bad.code == 2, bad  # a usage error, before any request
    theirs = bob("deployments", "shadow-report", did)
    assert theirs.code == 1 and "not found" in theirs.error_line, theirs


def test_deploy_wait_times_out_with_exit_5(alice: Cli, model_file: Path) -> None:
    version = ready_version(alice, model_file)

    result = alice("deploy", str(version["id"]), "--wait", "--timeout", "1")

    assert result.code == 5, result
    assert "timed out after 1s" in result.error_line and "PENDING" in result.error_line
    assert result.stderr.strip().splitlines()[-1] == result.error_line


def test_deploy_of_a_version_without_upload_is_refused(alice: Cli) -> None:
    model = alice.json("models", "create", "iris")
    version = alice.json("versions", "create", str(model["id"]))
    result = alice("deploy", str(version["id"]))
    assert result.code == 1
    assert "READY" in result.error_line


def test_reconcile_sweeps_the_cluster_and_says_when_it_cannot(
    platform: ControlPlane, kube_cluster: KubeEmulator, tools: Tools, tmp_path: Path
) -> None:
    cli = Cli(tmp_path / "config.toml", env={
        **platform.env, "KUBECONFIG": str(kube_cluster.kubeconfig), "CLUSTER_DRIVER": "helm",
        "HELM_BIN": str(tools.helm), "KUBECTL_BIN": str(tools.kubectl),
    })

    swept = cli("reconcile")
    assert swept.code == 0, swept
    assert "reconcile: nothing to do" in swept.stderr

    kube_cluster.stop()
    unreachable = cli("reconcile")
    assert unreachable.code == 3, unreachable
    assert "could not be reached" in unreachable.error_line

    local = cli("reconcile", extra_env={"CLUSTER_DRIVER": "local"})
    assert local.code == 2
    assert "modelport up" in local.error_line


# ------------------------------------------------------------------------------------------ predict


def test_predict_through_the_deployment_url(
    control_plane_factory: Callable[..., ControlPlane], moto_server: ServerProcess, model_file: Path, tmp_path: Path
) -> None:
    """The deployment's URL answered by a real model server (no deployer runs here: the test starts
    the server where the URL points)."""
    port = free_port()
    plane = control_plane_factory(PUBLIC_BASE_URL=f"http://127.0.0.1:{port}")
    worker = artifacts_worker(plane, moto_server)
    cli = logged_in(plane, tmp_path / "config.toml")
    try:
        version = ready_version(cli, model_file)
    finally:
        worker.stop()
    deployment = cli.json("deploy", str(version["id"]))

    not_yet = cli("predict", str(deployment["id"]), "--data", json.dumps(IRIS_ROWS))
    assert not_yet.code == 3
    assert "PENDING" in not_yet.error_line

    server = start(
        "model-server",
        [sys.executable, "-m", "modelport.cli", "serve", str(model_file), "--port", str(port), "--host", "127.0.0.1",
         "--root-path", f"/api/v1/predict/{deployment['id']}"],
        port, log_dir=tmp_path / "logs", env={**plane.env},
    )
    try:
        server.wait_ready(60)
        wait_until(lambda: httpx.get(f"{server.url}/readyz").status_code, lambda code: code == 200, timeout=60)
        rows = tmp_path / "rows.json"
        rows.write_text(json.dumps(IRIS_ROWS))
        model = joblib.load(model_file)

        answered = cli("predict", str(deployment["id"]), "--data", f"@{rows}")
        assert answered.code == 0, answered
        answer = json.loads(answered.stdout)
        assert answer["predictions"] == model.predict(IRIS_ROWS).tolist()

        proba = cli("predict", str(deployment["id"]), "--data", json.dumps({"instances": IRIS_ROWS}), "--proba")
        assert proba.code == 0, proba
        expected = model.predict_proba(IRIS_ROWS)
        for got, want in zip(json.loads(proba.stdout)["predictions"], expected, strict=True):
            assert got == pytest.approx(want.tolist(), abs=1e-6)

        bad = cli("predict", str(deployment["id"]), "--data", "[[1, 2]]")
        assert bad.code == 1, bad
        bad.error_line  # noqa: B018 - asserts one line
    finally:
        server.stop()

    # a protected URL: the token is printed once; predict sends it (and never the API key)
    issued = cli("deployments", "token", str(deployment["id"]))
    assert issued.code == 0, issued
    token = issued.stdout.strip().splitlines()[-1]
    assert token.startswith("mpt_")
    digest = hashlib.sha256(token.encode()).hexdigest()
    server = start(
        "model-server-protected",
        [sys.executable, "-m", "modelport.cli", "serve", str(model_file), "--port", str(port), "--host", "127.0.0.1",
         "--root-path", f"/api/v1/predict/{deployment['id']}"],
        port, log_dir=tmp_path / "logs", env={**plane.env, "PREDICT_TOKEN_SHA256": digest},
    )
    try:
        server.wait_ready(60)
        wait_until(lambda: httpx.get(f"{server.url}/readyz").status_code, lambda code: code == 200, timeout=60)
        refused = cli("predict", str(deployment["id"]), "--data", json.dumps(IRIS_ROWS))
        assert refused.code == 1 and "Authorization" in refused.error_line
        allowed = cli("predict", str(deployment["id"]), "--data", json.dumps(IRIS_ROWS), "--token", token)
        assert allowed.code == 0, allowed
        assert json.loads(allowed.stdout)["predictions"] == model.predict(IRIS_ROWS).tolist()
    finally:
        server.stop()

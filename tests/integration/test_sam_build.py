"""`sam validate`, `sam validate --lint` and `sam build`, then every built handler run with the
sample events under events/.

Each handler runs in its own interpreter with nothing on its path but what Lambda would have: the
function's build folder (`.aws-sam/build/<Function>/`, i.e. /var/task) and the package layer's
`python/` folder (/opt/python). `-S` keeps the project's venv out, so a dependency missing from the
layer fails here as it would in Lambda. AWS is replaced by the moto server (table created from the
template's own definition), and the cluster by an address where nothing listens.
"""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest

from modelport.local.processes import ServerProcess, free_port
from modelport.local.template import TemplateConfig, load_template, load_yaml
from tests.support.sam_local import RUNNER, map_layer_paths

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
BUILD = ROOT / ".aws-sam" / "build"
EVENTS = ROOT / "events"
LAMBDA_UNZIPPED_LIMIT = 250 * 1024 * 1024  # function code and all its layers, unzipped

API_STATUS = {
    "api-healthz": 200,
    "api-openapi": 200,
    "api-unauthenticated": 401,
    "api-list-models": 200,
    "api-create-model": 201,
    "api-get-model-not-found": 404,
    # the caller owns no version 5 and no deployment 1 in a fresh table
    "api-create-deployment": 404,
    "api-patch-deployment": 404,
    "api-delete-deployment": 404,
    "api-upload-multipart": 404,
}

IMPORT_ERRORS = {"ImportError", "ModuleNotFoundError", "SyntaxError", "AttributeError", "NameError"}


@pytest.fixture(scope="module")
def sam_check() -> subprocess.CompletedProcess[str]:
    """infra/sam-check.sh: validate, lint and build (installs the SAM CLI into .tools on first use)."""
    return subprocess.run(
        ["bash", str(ROOT / "infra" / "sam-check.sh")], cwd=ROOT, capture_output=True, text=True, timeout=900,
    )


@pytest.fixture(scope="module")
def build(sam_check: subprocess.CompletedProcess[str]) -> Path:
    assert sam_check.returncode == 0, sam_check.stdout[-4000:] + sam_check.stderr[-4000:]
    return BUILD


@pytest.fixture(scope="module")
def app() -> TemplateConfig:
    return load_template(ROOT / "template.yaml")


def test_validate_lint_and_build_pass(sam_check: subprocess.CompletedProcess[str]) -> None:
    assert sam_check.returncode == 0, sam_check.stdout[-4000:] + sam_check.stderr[-4000:]
    for step in ("sam validate", "sam validate --lint", "sam build"):
        assert f"== {step}: ok" in sam_check.stdout


def test_build_has_every_function_and_layer(build: Path, app: TemplateConfig) -> None:
    for function in app.functions.values():
        assert (build / function.logical_id / "app.py").is_file()
        assert not (build / function.logical_id / "modelport").exists(), "the package belongs in the layer"
    assert (build / "ModelportLayer" / "python" / "modelport" / "__init__.py").is_file()
    assert (build / "K8sToolsLayer" / "helm" / "helm").is_file()
    assert (build / "K8sToolsLayer" / "kubectl" / "kubectl").is_file()


def test_package_layer_is_this_source_without_the_serving_extra(build: Path) -> None:
    layer = build / "ModelportLayer" / "python"
    built = (layer / "modelport" / "settings.py").read_text()
    assert built == (ROOT / "src" / "modelport" / "settings.py").read_text()
    for core in ("fastapi", "mangum", "pynamodb", "aws_lambda_powertools", "pydantic_core", "boto3"):
        assert (layer / core).is_dir(), core
    for serving_only in ("sklearn", "numpy", "uvicorn", "uvloop", "joblib"):
        assert not (layer / serving_only).exists(), f"{serving_only} is the serving extra's"


def test_chart_ships_in_the_layer(build: Path) -> None:
    chart = build / "ModelportLayer" / "charts" / "model-serving"
    assert (chart / "Chart.yaml").is_file()
    assert (chart / "Chart.yaml").read_text() == (ROOT / "charts" / "model-serving" / "Chart.yaml").read_text()


def test_helm_and_kubectl_run(build: Path) -> None:
    helm = subprocess.run([str(build / "K8sToolsLayer/helm/helm"), "version", "--short"], capture_output=True,
                          text=True, check=True, env={"HOME": "/tmp", "PATH": "/usr/bin:/bin"})
    assert helm.stdout.startswith("v4.")
    kubectl = subprocess.run([str(build / "K8sToolsLayer/kubectl/kubectl"), "version", "--client"],
                             capture_output=True, text=True, check=True)
    assert "v1.35" in kubectl.stdout
    chart = build / "ModelportLayer" / "charts" / "model-serving"
    # the chart as shipped renders with the built helm (values of the chart's own minimal CI profile)
    lint = subprocess.run([str(build / "K8sToolsLayer/helm/helm"), "lint", "--strict", str(chart),
                           "--values", str(chart / "ci" / "minimal-values.yaml")], capture_output=True,
                          text=True, env={"HOME": "/tmp", "PATH": "/usr/bin:/bin"})
    assert lint.returncode == 0, lint.stdout + lint.stderr


def _size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file() and not p.is_symlink())


def test_each_function_fits_lambdas_size_limit(build: Path, app: TemplateConfig) -> None:
    for function in app.functions.values():
        total = _size(build / function.logical_id) + sum(_size(build / layer) for layer in function.layers)
        assert total < LAMBDA_UNZIPPED_LIMIT, f"{function.logical_id}: {total / 2**20:.0f} MiB unzipped"


# --- invoking the built handlers ---------------------------------------------------------------

@pytest.fixture(scope="module")
def aws(moto_server: ServerProcess, app: TemplateConfig) -> Iterator[dict[str, str]]:
    """A table made from the template's definition and a bucket, in the moto server."""
    suffix = uuid.uuid4().hex[:8]
    table_name, bucket = f"modelport-sam-{suffix}", f"modelport-sam-{suffix}"
    kwargs = {"endpoint_url": moto_server.url, "region_name": "us-east-1",
              "aws_access_key_id": "testing", "aws_secret_access_key": "testing"}
    assert app.table is not None
    dynamodb = boto3.client("dynamodb", **kwargs)
    dynamodb.create_table(**app.table.create_table_kwargs(table_name))
    dynamodb.update_time_to_live(
        TableName=table_name, TimeToLiveSpecification={"Enabled": True, "AttributeName": app.table.ttl_attribute},
    )
    boto3.client("s3", **kwargs).create_bucket(Bucket=bucket)
    yield {"table": table_name, "bucket": bucket, "endpoint": moto_server.url}
    dynamodb.delete_table(TableName=table_name)


def _environment(app: TemplateConfig, name: str, build: Path, aws: dict[str, str], tmp: Path) -> dict[str, str]:
    """The function's environment as Lambda would set it, with the stand-ins' addresses."""
    params = load_yaml(ROOT / "template.yaml")["Parameters"]
    resources = {"Table": aws["table"], "ModelsBucket": aws["bucket"]}
    env: dict[str, str] = {}
    for key, value in app.function(name).environment.items():
        if isinstance(value, dict) and "Ref" in value:
            ref = value["Ref"]
            value = resources[ref] if ref in resources else params[ref].get("Default", "")
        assert isinstance(value, str | int), (key, value)
        env[key] = str(value)
    map_layer_paths(env, build, tmp)
    kubeconfig = tmp / "kubeconfig"
    kubeconfig.write_text(json.dumps({
        "apiVersion": "v1", "kind": "Config", "current-context": "nowhere",
        "clusters": [{"name": "nowhere", "cluster": {"server": f"https://127.0.0.1:{free_port()}"}}],
        "contexts": [{"name": "nowhere", "context": {"cluster": "nowhere", "user": "nobody"}}],
        "users": [{"name": "nobody", "user": {"token": "none"}}],
    }))
    env.update({
        "PATH": "/usr/bin:/bin",
        "LANG": "C.UTF-8",
        "AWS_REGION": "us-east-1",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_LAMBDA_FUNCTION_NAME": app.function(name).logical_id,
        "DYNAMODB_ENDPOINT": aws["endpoint"],
        "MINIO_ENDPOINT": aws["endpoint"],
        "MINIO_ACCESS_KEY": "testing",
        "MINIO_SECRET_KEY": "testing",
        "KUBECONFIG": str(kubeconfig),
        "KUBECONFIG_SECRET_ARN": "",
        "CLUSTER_RETRIES": "1",
        "HELM_TIMEOUT_SECONDS": "10",
    })
    return env


def invoke(app: TemplateConfig, build: Path, aws: dict[str, str], tmp: Path, event: Path) -> dict[str, Any]:
    name = event.stem.split("-", 1)[0]
    function = app.function(name)
    proc = subprocess.run(
        [sys.executable, "-S", "-c", RUNNER, str(build / function.logical_id),
         str(build / "ModelportLayer" / "python"), str(event), function.logical_id, str(function.timeout_seconds)],
        env=_environment(app, name, build, aws, tmp), capture_output=True, text=True, timeout=300, cwd=tmp,
    )
    lines = [line for line in proc.stdout.splitlines() if line.startswith("@@RESULT@@")]
    assert lines, f"no result from {event.name}: rc={proc.returncode}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    out: dict[str, Any] = json.loads(lines[-1][len("@@RESULT@@"):])
    out["log"] = proc.stdout[-3000:] + proc.stderr[-3000:]
    return out


EVENT_FILES = sorted(EVENTS.glob("*.json"))


@pytest.mark.parametrize("event", EVENT_FILES, ids=[p.stem for p in EVENT_FILES])
def test_built_handler_answers_sample_event(
    event: Path, build: Path, app: TemplateConfig, aws: dict[str, str], tmp_path: Path,
) -> None:
    out = invoke(app, build, aws, tmp_path, event)
    name = event.stem.split("-", 1)[0]
    assert not out["foreign_modules"], f"imported from outside the build: {out['foreign_modules'][:5]}"
    if name == "reconcile":
        # no cluster answers here: the sweep may report that, but the built code must load and run
        assert out["ok"] or out["error_type"] not in IMPORT_ERRORS, out.get("traceback")
        return
    assert out["ok"], out.get("traceback", "") + out["log"]
    result = out["result"]
    if name == "api":
        # events added later without an entry here must at least not fail on the server side
        expected = API_STATUS.get(event.stem)
        assert result["statusCode"] == expected if expected else result["statusCode"] < 500, result
        body = json.loads(result["body"]) if result.get("body") else None
        if result["statusCode"] >= 400:
            assert set(body) >= {"code", "message"}, body
        if event.stem == "api-openapi":
            assert body["openapi"].startswith("3.")
        return
    records = json.loads(event.read_text())["Records"]
    assert set(result) == {"batchItemFailures"}, result
    if name == "deployer":
        ids = {r["dynamodb"]["SequenceNumber"] for r in records}
        # no record of these deployments is in the table; whatever it retries must be of the batch
        assert {f["itemIdentifier"] for f in result["batchItemFailures"]} <= ids
    elif name == "artifacts":
        # unknown versions and S3's test event are skipped with a log line, never retried
        assert result["batchItemFailures"] == [], out["log"]

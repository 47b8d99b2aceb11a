"""`make sam-local`: every function in a Lambda container through `sam local invoke`, and the API
through `sam local start-api`, against local stand-ins (issue 13).

Contract:
- ``prepare(root)`` builds what `sam local` needs where no image registry is reachable: the
  debootstrap base (reused) and the Lambda-compatible python3.11 image (``infra/image/build.sh
  lambda``), then ``sam build`` (``infra/sam-check.sh build``), timed. Needs a running Docker Engine.
- ``StandIns`` starts what the functions talk to, where their containers reach it (the Docker
  bridge's gateway, the host as containers on the default network see it): DynamoDB Local (the
  table), the moto server (the S3 bucket and Secrets Manager, which holds the kubeconfig as in
  AWS), and the Kubernetes emulator (tests/support/kube_emulator.py) that helm and kubectl from the
  built k8s-tools layer talk to. ``seed()`` writes, per run, the records and objects that the
  samples in events/ name (user-alice, model 3, version 5 with its model.joblib and
  requirements.txt, in the bucket the samples name), through the package's own repositories.
- ``env_vars()`` generates the `--env-vars` file from the template: every override is a variable
  that the function declares (SAM ignores any other; a missing one is an error here, not a silent
  no-op).
- ``run_samples()`` invokes every sample in events/, in the order of ``ORDER`` (the state each one
  needs is made by the ones before: artifacts -> READY, create-deployment -> deployment 1, deployer
  -> READY, delete -> DELETING, reconcile sweeps), through ``sam local invoke --skip-pull-image``
  or in-process (the built handler in a bare interpreter, as tests/integration/test_sam_build.py
  does), and checks each answer (``Invocation.passed``) and what it left in the table.
- ``main()`` prints one line per invocation (function, event, status, duration, Lambda's REPORT
  durations), the checks, ``N passed, N failed``, and exits non-zero on any failure.

This module lives in tests/support because it drives the Kubernetes emulator, which is test code
(DESIGN.md: no real API server can run here); the Makefile target and the integration test
(tests/integration/test_sam_local.py) both call it.

Identity: SAM does not run JWT authorizers, and through `sam local start-api` the request context
carries no ``authorizer.jwt.claims``. The API function already accepts the second way modelport
knows a caller, ``Authorization: Bearer <api key>`` (``modelport users create``; keys live in the
table), so a local user passes an API key; ``seed()`` creates one for user-alice. No local-only
header exists, so nothing can switch identity checks off in AWS. A direct ``sam local invoke``
passes a JWT-shaped request context in the event itself (the api-* samples carry one).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3

from modelport.local.processes import ServerProcess, free_port, port_open, start, start_dynamodb_local
from modelport.local.template import TemplateConfig, load_template, load_yaml
from modelport.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
LAMBDA_UNZIPPED_LIMIT = 250 * 1024 * 1024  # a function's code and all its layers, unzipped
OWNER = "user-alice"
MODEL_ID, VERSION_ID, DEPLOYMENT_ID = 3, 5, 1  # the ids the samples name
# the samples' bucket: the template's name for EnvName dev, account 123456789012, us-east-1
BUCKET = "modelport-dev-models-123456789012-us-east-1"
CREDENTIALS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1",
               "AWS_REGION": "us-east-1"}

# The order the samples run in; samples not named here run after these, by name.
ORDER = [
    "api-healthz", "api-openapi", "api-unauthenticated", "api-list-models", "api-create-model",
    "api-get-model-not-found",
    "artifacts-s3-test-event", "artifacts-model-uploaded", "artifacts-encoded-key", "artifacts-model-and-requirements",
    "api-upload-multipart", "api-create-deployment", "deployer-insert", "deployer-stream-batch",
    "api-patch-deployment", "api-delete-deployment", "reconcile-scheduled",
]
# What the API answers each sample in the seeded state (ids 3, 5 and 1 exist and are user-alice's).
API_STATUS = {
    "api-healthz": 200, "api-openapi": 200, "api-unauthenticated": 401, "api-list-models": 200,
    "api-create-model": 201, "api-get-model-not-found": 404, "api-create-deployment": 201,
    "api-patch-deployment": 200, "api-delete-deployment": 202,
}
REPORT = re.compile(r"REPORT RequestId: \S+\s+(?:Init Duration: (?P<init>[\d.]+) ms\s+)?Duration: (?P<dur>[\d.]+) ms")


class SamLocalError(RuntimeError):
    """A step of `make sam-local` could not run; ``code`` is stable, the message says what to do."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code


def sam_bin(root: Path = ROOT) -> Path:
    venv = Path(os.environ.get("SAM_VENV") or Path(os.environ.get("MODELPORT_TOOLS_DIR", root / ".tools")) / "sam-venv")
    return venv / "bin" / "sam"


def _env(**extra: str) -> dict[str, str]:
    return {**os.environ, **CREDENTIALS, "SAM_CLI_TELEMETRY": "0", "AWS_EC2_METADATA_DISABLED": "true", **extra}


# ---------------------------------------------------------------- preparing


@dataclass
class Prepared:
    lambda_image: str
    sam_build_seconds: float
    build_dir: Path


def prepare(root: Path = ROOT) -> Prepared:
    """The Lambda image (on the shared debootstrap base) and `sam build`."""
    image = subprocess.run([str(root / "infra/image/build.sh"), "lambda"], capture_output=True, text=True,
                           timeout=1800, check=False)
    if image.returncode != 0:
        raise SamLocalError("lambda_image_failed", f"infra/image/build.sh lambda failed:\n{image.stderr[-3000:]}")
    started = time.monotonic()
    build = subprocess.run(["bash", str(root / "infra/sam-check.sh"), "build"], cwd=root, capture_output=True,
                           text=True, timeout=1800, check=False, env=_env(SAM_VENV=str(sam_bin(root).parent.parent)))
    seconds = time.monotonic() - started
    if build.returncode != 0:
        raise SamLocalError("sam_build_failed", build.stdout[-3000:] + build.stderr[-3000:])
    return Prepared(image.stdout.strip().splitlines()[-1], seconds, root / ".aws-sam" / "build")


def layer_sizes(build_dir: Path, app: TemplateConfig) -> dict[str, int]:
    """Unzipped bytes of each function's code plus its layers (Lambda's 250 MB limit), and of each layer."""
    def size(path: Path) -> int:
        return sum(p.stat().st_size for p in path.rglob("*") if p.is_file() and not p.is_symlink())
    sizes = {layer: size(build_dir / layer) for layer in ("ModelportLayer", "K8sToolsLayer")}
    for function in app.functions.values():
        sizes[function.logical_id] = size(build_dir / function.logical_id) + sum(sizes[x] for x in function.layers)
    return sizes


# ---------------------------------------------------------------- stand-ins and seed


def docker_gateway() -> str:
    """The host's address on Docker's default bridge: what a Lambda container reaches it by."""
    import docker

    ipam = docker.from_env().networks.get("bridge").attrs["IPAM"]["Config"][0]
    if ipam.get("Gateway"):
        return str(ipam["Gateway"])
    import ipaddress
    return str(ipaddress.ip_network(ipam["Subnet"])[1])


@dataclass
class StandIns:
    gateway: str
    dynamodb: ServerProcess
    moto: ServerProcess
    kube: Any  # tests.support.kube_emulator.KubeEmulator
    work: Path

    @property
    def dynamodb_url(self) -> str:
        return f"http://{self.gateway}:{self.dynamodb.port}"

    @property
    def moto_url(self) -> str:
        return f"http://{self.gateway}:{self.moto.port}"


@contextmanager
def stand_ins(work: Path) -> Iterator[StandIns]:
    from tests.support.kube_emulator import KubeEmulator

    gateway = docker_gateway()
    work.mkdir(parents=True, exist_ok=True)
    dynamodb = start_dynamodb_local(log_dir=work)  # listens on every address
    port = free_port()
    moto = start("moto-server", [sys.executable, "-m", "moto.server", "-H", gateway, "-p", str(port)], port,
                 log_dir=work, env=CREDENTIALS)
    kube = None
    try:
        deadline = time.monotonic() + 60
        while not port_open(port, gateway):
            if moto.process.poll() is not None or time.monotonic() > deadline:
                raise SamLocalError("moto_not_ready", f"the moto server did not start: {moto.log_tail()}")
            time.sleep(0.05)
        kube = KubeEmulator(work / "kube", host=gateway).start()
        yield StandIns(gateway, dynamodb, moto, kube, work)
    finally:
        if kube is not None:
            kube.close()
        moto.stop()
        dynamodb.stop()


@dataclass
class Seed:
    settings: Settings
    api_key: str
    kubeconfig_secret_arn: str


def seed(s: StandIns, app: TemplateConfig, tag: str) -> Seed:
    """A fresh table and the records and objects the samples name; the kubeconfig secret."""
    from modelport.artifacts.storage import ObjectStore
    from modelport.services.users import create_user
    from modelport.store.records import ensure_table
    from modelport.store.repository import Store
    from tests.support.models import train_iris

    table = f"modelport-sam-local-{tag}"
    settings = Settings(table_name=table, dynamodb_endpoint=s.dynamodb_url, minio_endpoint=s.moto_url,
                        minio_bucket_name=BUCKET, minio_access_key="testing", minio_secret_key="testing")
    ensure_table(settings)
    ddb = boto3.client("dynamodb", endpoint_url=s.dynamodb_url, region_name="us-east-1",
                       aws_access_key_id="testing", aws_secret_access_key="testing")
    # the counters, so that the next model and version get the samples' ids
    for kind, value in (("model", MODEL_ID - 1), ("version", VERSION_ID - 1), ("deployment", DEPLOYMENT_ID - 1)):
        ddb.put_item(TableName=table, Item={"PK": {"S": f"COUNTER#{kind}"}, "SK": {"S": "COUNTER"},
                                            "value": {"N": str(value)}})
    store = Store(settings)
    _, api_key = create_user(store, OWNER)
    model = store.create_model(OWNER, "sam-local-iris", "seeded by make sam-local")
    version = store.create_version(OWNER, model.id, None)
    assert (model.id, version.id) == (MODEL_ID, VERSION_ID), (model.id, version.id)
    objects = ObjectStore(settings)
    objects.ensure_bucket()
    path, _ = train_iris(s.work / f"model-{tag}.joblib")
    prefix = f"models/{MODEL_ID}/versions/{VERSION_ID}/"
    from importlib.metadata import version as installed
    with path.open("rb") as handle:
        objects.put(prefix + "model.joblib", handle)
    requirements = s.work / f"requirements-{tag}.txt"
    requirements.write_text(f"scikit-learn=={installed('scikit-learn')}\n")
    with requirements.open("rb") as handle:
        objects.put(prefix + "requirements.txt", handle)
    secrets = boto3.client("secretsmanager", endpoint_url=s.moto_url, region_name="us-east-1",
                           aws_access_key_id="testing", aws_secret_access_key="testing")
    arn = secrets.create_secret(Name=f"modelport/kubeconfig-{tag}",
                                SecretString=s.kube.kubeconfig.read_text())["ARN"]
    return Seed(settings, api_key, str(arn))


def overrides(s: StandIns, seeded: Seed) -> dict[str, str]:
    """Every variable `sam local` sets differently from AWS, and to what."""
    return {
        "TABLE_NAME": seeded.settings.table_name,
        "MINIO_BUCKET_NAME": BUCKET,
        "DYNAMODB_ENDPOINT": s.dynamodb_url,
        "MINIO_ENDPOINT": s.moto_url,
        "KUBECONFIG_SECRET_ARN": seeded.kubeconfig_secret_arn,
        "SECRETS_MANAGER_ENDPOINT": s.moto_url,
        "HELM_SERVER_SIDE": "false",  # the emulator has no server-side apply
        "HELM_OPENAPI_VALIDATION": "false",  # nor OpenAPI documents
        "HELM_TIMEOUT_SECONDS": "60",
        "CLUSTER_S3_ENDPOINT": f"{s.gateway}:{s.moto.port}",
    }


def env_vars(app: TemplateConfig, values: dict[str, str]) -> dict[str, dict[str, str]]:
    """The `--env-vars` document: per function, the overrides it declares. Fails if a global one
    (TABLE_NAME, the endpoints) is not declared by every function: SAM would silently ignore it."""
    out: dict[str, dict[str, str]] = {}
    for function in app.functions.values():
        declared = set(function.environment)
        out[function.logical_id] = {k: v for k, v in values.items() if k in declared}
        missing = {"TABLE_NAME", "MINIO_BUCKET_NAME", "DYNAMODB_ENDPOINT", "MINIO_ENDPOINT"} - declared
        if missing:
            raise SamLocalError("undeclared_variable",
                                f"{function.logical_id} does not declare {sorted(missing)} in template.yaml")
    return out


# ---------------------------------------------------------------- invoking


@dataclass
class Invocation:
    function: str
    event: str
    mode: str  # one of MODES
    seconds: float
    answer: Any = None
    error: str | None = None
    init_ms: float | None = None
    duration_ms: float | None = None
    log: str = ""
    problems: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return self.error is None and not self.problems

    def line(self) -> str:
        report = ""
        if self.duration_ms is not None:
            report = f"  (REPORT init {self.init_ms or 0:.0f} ms, duration {self.duration_ms:.0f} ms)"
        status = "ok" if self.passed else "FAILED: " + "; ".join(self.problems or [self.error or ""])
        return f"{self.function:<18} {self.event:<36} {status:<8} {self.seconds:6.1f} s{report}"

    def normalized(self) -> Any:
        """What must be equal between `sam local invoke` and in-process: status and the answer's
        shape and ids (timestamps and request ids differ between runs)."""
        a = self.answer
        if isinstance(a, dict) and "statusCode" in a:
            body = json.loads(a["body"]) if a.get("body") else None
            if isinstance(body, dict):
                body = {k: body[k] if k in ("id", "code", "status", "model_id", "version_id", "replicas") else "*"
                        for k in body}
            return {"statusCode": a["statusCode"], "body": body}
        return a


def event_files(root: Path = ROOT) -> list[Path]:
    files = {p.stem: p for p in (root / "events").glob("*.json")}
    return [files[n] for n in ORDER if n in files] + [files[n] for n in sorted(files) if n not in ORDER]


def sam_invoke(build_dir: Path, logical_id: str, event: Path, env_file: Path) -> Invocation:
    argv = [str(sam_bin()), "local", "invoke", logical_id, "--event", str(event), "--skip-pull-image",
            "--template", str(build_dir / "template.yaml"), "--env-vars", str(env_file)]
    started = time.monotonic()
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=600, env=_env(), check=False,
                          cwd=build_dir.parent.parent)
    out = Invocation(logical_id, event.stem, "invoke", time.monotonic() - started, log=proc.stderr[-6000:])
    match = REPORT.search(proc.stderr)
    if match:
        out.init_ms = float(match["init"]) if match["init"] else None
        out.duration_ms = float(match["dur"])
    lines = [line for line in proc.stdout.splitlines() if line.strip()]
    try:
        out.answer = json.loads(lines[-1])
    except (IndexError, ValueError):
        out.error = f"no JSON answer (rc {proc.returncode}): {proc.stdout[-500:]} {proc.stderr[-1500:]}"
        return out
    if isinstance(out.answer, dict) and "errorType" in out.answer:
        out.error = f"{out.answer['errorType']}: {out.answer.get('errorMessage')}"
    return out


def reports(server: ServerProcess) -> list[re.Match[str]]:
    """The REPORT lines a `sam local start-lambda` / `start-api` has logged so far."""
    assert server.log_path is not None
    return list(REPORT.finditer(server.log_path.read_text(errors="replace")))


@contextmanager
def sam_server(command: str, build_dir: Path, env_file: Path, log_dir: Path) -> Iterator[ServerProcess]:
    """``command`` is start-lambda or start-api; containers are kept warm (LAZY: one per function,
    made on its first invocation), as Lambda keeps an execution environment between invocations.
    Its log is ``log_dir/sam-{command}.log``."""
    port = free_port()
    argv = [str(sam_bin()), "local", command, "--skip-pull-image", "--template", str(build_dir / "template.yaml"),
            "--env-vars", str(env_file), "--port", str(port), "--warm-containers", "LAZY"]
    server = start(f"sam-{command}", argv, port, log_dir=log_dir, cwd=build_dir.parent.parent, env=_env())
    try:
        try:
            server.wait_ready(120)
        except (RuntimeError, TimeoutError) as exc:
            raise SamLocalError("sam_server_failed", f"sam local {command} did not start: {exc}") from None
        yield server
    finally:
        server.stop(60)  # SAM stops its warm containers on SIGTERM


def lambda_invoke(server: ServerProcess, logical_id: str, event: Path) -> Invocation:
    """One invocation through `sam local start-lambda`'s Lambda API (the same containers and
    emulator as `sam local invoke`, kept warm), with the REPORT line it logged."""
    from botocore.config import Config

    client = boto3.client("lambda", endpoint_url=server.url, region_name="us-east-1", aws_access_key_id="testing",
                          aws_secret_access_key="testing",
                          config=Config(read_timeout=900, retries={"max_attempts": 0}, connect_timeout=10))
    before = len(reports(server))
    started = time.monotonic()
    answer = client.invoke(FunctionName=logical_id, Payload=event.read_bytes())
    out = Invocation(logical_id, event.stem, "start-lambda", time.monotonic() - started)
    payload = answer["Payload"].read()
    try:
        out.answer = json.loads(payload) if payload else None
    except ValueError:
        out.error = f"not JSON: {payload[:300]!r}"
    if answer.get("FunctionError") or (isinstance(out.answer, dict) and "errorType" in out.answer):
        out.error = f"function error: {str(out.answer)[:500]}"
    deadline = time.monotonic() + 10  # the container's log reaches SAM's output a moment later
    while len(reports(server)) <= before and time.monotonic() < deadline:
        time.sleep(0.05)
    logged = reports(server)
    if len(logged) > before:
        match = logged[before]
        out.init_ms = float(match["init"]) if match["init"] else None
        out.duration_ms = float(match["dur"])
    out.log = server.log_tail(200)[-6000:]
    return out


# One built handler run in-process, as Lambda would import it from the build (code and layer on
# sys.path, nothing else): its answer, or its error, and any module imported from outside the build.
RUNNER = r"""
import importlib, json, sys, traceback
function_dir, layer_dir, event_path, function_name, timeout_s = sys.argv[1:6]
sys.path[:0] = [function_dir, layer_dir]

class Context:
    function_name = function_name
    function_version = "$LATEST"
    memory_limit_in_mb = 1024
    invoked_function_arn = "arn:aws:lambda:us-east-1:123456789012:function:" + function_name
    aws_request_id = "00000000-0000-0000-0000-000000000001"
    log_group_name = "/aws/lambda/" + function_name
    log_stream_name = "2024/01/01/[$LATEST]0000"
    def get_remaining_time_in_millis(self):
        return int(timeout_s) * 1000

with open(event_path) as handle:
    event = json.load(handle)
try:
    module = importlib.import_module("app")
    result = module.handler(event, Context())
    out = {"ok": True, "result": result}
except BaseException as exc:
    out = {"ok": False, "error_type": type(exc).__name__, "error": str(exc), "traceback": traceback.format_exc()}
files = {getattr(m, "__file__", None) for m in list(sys.modules.values())}
foreign = sorted(f for f in files if f and not f.startswith((function_dir, layer_dir, sys.base_prefix)))
out["foreign_modules"] = foreign
print("@@RESULT@@" + json.dumps(out, default=str))
"""


def map_layer_paths(env: dict[str, str], build_dir: Path, tmp: Path) -> None:
    """Values naming the layers' /opt paths (and /tmp) point into the build (and ``tmp``) instead."""
    opt = {"/opt/helm/": f"{build_dir}/K8sToolsLayer/helm/", "/opt/kubectl/": f"{build_dir}/K8sToolsLayer/kubectl/",
           "/opt/charts/": f"{build_dir}/ModelportLayer/charts/", "/tmp": str(tmp)}
    for key, value in env.items():
        for prefix, local in opt.items():
            if value.startswith(prefix):
                env[key] = local + value[len(prefix):]


def in_process_env(app: TemplateConfig, logical_id: str, build_dir: Path, values: dict[str, str],
                   tmp: Path) -> dict[str, str]:
    """The function's environment as the template declares it, with the same overrides, and the
    layers' /opt paths mapped onto the build."""
    params = load_yaml(ROOT / "template.yaml")["Parameters"]
    env: dict[str, str] = {}
    for key, value in app.function(logical_id).environment.items():
        if isinstance(value, dict) and "Ref" in value:
            value = params.get(value["Ref"], {}).get("Default", "")
        env[key] = str(value)
    env.update({k: v for k, v in values.items() if k in env})
    map_layer_paths(env, build_dir, tmp)
    return {**env, **CREDENTIALS, "PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", "AWS_LAMBDA_FUNCTION_NAME": logical_id}


def local_invoke(app: TemplateConfig, build_dir: Path, logical_id: str, event: Path, values: dict[str, str],
                 tmp: Path) -> Invocation:
    function = app.function(logical_id)
    tmp.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-S", "-c", RUNNER, str(build_dir / logical_id), str(build_dir / "ModelportLayer" / "python"),
         str(event), logical_id, str(function.timeout_seconds)],
        env=in_process_env(app, logical_id, build_dir, values, tmp), capture_output=True, text=True, timeout=600,
        cwd=tmp, check=False,
    )
    out = Invocation(logical_id, event.stem, "in-process", time.monotonic() - started, log=proc.stderr[-6000:])
    lines = [line for line in proc.stdout.splitlines() if line.startswith("@@RESULT@@")]
    if not lines:
        out.error = f"no result (rc {proc.returncode}): {proc.stderr[-1500:]}"
        return out
    result = json.loads(lines[-1][len("@@RESULT@@"):])
    if result["ok"]:
        out.answer = result["result"]
    else:
        out.error = f"{result['error_type']}: {result['error']}"
        out.log += result.get("traceback", "")
    return out


def check_answer(inv: Invocation) -> None:
    """Whether the function accepted the sample, from its answer alone."""
    if inv.error is not None:
        return
    a = inv.answer
    name = inv.event.split("-", 1)[0]
    if name == "api":
        expected = API_STATUS.get(inv.event)
        status = a.get("statusCode") if isinstance(a, dict) else None
        if status is None or (status != expected if expected else status >= 500):
            inv.problems.append(f"HTTP {status}, expected {expected or '< 500'}: {str(a)[:300]}")
    elif name in ("artifacts", "deployer"):
        if not isinstance(a, dict) or a.get("batchItemFailures") != []:
            inv.problems.append(f"batch failures: {a}")
    elif name == "reconcile" and not (isinstance(a, dict) and isinstance(a.get("actions"), list)):
        inv.problems.append(f"not a sweep report: {a}")


def check_state(inv: Invocation, settings: Settings) -> None:
    """What the sample left in the table, where it should have changed something."""
    from modelport.store.repository import Store

    if not inv.passed:
        return
    store = Store(settings)
    if inv.event == "artifacts-model-uploaded":
        version = store.find_version(VERSION_ID)
        if version is None or version.status.value != "READY":
            inv.problems.append(f"version {VERSION_ID} is {version.status.value if version else 'missing'}, not READY")
    elif inv.event == "deployer-insert":
        deployment = store.find_deployment(DEPLOYMENT_ID) if hasattr(store, "find_deployment") else None
        if deployment is None or deployment.status.value != "READY":
            inv.problems.append(f"deployment {DEPLOYMENT_ID} is "
                                f"{deployment.status.value if deployment else 'missing'}, not READY")


@dataclass
class Run:
    mode: str
    invocations: list[Invocation]

    @property
    def failed(self) -> list[Invocation]:
        return [i for i in self.invocations if not i.passed]


MODES = ("invoke", "start-lambda", "in-process")


def run_samples(mode: str, app: TemplateConfig, build_dir: Path, work: Path, *, echo: bool = True) -> Run:
    """Fresh stand-ins and seed, then every sample, in ORDER: ``invoke`` (`sam local invoke`, a
    new container each time), ``start-lambda`` (`sam local start-lambda`, warm containers) or
    ``in-process`` (the built handler in a bare interpreter)."""
    if mode not in MODES:
        raise SamLocalError("bad_mode", f"mode must be one of {', '.join(MODES)}, not {mode!r}")
    tag = uuid.uuid4().hex[:8]
    with stand_ins(work / f"{mode}-{tag}") as s, contextlib.ExitStack() as stack:
        seeded = seed(s, app, tag)
        values = overrides(s, seeded)
        env_file = s.work / "env-vars.json"
        env_file.write_text(json.dumps(env_vars(app, values), indent=2))
        server = None
        if mode == "start-lambda":
            server = stack.enter_context(sam_server("start-lambda", build_dir, env_file, s.work))
        invocations = []
        for event in event_files():
            logical_id = app.function(event.stem.split("-", 1)[0]).logical_id
            if mode == "invoke":
                inv = sam_invoke(build_dir, logical_id, event, env_file)
            elif server is not None:
                inv = lambda_invoke(server, logical_id, event)
            else:
                inv = local_invoke(app, build_dir, logical_id, event, values, s.work / "tmp")
            check_answer(inv)
            check_state(inv, seeded.settings)
            invocations.append(inv)
            if echo:
                print(inv.line(), flush=True)
    return Run(mode, invocations)


# One sample per function through `sam local invoke` (a new container each, as `make sam-local`
# runs every sample): the states they need are made in between, in-process.
EACH_FUNCTION = ["api-list-models", "artifacts-model-uploaded", "api-create-deployment", "deployer-insert",
                 "reconcile-scheduled"]
IN_PROCESS_STEPS = {"api-create-deployment"}


def invoke_each_function(app: TemplateConfig, build_dir: Path, work: Path, *, echo: bool = True) -> list[Invocation]:
    tag = uuid.uuid4().hex[:8]
    events = {p.stem: p for p in event_files()}
    out: list[Invocation] = []
    with stand_ins(work / f"each-{tag}") as s:
        seeded = seed(s, app, tag)
        values = overrides(s, seeded)
        env_file = s.work / "env-vars.json"
        env_file.write_text(json.dumps(env_vars(app, values), indent=2))
        for name in EACH_FUNCTION:
            logical_id = app.function(name.split("-", 1)[0]).logical_id
            if name in IN_PROCESS_STEPS:
                inv = local_invoke(app, build_dir, logical_id, events[name], values, s.work / "tmp")
            else:
                inv = sam_invoke(build_dir, logical_id, events[name], env_file)
            check_answer(inv)
            check_state(inv, seeded.settings)
            out.append(inv)
            if echo:
                print(inv.line(), flush=True)
    return out


@dataclass
class ApiStep:
    name: str
    status: int
    expected: int
    body: Any
    seconds: float

    @property
    def passed(self) -> bool:
        return self.status == self.expected

    def line(self) -> str:
        state = "ok" if self.passed else f"FAILED: HTTP {self.status}, expected {self.expected}: {str(self.body)[:300]}"
        return f"start-api          {self.name:<36} {state:<8} {self.seconds:6.1f} s"


def drive_api(app: TemplateConfig, build_dir: Path, work: Path, *, echo: bool = True) -> list[ApiStep]:
    """`sam local start-api` on the template's routes, and the seed's calls through it: create a
    model and a version, upload model.joblib, deploy, get, delete; the caller is identified by an
    API key (SAM runs no JWT authorizer; see the module's docstring)."""
    import httpx

    from tests.support.models import train_iris

    tag = uuid.uuid4().hex[:8]
    steps: list[ApiStep] = []
    with stand_ins(work / f"start-api-{tag}") as s:
        seeded = seed(s, app, tag)
        env_file = s.work / "env-vars.json"
        env_file.write_text(json.dumps(env_vars(app, overrides(s, seeded)), indent=2))
        model_path, _ = train_iris(s.work / "upload.joblib")
        with sam_server("start-api", build_dir, env_file, s.work) as server, \
                httpx.Client(base_url=server.url, timeout=120) as http:
            auth = {"Authorization": f"Bearer {seeded.api_key}"}

            def call(name: str, expected: int, method: str, path: str, **kw: Any) -> Any:
                started = time.monotonic()
                answer = http.request(method, path, **kw)
                try:
                    body = answer.json()
                except ValueError:
                    body = answer.text
                step = ApiStep(name, answer.status_code, expected, body, time.monotonic() - started)
                steps.append(step)
                if echo:
                    print(step.line(), flush=True)
                return body if step.passed else None

            call("GET /healthz", 200, "GET", "/healthz")
            call("no credentials -> 401", 401, "GET", "/api/v1/models")
            model = call("create model", 201, "POST", "/api/v1/models", headers=auth,
                         json={"name": f"start-api-{tag}", "description": "through sam local start-api"})
            version = model and call("create version", 201, "POST", f"/api/v1/models/{model['id']}/versions",
                                     headers=auth, json={})
            # `sam local start-api` hands an HTTP API only UTF-8 request bodies (it base64-encodes
            # binary ones only for a REST API's BinaryMediaTypes), so a multipart upload of a
            # binary model.joblib gets SAM's 502 before the function runs. The presigned upload is
            # the other way the API offers (and the one for large files): the file goes straight to
            # the bucket, and its S3 notification, as S3 -> SQS would deliver it, goes to the
            # artifacts function through `sam local invoke`.
            target = version and call("presigned upload URL", 200, "POST",
                                      f"/api/v1/versions/{version['id']}/upload-url", headers=auth, json={})
            uploaded = None
            if target:
                post = httpx.post(target["model"]["url"], data=target["model"]["fields"],
                                  files={"file": ("model.joblib", model_path.read_bytes())}, timeout=60)
                key = target["model"]["key"]
                steps.append(ApiStep("PUT model.joblib to the bucket", post.status_code, 204, post.text[:300], 0.0))
                notification = json.loads((ROOT / "events" / "artifacts-model-uploaded.json").read_text())
                body = json.loads(notification["Records"][0]["body"])
                body["Records"][0]["s3"]["object"]["key"] = key
                notification["Records"][0]["body"] = json.dumps(body)
                event = s.work / "upload-notification.json"
                event.write_text(json.dumps(notification))
                inv = sam_invoke(build_dir, app.function("artifacts").logical_id, event, env_file)
                check_answer(inv)
                steps.append(ApiStep("S3 event -> ArtifactsFunction", 200 if inv.passed else 500, 200,
                                     inv.error or inv.problems or inv.answer, inv.seconds))
                if echo:
                    print(steps[-2].line() + "\n" + steps[-1].line(), flush=True)
                uploaded = call("version is READY", 200, "GET", f"/api/v1/versions/{version['id']}", headers=auth)
                if uploaded and uploaded.get("status") != "READY":
                    steps[-1].expected, steps[-1].body = -1, uploaded
                    uploaded = None
            deployment = uploaded and call("deploy", 201, "POST", f"/api/v1/versions/{version['id']}/deployments",
                                           headers=auth, json={"replicas": 1})
            if deployment:
                call("get deployment", 200, "GET", f"/api/v1/deployments/{deployment['id']}", headers=auth)
                call("delete deployment", 202, "DELETE", f"/api/v1/deployments/{deployment['id']}", headers=auth)
            if model:
                call("get model", 200, "GET", f"/api/v1/models/{model['id']}", headers=auth)
    return steps


def main(argv: list[str] | None = None) -> int:
    args = argv if argv is not None else sys.argv[1:]
    for key, value in CREDENTIALS.items():  # the stand-ins' fake credentials; never real AWS
        os.environ.setdefault(key, value)
    mode = next((a.removeprefix("--mode=") for a in args if a.startswith("--mode=")), "invoke")
    try:
        if mode not in MODES:
            raise SamLocalError("bad_mode", f"--mode must be one of {', '.join(MODES)}, not {mode!r}")
        if mode != "in-process":
            if shutil.which("docker") is None:
                raise SamLocalError("no_docker", "Docker is missing: `make engine` installs and starts it (as root)")
            prepared = prepare()
            print(f"lambda image {prepared.lambda_image}; sam build {prepared.sam_build_seconds:.1f} s", flush=True)
            build_dir = prepared.build_dir
        else:
            build_dir = ROOT / ".aws-sam" / "build"
        app = load_template(ROOT / "template.yaml")
        for name, size in layer_sizes(build_dir, app).items():
            print(f"unzipped {name:<18} {size / 2**20:6.1f} MiB (Lambda's limit {LAMBDA_UNZIPPED_LIMIT // 2**20} MiB)")
        work = ROOT / ".modelport" / "sam-local"
        run = run_samples(mode, app, build_dir, work)
        steps = drive_api(app, build_dir, work) if mode != "in-process" and "--no-api" not in args else []
    except SamLocalError as error:
        print(f"sam-local: {error}", file=sys.stderr)
        return 2
    for inv in run.failed:
        print(f"--- {inv.event}\n{inv.log[-2500:]}", file=sys.stderr)
    failed = len(run.failed) + sum(not step.passed for step in steps)
    print(f"{len(run.invocations) + len(steps) - failed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

"""The model server over real HTTP: `python -m modelport.serving` as a process, every protocol.

Models are trained here (iris logistic regression; a 100-tree random forest on 20 features) and
every answer is compared with the model's own in-process answer.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import boto3
import httpx
import joblib
import numpy as np
import pytest
from sklearn.datasets import load_iris
from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import LogisticRegression

from modelport.domain.model_server import READY_PATH, ServerConfig, parse_failure, server_argv
from modelport.domain.serving_metrics import Counters, parse
from modelport.local.processes import ServerProcess, free_port, start
from tests.support.models import SHADOW_CANDIDATE, SHADOW_LIVE, train_steps

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
PREFIX = "/api/v1/predict/7"


# --- helpers -----------------------------------------------------------------------------------------


def launch(
    tmp: Path, model_uri: str, *, name: str = "model", root_path: str = "", extra: dict[str, str] | None = None,
    ready: bool = True,
) -> ServerProcess:
    port = free_port()
    env = ServerConfig(model_uri=model_uri, port=port, model_name=name, root_path=root_path,
                       model_cache_dir=str(tmp / "cache"), max_request_bytes=1024 * 1024).to_env()
    env.update(extra or {})
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p)
    proc = start(f"model-server-{port}", server_argv(sys.executable), port, log_dir=tmp, cwd=REPO, env=env)
    try:
        proc.wait_ready(60)
    except RuntimeError:  # a server that fails at once may exit before its port was ever open
        if ready or proc.process.poll() is None:
            raise
    if ready:
        wait_until_ready(proc)
    return proc


def wait_until_ready(proc: ServerProcess, timeout: float = 90.0) -> None:
    deadline = time.monotonic() + timeout
    with httpx.Client(base_url=proc.url, timeout=5) as client:
        while time.monotonic() < deadline:
            if proc.process.poll() is not None:
                raise RuntimeError(f"server exited: {proc.log_tail()}")
            if client.get(READY_PATH).status_code == 200:
                return
            time.sleep(0.05)
    raise TimeoutError(f"server not ready: {proc.log_tail()}")


def exit_message(proc: ServerProcess, timeout: float = 120.0) -> tuple[int, str]:
    code = proc.process.wait(timeout)
    assert proc.log_path is not None
    return code, proc.log_path.read_text()


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# --- models and servers ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("models")
    x_iris, y_iris = load_iris(return_X_y=True)
    iris = LogisticRegression(max_iter=500).fit(x_iris, y_iris)
    rng = np.random.default_rng(7)
    x_rf = rng.normal(size=(400, 20))
    y_rf = (x_rf[:, 0] + x_rf[:, 3] * x_rf[:, 5] > 0).astype(np.int64)
    forest = RandomForestClassifier(n_estimators=100, random_state=0).fit(x_rf, y_rf)
    joblib.dump(iris, root / "iris.joblib")
    joblib.dump(forest, root / "forest.joblib")
    return {"root": root, "iris": iris, "x_iris": x_iris, "forest": forest, "x_rf": x_rf[:50]}


@pytest.fixture(scope="module")
def iris_server(models: dict[str, Any], tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    path = models["root"] / "iris.joblib"
    proc = launch(tmp_path_factory.mktemp("iris-server"), str(path), name="iris", root_path=PREFIX,
                  extra={"MODEL_SHA256": sha256(path)})
    yield proc
    proc.stop()


@pytest.fixture(scope="module")
def forest_server(models: dict[str, Any], tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    proc = launch(tmp_path_factory.mktemp("forest-server"), str(models["root"] / "forest.joblib"), name="forest")
    yield proc
    proc.stop()


@pytest.fixture()
def iris(iris_server: ServerProcess) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=iris_server.url, timeout=10) as client:
        yield client


# --- every protocol gives the model's own answers ---------------------------------------------------


@pytest.mark.parametrize("prefix", ["", PREFIX])
def test_seed_predict_and_proba(iris: httpx.Client, models: dict[str, Any], prefix: str) -> None:
    x = models["x_iris"][::10]
    model = models["iris"]
    answer = iris.post(f"{prefix}/predict", json={"instances": x.tolist()})
    assert answer.status_code == 200
    assert answer.json() == {"predictions": model.predict(x).tolist()}
    inputs = iris.post(f"{prefix}/predict", json={"inputs": x.tolist()}).json()
    assert inputs["predictions"] == model.predict(x).tolist()
    proba = iris.post(f"{prefix}/predict", params={"proba": "true"}, json={"instances": x.tolist()}).json()
    assert np.allclose(proba["predictions"], model.predict_proba(x), rtol=1e-12, atol=0)
    proba2 = iris.post(f"{prefix}/predict", json={"instances": x.tolist(), "parameters": {"proba": True}}).json()
    assert np.allclose(proba2["predictions"], model.predict_proba(x), rtol=1e-12, atol=0)


@pytest.mark.parametrize("prefix", ["", PREFIX])
def test_kserve_v1(iris: httpx.Client, models: dict[str, Any], prefix: str) -> None:
    x = models["x_iris"][5::15]
    assert iris.get(f"{prefix}/v1/models").json() == {"models": ["iris"]}
    assert iris.get(f"{prefix}/v1/models/iris").json() == {"name": "iris", "ready": True}
    answer = iris.post(f"{prefix}/v1/models/iris:predict", json={"instances": x.tolist()})
    assert answer.json() == {"predictions": models["iris"].predict(x).tolist()}
    missing = iris.post(f"{prefix}/v1/models/other:predict", json={"instances": x.tolist()})
    assert missing.status_code == 404 and "other" in missing.json()["error"]


@pytest.mark.parametrize("prefix", ["", PREFIX])
@pytest.mark.parametrize("versioned", [False, True])
def test_open_inference_v2(iris: httpx.Client, models: dict[str, Any], prefix: str, versioned: bool) -> None:
    x = models["x_iris"][3::25]
    model = models["iris"]
    base = f"{prefix}/v2/models/iris" + ("/versions/1" if versioned else "")
    assert iris.get(f"{prefix}/v2/health/live").json() == {"live": True}
    assert iris.get(f"{prefix}/v2/health/ready").json() == {"ready": True}
    assert iris.get(f"{prefix}/v2").json()["name"] == "modelport"
    assert iris.get(f"{base}/ready").json() == {"name": "iris", "ready": True}
    meta = iris.get(base).json()
    assert meta["name"] == "iris" and meta["platform"] == "sklearn"
    assert meta["inputs"][0]["shape"] == [-1, 4]
    assert meta["outputs"][0]["datatype"] == "INT64"
    assert meta["parameters"]["classes"] == [0, 1, 2]
    request = {
        "id": "42",
        "inputs": [{"name": "input-0", "shape": list(x.shape), "datatype": "FP64", "data": x.ravel().tolist()}],
        "outputs": [{"name": "output-0"}, {"name": "predict_proba"}],
    }
    answer = iris.post(f"{base}/infer", json=request).json()
    assert answer["model_name"] == "iris" and answer["id"] == "42"
    labels, proba = answer["outputs"]
    assert labels == {"name": "output-0", "shape": [len(x)], "datatype": "INT64", "data": model.predict(x).tolist()}
    assert proba["shape"] == [len(x), 3] and proba["datatype"] == "FP64"
    assert np.allclose(np.reshape(proba["data"], (len(x), 3)), model.predict_proba(x), rtol=1e-12, atol=0)
    nested = dict(request, inputs=[dict(request["inputs"][0], data=x.tolist())], outputs=None)
    assert iris.post(f"{base}/infer", json=nested).json()["outputs"][0]["data"] == model.predict(x).tolist()


def test_forest_every_protocol(forest_server: ServerProcess, models: dict[str, Any]) -> None:
    x = models["x_rf"]
    forest = models["forest"]
    with httpx.Client(base_url=forest_server.url, timeout=30) as client:
        labels = client.post("/predict", json={"instances": x.tolist()}).json()["predictions"]
        assert labels == forest.predict(x).tolist()
        proba = client.post("/predict?proba=1", json={"instances": x.tolist()}).json()["predictions"]
        assert np.allclose(proba, forest.predict_proba(x))
        v1 = client.post("/v1/models/forest:predict", json={"instances": x[:1].tolist()}).json()
        assert v1["predictions"] == forest.predict(x[:1]).tolist()
        v2 = client.post("/v2/models/forest/infer", json={
            "inputs": [{"name": "input-0", "shape": [1, 20], "datatype": "FP32", "data": x[0].tolist()}]}).json()
        assert v2["outputs"][0]["data"] == forest.predict(x[:1]).tolist()
        assert client.get("/v2/models/forest").json()["inputs"][0]["shape"] == [-1, 20]


async def test_concurrent_single_rows_are_batched_and_correct(
    forest_server: ServerProcess, models: dict[str, Any]
) -> None:
    x = models["x_rf"]
    forest = models["forest"]
    limits = httpx.Limits(max_connections=64, max_keepalive_connections=64)
    async with httpx.AsyncClient(base_url=forest_server.url, timeout=30, limits=limits) as client:
        answers = await asyncio.gather(*(
            client.post("/predict?proba=true", json={"instances": [x[i % len(x)].tolist()]}) for i in range(200)
        ))
        metrics = (await client.get("/metrics")).text
    got = np.array([a.json()["predictions"][0] for a in answers])
    expected = forest.predict_proba(np.array([x[i % len(x)] for i in range(200)]))
    assert np.allclose(got, expected)
    values = {line.split(" ")[0]: float(line.split(" ")[1]) for line in metrics.splitlines()
              if line.startswith("modelport_batch_requests_")}
    assert values["modelport_batch_requests_count"] < values["modelport_batch_requests_sum"]  # some merged


# --- bad input: a clear 400/413, and the server keeps serving -----------------------------------------


@pytest.mark.parametrize(
    ("body", "status", "words"),
    [
        (b'{"instances": [[1, 2, 3]]}', 400, "expected 4 features per row, got 3"),
        (b'{"instances": [[1, 2, 3, "x"]]}', 400, "non-numeric value 'x'"),
        (b'{"instances": [[1, 2, 3, 4], [1, 2]]}', 400, "different lengths"),
        (b'{"instances": [1, 2, 3, 4]}', 400, "flat list"),
        (b'{"instances": []}', 400, "empty"),
        (b'{"rows": [[1, 2, 3, 4]]}', 400, "needs 'instances'"),
        (b'{"instances": [[1, 2, 3, 4]]', 400, "malformed JSON"),
        (b"[1, 2]", 400, "JSON object"),
    ],
)
def test_bad_input_is_named(iris: httpx.Client, body: bytes, status: int, words: str) -> None:
    for path in ("/predict", f"{PREFIX}/predict"):
        answer = iris.post(path, content=body, headers={"content-type": "application/json"})
        assert answer.status_code == status
        payload = answer.json()
        assert words in payload["message"] and payload["code"] == "bad_input"
    v1 = iris.post("/v1/models/iris:predict", content=body)
    assert v1.status_code == status and words in v1.json()["error"] and set(v1.json()) == {"error"}
    assert iris.post("/predict", json={"instances": [[5.1, 3.5, 1.4, 0.2]]}).json() == {"predictions": [0]}


def test_bad_v2_tensors(iris: httpx.Client) -> None:
    def infer(tensor: dict[str, Any], **extra: Any) -> httpx.Response:
        return iris.post("/v2/models/iris/infer", json={"inputs": [tensor], **extra})

    short = infer({"name": "input-0", "shape": [1, 4], "datatype": "FP32", "data": [1, 2, 3]})
    assert short.status_code == 400 and "has 3 values, but shape [1, 4] needs 4" in short.json()["error"]
    narrow = infer({"name": "input-0", "shape": [1, 3], "datatype": "FP32", "data": [1, 2, 3]})
    assert "expected 4 features" in narrow.json()["error"]
    text = infer({"name": "input-0", "shape": [1, 4], "datatype": "FP32", "data": ["a", "b", "c", "d"]})
    assert text.status_code == 400 and "non-numeric" in text.json()["error"]
    unknown = infer({"name": "input-0", "shape": [1, 4], "datatype": "FP32", "data": [1, 2, 3, 4]},
                    outputs=[{"name": "nope"}])
    assert unknown.status_code == 400 and "unknown output 'nope'" in unknown.json()["error"]
    assert iris.post("/v2/models/other/infer", json={}).status_code == 404


def test_oversized_body_is_413(iris: httpx.Client) -> None:
    rows = [[1.0, 2.0, 3.0, 4.0]] * 60_000  # > 1 MiB (MAX_REQUEST_BYTES of these servers)
    answer = iris.post("/predict", json={"instances": rows})
    assert answer.status_code == 413 and "limit" in answer.json()["message"]
    assert iris.post("/predict", json={"instances": rows[:10]}).status_code == 200


def test_health_and_metrics(iris: httpx.Client) -> None:
    assert iris.get("/healthz").json() == {"live": True}
    assert iris.get(f"{PREFIX}/readyz").json() == {"ready": True}
    text = iris.get("/metrics").text
    for name in ("modelport_requests_total", "modelport_errors_total", "modelport_request_duration_seconds_bucket",
                 "modelport_batch_rows_bucket", "modelport_model_load_seconds", "modelport_model_ready 1.0"):
        assert name in text


# --- not ready, failing, refusing ------------------------------------------------------------------


def _wait_for_gate(gate: str, model: Any) -> Any:
    """Unpickling helper: the model is 'loading' until the test creates the gate file."""
    while not os.path.exists(gate):
        time.sleep(0.02)
    return model


class GatedModel:
    def __init__(self, gate: Path, model: Any) -> None:
        self.gate, self.model = str(gate), model

    def __reduce__(self) -> tuple[Any, ...]:
        return (_wait_for_gate, (self.gate, self.model))


def test_not_ready_until_loaded(models: dict[str, Any], tmp_path: Path) -> None:
    gate = tmp_path / "gate"
    joblib.dump(GatedModel(gate, models["iris"]), tmp_path / "slow.joblib")
    # the test's own loader function: trusted by this "version" only, as an owner would
    proc = launch(tmp_path, str(tmp_path / "slow.joblib"), name="iris", ready=False,
                  extra={"MODEL_TRUSTED_GLOBALS": f"{__name__}._wait_for_gate"})
    try:
        with httpx.Client(base_url=proc.url, timeout=5) as client:
            assert client.get("/healthz").status_code == 200
            assert client.get("/readyz").status_code == 503
            assert client.get("/v2/health/ready").status_code == 503
            assert client.get("/v2/models/iris/ready").status_code == 503
            assert client.get("/v1/models/iris").status_code == 503
            seed = client.post("/predict", json={"instances": [[1, 2, 3, 4]]})
            assert seed.status_code == 503 and seed.json()["code"] == "not_ready"
            v1 = client.post("/v1/models/iris:predict", json={"instances": [[1, 2, 3, 4]]})
            assert v1.json() == {"error": "Model iris is not ready yet."}
            gate.touch()
            wait_until_ready(proc)
            assert client.post("/predict", json={"instances": [[5.1, 3.5, 1.4, 0.2]]}).json() == {"predictions": [0]}
    finally:
        proc.stop()


@pytest.fixture
def breakout(tmp_path: Path) -> Iterator[dict[str, Any]]:
    """What an escaping model aims at: a secret file, a place to write, a TCP listener, a
    process to signal (all the test's own), and the trusted Escapee model that tries them."""
    from tests.support.models import train_escapee

    listener = socket.create_server(("127.0.0.1", 0))
    sleeper = subprocess.Popen(["sleep", "300"])  # noqa: S603, S607
    secret = tmp_path / "secret.txt"
    secret.write_text("the machine's secret")
    cache = tmp_path / "cache"
    probe = {"secret": str(secret), "marker": str(tmp_path / "marker"), "port": listener.getsockname()[1],
             "pid": sleeper.pid, "shell_marker": str(tmp_path / "shell-marker"),
             "load_marker": str(cache / "written-while-loading")}
    model = train_escapee(tmp_path / "escapee.joblib", probe)
    try:
        yield {"probe": probe, "model": model, "cache": cache, "listener": listener, "sleeper": sleeper}
    finally:
        sleeper.kill()
        sleeper.wait()
        listener.close()


def _escape_attempts(tmp_path: Path, breakout: dict[str, Any], sandbox: str) -> tuple[list[int], dict[str, Any]]:
    from tests.support.models import ESCAPEE_GLOBAL

    server_tmp = tmp_path / f"server-tmp-{sandbox}"
    server_tmp.mkdir()
    proc = launch(tmp_path, str(breakout["model"]), name="iris", root_path=PREFIX,
                  extra={"MODEL_TRUSTED_GLOBALS": ESCAPEE_GLOBAL, "MODEL_SANDBOX": sandbox, "TMPDIR": str(server_tmp)})
    try:
        with httpx.Client(base_url=proc.url, timeout=30) as client:
            answered = client.post(f"{PREFIX}/predict", json={"instances": [[5.1, 3.5, 1.4, 0.2]]})
            assert answered.status_code == 200, answered.text
            return answered.json()["predictions"], client.get("/").json()["sandbox"]
    finally:
        proc.stop()


def test_a_model_that_runs_code_finds_a_confined_server(tmp_path: Path, breakout: dict[str, Any]) -> None:
    """Defence in depth behind the allow-list: code its owner trusted (or that got past the list)
    can read no file of the machine, write nowhere but the server's cache (and nothing at all while
    it is unpickled), connect to no port it was not given, signal no other process, and starts
    nothing that can; the server still serves."""
    probe, listener = breakout["probe"], breakout["listener"]
    listener.settimeout(0)
    predictions, sandbox = _escape_attempts(tmp_path, breakout, "required")
    assert predictions == [0]
    assert sandbox["enforced"] is True and sandbox["landlock_abi"] >= 1
    assert sandbox["bind_ports"] and probe["port"] not in (sandbox["connect_ports"] or [])
    for name in ("marker", "shell_marker", "load_marker"):
        assert not Path(probe[name]).exists(), name
    with pytest.raises(BlockingIOError):
        listener.accept()  # nobody connected
    assert breakout["sleeper"].poll() is None  # still alive: the signal never arrived

    # the same model unconfined does all of it: the probes above can see an escape
    predictions, sandbox = _escape_attempts(tmp_path, breakout, "off")
    assert predictions == [1 + 2 + 4 + 8 + 16] and sandbox["enforced"] is False
    assert Path(probe["marker"]).exists() and Path(probe["shell_marker"]).exists()
    assert Path(probe["load_marker"]).exists()
    breakout["sleeper"].wait(10)


def test_hostile_model_is_refused_by_the_server_process(tmp_path: Path) -> None:
    """Forced onto a real server (no API, no upload check): refused naming the global, never run."""
    from tests.support.malicious import malicious_files

    marker = tmp_path / "pwned"
    case = next(c for c in malicious_files(str(marker)) if c.family == "after a joblib array")
    (tmp_path / "model.joblib").write_bytes(case.data)
    proc = launch(tmp_path, str(tmp_path / "model.joblib"), ready=False)
    code, log = exit_message(proc)
    assert code == 1
    reasons = [r for r in map(parse_failure, log.splitlines()) if r is not None]
    assert len(reasons) == 1 and reasons[0].startswith("refused to load: the model file would call posix.system")
    assert "Traceback" not in log
    assert not marker.exists()


def test_unloadable_model_exits_with_a_clear_message(tmp_path: Path) -> None:
    (tmp_path / "model.joblib").write_bytes(b"not a model at all")
    proc = launch(tmp_path, str(tmp_path / "model.joblib"), ready=False)
    code, log = exit_message(proc)
    assert code == 1
    assert "cannot serve model 'model': Cannot load the model file model.joblib: it is not a readable joblib" in log
    assert "Traceback" not in log
    reasons = [r for r in map(parse_failure, log.splitlines()) if r is not None]  # the structured line
    assert len(reasons) == 1 and reasons[0].startswith("Cannot load the model file model.joblib: it is not a readable")


def test_sha256_mismatch_is_refused(models: dict[str, Any], tmp_path: Path) -> None:
    proc = launch(tmp_path, str(models["root"] / "iris.joblib"), ready=False, extra={"MODEL_SHA256": "0" * 64})
    code, log = exit_message(proc)
    assert code == 1 and f"but {'0' * 64} was expected" in log and "Refusing to load it" in log


def test_requirements_pinning_a_missing_version_exit(models: dict[str, Any], tmp_path: Path) -> None:
    (tmp_path / "requirements.txt").write_text("scikit-learn==0.0.1\n")
    proc = launch(tmp_path, str(models["root"] / "iris.joblib"), ready=False,
                  extra={"REQUIREMENTS_URI": str(tmp_path / "requirements.txt")})
    code, log = exit_message(proc)
    assert code == 1
    assert "Cannot install the model's requirements.txt (scikit-learn==0.0.1 (server has" in log
    assert "Traceback" not in log


def test_requirements_refused_line_exits(models: dict[str, Any], tmp_path: Path) -> None:
    (tmp_path / "requirements.txt").write_text("numpy\n--extra-index-url https://evil.example/simple\n")
    proc = launch(tmp_path, str(models["root"] / "iris.joblib"), ready=False,
                  extra={"REQUIREMENTS_URI": str(tmp_path / "requirements.txt")})
    code, log = exit_message(proc)
    assert code == 1 and "requirements.txt line 2" in log and "options (--extra-index-url)" in log


class SixVersion:
    """A model whose answer is the version of `six` it sees at predict time."""

    n_features_in_ = 1

    def predict(self, x: Any) -> list[str]:
        import importlib.metadata

        import six

        return [f"{six.__version__}|{importlib.metadata.version('six')}"] * len(x)


def test_requirements_pin_differing_from_the_server_is_installed(tmp_path: Path) -> None:
    import six

    wanted = "1.16.0" if six.__version__ != "1.16.0" else "1.15.0"
    joblib.dump(SixVersion(), tmp_path / "model.joblib")
    (tmp_path / "requirements.txt").write_text(f"six=={wanted}\nscikit-learn\n")
    extra = {"REQUIREMENTS_URI": str(tmp_path / "requirements.txt"), "MODEL_TRUSTED_GLOBALS": f"{__name__}.SixVersion"}
    for cached in (False, True):  # the second start reuses the environment cached by the file's hash
        proc = launch(tmp_path, str(tmp_path / "model.joblib"), extra=extra)
        try:
            with httpx.Client(base_url=proc.url, timeout=10) as client:
                answer = client.post("/predict", json={"instances": [[0]]}).json()
                assert answer == {"predictions": [f"{wanted}|{wanted}"]}
                environment = client.get("/").json()["environment"]
                assert environment["installed"] == [f"six=={wanted}"] and environment["cached"] is cached
        finally:
            proc.stop()
        log = proc.log_path.read_text() if proc.log_path else ""
        said = "using cached environment" if cached else "installed into"
        assert f"{said} {tmp_path / 'cache' / 'envs'}" in log and f"six=={wanted}" in log


# --- S3 / MinIO -------------------------------------------------------------------------------------


def serves_iris_then_stops(proc: ServerProcess, models: dict[str, Any]) -> None:
    try:
        x = models["x_iris"][::7]
        answer = httpx.post(f"{proc.url}/predict", json={"instances": x.tolist()}).json()
        assert answer == {"predictions": models["iris"].predict(x).tolist()}
    finally:
        proc.stop()


def test_loads_from_s3(moto_server: ServerProcess, models: dict[str, Any], tmp_path: Path) -> None:
    s3 = boto3.client("s3", endpoint_url=moto_server.url, region_name="us-east-1",
                      aws_access_key_id="testing", aws_secret_access_key="testing")
    s3.create_bucket(Bucket="serving-models")
    path = models["root"] / "iris.joblib"
    s3.upload_file(str(path), "serving-models", "models/1/versions/1/model.joblib")
    store = {"MINIO_ENDPOINT": f"127.0.0.1:{moto_server.port}", "MINIO_ACCESS_KEY": "testing",
             "MINIO_SECRET_KEY": "testing", "MINIO_USE_SSL": "false", "MODEL_SHA256": sha256(path)}
    key = "serving-models/models/1/versions/1/model.joblib"
    for uri in (f"s3://{key}", key):
        proc = launch(tmp_path / uri.split(":")[0], uri, name="iris", extra=store)
        serves_iris_then_stops(proc, models)
    missing = launch(tmp_path / "missing", "s3://serving-models/nope/model.joblib", extra=store, ready=False)
    code, log = exit_message(missing)
    assert code == 1 and "s3://serving-models/nope/model.joblib" in log and "does not exist" in log


def test_a_pinned_object_version_is_what_loads_after_the_key_is_overwritten(
    moto_server: ServerProcess, models: dict[str, Any], tmp_path: Path,
) -> None:
    """The bucket is versioned; MODEL_VERSION_ID names the object version the upload checks read.
    A later write to the key (an old presigned URL used again) must not change what a fresh
    replica (an empty cache, as a new pod has) loads."""
    s3 = boto3.client("s3", endpoint_url=moto_server.url, region_name="us-east-1",
                      aws_access_key_id="testing", aws_secret_access_key="testing")
    s3.create_bucket(Bucket="pinned-models")
    s3.put_bucket_versioning(Bucket="pinned-models", VersioningConfiguration={"Status": "Enabled"})
    key = "models/1/versions/1/model.joblib"
    checked = models["root"] / "iris.joblib"
    first = s3.put_object(Bucket="pinned-models", Key=key, Body=checked.read_bytes())["VersionId"]
    s3.put_object(Bucket="pinned-models", Key=key, Body=(models["root"] / "forest.joblib").read_bytes())
    store = {"MINIO_ENDPOINT": f"127.0.0.1:{moto_server.port}", "MINIO_ACCESS_KEY": "testing",
             "MINIO_SECRET_KEY": "testing", "MINIO_USE_SSL": "false", "MODEL_SHA256": sha256(checked)}
    proc = launch(tmp_path / "pinned", f"s3://pinned-models/{key}", name="iris",
                  extra={**store, "MODEL_VERSION_ID": first})
    serves_iris_then_stops(proc, models)
    # unpinned, the same replica would load the overwritten object, which its sha256 refuses
    unpinned = launch(tmp_path / "unpinned", f"s3://pinned-models/{key}", name="iris", extra=store, ready=False)
    code, log = exit_message(unpinned)
    assert code == 1 and "sha256" in log


# --- a deployment token guards the prediction URL ----------------------------------------------------


def test_a_deployment_token_guards_every_route_but_the_probes(models: dict[str, Any], tmp_path: Path) -> None:
    token = "mpt_s3cret-token"
    digest = hashlib.sha256(token.encode()).hexdigest()
    proc = launch(tmp_path, str(models["root"] / "iris.joblib"), name="iris", root_path=PREFIX,
                  extra={"PREDICT_TOKEN_SHA256": digest})
    try:
        rows = {"instances": [[6.8, 2.8, 4.8, 1.4]]}
        with httpx.Client(base_url=proc.url, timeout=10) as client:
            for path in (f"{PREFIX}/predict", "/predict", "/v1/models/iris:predict"):
                refused = client.post(path, json=rows)
                assert refused.status_code == 401 and refused.json()["code"] == "unauthorized"
            assert client.post("/predict", json=rows, headers={"Authorization": "Bearer wrong"}).status_code == 401
            assert client.get("/v2/models/iris").status_code == 401  # metadata too
            for probe in ("/healthz", "/readyz", "/v2/health/ready", f"{PREFIX}/readyz"):
                assert client.get(probe).status_code == 200
            # the pod's own /metrics (what Prometheus and the deployer's sampler read) needs no token;
            # under the root path, where the ingress routes callers, it does
            scraped = client.get("/metrics")
            assert scraped.status_code == 200 and "modelport_requests_total" in scraped.text
            assert client.get(f"{PREFIX}/metrics").status_code == 401
            allowed = client.post(f"{PREFIX}/predict", json=rows, headers={"Authorization": f"Bearer {token}"})
            assert allowed.status_code == 200
            assert allowed.json()["predictions"] == models["iris"].predict(np.array(rows["instances"])).tolist()
    finally:
        proc.stop()


# --- shadow traffic: the live server copies answered requests to a candidate (serving/mirror.py) ------


@pytest.fixture(scope="module")
def shadow_pair(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """A live tree (x < 0.5 -> 0, else 1) and a candidate that answers 0 from x = 2 on: the two
    disagree exactly on the rows with x = 2 (and there the probabilities differ by 1)."""
    root = tmp_path_factory.mktemp("shadow")
    train_steps(root / "live.joblib", SHADOW_LIVE)
    server = launch(root / "candidate-server", str(train_steps(root / "candidate.joblib", SHADOW_CANDIDATE)),
                    name="candidate")
    yield {"root": root, "candidate": server}
    server.stop()


def shadow_counters(proc: ServerProcess, done: Callable[[Counters], bool], timeout: float = 60.0) -> Counters:
    """The live server's shadow counters, once ``done`` holds for them (the copies are sent after the answers)."""
    deadline = time.monotonic() + timeout
    while True:
        counters = parse(httpx.get(f"{proc.url}/metrics", timeout=10).text)
        if done(counters) or time.monotonic() > deadline:
            return counters
        time.sleep(0.05)


def test_a_shadow_that_disagrees_on_a_known_share_is_reported_so(shadow_pair: dict[str, Any], tmp_path: Path) -> None:
    live = launch(tmp_path, str(shadow_pair["root"] / "live.joblib"), name="live", root_path=PREFIX,
                  extra={"MIRROR_URL": shadow_pair["candidate"].url})
    try:
        xs = [2.0 if n % 10 < 3 else float(n % 2) for n in range(100)]  # 30 of 100 where the two disagree
        with httpx.Client(base_url=live.url, timeout=10) as client:
            for x in xs:
                answer = client.post(f"{PREFIX}/predict", json={"instances": [[x]]})
                assert answer.json() == {"predictions": [0 if x < 0.5 else 1]}  # always the live model's
            for x in xs[:20]:  # 6 of them at x = 2
                answer = client.post(f"{PREFIX}/predict", json={"instances": [[x]], "parameters": {"proba": True}})
                assert answer.json() == {"predictions": [[1.0, 0.0] if x < 0.5 else [0.0, 1.0]]}
        counters = shadow_counters(live, lambda c: c.shadow_compared + c.shadow_failed + c.shadow_dropped >= 120)
    finally:
        live.stop()
    assert (counters.shadow_compared, counters.shadow_failed, counters.shadow_dropped) == (120, 0, 0)
    assert (counters.shadow_agreed, counters.shadow_disagreed) == (84, 36)
    assert counters.shadow_proba_rows == 20
    assert counters.shadow_proba_abs_diff == pytest.approx(6.0)
    assert sum(counters.shadow_latency.values()) > 0  # the candidate's latency, measured per call


def test_copies_of_every_protocol_are_compared(shadow_pair: dict[str, Any], tmp_path: Path) -> None:
    """Seed and V1 bodies go to the shadow as the callers sent them; V2 bodies and flags in the
    query string are re-encoded; all are compared the same way."""
    live = launch(tmp_path, str(shadow_pair["root"] / "live.joblib"), name="live",
                  extra={"MIRROR_URL": shadow_pair["candidate"].url})
    rows = [[0.0], [2.0], [1.0], [2.0]]  # the two models disagree at x = 2
    v2 = {"inputs": [{"name": "input-0", "shape": [4, 1], "datatype": "FP64", "data": [0.0, 2.0, 1.0, 2.0]}]}
    try:
        with httpx.Client(base_url=live.url, timeout=10) as client:
            assert client.post("/predict", json={"instances": rows}).status_code == 200
            assert client.post("/v1/models/live:predict", json={"instances": rows}).status_code == 200
            assert client.post("/v2/models/live/infer", json=v2).status_code == 200
            assert client.post("/predict?proba=true", json={"instances": rows}).status_code == 200
            assert client.post("/predict", json={"inputs": rows, "parameters": {"proba": True}}).status_code == 200
        counters = shadow_counters(live, lambda c: c.shadow_compared + c.shadow_failed + c.shadow_dropped >= 5)
    finally:
        live.stop()
    assert (counters.shadow_compared, counters.shadow_failed, counters.shadow_dropped) == (5, 0, 0)
    assert (counters.shadow_agreed, counters.shadow_disagreed) == (10, 10)
    assert counters.shadow_proba_rows == 8


def test_copies_go_over_one_kept_alive_connection(shadow_pair: dict[str, Any]) -> None:
    """The live server's client to its shadow keeps its connection open between calls (a new
    connection per call cost the live server a connect and a socket each time)."""
    from modelport.serving.mirror import ShadowConnection
    from modelport.serving.protocols.mirror import splice

    async def calls() -> tuple[list[int], int]:
        accepted = 0

        async def relay(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            nonlocal accepted
            accepted += 1
            host, port = shadow_pair["candidate"].url.removeprefix("http://").split(":")
            up_reader, up_writer = await asyncio.open_connection(host, int(port))

            async def pipe(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
                while data := await source.read(65536):
                    sink.write(data)
                sink.close()

            await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))

        server = await asyncio.start_server(relay, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        connection = ShadowConnection(f"http://127.0.0.1:{port}")
        call = splice([b'{"instances":[[1.0]]}'], [b'{"predictions":[1]}'], classifier=True, tolerance=0.0)
        statuses = [(await connection.post(call, 10))[0] for _ in range(5)]
        connection.close()
        server.close()
        return statuses, accepted

    statuses, accepted = asyncio.run(calls())
    assert statuses == [200] * 5 and accepted == 1


def test_a_shadow_that_closes_kept_alive_connections_still_gets_every_call() -> None:
    """A shadow's server closes idle connections (uvicorn after 5 s): the live server's next call
    must go over a new connection, not fail (found by bench/rollout.py: every call after a pause
    failed). Here the shadow closes every connection right after its answer, without saying so."""
    from modelport.serving.mirror import ShadowConnection
    from modelport.serving.protocols.mirror import splice

    async def calls() -> tuple[list[int], int]:
        accepted = 0

        async def answer_once(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            nonlocal accepted
            accepted += 1
            head = await reader.readuntil(b"\r\n\r\n")
            length = int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0])
            await reader.readexactly(length)
            body = b'{"rows":1,"agreed":1,"proba_rows":0,"proba_abs_diff":0.0}'
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: "
                         + str(len(body)).encode() + b"\r\n\r\n" + body)
            await writer.drain()
            writer.close()

        server = await asyncio.start_server(answer_once, "127.0.0.1", 0)
        connection = ShadowConnection(f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}")
        call = splice([b'{"instances":[[1.0]]}'], [b'{"predictions":[1]}'], classifier=True, tolerance=0.0)
        statuses = []
        for pause in (0.05, 0.0, 0.05, 0.0):  # the close has reached the live server's side, or maybe not yet
            statuses.append((await connection.post(call, 10))[0])
            await asyncio.sleep(pause)
        connection.close()
        server.close()
        return statuses, accepted

    statuses, accepted = asyncio.run(calls())
    assert statuses == [200] * 4 and accepted == 4


def test_the_mirror_route_compares_and_refuses_what_no_live_server_sends(shadow_pair: dict[str, Any]) -> None:
    one, two = {"instances": [[1.0]]}, {"instances": [[2.0]]}  # the candidate answers 1 and 0
    with httpx.Client(base_url=shadow_pair["candidate"].url, timeout=10) as client:
        both = client.post("/mirror", json={"classifier": True, "bodies": [one, two],
                                            "answers": [{"predictions": [1]}, {"predictions": [1]}]})
        assert both.status_code == 200
        assert both.json() == {"rows": 2, "agreed": 1, "proba_rows": 0, "proba_abs_diff": 0.0}
        proba = client.post("/mirror", json={"bodies": [{**two, "parameters": {"proba": True}}],
                                             "answers": [{"predictions": [[0.0, 1.0]]}]})
        assert proba.json() == {"rows": 1, "agreed": 0, "proba_rows": 1, "proba_abs_diff": 1.0}
        shape = client.post("/mirror", json={"bodies": [one], "answers": [{"predictions": [[1, 0]]}]})
        assert shape.json()["agreed"] == 0  # another number of outputs per row disagrees
        for body, message in [
            ({"bodies": [], "answers": []}, "the body needs 'bodies'"),
            ({"bodies": [one]}, "the body needs 'answers'"),
            ({"bodies": [one, two], "answers": [{"predictions": [1]}]}, "the body needs 'answers'"),
            ({"bodies": [one], "answers": [{"predictions": [1, 0]}]}, "one per row of its body"),
            ({"bodies": [one], "answers": [[1]]}, "one per row of its body"),
            ({"bodies": [one], "answers": [{"predictions": [1]}], "tolerance": -1}, "'tolerance'"),
            ({"bodies": [[1.0]], "answers": [{"predictions": [1]}]}, "every entry of 'bodies' must be a seed"),
            ({"bodies": [one, {**one, "parameters": {"proba": True}}],
              "answers": [{"predictions": [1]}, {"predictions": [[0.0, 1.0]]}]}, "the bodies ask for different"),
            ({"bodies": [one, {"instances": [[1.0, 2.0]]}], "answers": [{"predictions": [1]}] * 2},
             "expected 1 features per row"),
        ]:
            refused = client.post("/mirror", json=body)
            assert refused.status_code == 400 and refused.json()["code"] == "bad_input", body
            assert message in refused.json()["message"], refused.json()


def test_a_shadow_at_half_gets_exactly_every_other_request(shadow_pair: dict[str, Any], tmp_path: Path) -> None:
    live = launch(tmp_path, str(shadow_pair["root"] / "live.joblib"), name="live",
                  extra={"MIRROR_URL": shadow_pair["candidate"].url, "MIRROR_PERCENT": "50"})
    try:
        with httpx.Client(base_url=live.url, timeout=10) as client:
            for _ in range(41):
                assert client.post("/predict", json={"instances": [[2.0], [0.0]]}).status_code == 200
            counters = shadow_counters(live, lambda c: c.shadow_compared >= 20)
            assert client.post("/predict", json={"instances": [[2.0, 1.0]]}).status_code == 400  # not answered
            assert client.post("/predict", json={"instances": [[1.0]]}).status_code == 200
            counters = shadow_counters(live, lambda c: c.shadow_compared >= 21)
    finally:
        live.stop()
    assert (counters.shadow_compared, counters.shadow_failed, counters.shadow_dropped) == (21, 0, 0)
    assert (counters.shadow_agreed, counters.shadow_disagreed) == (21, 20)


class Hanging:
    """A TCP server that accepts connections and never answers: a candidate that hangs."""

    def __init__(self) -> None:
        import socket
        import threading

        self.socket = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.socket.getsockname()[1]}"
        self.accepted: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                self.accepted.append(self.socket.accept()[0])
            except OSError:
                return

    def close(self) -> None:
        self.socket.close()
        for conn in self.accepted:
            conn.close()


@pytest.mark.parametrize("candidate", ["hangs", "is down"])
def test_a_shadow_that_hangs_or_is_down_changes_nothing_for_callers(
        shadow_pair: dict[str, Any], tmp_path: Path, candidate: str) -> None:
    hanging = Hanging() if candidate == "hangs" else None
    url = hanging.url if hanging else f"http://127.0.0.1:{free_port()}"
    live = launch(tmp_path, str(shadow_pair["root"] / "live.joblib"), name="live",
                  extra={"MIRROR_URL": url, "MIRROR_QUEUE_SIZE": "4", "MIRROR_TIMEOUT_SECONDS": "600"})
    try:
        with httpx.Client(base_url=live.url, timeout=10) as client:
            for n in range(60):
                assert client.post("/predict", json={"instances": [[n % 3]]}).json() == {"predictions": [min(n % 3, 1)]}
        if hanging:  # every answer came while the candidate had answered nothing: callers never waited on it
            counters = shadow_counters(live, lambda c: c.shadow_dropped >= 51)
            assert hanging.accepted and counters.shadow_compared == counters.shadow_failed == 0
            # the first call hangs (for 600 s), at most 5 copies in it and 4 queued: every other copy dropped
            assert counters.shadow_dropped >= 51
        else:
            counters = shadow_counters(live, lambda c: c.shadow_failed + c.shadow_dropped >= 60)
            assert counters.shadow_compared == 0 and counters.shadow_failed + counters.shadow_dropped == 60
            assert counters.shadow_failed >= 1
            assert "did not answer a copy well" in live.log_tail(200)
        assert httpx.get(f"{live.url}/readyz").status_code == 200
    finally:
        live.stop()
        if hanging:
            hanging.close()

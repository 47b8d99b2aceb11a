"""The loaded model in-process: input checks, metadata, unpickling diagnostics, micro-batching."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import orjson
import pytest
import sklearn
from prometheus_client import REGISTRY
from sklearn.datasets import load_iris
from sklearn.ensemble import GradientBoostingClassifier, RandomForestClassifier
from sklearn.linear_model import LogisticRegression, Perceptron, RidgeClassifier, SGDClassifier
from sklearn.neighbors import KNeighborsClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import SVC, LinearSVC
from sklearn.tree import DecisionTreeClassifier

from modelport.domain.pickle_policy import PicklePolicy
from modelport.serving.batcher import Batcher
from modelport.serving.errors import InputError, ModelLoadError
from modelport.serving.runtime import Runner, load_model, pickled_sklearn_version


@pytest.fixture(scope="module")
def iris_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    x, y = load_iris(return_X_y=True)
    path = tmp_path_factory.mktemp("iris") / "model.joblib"
    joblib.dump(LogisticRegression(max_iter=500).fit(x, y), path)
    return path


@pytest.fixture(scope="module")
def runner(iris_file: Path) -> Runner:
    return load_model(iris_file, "iris")


def test_metadata_comes_from_the_model(runner: Runner) -> None:
    meta = runner.v2_metadata()
    assert meta["inputs"] == [{"name": "input-0", "datatype": "FP64", "shape": [-1, 4]}]
    assert meta["outputs"][0] == {"name": "output-0", "datatype": "INT64", "shape": [-1]}
    assert meta["outputs"][1] == {"name": "predict_proba", "datatype": "FP64", "shape": [-1, 3]}
    assert meta["parameters"]["classes"] == [0, 1, 2]


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ("nope", "must be a list of rows"),
        ([], "is empty"),
        ([1.0, 2.0, 3.0, 4.0], "flat list"),
        ([[1.0, 2.0, 3.0]], "expected 4 features per row, got 3"),
        ([[1.0, 2.0, 3.0, "x"]], "non-numeric value 'x' at row 0, column 3"),
        ([[1.0, 2.0, 3.0, None]], "non-numeric value None"),
        ([[1.0, 2.0, 3.0, 4.0], [1.0]], "different lengths"),
        ([[[1.0, 2.0, 3.0, 4.0]]], "must be 2-D"),
    ],
)
def test_bad_rows_are_named(runner: Runner, data: object, message: str) -> None:
    with pytest.raises(InputError, match=message.replace("(", r"\(")):
        runner.to_matrix(data)


def test_v2_tensors(runner: Runner) -> None:
    tensor = {"name": "input-0", "shape": [2, 4], "datatype": "FP32", "data": [1, 2, 3, 4, 5, 6, 7, 8]}
    flat = runner.v2_matrix([tensor])
    assert flat.shape == (2, 4) and flat.dtype == np.float64
    columns = runner.v2_matrix(
        [{"name": f"c{i}", "shape": [2], "datatype": "FP64", "data": [i, i + 1]} for i in range(4)]
    )
    assert columns.tolist() == [[0, 1, 2, 3], [1, 2, 3, 4]]
    # a shape whose product wraps around in int64 (2**32 * 2**32 == 0) is too large, not "0 values"
    with pytest.raises(InputError, match="is too large"):
        runner.v2_matrix([{"name": "input-0", "shape": [2**32, 2**32], "datatype": "FP32", "data": []}])
    with pytest.raises(InputError, match="is too large"):
        runner.v2_matrix([{"name": "input-0", "shape": [2**62, 4], "datatype": "FP32", "data": []}])
    with pytest.raises(InputError, match="has 3 values, but shape"):
        runner.v2_matrix([{"name": "input-0", "shape": [1, 4], "datatype": "FP32", "data": [1, 2, 3]}])
    with pytest.raises(InputError, match="BYTES"):
        runner.v2_matrix([{"name": "input-0", "shape": [1, 4], "datatype": "BYTES", "data": ["a", "b", "c", "d"]}])


def test_predict_many_splits_answers_per_request(runner: Runner) -> None:
    x, _ = load_iris(return_X_y=True)
    parts = [x[:1], x[1:5], x[50:52]]
    answers = runner.predict_many(parts, proba=True)
    assert [a.shape for a in answers] == [(1, 3), (4, 3), (2, 3)]
    assert np.allclose(np.concatenate(answers), runner.model.predict_proba(np.concatenate(parts)))


def test_garbage_file_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "model.joblib"
    path.write_bytes(b"this is not a pickle")
    with pytest.raises(ModelLoadError, match="not a readable joblib or pickle file"):
        load_model(path, "m")


def test_object_without_predict_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "model.joblib"
    joblib.dump({"weights": [1, 2]}, path)
    with pytest.raises(ModelLoadError, match="no predict"):
        load_model(path, "m")


def test_missing_module_names_package_and_versions(tmp_path: Path) -> None:
    # A pickle written by scikit-learn 0.22 (sklearn.svm.classes was removed in 0.24): kserve #2059.
    path = tmp_path / "model.pkl"
    path.write_bytes(
        b"\x80\x02csklearn.svm.classes\nSVC\nq\x00)\x81q\x01}q\x02X\x10\x00\x00\x00_sklearn_version"
        b"q\x03X\x06\x00\x00\x000.22.1q\x04sb."
    )
    with pytest.raises(ModelLoadError) as info:
        load_model(path, "m")
    message = info.value.message
    assert "sklearn.svm.classes" in message
    assert f"scikit-learn {sklearn.__version__}" in message
    assert "scikit-learn==0.22.1" in message
    assert "Traceback" not in message


def test_inconsistent_version_is_reported(tmp_path: Path, iris_file: Path) -> None:
    current = sklearn.__version__.encode()
    fake = b"0.0.1"[: len(current)].ljust(len(current), b"0")
    path = tmp_path / "old.joblib"
    path.write_bytes(iris_file.read_bytes().replace(current, fake))
    assert pickled_sklearn_version(path) == fake.decode()
    runner = load_model(path, "m")
    assert runner.warnings and f"saved with scikit-learn {fake.decode()}" in runner.warnings[0]
    assert f"scikit-learn=={fake.decode()}" in runner.warnings[0]


def _histogram(name: str) -> tuple[float, float]:
    """(count, sum) of a modelport histogram, read from the Prometheus registry."""
    count = REGISTRY.get_sample_value(f"{name}_count") or 0.0
    total = REGISTRY.get_sample_value(f"{name}_sum") or 0.0
    return count, total


async def test_concurrent_requests_share_model_calls(runner: Runner) -> None:
    x, _ = load_iris(return_X_y=True)
    batcher = Batcher(runner, enabled=True, max_batch=64, max_wait_ms=50)
    batcher.start()
    calls_before, rows_before = _histogram("modelport_batch_rows")
    try:
        for _ in range(len(x)):
            batcher.arrived()
        answers = await asyncio.gather(*(batcher.predict(x[i : i + 1], False) for i in range(len(x))))
    finally:
        await batcher.stop()
    calls_after, rows_after = _histogram("modelport_batch_rows")
    assert np.concatenate(answers).tolist() == runner.model.predict(x).tolist()
    assert rows_after - rows_before == len(x)
    assert calls_after - calls_before <= -(-len(x) // 64) + 1  # 150 single rows in about 3 model calls


async def test_batching_off_calls_the_model_per_request(runner: Runner) -> None:
    x, _ = load_iris(return_X_y=True)
    batcher = Batcher(runner, enabled=False, max_batch=64, max_wait_ms=50)
    calls_before, _ = _histogram("modelport_batch_rows")
    for _ in range(10):
        batcher.arrived()
    answers = await asyncio.gather(*(batcher.predict(x[i : i + 1], True) for i in range(10)))
    calls_after, _ = _histogram("modelport_batch_rows")
    assert np.allclose(np.concatenate(answers), runner.model.predict_proba(x[:10]))
    assert calls_after - calls_before == 10


async def test_one_bad_request_does_not_fail_its_batch(tmp_path: Path) -> None:
    path = tmp_path / "picky.joblib"
    joblib.dump(Picky(), path)
    # the owner's own class: loaded because the version trusts it, and the runner says so
    picky = load_model(path, "picky", policy=PicklePolicy.for_version(trusted_globals=[f"{__name__}.Picky"]))
    assert picky.warnings == [f"trusted by owner: {__name__}.Picky"]
    batcher = Batcher(picky, enabled=True, max_batch=64, max_wait_ms=50)
    batcher.start()
    try:
        for _ in range(3):
            batcher.arrived()
        good = [np.array([[1.0, 2.0]]), np.array([[3.0, 4.0]])]
        results = await asyncio.gather(
            batcher.predict(good[0], False), batcher.predict(np.array([[-1.0, 0.0]]), False),
            batcher.predict(good[1], False), return_exceptions=True,
        )
    finally:
        await batcher.stop()
    assert results[0].tolist() == [3.0] and results[2].tolist() == [7.0]
    assert isinstance(results[1], ValueError)


class Picky:
    """A model (anything with predict) that refuses negative inputs."""

    n_features_in_ = 2

    def predict(self, x: np.ndarray) -> np.ndarray:
        if (x < 0).any():
            raise ValueError("negative values are not allowed")
        return x.sum(axis=1)


def test_forest_direct_tree_path_is_identical(tmp_path: Path) -> None:
    from sklearn.ensemble import RandomForestClassifier

    rng = np.random.default_rng(3)
    x = rng.normal(size=(300, 20))
    y = np.where(x[:, 0] > 0, "yes", "no")
    path = tmp_path / "forest.joblib"
    joblib.dump(RandomForestClassifier(n_estimators=30, random_state=0).fit(x, y), path)
    forest = load_model(path, "forest")
    assert forest.fast is not None and forest.v2_metadata()["parameters"]["direct_trees"] is True
    probe = rng.normal(size=(64, 20))
    assert np.array_equal(forest.predict(probe, True), forest.model.predict_proba(probe))
    assert forest.predict(probe, False).tolist() == forest.model.predict(probe).tolist()
    assert forest.output_datatype == "BYTES"


@pytest.mark.parametrize(("make", "labels"), [
    (lambda: LogisticRegression(max_iter=500), None),  # three classes: softmax
    (lambda: LogisticRegression(max_iter=500), "binary"),  # two classes: expit
    (lambda: LogisticRegression(max_iter=500), "strings"),
    (lambda: LogisticRegression(max_iter=500, fit_intercept=False), None),
    (lambda: SGDClassifier(random_state=0), None),  # predict direct, predict_proba absent
    (lambda: Perceptron(), "binary"),
    (lambda: LinearSVC(), None),
])
def test_linear_direct_path_is_identical(make: Callable[[], Any], labels: str | None, tmp_path: Path) -> None:
    x, y = load_iris(return_X_y=True)
    target: Any = y
    if labels == "binary":
        target = (y > 0).astype(int)
    elif labels == "strings":
        target = np.array(["setosa", "versicolor", "virginica"])[y]
    path = tmp_path / "linear.joblib"
    joblib.dump(make().fit(x, target), path)
    runner = load_model(path, "linear")
    assert runner.direct == "linear" and runner.fast is not None and runner.inline is True
    assert runner.v2_metadata()["parameters"]["direct_path"] == "linear"
    assert runner.v2_metadata()["parameters"]["direct_trees"] is False
    probe = np.random.default_rng(5).normal(scale=4.0, size=(97, 4))
    for rows in (probe, probe[:1], x):
        assert runner.predict(rows, False).tolist() == runner.model.predict(rows).tolist()
        if runner.has_proba:
            assert np.array_equal(runner.predict(rows, True), runner.model.predict_proba(rows))


def test_linear_direct_path_leaves_non_finite_input_to_the_model(runner: Runner) -> None:
    assert runner.direct == "linear"
    bad = np.array([[1.0, float("nan"), 2.0, 3.0]])
    with pytest.raises(ValueError, match="NaN") as direct:
        runner.predict(bad, False)
    with pytest.raises(ValueError, match="NaN") as own:
        runner.model.predict(bad)
    assert str(direct.value) == str(own.value)
    with pytest.raises(ValueError, match="infinity"):
        runner.predict(np.array([[1.0, float("inf"), 2.0, 3.0]]), True)


def test_a_linear_class_with_its_own_predict_keeps_it(tmp_path: Path) -> None:
    x, y = load_iris(return_X_y=True)
    path = tmp_path / "ridge.joblib"
    joblib.dump(RidgeClassifier().fit(x, y), path)  # RidgeClassifier overrides predict
    runner = load_model(path, "ridge")
    assert runner.direct is None and runner.fast is None


@pytest.mark.parametrize(("make", "inline"), [
    (lambda: LogisticRegression(max_iter=500), True),
    (lambda: make_pipeline(StandardScaler(), LogisticRegression(max_iter=500)), True),
    (lambda: DecisionTreeClassifier(random_state=0), True),
    (lambda: RandomForestClassifier(20, random_state=0), True),  # the direct tree path, few trees
    (lambda: RandomForestClassifier(200, random_state=0), False),
    (lambda: GradientBoostingClassifier(n_estimators=10), False),
    (lambda: KNeighborsClassifier(), False),
    (lambda: SVC(), False),
])
def test_where_predictions_run_follows_the_model_never_a_timing(
    make: Callable[[], Any], inline: bool, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    x, y = load_iris(return_X_y=True)
    path = tmp_path / "model.joblib"
    joblib.dump(make().fit(x, y), path)
    # however slow the machine is while the model loads, the answer is the same
    clock = iter(float(i) for i in range(10**6))
    monkeypatch.setattr("modelport.serving.runtime.time.perf_counter", lambda: next(clock))
    runner = load_model(path, "m")
    assert runner.inline is inline
    assert runner.v2_metadata()["parameters"]["predicts_on"] == ("event loop" if inline else "worker thread")


# --- the direct linear path over HTTP: the same answers and the same errors as the model's own ---------

ODD_ROWS: list[bytes] = [
    b'{"instances": [[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3]]}',
    b'{"inputs": [[5.1, 3.5, 1.4, 0.2]], "parameters": {"proba": true}}',
    b'{"instances": [[1, 2, 3, 4], [1, 2]]}',  # ragged
    b'{"instances": [["a", 2, 3, 4]]}',  # a string
    b'{"instances": [["1.5", 2, 3, 4]]}',  # a number in a string
    b'{"instances": [[true, 2, 3, 4]]}',
    b'{"instances": [[null, 2, 3, 4]]}',
    b'{"instances": [[NaN, 2, 3, 4]]}',  # not JSON
    b'{"instances": [[1e400, 2, 3, 4]]}',  # beyond float64: not JSON for orjson
    b'{"instances": [[1e308, 1e308, -1e308, 1e308]], "parameters": {"proba": true}}',  # scores overflow
    b'{"instances": [[1e308, 1e308, -1e308, 1e308]]}',
    b'{"instances": [[123456789012345678901234567890, 0, 0, 0]]}',  # a huge integer
    b'{"instances": [[-0.0, 0, 0, 0]]}',
    b'{"instances": []}',
    b'{"instances": [[]]}',
    b'{"instances": [1, 2, 3, 4]}',  # flat
    b'{"instances": [[[1, 2, 3, 4]]]}',  # 3-D
    b'{"instances": [[1, 2, 3]]}',  # too few features
    b'{"instances": [{"a": 1}]}',  # objects without feature names
    b'{"instances": "rows"}',
    b'{"rows": [[1, 2, 3, 4]]}',
    b'[1, 2]',
    b'{"inputs": [{"name": "x", "shape": [2, 4], "datatype": "FP64", "data": [1, 2, 3, 4, 5, 6, 7, 8]}], "id": "a"}',
    b'{"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP64", "data": [1, 2, 3]}], "id": "a"}',
    b'{"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP64", "data": [1, 2, "x", 4]}], "id": "a"}',
    b'{"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP64", "data": [1e308, 1e308, -1e308, 1e308]}],'
    b' "outputs": [{"name": "predict_proba"}, {"name": "output-0"}], "id": "a"}',
]


async def _post(app: Any, path: str, body: bytes) -> tuple[int, Any]:
    sent: list[dict[str, Any]] = []
    messages = [{"type": "http.request", "body": body, "more_body": False}]

    async def receive() -> dict[str, Any]:
        return messages.pop(0) if messages else {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {"type": "http", "method": "POST", "path": path, "query_string": b"",
             "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]}
    await app(scope, receive, send)
    return sent[0]["status"], orjson.loads(sent[1]["body"])


@pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning")
@pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")
async def test_the_direct_linear_path_answers_odd_input_as_the_model_does(iris_file: Path) -> None:
    from modelport.domain.model_server import ServerConfig
    from modelport.serving.asgi import App

    app = App(ServerConfig(model_uri=str(iris_file), model_name="iris"), autoload=False)
    runner = load_model(iris_file, "iris")
    assert runner.direct == "linear"
    app.plane.set_runner(runner)
    direct_path = runner.fast
    assert direct_path is not None
    try:
        for path in ("/predict", "/v1/models/iris:predict", "/v2/models/iris/infer"):
            for body in ODD_ROWS:
                runner.fast = None  # the model's own predict and predict_proba
                own = await _post(app, path, body)
                runner.fast = direct_path
                direct = await _post(app, path, body)
                assert direct == own, (path, body)
                assert own[0] in (200, 400), (path, body, own)  # never a 500
                if own[0] == 400 and path == "/predict":
                    assert own[1]["code"] in ("bad_input",), (body, own)
    finally:
        await app.plane.stop()


"""The loaded model: unpickling with version diagnostics, metadata, input checks, predictions.

This module imports numpy (and the model imports scikit-learn), so it is imported only after the
model's requirements environment is active (see ``environment.py``). Everything that can be worked
out once (feature count and names, classes, output datatypes, whether predict_proba exists,
whether a prediction is slow enough to leave the event loop) is worked out here at load time.
"""

from __future__ import annotations

import importlib.metadata as metadata
import logging
import math
import re
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from modelport.domain.pickle_policy import PicklePolicy, RefusedGlobal, UnreadableArray, UnsafeArgument
from modelport.domain.skops_schema import SkopsUnreadable
from modelport.serving.errors import InputError, ModelLoadError
from modelport.serving.unpickler import load_guarded

log = logging.getLogger("modelport.serving")

# Where predictions run, decided from what the model is and never from a timing (a busy machine
# at load time must not change how a server behaves; issue 14): on the event loop when one row
# costs a few array operations (linear models, naive Bayes, one tree, discriminant analysis,
# scaling, imputation and selection steps, and pipelines of only those), and the forests of the
# direct tree path up to INLINE_MAX_TREES trees (about 3 us a tree a row), and linear classifiers
# on the direct linear path (one matrix product; LinearSVC too); everything else
# (other ensembles, neighbours, kernels, networks, unknown estimators) in a worker thread, so the
# event loop keeps reading and batching requests while the model computes.
INLINE_FAMILIES = (
    "sklearn.linear_model", "sklearn.naive_bayes", "sklearn.tree", "sklearn.discriminant_analysis",
    "sklearn.preprocessing", "sklearn.impute", "sklearn.feature_selection", "sklearn.dummy",
)  # fmt: skip
INLINE_MAX_TREES = 150

_NUMERIC_KINDS = frozenset("biuf")
#: more values than a request body can carry (the body limit is far lower): a shape beyond it is refused
MAX_TENSOR_VALUES = 2**31 - 1

Predictor = Callable[[np.ndarray], np.ndarray]

_DATATYPES = {
    "b": "BOOL", "U": "BYTES", "S": "BYTES", "O": "BYTES",
}
_SIZED = {("i", 1): "INT8", ("i", 2): "INT16", ("i", 4): "INT32", ("i", 8): "INT64",
          ("u", 1): "UINT8", ("u", 2): "UINT16", ("u", 4): "UINT32", ("u", 8): "UINT64",
          ("f", 2): "FP16", ("f", 4): "FP32", ("f", 8): "FP64"}


def v2_datatype(dtype: np.dtype[Any]) -> str:
    return _DATATYPES.get(dtype.kind) or _SIZED.get((dtype.kind, dtype.itemsize), "BYTES")


@dataclass
class Runner:
    """A loaded model and what was learned about it at load time."""

    model: Any
    name: str
    n_features: int | None
    feature_names: list[str] | None
    classes: list[Any] | None
    has_proba: bool
    output_datatype: str = "FP64"
    proba_datatype: str = "FP64"
    inline: bool = True
    platform: str = "sklearn"
    model_type: str = ""
    load_seconds: float = 0.0
    warnings: list[str] = field(default_factory=list)
    environment: dict[str, object] = field(default_factory=dict)
    _feature_index: dict[str, int] | None = None
    # (predict, predict_proba) that give bit-for-bit the model's own answers, faster (see _direct_path);
    # ``direct`` names which: "trees" (_forest_fast_path) or "linear" (_linear_fast_path)
    fast: tuple[Predictor, Predictor] | None = None
    direct: str | None = None

    # --- input -----------------------------------------------------------------------------

    def to_matrix(self, data: Any, where: str = "instances") -> np.ndarray:
        """JSON rows (lists of numbers, or objects keyed by feature name) -> a float64 matrix."""
        if not isinstance(data, list):
            raise InputError(f"'{where}' must be a list of rows, e.g. [[1.0, 2.0], [3.0, 4.0]]")
        if not data:
            raise InputError(f"'{where}' is empty: send at least one row")
        if isinstance(data[0], dict):
            data = self._rows_from_objects(data, where)
        try:
            array = np.array(data)
        except (ValueError, TypeError):
            raise InputError(f"'{where}' rows have different lengths; every row needs the same features") from None
        return self._check_matrix(array, data, where)

    def _check_matrix(self, array: np.ndarray, data: Any, where: str) -> np.ndarray:
        if array.dtype.kind not in _NUMERIC_KINDS:
            raise InputError(_non_numeric(data, where))
        if array.ndim == 1:
            raise InputError(
                f"'{where}' must be a list of rows (2-D), got a flat list of {array.shape[0]} values; "
                "wrap a single row as [[...]]"
            )
        if array.ndim != 2:
            raise InputError(f"'{where}' must be 2-D (rows of features), got {array.ndim}-D shape {list(array.shape)}")
        if self.n_features is not None and array.shape[1] != self.n_features:
            raise InputError(
                f"expected {self.n_features} features per row, got {array.shape[1]} in '{where}'"
            )
        if array.dtype != np.float64:
            array = array.astype(np.float64)
        return array

    def _rows_from_objects(self, rows: list[Any], where: str) -> list[list[Any]]:
        if self._feature_index is None or self.feature_names is None:
            raise InputError(f"'{where}' rows are objects, but the model has no feature names; send lists")
        names = self.feature_names
        out = []
        for number, row in enumerate(rows):
            if not isinstance(row, dict):
                raise InputError(f"'{where}' row {number} is not an object like the first row")
            missing = [n for n in names if n not in row]
            if missing:
                raise InputError(f"'{where}' row {number} lacks feature(s) {', '.join(missing[:5])}")
            out.append([row[n] for n in names])
        return out

    def v2_matrix(self, inputs: Any) -> np.ndarray:
        """Open Inference Protocol V2 ``inputs`` -> a float64 matrix (one tensor, or one column each)."""
        if not isinstance(inputs, list) or not inputs:
            raise InputError("'inputs' must be a non-empty list of tensors")
        columns = [self._v2_tensor(t, i) for i, t in enumerate(inputs)]
        if len(columns) == 1:
            matrix = columns[0]
            if matrix.ndim == 1:
                if self.n_features == 1:
                    matrix = matrix.reshape(-1, 1)
                elif self.n_features is not None and matrix.shape[0] == self.n_features:
                    matrix = matrix.reshape(1, -1)
        else:
            rows = {c.shape[0] for c in columns}
            if len(rows) != 1 or any(c.ndim > 2 or (c.ndim == 2 and c.shape[1] != 1) for c in columns):
                raise InputError("several input tensors must each be one column of the same length ([N] or [N, 1])")
            matrix = np.column_stack(columns)
        return self._check_matrix(matrix, None, "inputs")

    def _v2_tensor(self, tensor: Any, index: int) -> np.ndarray:
        if not isinstance(tensor, dict):
            raise InputError(f"inputs[{index}] must be an object with name, shape, datatype and data")
        shape, data, datatype = tensor.get("shape"), tensor.get("data"), tensor.get("datatype")
        if not isinstance(shape, list) or not all(isinstance(s, int) and s >= 0 for s in shape):
            raise InputError(f"inputs[{index}].shape must be a list of non-negative integers")
        if data is None:
            raise InputError(f"inputs[{index}].data is missing")
        if datatype == "BYTES":
            raise InputError(f"inputs[{index}] is BYTES, but this model takes numeric features (FP32/FP64/INT*)")
        try:
            array = np.array(data if isinstance(data, list) else [data])
        except (ValueError, TypeError):
            raise InputError(f"inputs[{index}].data is ragged; send it flat or as rows of equal length") from None
        if array.dtype.kind not in _NUMERIC_KINDS:
            raise InputError(_non_numeric(data, f"inputs[{index}].data"))
        expected = math.prod(shape)  # Python ints: numpy's product wraps around (2**32 * 2**32 == 0)
        if expected > MAX_TENSOR_VALUES:
            raise InputError(f"inputs[{index}].shape {shape} is too large: {expected} values; at most "
                             f"{MAX_TENSOR_VALUES} in one tensor")
        if array.size != expected:
            raise InputError(f"inputs[{index}].data has {array.size} values, but shape {shape} needs {expected}")
        return array.reshape(shape)

    # --- prediction --------------------------------------------------------------------------

    def predict(self, matrix: np.ndarray, proba: bool) -> np.ndarray:
        fast = self.fast
        if proba:
            if not self.has_proba:
                raise InputError(f"model {self.name} ({self.model_type}) has no predict_proba")
            result = fast[1](matrix) if fast else self.model.predict_proba(matrix)
        else:
            result = fast[0](matrix) if fast else self.model.predict(matrix)
        result = np.asarray(result)
        if result.shape[:1] != matrix.shape[:1]:
            answers = result.shape[0] if result.ndim else 1
            raise RuntimeError(f"the model returned {answers} answers for {matrix.shape[0]} rows")
        return result

    def predict_many(self, matrices: Sequence[np.ndarray], proba: bool) -> list[np.ndarray]:
        """One model call for several requests' rows; the answer split back per request."""
        if len(matrices) == 1:
            return [self.predict(matrices[0], proba)]
        combined = np.concatenate(matrices)
        result = self.predict(combined, proba)
        bounds = np.cumsum([m.shape[0] for m in matrices])[:-1]
        return np.split(result, bounds)

    # --- metadata ------------------------------------------------------------------------------

    @staticmethod
    def datatype(result: np.ndarray) -> str:
        return v2_datatype(result.dtype)

    def v2_metadata(self) -> dict[str, Any]:
        width = -1 if self.n_features is None else self.n_features
        outputs: list[dict[str, Any]] = [{"name": "output-0", "datatype": self.output_datatype, "shape": [-1]}]
        if self.has_proba:
            outputs.append({"name": "predict_proba", "datatype": self.proba_datatype,
                            "shape": [-1, len(self.classes) if self.classes is not None else -1]})
        parameters: dict[str, Any] = {"model_type": self.model_type, "direct_trees": self.direct == "trees",
                                      "direct_path": self.direct,
                                      "predicts_on": "event loop" if self.inline else "worker thread"}
        if self.classes is not None:
            parameters["classes"] = self.classes
        if self.feature_names is not None:
            parameters["feature_names"] = self.feature_names
        if self.environment.get("installed"):
            parameters["installed"] = self.environment["installed"]
        return {
            "name": self.name, "versions": ["1"], "platform": self.platform,
            "inputs": [{"name": "input-0", "datatype": "FP64", "shape": [-1, width]}],
            "outputs": outputs, "parameters": parameters,
        }


def _non_numeric(data: Any, where: str) -> str:
    if isinstance(data, list):
        for r, row in enumerate(data):
            values = row if isinstance(row, list) else [row]
            for c, value in enumerate(values):
                if isinstance(value, list):
                    continue
                if isinstance(value, bool) or not isinstance(value, int | float):
                    at = f"row {r}, column {c}" if isinstance(row, list) else f"position {r}"
                    return f"'{where}' has a non-numeric value {value!r} at {at}; features must be numbers"
    return f"'{where}' has non-numeric values; features must be numbers"


# --- loading ---------------------------------------------------------------------------------------


def _distribution_of(module: str) -> tuple[str, str | None]:
    top = module.split(".")[0]
    dists = metadata.packages_distributions().get(top) or []
    name = dists[0] if dists else top
    try:
        return name, metadata.version(name)
    except metadata.PackageNotFoundError:
        return name, None


_PICKLED_SKLEARN = re.compile(
    rb"_sklearn_version[^0-9]{0,12}?([0-9]+\.[0-9]+(?:\.[0-9]+)?(?:(?:rc|post|dev|a|b)[0-9]+)?)"
)


def pickled_sklearn_version(path: Path) -> str | None:
    """The scikit-learn version recorded in an (uncompressed) pickle, read without unpickling."""
    try:
        with path.open("rb") as handle:
            head = handle.read(16 << 20)
    except OSError:
        return None
    match = _PICKLED_SKLEARN.search(head)
    return match.group(1).decode("ascii") if match else None


def load_model(path: Path, name: str, environment: dict[str, object] | None = None,
               policy: PicklePolicy | None = None) -> Runner:
    """Unpickle the model through the allow-list (``policy``: the version's; the plain list when
    None) and learn what it needs; ModelLoadError with a clear message if it can't."""
    started = time.perf_counter()
    policy = policy or PicklePolicy.for_version()
    caught: list[warnings.WarningMessage] = []
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            model = load_guarded(path, policy)
    except RefusedGlobal as exc:
        raise ModelLoadError(_refusal_message(exc, path)) from None
    except (UnreadableArray, UnsafeArgument, SkopsUnreadable) as exc:
        raise ModelLoadError(f"refused to load: the model file {path.name} cannot be read safely ({exc}); "
                             "save it again with joblib.dump or pickle.dump.") from None
    except ModuleNotFoundError as exc:
        raise ModelLoadError(_missing_module_message(exc.name or str(exc), path, caught)) from None
    except AttributeError as exc:
        match = re.search(r"on <module '([^']+)'", str(exc))
        module = match.group(1) if match else "sklearn"
        raise ModelLoadError(_missing_module_message(module, path, caught, detail=str(exc))) from None
    except Exception as exc:  # noqa: BLE001 - any unpickling failure becomes one clear message
        mismatch = _version_notes(caught)
        if mismatch:
            raise ModelLoadError(
                f"Cannot load the model file {path.name} ({type(exc).__name__}: {exc}). {mismatch}"
            ) from None
        raise ModelLoadError(
            f"Cannot load the model file {path.name}: it is not a readable joblib or pickle file "
            f"({type(exc).__name__}: {exc}). Upload the file written by joblib.dump(model, 'model.joblib') "
            "or pickle.dump of a fitted model with predict()."
        ) from None
    notes = _version_notes(caught)
    if not callable(getattr(model, "predict", None)):
        raise ModelLoadError(
            f"The model file {path.name} holds a {type(model).__module__}.{type(model).__name__}, which has no "
            "predict() method; upload a fitted estimator (for example a scikit-learn model or Pipeline)."
        )
    runner = _describe(model, name)
    runner.environment = dict(environment or {})
    if policy.trusted_by_owner:
        runner.warnings.append(policy.describe())
    _verify_fast_path(runner)
    runner.inline = runs_inline(runner)
    if notes:
        runner.warnings.append(notes)
        log.warning("%s", notes)
    _warm_up(runner, notes)
    runner.load_seconds = time.perf_counter() - started
    return runner


def _refusal_message(exc: RefusedGlobal, path: Path) -> str:
    return (f"{exc.message} (classes and helpers of scikit-learn, NumPy, SciPy and joblib); {path.name} was not "
            "loaded. If the class is your own, list it in the version's trusted_globals.")


def _version_notes(caught: list[warnings.WarningMessage]) -> str:
    notes = []
    for item in caught:
        message = item.message
        original = getattr(message, "original_sklearn_version", None)
        current = getattr(message, "current_sklearn_version", None)
        if original and current:
            notes.append(
                f"The model was saved with scikit-learn {original} but the server has scikit-learn {current} "
                f"({getattr(message, 'estimator_name', 'estimator')}); add 'scikit-learn=={original}' "
                "to requirements.txt so both match."
            )
    return " ".join(dict.fromkeys(notes))


def _missing_module_message(module: str, path: Path, caught: list[warnings.WarningMessage],
                            detail: str | None = None) -> str:
    dist, version = _distribution_of(module)
    saved = pickled_sklearn_version(path) if dist in ("scikit-learn", "sklearn") else None
    have = f"{dist} {version}" if version else f"no {dist}"
    what = f"needs '{module}'" + (f" ({detail})" if detail else "")
    message = (f"Cannot load the model file {path.name}: it {what}, which {have} installed in the server "
               "does not provide.")
    notes = _version_notes(caught)
    if saved:
        message += (f" The model was saved with {dist} {saved}; add '{dist}=={saved}' to requirements.txt "
                    "(or retrain the model with the server's version).")
    elif notes:
        message += " " + notes
    else:
        message += (f" The model was probably saved with a different {dist} version; pin that version in "
                    "requirements.txt.")
    return message


def _describe(model: Any, name: str) -> Runner:
    n_features = getattr(model, "n_features_in_", None)
    names = getattr(model, "feature_names_in_", None)
    classes = getattr(model, "classes_", None)
    feature_names = [str(n) for n in names] if names is not None else None
    module = type(model).__module__
    runner = Runner(
        model=model, name=name,
        n_features=int(n_features) if isinstance(n_features, int | np.integer) else None,
        feature_names=feature_names,
        classes=np.asarray(classes).tolist() if classes is not None else None,
        has_proba=callable(getattr(model, "predict_proba", None)),
        platform="sklearn" if module.startswith("sklearn") else module.split(".")[0],
        model_type=f"{module}.{type(model).__name__}",
    )
    if feature_names is not None:
        runner._feature_index = {n: i for i, n in enumerate(feature_names)}
        # Rows arrive as plain numbers in the model's own column order; don't warn on every request.
        warnings.filterwarnings("ignore", message="X does not have valid feature names")
    if classes is not None:
        runner.output_datatype = v2_datatype(np.asarray(classes).dtype)
    return runner


def _forest_fast_path(model: Any) -> tuple[Predictor, Predictor] | None:
    """scikit-learn forest classifiers without their per-tree joblib and validation overhead.

    ``RandomForestClassifier.predict_proba`` on one row spends almost all its time dispatching each
    tree through joblib and re-validating the input (about 8 ms for 100 trees); calling each tree's
    compiled ``tree_.predict`` directly, summing in the same order and dividing the same way, gives the
    identical float64 result in a fraction of that. It is used only after it matched the model's own
    answers bit for bit at load time (``_verify_fast_path``).
    """
    try:  # imported here: scikit-learn is the model's package (its requirements), not the server's
        from sklearn.ensemble import ExtraTreesClassifier, RandomForestClassifier
    except ImportError:
        return None
    if type(model) not in (RandomForestClassifier, ExtraTreesClassifier) or getattr(model, "n_outputs_", 0) != 1:
        return None
    trees = [estimator.tree_ for estimator in model.estimators_]
    n_classes = int(model.n_classes_)
    classes = model.classes_
    count = len(trees)

    def predict_proba(matrix: np.ndarray) -> np.ndarray:
        rows = np.asarray(matrix, dtype=np.float32, order="C")
        out = np.zeros((rows.shape[0], n_classes), dtype=np.float64)
        for tree in trees:
            out += tree.predict(rows)[:, :n_classes]
        out /= count
        return out

    def predict(matrix: np.ndarray) -> np.ndarray:
        return classes.take(np.argmax(predict_proba(matrix), axis=1), axis=0)

    return predict, predict_proba


def _linear_fast_path(model: Any) -> tuple[Predictor, Predictor] | None:
    """scikit-learn linear classifiers without their per-call input validation.

    ``LogisticRegression.predict`` on one row spends about 100 us in scikit-learn's validation
    (array-API namespace and dataframe detection, feature-name checks) around one matrix product
    of a few us; on the model server that was the largest single cost of a small request (issue
    14). This path does the estimator's own arithmetic on the float64 matrix the runtime already
    checked (shape, numeric, feature count): ``X @ coef_.T + intercept_``, then the same class
    choice (sign for two classes, argmax otherwise) and, for ``LogisticRegression`` only, the
    same probabilities (``expit`` and OvR normalisation for two classes, ``softmax`` otherwise).
    A matrix with NaN or infinity goes to the model's own method, so its error is the model's.
    Taken only by classes that keep ``LinearClassifierMixin``'s ``predict`` and
    ``decision_function``, and used only after it matched the model bit for bit at load time
    (``_verify_fast_path``); without a direct ``predict_proba`` the model's own is used.
    """
    try:  # imported here: scikit-learn is the model's package (its requirements), not the server's
        from scipy.special import expit
        from sklearn.linear_model import LogisticRegression
        from sklearn.linear_model._base import LinearClassifierMixin
    except ImportError:
        return None
    kind = type(model)
    if getattr(kind, "predict", None) is not LinearClassifierMixin.predict \
            or getattr(kind, "decision_function", None) is not LinearClassifierMixin.decision_function:
        return None
    coef, intercept, classes = (getattr(model, name, None) for name in ("coef_", "intercept_", "classes_"))
    if not isinstance(coef, np.ndarray) or coef.ndim != 2 or coef.dtype != np.float64 \
            or not isinstance(classes, np.ndarray) or intercept is None:
        return None
    coef_t = coef.T
    own_predict = model.predict
    own_proba = getattr(model, "predict_proba", None)
    binary = coef.shape[0] == 1

    def scores(matrix: np.ndarray) -> np.ndarray:
        return np.asarray(matrix @ coef_t + intercept)

    def predict(matrix: np.ndarray) -> np.ndarray:
        if not np.isfinite(matrix).all():
            return np.asarray(own_predict(matrix))  # the model's own refusal
        decision = scores(matrix)
        indices = (decision.ravel() > 0).astype(np.intp) if binary else decision.argmax(axis=1)
        return np.asarray(classes.take(indices, axis=0))

    def predict_proba(matrix: np.ndarray) -> np.ndarray:
        if own_proba is None:
            raise AttributeError(f"{kind.__name__} has no predict_proba")
        if kind is not LogisticRegression or not np.isfinite(matrix).all():
            return np.asarray(own_proba(matrix))
        decision = scores(matrix)
        if binary:
            positive = expit(decision.ravel())
            return np.stack([1 - positive, positive], axis=1)
        if len(classes) <= 2:  # two classes with two rows of coefficients: not this shape of model
            return np.asarray(own_proba(matrix))
        decision -= decision.max(axis=1).reshape(-1, 1)
        np.exp(decision, out=decision)
        decision /= decision.sum(axis=1).reshape(-1, 1)
        return decision

    return predict, predict_proba


def _direct_path(model: Any) -> tuple[str, tuple[Predictor, Predictor]] | None:
    """The direct path for this model, if there is one: ("trees" | "linear", (predict, predict_proba))."""
    forest = _forest_fast_path(model)
    if forest is not None:
        return "trees", forest
    linear = _linear_fast_path(model)
    if linear is not None:
        return "linear", linear
    return None


def _verify_fast_path(runner: Runner) -> None:
    found = _direct_path(runner.model)
    if found is None or runner.n_features is None:
        return
    kind, fast = found
    rng = np.random.default_rng(0)
    probe = np.vstack([np.zeros((1, runner.n_features)), rng.normal(scale=3.0, size=(255, runner.n_features))])
    model = runner.model
    try:
        # the whole probe and its first row alone (a one-row request is the common case)
        same = all(
            np.array_equal(fast[0](rows), model.predict(rows))
            and (not runner.has_proba or np.array_equal(fast[1](rows), model.predict_proba(rows)))
            for rows in (probe, probe[:1], probe[1:2])
        )
    except Exception:  # noqa: BLE001 - then the model's own methods are used
        same = False
    if same:
        runner.fast, runner.direct = fast, kind
        log.info("using the direct %s path for %s (verified identical on %d rows)", kind, runner.model_type,
                 len(probe))


def _warm_up(runner: Runner, notes: str) -> None:
    """One prediction at load time: the first request is not slow, and a broken model fails now."""
    if runner.n_features is None:
        return
    row = np.zeros((1, runner.n_features), dtype=np.float64)
    try:
        runner.predict(row, False)
        started = time.perf_counter()
        answer = runner.predict(row, False)
        elapsed = time.perf_counter() - started
        runner.output_datatype = v2_datatype(answer.dtype)
        if runner.has_proba:
            runner.proba_datatype = v2_datatype(runner.predict(row, True).dtype)
    except Exception as exc:  # noqa: BLE001
        if notes:
            raise ModelLoadError(
                f"The model loaded but cannot predict ({type(exc).__name__}: {exc}). {notes}"
            ) from None
        log.warning("warm-up prediction on a row of zeros failed (%s: %s); serving anyway", type(exc).__name__, exc)
        return
    log.info("warm-up prediction took %.3f ms; predictions run %s", elapsed * 1000,
             "on the event loop" if runner.inline else "in a worker thread")


def runs_inline(runner: Runner) -> bool:
    """Whether this model predicts on the event loop (the rule above INLINE_FAMILIES)."""
    if runner.direct == "trees":
        return len(getattr(runner.model, "estimators_", ())) <= INLINE_MAX_TREES
    if runner.direct == "linear":  # one matrix product, whatever module the class lives in (LinearSVC)
        return True
    return _cheap(runner.model)


def _cheap(model: Any) -> bool:
    steps = getattr(model, "steps", None)
    if isinstance(steps, list) and type(model).__name__ == "Pipeline":
        return all(step in (None, "passthrough") or _cheap(step) for _, step in steps)
    module = type(model).__module__
    return any(module == family or module.startswith(family + ".") for family in INLINE_FAMILIES)

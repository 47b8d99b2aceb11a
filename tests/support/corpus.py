"""The benign corpus: real scikit-learn models, fitted in seconds on a small data set.

``benign_models()`` fits every estimator ``sklearn.utils.all_estimators()`` can build with its
defaults (those that cannot, or that need special input, are skipped at build time, so the count
is what a test asserts), the meta-estimators given a base estimator, and the composites users
save most: Pipeline, ColumnTransformer, CalibratedClassifierCV, GridSearchCV. Each comes with the
input its answer is compared on (``answer(model, x)``: predict, else transform, else ``labels_``).

``python -m tests.support.corpus`` prints every global the corpus's files use (joblib at every
compression, pickle protocols 2-5, skops): the raw material of ``src/modelport/domain/allowed_globals.txt``,
which is then reviewed by hand (see that file's header).
"""

from __future__ import annotations

import functools
import io
import pickle
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import joblib
import numpy as np

#: joblib containers and pickle protocols a corpus file can be written with
JOBLIB_COMPRESS: list[Any] = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, ("gzip", 3), ("bz2", 3), ("lzma", 3), ("xz", 3),
                              ("zlib", 9), ("gzip", 9), ("bz2", 1), ("xz", 6)]
PICKLE_PROTOCOLS = [2, 3, 4, 5]


@dataclass
class Benign:
    name: str
    model: Any
    x: Any  # the input the answers are compared on


def answer(model: Any, x: Any) -> Any:
    """What a user would compare: predict, else transform, else scores, else what was fitted."""
    for method in ("predict", "transform", "score_samples", "kneighbors"):
        if callable(getattr(model, method, None)):
            try:
                out = getattr(model, method)(x)
            except Exception:  # noqa: BLE001, S112 - e.g. transductive models; try the next
                continue
            out = out[0] if isinstance(out, tuple) else out
            return out.toarray() if hasattr(out, "toarray") else out
    for attribute in ("labels_", "embedding_", "components_", "covariance_", "negative_outlier_factor_", "rows_",
                      "classes_"):
        if hasattr(model, attribute):
            return getattr(model, attribute)
    return repr(model.get_params(deep=False)) if hasattr(model, "get_params") else None


def same(a: Any, b: Any) -> bool:
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        a, b = np.asarray(a), np.asarray(b)
        if a.dtype.kind in "fc" or b.dtype.kind in "fc":
            return a.shape == b.shape and bool(np.allclose(a, b, equal_nan=True))
        return a.shape == b.shape and bool((a == b).all())
    return bool(a == b)


def _data() -> dict[str, Any]:
    from sklearn.datasets import make_classification

    x, y = make_classification(n_samples=60, n_features=6, n_informative=4, n_classes=3, random_state=0)
    x = np.abs(x)  # non-negative: the naive Bayes and chi2 family accept it too
    yr = x @ np.random.RandomState(0).rand(6)
    return {"x": x, "y": y, "yr": yr, "y2": np.c_[yr, yr * 2]}


def _special(d: dict[str, Any]) -> Iterator[tuple[str, Callable[[], Any], Any]]:
    """Estimators that need a base estimator or a particular input: (name, fit, input)."""
    from sklearn.calibration import CalibratedClassifierCV
    from sklearn.compose import ColumnTransformer, TransformedTargetRegressor
    from sklearn.cross_decomposition import CCA, PLSSVD, PLSCanonical
    from sklearn.ensemble import (
        RandomForestClassifier,
        StackingClassifier,
        StackingRegressor,
        VotingClassifier,
        VotingRegressor,
    )
    from sklearn.feature_extraction import DictVectorizer
    from sklearn.feature_extraction.text import CountVectorizer, HashingVectorizer, TfidfVectorizer
    from sklearn.feature_selection import RFE, SelectFromModel, SequentialFeatureSelector
    from sklearn.isotonic import IsotonicRegression
    from sklearn.linear_model import LinearRegression, LogisticRegression, MultiTaskLasso, Ridge
    from sklearn.model_selection import FixedThresholdClassifier, GridSearchCV, RandomizedSearchCV
    from sklearn.multiclass import OneVsOneClassifier, OneVsRestClassifier, OutputCodeClassifier
    from sklearn.multioutput import ClassifierChain, MultiOutputRegressor, RegressorChain
    from sklearn.pipeline import FeatureUnion, Pipeline, make_pipeline
    from sklearn.preprocessing import LabelEncoder, OneHotEncoder, StandardScaler
    from sklearn.svm import SVC
    from sklearn.tree import DecisionTreeClassifier

    x, y, yr, y2 = d["x"], d["y"], d["yr"], d["y2"]
    lr = functools.partial(LogisticRegression, max_iter=300)
    binary = (y > 0).astype(int)
    texts = ["red apple", "green apple", "blue sky", "red sky", "green grass", "blue sea"] * 5
    cat = np.c_[x[:, :2], (x[:, 2] > 0.5).astype(int), np.where(x[:, 3] > 0.5, "hi", "lo")].astype(object)
    ct = ColumnTransformer([("num", StandardScaler(), [0, 1]), ("cat", OneHotEncoder(handle_unknown="ignore"), [2, 3])])
    yield "Pipeline", lambda: make_pipeline(StandardScaler(), lr()).fit(x, y), x
    yield "Pipeline(ColumnTransformer)", lambda: Pipeline([("ct", ct), ("m", lr())]).fit(cat, y), cat
    yield "CalibratedClassifierCV(SVC)", lambda: CalibratedClassifierCV(SVC(), cv=3).fit(x, y), x
    yield "GridSearchCV", lambda: GridSearchCV(SVC(), {"C": [0.1, 1.0], "kernel": ["rbf", "linear"]},
                                               cv=3).fit(x, y), x
    yield "RandomizedSearchCV", lambda: RandomizedSearchCV(DecisionTreeClassifier(), {"max_depth": [2, 3, 4]},
                                                           n_iter=2, cv=3, random_state=0).fit(x, y), x
    yield "FeatureUnion", lambda: FeatureUnion([("s", StandardScaler()), ("o", OneHotEncoder(
        handle_unknown="ignore"))]).fit(x[:, :2].round(), y), x[:, :2].round()
    yield "OneVsRestClassifier", lambda: OneVsRestClassifier(lr()).fit(x, y), x
    yield "OneVsOneClassifier", lambda: OneVsOneClassifier(lr()).fit(x, y), x
    yield "OutputCodeClassifier", lambda: OutputCodeClassifier(lr(), random_state=0).fit(x, y), x
    yield "StackingClassifier", lambda: StackingClassifier([("a", lr()), ("b", DecisionTreeClassifier())],
                                                           cv=3).fit(x, y), x
    yield "StackingRegressor", lambda: StackingRegressor([("a", Ridge()), ("b", LinearRegression())],
                                                         cv=3).fit(x, yr), x
    yield "VotingClassifier", lambda: VotingClassifier([("a", lr()), ("b", RandomForestClassifier(
        n_estimators=5, random_state=0))], voting="soft").fit(x, y), x
    yield "VotingRegressor", lambda: VotingRegressor([("a", Ridge()), ("b", LinearRegression())]).fit(x, yr), x
    yield "RFE", lambda: RFE(lr(), n_features_to_select=3).fit(x, y), x
    yield "SelectFromModel", lambda: SelectFromModel(lr()).fit(x, y), x
    yield "SequentialFeatureSelector", lambda: SequentialFeatureSelector(lr(), n_features_to_select=2,
                                                                         cv=2).fit(x, y), x
    yield "FixedThresholdClassifier", lambda: FixedThresholdClassifier(lr(), threshold=0.3).fit(x, binary), x
    yield "ClassifierChain", lambda: ClassifierChain(lr()).fit(x, np.c_[binary, 1 - binary]), x
    yield "RegressorChain", lambda: RegressorChain(Ridge()).fit(x, y2), x
    yield "MultiOutputRegressor", lambda: MultiOutputRegressor(Ridge()).fit(x, y2), x
    yield "MultiTaskLasso", lambda: MultiTaskLasso().fit(x, y2), x
    yield "TransformedTargetRegressor", lambda: TransformedTargetRegressor(
        regressor=Ridge(), func=np.log1p, inverse_func=np.expm1).fit(x, np.abs(yr)), x
    yield "CCA", lambda: CCA(n_components=1).fit(x, y2), x
    yield "PLSCanonical", lambda: PLSCanonical(n_components=1).fit(x, y2), x
    yield "PLSSVD", lambda: PLSSVD(n_components=1).fit(x, y2), x
    yield "IsotonicRegression", lambda: IsotonicRegression().fit(x[:, 0], yr), x[:, 0]
    yield "CountVectorizer", lambda: make_pipeline(CountVectorizer(), lr()).fit(texts, y[:30]), texts
    yield "TfidfVectorizer", lambda: make_pipeline(TfidfVectorizer(), lr()).fit(texts, y[:30]), texts
    yield "HashingVectorizer", lambda: make_pipeline(HashingVectorizer(n_features=64), lr()).fit(texts, y[:30]), texts
    dicts = [{"a": float(v), "b": "x" if v > 0.5 else "y"} for v in x[:, 0]]
    yield "DictVectorizer", lambda: make_pipeline(DictVectorizer(), lr()).fit(dicts, y), dicts
    yield "LabelEncoder", lambda: LabelEncoder().fit(["a", "b", "c", "a"]), ["a", "c"]


@functools.lru_cache(maxsize=1)
def benign_models() -> tuple[Benign, ...]:
    """Every estimator that could be fitted, in a stable order (built once per process)."""
    from sklearn.base import is_regressor
    from sklearn.utils import all_estimators

    d = _data()
    found: list[Benign] = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for name, cls in all_estimators():
            try:
                est = cls()
            except TypeError:
                continue  # needs arguments: the meta-estimators come below, with a base
            try:
                est.fit(d["x"], d["yr"] if is_regressor(est) else d["y"])
            except Exception:  # noqa: BLE001 - skipped at build time; the corpus size is asserted
                try:
                    est = cls().fit(d["x"])
                except Exception:  # noqa: BLE001, S112
                    continue
            found.append(Benign(name, est, d["x"]))
        for name, fit, x in _special(d):
            found.append(Benign(name, fit(), x))
    return tuple(found)


def joblib_bytes(model: Any, compress: Any) -> bytes:
    buffer = io.BytesIO()
    joblib.dump(model, buffer, compress=compress)
    return buffer.getvalue()


def pickle_bytes(model: Any, protocol: int) -> bytes:
    return pickle.dumps(model, protocol=protocol)


def every_file(model: Any) -> Iterator[bytes]:
    for compress in JOBLIB_COMPRESS:
        yield joblib_bytes(model, compress)
    for protocol in PICKLE_PROTOCOLS:
        yield pickle_bytes(model, protocol)


def globals_used(data: bytes) -> set[tuple[str, str]]:
    """Every (module, name) a (trusted, benign) joblib or pickle file looks up when loaded."""
    from joblib.numpy_pickle import NumpyUnpickler
    from joblib.numpy_pickle_utils import _validate_fileobject_and_memmap

    seen: set[tuple[str, str]] = set()

    class Recording(NumpyUnpickler):
        def find_class(self, module: str, name: str) -> Any:
            seen.add((module, name))
            return super().find_class(module, name)

    with _validate_fileobject_and_memmap(io.BytesIO(data), "") as (stream, _):
        Recording("", stream, ensure_native_byte_order=True).load()
    return seen


def skops_names(model: Any) -> set[tuple[str, str]]:
    """The types and functions a skops file of ``model`` names (empty when skops cannot save it)."""
    import skops.io

    from modelport.domain.skops_schema import skops_globals

    try:
        data = skops.io.dumps(model)
    except Exception:  # noqa: BLE001 - skops cannot save every object
        return set()
    return set(skops_globals(io.BytesIO(data)))


def main() -> None:
    used: set[tuple[str, str]] = set()
    for item in benign_models():
        for data in every_file(item.model):
            used |= globals_used(data)
        used |= skops_names(item.model)
    for module, name in sorted(used):
        print(module, name)


if __name__ == "__main__":
    main()

"""No false positive: the real models users save pass the upload check and load through the guard.

The benign corpus (``tests/support/corpus.py``): every scikit-learn estimator that can be fitted
on a small data set, the meta-estimators and composites (Pipeline, ColumnTransformer,
CalibratedClassifierCV, GridSearchCV, ...). Each is saved as users save it -- ``joblib.dump`` at
every compression level and with every compressor, ``pickle`` protocols 2-5 (sampled across the
corpus so that every format meets many estimators and the run stays short) -- and each file must
pass ``inspect_model`` and load through the model server's guarded unpickler answering exactly
as the object in this process does.
"""

from __future__ import annotations

import io
import tempfile
from pathlib import Path

import pytest

from modelport.artifacts.checks import inspect_model
from modelport.domain.pickle_policy import PicklePolicy
from modelport.serving.runtime import load_model
from modelport.serving.unpickler import load_guarded
from modelport.settings import Settings
from tests.support.corpus import (
    JOBLIB_COMPRESS,
    PICKLE_PROTOCOLS,
    answer,
    benign_models,
    joblib_bytes,
    pickle_bytes,
    same,
)

pytestmark = pytest.mark.filterwarnings("ignore::FutureWarning", "ignore::UserWarning")
SETTINGS = Settings(max_upload_bytes=200 * 1024 * 1024)
ESTIMATORS_MIN = 150


def test_every_corpus_model_passes_the_check_and_loads_the_same() -> None:
    models = benign_models()
    assert len(models) >= ESTIMATORS_MIN, len(models)
    policy = PicklePolicy.for_version()
    failures: list[str] = []
    formats: set[str] = set()
    compared = 0
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "model.joblib"
        for i, item in enumerate(models):
            compress = JOBLIB_COMPRESS[i % len(JOBLIB_COMPRESS)]
            protocol = PICKLE_PROTOCOLS[i % len(PICKLE_PROTOCOLS)]
            expected = answer(item.model, item.x)
            compared += expected is not None
            for label, data in ((f"joblib compress={compress}", joblib_bytes(item.model, compress)),
                                (f"pickle protocol {protocol}", pickle_bytes(item.model, protocol))):
                formats.add(label)
                try:
                    inspect_model(io.BytesIO(data), SETTINGS)
                    path.write_bytes(data)
                    loaded = load_guarded(path, policy)
                    if not same(answer(loaded, item.x), expected):
                        failures.append(f"{item.name} ({label}): answers differ")
                except Exception as exc:  # noqa: BLE001 - collected, so one run names every false positive
                    failures.append(f"{item.name} ({label}): {type(exc).__name__}: {exc}")
    assert failures == []
    assert compared == len(models)  # every model has an answer to compare
    assert len(formats) == len(JOBLIB_COMPRESS) + len(PICKLE_PROTOCOLS)


def test_a_corpus_model_serves_through_the_model_servers_load(tmp_path: Path) -> None:
    """The whole load (guard, metadata, warm-up) on a pipeline saved compressed."""
    item = next(m for m in benign_models() if m.name == "Pipeline(ColumnTransformer)")
    path = tmp_path / "model.joblib"
    path.write_bytes(joblib_bytes(item.model, 3))
    runner = load_model(path, "m")
    assert same(runner.model.predict(item.x), item.model.predict(item.x))


def test_skops_files_of_the_corpus_pass_and_load_the_same() -> None:
    """skops as a first-class format: the same list, checked on the schema and on skops's own
    untrusted types; a model skops itself cannot save is not counted, but most must be."""
    import skops.io

    models = benign_models()
    policy = PicklePolicy.for_version()
    failures: list[str] = []
    saved = 0
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "model.skops"
        for item in models:
            try:
                data = skops.io.dumps(item.model)
            except Exception:  # noqa: BLE001, S112 - skops cannot save every object; counted below
                continue
            saved += 1
            try:
                inspect_model(io.BytesIO(data), SETTINGS)
                path.write_bytes(data)
                if not same(answer(load_guarded(path, policy), item.x), answer(item.model, item.x)):
                    failures.append(f"{item.name}: answers differ")
            except Exception as exc:  # noqa: BLE001 - collected, so one run names every false positive
                failures.append(f"{item.name}: {type(exc).__name__}: {exc}")
    assert saved >= ESTIMATORS_MIN, saved
    assert failures == [], "\n".join(failures)

"""The static pickle scan: verdicts on real joblib/pickle files, nothing ever loaded."""

from __future__ import annotations

import builtins
import io
import os
import pickle
import subprocess
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import pytest
from sklearn.datasets import load_iris
from sklearn.ensemble import RandomForestClassifier

from modelport.artifacts.checks import inspect_model
from modelport.artifacts.pickle_scan import ScanError, scan_model_file
from modelport.domain.errors import BadRequest
from modelport.settings import Settings
from tests.support.models import train_iris

LIMIT = 50 * 1024 * 1024


class Reduces:
    def __init__(self, func: Any, *args: Any) -> None:
        self.func, self.args = func, args

    def __reduce__(self) -> tuple[Any, ...]:
        return (self.func, self.args)


@pytest.fixture(scope="module")
def forest() -> RandomForestClassifier:
    x, y = load_iris(return_X_y=True)
    return RandomForestClassifier(n_estimators=3, random_state=0).fit(x, y)


def dumped(obj: Any, **kwargs: Any) -> io.BytesIO:
    buffer = io.BytesIO()
    joblib.dump(obj, buffer, **kwargs)
    buffer.seek(0)
    return buffer


@pytest.mark.parametrize("compress", [0, 3, "gzip", "bz2", "xz", "lzma"])
def test_real_models_are_safe_in_every_joblib_container(forest: RandomForestClassifier, compress: Any) -> None:
    verdict = scan_model_file(dumped(forest, compress=compress), LIMIT)
    assert verdict.safe, verdict.dangerous
    assert ("sklearn.ensemble._forest", "RandomForestClassifier") in verdict.imports


def test_plain_pickle_and_object_arrays_are_safe(forest: RandomForestClassifier) -> None:
    assert scan_model_file(io.BytesIO(pickle.dumps(forest)), LIMIT).safe
    assert scan_model_file(dumped({"labels": np.array(["a", None, 3], dtype=object), "m": forest}), LIMIT).safe


@pytest.mark.parametrize(
    ("payload", "named"),
    [
        (Reduces(os.system, "echo pwned"), "posix.system"),
        (Reduces(builtins.eval, "1+1"), "builtins.eval"),
        (Reduces(builtins.exec, "x=1"), "builtins.exec"),
        (Reduces(subprocess.call, ["true"]), "subprocess.call"),
    ],
)
def test_dangerous_globals_are_named(payload: Reduces, named: str) -> None:
    for protocol in (0, 2, pickle.HIGHEST_PROTOCOL):
        verdict = scan_model_file(io.BytesIO(pickle.dumps(payload, protocol=protocol)), LIMIT)
        assert named in verdict.dangerous, (protocol, verdict.dangerous)


def test_payload_hidden_after_a_joblib_array_is_found(forest: RandomForestClassifier) -> None:
    """A reader that stops at joblib's first raw array misses what follows; the walk reads on to the end."""
    hidden = dumped({"model": forest, "x": Reduces(os.system, "echo pwned")})
    assert hidden.getvalue().index(b"system") > hidden.getvalue().index(b"NumpyArrayWrapper")
    assert "posix.system" in scan_model_file(hidden, LIMIT).dangerous
    compressed = dumped({"model": forest, "x": Reduces(os.system, "echo pwned")}, compress=3)
    assert "posix.system" in scan_model_file(compressed, LIMIT).dangerous
    in_object_array = dumped({"a": np.array([Reduces(os.system, "echo"), 1], dtype=object), "m": forest})
    assert "posix.system" in scan_model_file(in_object_array, LIMIT).dangerous


def test_truncated_or_garbled_files_fail_closed(forest: RandomForestClassifier) -> None:
    data = dumped(forest).getvalue()
    with pytest.raises(ScanError):
        scan_model_file(io.BytesIO(data[: len(data) // 2]), LIMIT)
    with pytest.raises(ScanError):
        scan_model_file(io.BytesIO(b"\x80\x04" + b"\xff" * 64), LIMIT)


def test_inspect_model_answers_with_stable_codes(tmp_path: Path) -> None:
    settings = Settings(max_upload_bytes=LIMIT)
    path, _ = train_iris(tmp_path / "model.joblib")
    with path.open("rb") as good:
        assert inspect_model(good, settings).size == path.stat().st_size
    with pytest.raises(BadRequest) as unsafe:
        inspect_model(io.BytesIO(pickle.dumps(Reduces(os.system, "echo pwned"))), settings)
    assert unsafe.value.code == "unsafe_model" and "posix.system" in unsafe.value.message
    with pytest.raises(BadRequest) as unverifiable:
        inspect_model(io.BytesIO(path.read_bytes()[:200]), settings)
    assert unverifiable.value.code == "unverifiable_model"

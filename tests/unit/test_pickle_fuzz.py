"""Fuzzing the allow-listing unpickler: random and mutated pickles never reach a global off the list.

Instrumented: every global the loader really resolves is recorded (the parent class's
``find_class`` is wrapped) and must be admitted by the policy; a sentinel module whose function
records its calls is offered by the random pickles and must never be called. Every failure is a
ModelLoadError (the server's one clean message), never another exception; and when the upload
check accepts a file, the loader never refuses it for a global the check did not see.
"""

from __future__ import annotations

import io
import pickle
import struct
import sys
import tempfile
import types
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from joblib.numpy_pickle import NumpyUnpickler
from sklearn.linear_model import LogisticRegression

from modelport.artifacts.checks import inspect_model
from modelport.domain.errors import BadRequest
from modelport.domain.pickle_policy import PicklePolicy, lookup_name
from modelport.serving.errors import ModelLoadError
from modelport.serving.runtime import load_model
from modelport.settings import Settings

EXAMPLES = 1000
SETTINGS = Settings(max_upload_bytes=10 * 1024 * 1024)
POLICY = PicklePolicy.for_version()
SENTINEL = "modelport_fuzz_sentinel"
CALLS: list[Any] = []
RESOLVED: list[tuple[str, str]] = []

pytestmark = pytest.mark.filterwarnings("ignore")
FUZZ = settings(max_examples=EXAMPLES, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


def _benign() -> list[bytes]:
    x = np.arange(12.0).reshape(6, 2)
    model = LogisticRegression().fit(x, [0, 1, 0, 1, 0, 1])
    files = []
    for obj in (model, {"a": np.arange(5), "b": np.array(["x", None], dtype=object), "c": (1.5, "s", b"b")}):
        for compress in (0, 3):
            buffer = io.BytesIO()
            joblib.dump(obj, buffer, compress=compress)
            files.append(buffer.getvalue())
        files += [pickle.dumps(obj, protocol=p) for p in (2, 4, 5)]
    return files


BENIGN = _benign()


@pytest.fixture(autouse=True)
def instrumented(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    sentinel = types.ModuleType(SENTINEL)
    sentinel.boom = lambda *a, **k: CALLS.append(a)  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, SENTINEL, sentinel)
    original = NumpyUnpickler.find_class

    def recording(self: Any, module: str, name: str) -> Any:
        RESOLVED.append(lookup_name(module, name, self.proto, self.fix_imports))
        return original(self, module, name)

    monkeypatch.setattr(NumpyUnpickler, "find_class", recording)
    yield


def _check(data: bytes) -> None:
    CALLS.clear()
    RESOLVED.clear()
    try:
        inspect_model(io.BytesIO(data), SETTINGS)
        accepted = True
    except BadRequest:
        accepted = False
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "model.joblib"
        path.write_bytes(data)
        try:
            load_model(path, "m")
        except ModelLoadError as exc:  # the only way a load may fail
            if accepted:
                assert "not on modelport's allow-list" not in exc.message, exc.message
    assert CALLS == []
    assert all(POLICY.admits(*key) for key in RESOLVED), RESOLVED


@FUZZ
@given(st.sampled_from(range(len(BENIGN))), st.lists(st.tuples(st.integers(0, 1 << 20), st.integers(0, 255),
                                                              st.sampled_from(["set", "insert", "delete"])),
                                                    min_size=1, max_size=6))
def test_mutated_benign_files(index: int, edits: list[tuple[int, int, str]]) -> None:
    data = bytearray(BENIGN[index])
    for position, value, kind in edits:
        at = position % len(data)
        if kind == "set":
            data[at] = value
        elif kind == "insert":
            data[at:at] = bytes([value])
        elif len(data) > 2:
            del data[at]
    _check(bytes(data))


def _text(s: str) -> bytes:
    raw = s.encode()
    return pickle.SHORT_BINUNICODE + bytes([len(raw)]) + raw


NAMES = [(SENTINEL, "boom"), ("posix", "system"), ("builtins", "getattr"), ("numpy", "dtype"),
         ("numpy", "ndarray"),
         ("numpy._core.multiarray", "_reconstruct"), ("joblib.numpy_pickle", "NumpyArrayWrapper"),
         ("_codecs", "encode"),
         ("collections", "OrderedDict"), ("builtins", "set"), ("sklearn.linear_model._logistic", "LogisticRegression")]
FRAGMENTS = st.one_of(
    st.sampled_from(NAMES).map(lambda k: pickle.GLOBAL + f"{k[0]}\n{k[1]}\n".encode()),
    st.sampled_from(NAMES).map(lambda k: _text(k[0]) + _text(k[1]) + pickle.STACK_GLOBAL),
    st.sampled_from([pickle.MARK, pickle.TUPLE, pickle.EMPTY_TUPLE, pickle.REDUCE, pickle.BUILD, pickle.NEWOBJ,
                     pickle.EMPTY_DICT, pickle.EMPTY_LIST, pickle.SETITEM, pickle.SETITEMS, pickle.APPEND,
                     pickle.APPENDS, pickle.OBJ, pickle.NONE, pickle.NEWTRUE, pickle.POP, pickle.DUP,
                     pickle.MEMOIZE, pickle.BINGET + b"\x00", pickle.TUPLE2, pickle.NEWOBJ_EX, pickle.EMPTY_SET,
                     pickle.ADDITEMS, pickle.FROZENSET, pickle.EXT1 + b"\x01", pickle.BINPERSID, pickle.NEXT_BUFFER]),
    st.integers(-5, 300).map(lambda n: pickle.BININT + struct.pack("<i", n)),
    st.sampled_from(["touch /tmp/x", "f8", "latin1", "shape", "dtype", "__setstate__"]).map(_text),
    st.binary(max_size=12),
)


@FUZZ
@given(st.integers(0, 5), st.lists(FRAGMENTS, max_size=24))
def test_random_opcode_sequences(protocol: int, parts: list[bytes]) -> None:
    _check(pickle.PROTO + bytes([protocol]) + b"".join(parts) + pickle.STOP)


def test_the_instrument_sees_a_call_off_the_list() -> None:
    """Without the guard, the sentinel is called and recorded: the fuzz's assertions can fail."""
    CALLS.clear()
    data = pickle.PROTO + b"\x02" + pickle.GLOBAL + f"{SENTINEL}\nboom\n".encode() + pickle.EMPTY_TUPLE \
        + pickle.REDUCE + pickle.STOP
    pickle.loads(data)  # noqa: S301 - the unguarded loader, on purpose
    assert CALLS == [()]
    _check(data)  # the guarded one refuses it and leaves CALLS empty

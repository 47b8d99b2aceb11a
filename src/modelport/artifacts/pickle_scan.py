"""Static check of a pickle or joblib file against modelport's allow-list, nothing loaded.

Guarantees:
- The verdict is the model server's own policy (``domain/pickle_policy``): a global is accepted
  only if the load-time guard would admit it, so a file REJECTED here is one the server would
  refuse, for the same named global. Deny-lists are not consulted.
- The file is opened by the same function the server uses (``domain/pickle_container``) and
  walked by a subclass of ``pickle._Unpickler`` -- the class joblib's ``NumpyUnpickler`` extends --
  whose ``find_class`` records and checks the ``(module, name)`` (mapped exactly as pickle maps
  it) and returns an inert stand-in class: no module of the file is imported, nothing of it runs.
- joblib's raw array payloads are consumed exactly as ``NumpyArrayWrapper.read`` consumes them,
  sized by the domain functions the server also checks every header with (``wrapper_count``,
  ``array_layout``); the nested pickle of an object array is walked with the outer
  ``find_class``, as joblib does. Anything that cannot be sized for certain -- an unusual dtype,
  a header built twice, a dtype not made by ``numpy.dtype(...)``, a truncated stream,
  out-of-band buffers, persistent ids, joblib's legacy format -- raises :class:`ScanError`: the
  file is refused as unverifiable (fail closed), never guessed at.
- A skops archive is checked by the names its schema gives (``domain/skops_schema``), against
  the same list, as the server checks it before ``skops.io.load``.
"""

from __future__ import annotations

import pickle
from dataclasses import dataclass, field
from typing import IO, Any

from modelport.domain.pickle_container import CHUNK, ContainerError, open_pickle_stream
from modelport.domain.pickle_policy import (
    PicklePolicy,
    RefusedGlobal,
    UnreadableArray,
    UnsafeArgument,
    array_layout,
    guarded,
    lookup_name,
    wrapper_count,
)
from modelport.domain.skops_schema import SkopsUnreadable, is_skops, skops_globals

_WRAPPER = ("joblib.numpy_pickle", "NumpyArrayWrapper")
_NUMPY_DTYPE = ("numpy", "dtype")
_ARRAY_SUBCLASSES = {("numpy", "ndarray"), ("numpy", "matrix")}


class ScanError(Exception):
    """The file cannot be followed statically (fail closed)."""


@dataclass
class ScanVerdict:
    #: the globals the allow-list refuses, in the order the file uses them
    refused: list[RefusedGlobal] = field(default_factory=list)
    #: every global the file would import
    imports: set[tuple[str, str]] = field(default_factory=set)
    refused_keys: set[tuple[str, str]] = field(default_factory=set)

    @property
    def safe(self) -> bool:
        return not self.refused

    @property
    def dangerous(self) -> list[str]:
        return [found.global_name for found in self.refused]


class _Stub:
    """What a recorded global stands for: it accepts any call and any state, and does nothing."""

    _global: tuple[str, str] = ("", "")
    reduced: bool

    def __new__(cls, *args: Any, **kwargs: Any) -> _Stub:
        obj = object.__new__(cls)
        obj.args = args  # type: ignore[attr-defined]
        obj.states = []  # type: ignore[attr-defined]
        obj.items = []  # type: ignore[attr-defined]
        obj.initialized = False  # type: ignore[attr-defined]
        obj.reduced = False  # type: ignore[attr-defined]
        return obj

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.initialized = bool(args or kwargs)

    def __setstate__(self, state: Any) -> None:
        self.states.append(state)  # type: ignore[attr-defined]

    def __setitem__(self, key: Any, value: Any) -> None:
        self.items.append((key, value))  # type: ignore[attr-defined]

    def append(self, value: Any) -> None:
        self.items.append(value)  # type: ignore[attr-defined]

    def extend(self, values: Any) -> None:
        self.items.extend(values)  # type: ignore[attr-defined]


class _Array:
    """What a joblib array header becomes once its payload is consumed (joblib pushes the array)."""


_Unpickler: Any = pickle._Unpickler  # type: ignore[attr-defined]  # the pure-Python one joblib extends


class _Walker(_Unpickler):
    """joblib's unpickler, minus every import and every call of the file's code."""

    dispatch = dict(_Unpickler.dispatch)
    proto: int
    fix_imports: bool
    stack: list[Any]

    def __init__(self, file: IO[bytes], policy: PicklePolicy, verdict: ScanVerdict) -> None:
        super().__init__(file)
        self._raw = file
        self._policy = policy
        self._verdict = verdict
        self._stubs: dict[tuple[str, str], type[_Stub]] = {}

    def find_class(self, module: str, name: str) -> type[_Stub]:
        key = lookup_name(module, name, self.proto, self.fix_imports)
        self._verdict.imports.add(key)
        if not self._policy.admits(*key) and key not in self._verdict.refused_keys:
            self._verdict.refused_keys.add(key)
            self._verdict.refused.append(RefusedGlobal(*key))
        if key not in self._stubs:
            self._stubs[key] = type("Stub", (_Stub,), {"_global": key})
        return self._stubs[key]

    def persistent_load(self, pid: Any) -> Any:
        raise ScanError("the pickle refers to persistent objects outside the file")

    @staticmethod
    def _guarded_call(func: Any, args: Any) -> tuple[bool, Any]:
        """(True, result) for a listed helper the loader replaces with a checked stand-in: the
        stand-in is pure, so it is called on the pickled arguments exactly as the loader will."""
        check = guarded(*func._global) if isinstance(func, type) and issubclass(func, _Stub) else None
        if check is None:
            return False, None
        try:
            return True, check(*args)
        except (UnsafeArgument, TypeError, ValueError) as exc:
            raise ScanError(str(exc)) from exc

    def _instantiate(self, klass: Any, args: Any) -> None:  # INST and OBJ
        if args:
            called, result = self._guarded_call(klass, args)
            if called:
                self.append(result)
                return
        super()._instantiate(klass, args)

    def _load_reduce(self) -> None:
        called, result = self._guarded_call(self.stack[-2], self.stack[-1])
        if called:
            self.stack.pop()
            self.stack[-1] = result
            return
        _Unpickler.dispatch[pickle.REDUCE[0]](self)
        top = self.stack[-1]
        if isinstance(top, _Stub):
            top.reduced = True

    dispatch[pickle.REDUCE[0]] = _load_reduce

    def _load_build(self) -> None:
        inst = self.stack[-2] if len(self.stack) >= 2 else None
        wrapper = isinstance(inst, _Stub) and inst._global == _WRAPPER
        if wrapper and (inst.states or inst.initialized):  # type: ignore[union-attr]
            raise ScanError("a joblib array header was built twice")
        _Unpickler.dispatch[pickle.BUILD[0]](self)
        if wrapper:
            self._skip_array(inst.states[0])  # type: ignore[union-attr]
            self.stack[-1] = _Array()

    dispatch[pickle.BUILD[0]] = _load_build

    # joblib's NumpyArrayWrapper.read_array, without building the array
    def _skip_array(self, state: Any) -> None:
        count, aligned = wrapper_count(state)
        subclass, dtype = state["subclass"], state["dtype"]
        if getattr(subclass, "_global", None) not in _ARRAY_SUBCLASSES or not isinstance(subclass, type):
            raise ScanError("a joblib array header names an array class modelport does not read")
        if not isinstance(dtype, _Stub) or dtype._global != _NUMPY_DTYPE or not dtype.reduced \
                or len(dtype.states) != 1 or not dtype.args:  # type: ignore[attr-defined]
            raise ScanError("a joblib array has a dtype modelport cannot read")
        itemsize, hasobject = array_layout(dtype.args[0], dtype.states[0])  # type: ignore[attr-defined]
        if hasobject:
            # joblib reads a nested pickle with a plain Unpickler and the outer find_class
            inner = _Unpickler(self._raw)
            inner.find_class = self.find_class
            inner.persistent_load = self.persistent_load
            inner.load()
            return
        if aligned:
            padding = self._raw.read(1)
            if len(padding) != 1:
                raise ScanError("the file ends inside an array")
            _discard(self._raw, int.from_bytes(padding, "little"))
        _discard(self._raw, count * itemsize)


def _discard(stream: IO[bytes], size: int) -> None:
    left = size
    while left > 0:
        chunk = stream.read(min(CHUNK, left))
        if not chunk:
            raise ScanError("the file ends inside an array")
        left -= len(chunk)


def scan_model_file(stream: IO[bytes], max_bytes: int, policy: PicklePolicy | None = None) -> ScanVerdict:
    """The globals a pickle/joblib file would import, and which of them the policy refuses.

    Raises :class:`ScanError` when the file cannot be followed to its end statically.
    """
    verdict = ScanVerdict()
    policy = policy or PicklePolicy.for_version()
    stream.seek(0)
    if is_skops(stream.read(4)):
        try:
            return _skops_verdict(stream, policy, verdict)
        finally:
            stream.seek(0)
    try:
        walked = open_pickle_stream(stream, max_bytes * 8)
        _Walker(walked, policy, verdict).load()
    except (ScanError, ContainerError, UnreadableArray) as exc:
        if verdict.refused:  # what it refused before the walk had to stop is the verdict
            return verdict
        raise ScanError(str(exc)) from exc
    except Exception as exc:  # noqa: BLE001 - the walk runs only stand-ins: any failure means "cannot follow"
        if verdict.refused:
            return verdict
        raise ScanError(f"the pickle cannot be read statically ({type(exc).__name__}: {exc})") from exc
    finally:
        stream.seek(0)
    return verdict


def _skops_verdict(stream: IO[bytes], policy: PicklePolicy, verdict: ScanVerdict) -> ScanVerdict:
    """A skops file: every type and function its schema names, against the same list."""
    stream.seek(0)
    try:
        names = skops_globals(stream)
    except SkopsUnreadable as exc:
        raise ScanError(str(exc)) from exc
    for key in names:
        verdict.imports.add(key)
        if not policy.admits(*key):
            verdict.refused_keys.add(key)
            verdict.refused.append(RefusedGlobal(*key))
    return verdict

"""The model server's only way to unpickle a model file: joblib's reader behind modelport's allow-list.

Guarantees:
- ``load_guarded(path, policy)`` reads a joblib container (compressed or not) or a plain pickle
  of any protocol with one unpickler, a subclass of joblib's ``NumpyUnpickler``: arrays written
  after pickles and the nested pickles of object arrays go through the same ``find_class``.
- ``find_class`` asks the policy (``domain/pickle_policy``) *before* it imports or returns
  anything; a global that is not admitted raises :class:`~modelport.domain.pickle_policy.RefusedGlobal`
  naming it. Persistent ids and protocol-5 out-of-band buffers are refused as well.
- An array header is accepted only when ``domain.pickle_policy.array_layout``/``wrapper_count``
  size it from the very values the static upload check sees, and NumPy agrees on the size:
  the loader and the check cannot be made to disagree on where the next opcode starts.
- A skops file (``domain/skops_schema``) is loaded with ``skops.io.load(trusted=...)`` only after
  every type its schema names and every type skops itself would not trust is admitted by the
  same policy.
- Failures other than a refused global are ``pickle.UnpicklingError``/``ValueError``/... for the
  caller (``runtime.load_model``) to turn into one message; nothing of the file runs meanwhile
  that is not on the list.
"""

from __future__ import annotations

import importlib.util
import pickle
import sys
from pathlib import Path
from typing import Any

import numpy as np
from joblib.numpy_pickle import NumpyArrayWrapper, NumpyUnpickler

from modelport.domain.pickle_container import open_pickle_stream
from modelport.domain.pickle_policy import (
    PicklePolicy,
    RefusedGlobal,
    UnreadableArray,
    array_layout,
    guarded,
    lookup_name,
    wrapper_count,
)
from modelport.domain.skops_schema import is_skops, skops_globals

#: packages whose missing modules are reported as a version mismatch rather than a refusal
_KNOWN_PACKAGES = ("sklearn", "numpy", "scipy", "joblib")
#: a decompressed model may be this much larger than the biggest upload (which is checked at upload)
DECOMPRESSED_LIMIT = 1 << 40
_ARRAY_SUBCLASSES = (np.ndarray, np.matrix)


class GuardedUnpickler(NumpyUnpickler):
    """joblib's unpickler whose ``find_class`` admits only the policy's globals."""

    dispatch = NumpyUnpickler.dispatch.copy()
    proto: int
    fix_imports: bool
    stack: list[Any]

    def __init__(self, file_handle: Any, policy: PicklePolicy) -> None:
        super().__init__("", file_handle, ensure_native_byte_order=True)
        self.policy = policy
        # dtype objects made by this file: id -> (reduce args, BUILD states), to size arrays with
        self._dtypes: dict[int, tuple[Any, tuple[Any, ...], list[Any]]] = {}
        self._builds: dict[int, Any] = {}

    def find_class(self, module: str, name: str) -> Any:
        module, name = lookup_name(module, name, self.proto, self.fix_imports)
        if not self.policy.admits(module, name):
            _explain_refusal(module, name)
        substitute = guarded(module, name)
        if substitute is not None:
            return substitute
        return super().find_class(module, name)

    def persistent_load(self, pid: Any) -> Any:
        raise pickle.UnpicklingError("the model file refers to persistent objects outside itself")

    # ---- the dtype values the static check sizes arrays from
    def _load_reduce(self) -> None:
        func, args = self.stack[-2], self.stack[-1]
        NumpyUnpickler.load_reduce(self)
        result = self.stack[-1]
        if func is np.dtype and isinstance(result, np.dtype):
            self._dtypes[id(result)] = (result, args, [])

    dispatch[pickle.REDUCE[0]] = _load_reduce

    def _load_build(self) -> None:
        state, inst = self.stack[-1], self.stack[-2]
        if isinstance(inst, np.dtype) and id(inst) in self._dtypes:
            self._dtypes[id(inst)][2].append(state)
        if isinstance(inst, NumpyArrayWrapper):
            if type(inst) is not NumpyArrayWrapper or inst.__dict__:
                raise UnreadableArray("a joblib array header was built twice")
            self._check_header(state)
        NumpyUnpickler.load_build(self)

    dispatch[pickle.BUILD[0]] = _load_build

    def _check_header(self, state: Any) -> None:
        """Refuse a header unless the static check sizes its payload exactly as joblib will read it."""
        wrapper_count(state)
        subclass, dtype = state["subclass"], state["dtype"]
        if subclass not in _ARRAY_SUBCLASSES:
            raise UnreadableArray("a joblib array header names an array class modelport does not read")
        made = self._dtypes.get(id(dtype))
        if made is None or made[0] is not dtype or len(made[2]) != 1 or len(made[1]) < 1:
            raise UnreadableArray("a joblib array has a dtype modelport cannot read")
        itemsize, hasobject = array_layout(made[1][0], made[2][0])
        if (dtype.itemsize, bool(dtype.hasobject)) != (itemsize, hasobject):
            raise UnreadableArray("a joblib array's dtype does not match its pickled description")


def _explain_refusal(module: str, name: str) -> None:
    """Raise for a global that is not admitted: a missing module of a known package is a version
    mismatch (ModuleNotFoundError, reported with the versions); anything else is a refusal."""
    top = module.partition(".")[0]
    if top in _KNOWN_PACKAGES and all(part.isidentifier() for part in module.split(".")):
        try:
            spec = importlib.util.find_spec(module)  # imports only the known package's own parents
        except (ImportError, ValueError):
            spec = None
        if spec is None and module not in sys.modules:
            raise ModuleNotFoundError(f"No module named {module!r}", name=module)
    raise RefusedGlobal(module, name)


def load_guarded(path: Path, policy: PicklePolicy) -> Any:
    """Load the model file at ``path`` through the allow-list: a pickle/joblib file, or a skops file."""
    with path.open("rb") as raw:
        if is_skops(raw.read(4)):
            return _load_skops(path, policy)
        return GuardedUnpickler(open_pickle_stream(raw, DECOMPRESSED_LIMIT), policy).load()


def _load_skops(path: Path, policy: PicklePolicy) -> Any:
    """skops with its own trusted-types check: every type it would not trust by itself, and every
    type its schema names, must be on the same list; skops then loads trusting exactly those."""
    import skops.io  # the serving extra; imported when a skops file comes

    with path.open("rb") as raw:
        for module, name in skops_globals(raw):
            policy.check(module, name)
    untrusted = skops.io.get_untrusted_types(file=path)
    for dotted in untrusted:
        module, _, name = dotted.rpartition(".")
        policy.check(module, name)
    return skops.io.load(path, trusted=untrusted)

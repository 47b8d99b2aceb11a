"""Which globals a model file may make the unpickler import: modelport's allow-list, as one policy.

Guarantees:
- ``PicklePolicy.admits(module, name)`` is True only for a pair on the list
  (``allowed_globals.txt``, data shipped with the package), in a section a version's
  requirements.txt switched on (``xgboost``, ``lightgbm``, ``catboost``: their estimator classes
  only), or in that version's owner-given trust list. Nothing else, no patterns, no global switch.
- ``PicklePolicy.check(module, name)`` raises :class:`RefusedGlobal` naming the global; the
  model server (``serving/unpickler.py``) and the upload check (``artifacts/pickle_scan.py``) both
  call it *before* anything is imported, with the names mapped exactly as ``pickle`` maps them
  (``lookup_name``), so a file is refused at upload for the reason it would be refused at load.
- ``parse_trusted_globals`` refuses an owner trust entry that is not ``package.module.Name`` or
  that names a module of the Python runtime (builtins, os, subprocess, importlib, ...): an owner can
  trust their own classes, never a general-purpose callable.
- ``guarded(module, name)``: the checked stand-ins the loader returns for the listed helpers
  whose arguments matter (``_codecs.encode``: latin-1 text only; ``bytes``/``bytearray``: from
  data, not a size); the upload walk calls the same stand-ins on the pickled arguments, so both
  refuse the same calls.
- ``array_layout`` / ``wrapper_count``: how many bytes a joblib array header makes joblib read
  after it, computed from the pickled values alone. Both the static walk and the loader use them
  and refuse (fail closed) whatever they cannot size for certain, so the two never disagree on
  where the next opcode starts.

Pure standard library: the artifacts Lambda has no NumPy.
"""

from __future__ import annotations

import _compat_pickle
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources
from typing import Any

from packaging.utils import canonicalize_name

from modelport.domain.requirements import parse_requirements

LIST_FILE = "allowed_globals.txt"
CORE = ""

#: modules whose globals no owner trust list may name: the runtime's general-purpose callables
_NEVER_TRUSTED = re.compile(
    r"^(builtins|__builtin__|os|posix|nt|sys|subprocess|shutil|pathlib|io|_io|codecs|_codecs|importlib|"
    r"pickle|_pickle|copyreg|marshal|types|operator|functools|itertools|code|codeop|runpy|timeit|pdb|"
    r"ctypes|socket|pty|multiprocessing|concurrent|threading|_thread|asyncio|signal|tempfile|glob|"
    r"webbrowser|urllib|http|ftplib|smtplib|telnetlib|inspect|gc|site|sysconfig|zipimport|pkgutil|"
    r"numpy\.(lib\.npyio|ctypeslib|f2py|testing|distutils)|joblib|cloudpickle|dill)(\.|$)"
)
_DOTTED = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)+$")


class RefusedGlobal(Exception):
    """A global that is not on the list: ``global_name`` is ``module.name``."""

    def __init__(self, module: str, name: str) -> None:
        self.module, self.name = module, name
        self.global_name = f"{module}.{name}" if _printable(module, name) else f"{module!r}.{name!r}"
        super().__init__(self.message)

    @property
    def message(self) -> str:
        return (f"refused to load: the model file would call {self.global_name}, which is not on "
                "modelport's allow-list")


def _printable(*parts: str) -> bool:
    return all(part.isprintable() and part and " " not in part for part in parts)


def lookup_name(module: str, name: str, proto: int, fix_imports: bool = True) -> tuple[str, str]:
    """What ``pickle.Unpickler.find_class`` really imports for a pickled ``(module, name)``."""
    key = (str(module), str(name))
    if proto < 3 and fix_imports:
        if key in _compat_pickle.NAME_MAPPING:
            return _compat_pickle.NAME_MAPPING[key]
        if key[0] in _compat_pickle.IMPORT_MAPPING:
            return (_compat_pickle.IMPORT_MAPPING[key[0]], key[1])
    return key


@lru_cache(maxsize=1)
def listed_sections() -> Mapping[str, frozenset[tuple[str, str]]]:
    """The list file: section name ("" for the core) -> its (module, name) pairs."""
    sections: dict[str, set[tuple[str, str]]] = {CORE: set()}
    current = CORE
    text = resources.files("modelport.domain").joinpath(LIST_FILE).read_text(encoding="utf-8")
    for lineno, raw in enumerate(text.splitlines(), 1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        if line.startswith("[") and line.endswith("]"):
            current = str(canonicalize_name(line[1:-1]))
            sections.setdefault(current, set())
            continue
        parts = line.split()
        if len(parts) != 2:
            raise ValueError(f"{LIST_FILE} line {lineno}: expected 'module name', got {raw!r}")
        sections[current].add((parts[0], parts[1]))
    return {key: frozenset(value) for key, value in sections.items()}


def parse_trusted_globals(entries: Iterable[str]) -> tuple[str, ...]:
    """An owner's trust list, checked: ``package.module.Name`` each; ValueError names a bad one."""
    found: list[str] = []
    for entry in entries:
        entry = str(entry).strip()
        if not _DOTTED.match(entry):
            raise ValueError(f"trusted global {entry!r} is not of the form package.module.Name")
        if _NEVER_TRUSTED.match(entry):
            raise ValueError(f"trusted global {entry!r} is part of the Python runtime or a loader and cannot be "
                             "trusted; only your own classes can")
        if entry not in found:
            found.append(entry)
    return tuple(found)


def _split(entry: str) -> tuple[str, str]:
    module, _, name = entry.rpartition(".")
    return module, name


@dataclass(frozen=True)
class PicklePolicy:
    """The globals one model version's file may use."""

    allowed: frozenset[tuple[str, str]]
    #: what the owner trusted on top of the list, as given (``module.Name``)
    trusted_by_owner: tuple[str, ...] = ()
    #: the requirements.txt packages whose section was switched on
    packages: tuple[str, ...] = field(default=())

    @classmethod
    def for_version(cls, requirement_names: Iterable[str] = (), trusted_globals: Iterable[str] = ()) -> PicklePolicy:
        sections = listed_sections()
        allowed = set(sections[CORE])
        packages = []
        for raw in requirement_names:
            name = str(canonicalize_name(raw))
            if name in sections and name != CORE and name not in packages:
                allowed |= sections[name]
                packages.append(name)
        trusted = parse_trusted_globals(trusted_globals)
        allowed |= {_split(entry) for entry in trusted}
        return cls(allowed=frozenset(allowed), trusted_by_owner=trusted, packages=tuple(packages))

    @classmethod
    def for_requirements(cls, requirements_text: str | None, trusted_globals: Iterable[str] = ()) -> PicklePolicy:
        """The policy of a version whose requirements.txt (already checked) says ``requirements_text``."""
        names = [r.name for r in parse_requirements(requirements_text)] if requirements_text else []
        return cls.for_version(names, trusted_globals)

    def admits(self, module: str, name: str) -> bool:
        return (module, name) in self.allowed

    def check(self, module: str, name: str) -> None:
        if (module, name) not in self.allowed:
            raise RefusedGlobal(module, name)

    def describe(self) -> str:
        """What the version's status shows about this policy ("" when it is the plain list)."""
        return trust_note(self.trusted_by_owner)


def trust_note(trusted: Iterable[str]) -> str:
    """The status line of a version whose owner trusted globals ("" when none)."""
    names = ", ".join(trusted)
    return f"trusted by owner: {names}" if names else ""


# ---------------------------------------------------------------- guarded helpers


class UnsafeArgument(Exception):
    """A listed helper was called with arguments it is not listed for."""


def _latin1_encode(obj: Any, encoding: str = "utf-8", errors: str = "strict") -> bytes:
    # what protocol 2 writes for bytes: _codecs.encode(text, "latin1"); no other codec is looked up
    if not isinstance(obj, str) or encoding not in ("latin1", "latin-1") or errors != "strict":
        raise UnsafeArgument("_codecs.encode is allowed for latin-1 text only")
    return obj.encode("latin-1")


def _no_size(kind: type) -> Callable[..., Any]:
    # bytes(n) / bytearray(n) would allocate n zero bytes: pickles build them from data only
    def build(*args: Any) -> Any:
        if args and not isinstance(args[0], (str, bytes, bytearray, list)):
            raise UnsafeArgument(f"builtins.{kind.__name__} is allowed from data only")
        return kind(*args)

    return build


_GUARDED: dict[tuple[str, str], Callable[..., Any]] = {
    ("_codecs", "encode"): _latin1_encode,
    ("builtins", "bytes"): _no_size(bytes),
    ("builtins", "bytearray"): _no_size(bytearray),
}


def guarded(module: str, name: str) -> Callable[..., Any] | None:
    """The checked stand-in the loader returns for a listed helper, or None to import the real one."""
    return _GUARDED.get((module, name))


# ---------------------------------------------------------------- joblib array headers


class UnreadableArray(Exception):
    """A joblib array header whose payload size cannot be known for certain (fail closed)."""


WRAPPER_KEYS = frozenset({"subclass", "shape", "order", "dtype", "allow_mmap"})
WRAPPER_OPTIONAL = frozenset({"numpy_array_alignment_bytes"})
_FIXED = re.compile(r"^(b1|[iuf][1248]|f16|c(8|16|32)|[Mm]8)$")
_SIZED = re.compile(r"^([SUV])([1-9][0-9]{0,9})$")
_NPY_ITEM_HASOBJECT = 0x01
MAX_ELEMENTS = 1 << 40


def array_layout(typestr: Any, state: Any) -> tuple[int, bool]:
    """(itemsize, hasobject) of a dtype pickled as ``numpy.dtype(typestr, ...)`` then BUILD ``state``.

    Plain, structured and sub-array dtypes (a structured or sub-array dtype is ``V<size>``: its
    size is the typestr's, whatever its fields say; the loader also checks NumPy agrees). Raises
    :class:`UnreadableArray` for anything else, and for structured dtypes holding Python objects.
    """
    if type(typestr) is not str or type(state) is not tuple or len(state) not in (8, 9):
        raise UnreadableArray("a joblib array has a dtype modelport cannot read")
    version, order, subarray, names, fields, elsize, alignment, flags = state[:8]
    if (version, len(state)) not in ((3, 8), (4, 9)) or order not in ("<", ">", "|", "=") \
            or type(elsize) is not int or type(alignment) is not int or type(flags) is not int:
        raise UnreadableArray(f"a joblib array has a dtype modelport cannot read ({typestr!r})")
    composite = (subarray, names, fields) != (None, None, None)
    if composite and (not typestr.startswith("V") or type(subarray) not in (tuple, type(None))
                      or type(names) not in (tuple, type(None)) or type(fields) not in (dict, type(None))):
        raise UnreadableArray(f"a joblib array has a dtype modelport cannot read ({typestr!r})")
    hasobject = bool(flags & _NPY_ITEM_HASOBJECT)
    if typestr in ("O", "O8"):
        if not hasobject or elsize != -1:
            raise UnreadableArray("a joblib object array has an inconsistent dtype")
        return 8, True
    if hasobject:
        raise UnreadableArray(f"a joblib array of {typestr!r} holds Python objects inside a structure")
    if _FIXED.match(typestr):
        if elsize != -1:
            raise UnreadableArray(f"a joblib array of {typestr!r} has an inconsistent item size")
        return int(typestr[1:]), False
    sized = _SIZED.match(typestr)
    if sized:
        count = int(sized.group(2))
        itemsize = count * 4 if sized.group(1) == "U" else count
        if elsize != itemsize:
            raise UnreadableArray(f"a joblib array of {typestr!r} has an inconsistent item size")
        return itemsize, False
    raise UnreadableArray(f"a joblib array has a dtype modelport cannot size ({typestr!r})")


def wrapper_count(state: Any) -> tuple[int, bool]:
    """(element count, has an alignment byte) of a joblib ``NumpyArrayWrapper`` BUILD state.

    The state must be exactly what joblib writes: a dict of the wrapper's attributes, a shape of
    non-negative ints, order C or F. ``dtype`` and ``subclass`` are checked by the caller.
    """
    if type(state) is not dict or not all(type(key) is str for key in state):
        raise UnreadableArray("a joblib array header has no readable state")
    keys = set(state)
    if not keys >= WRAPPER_KEYS or not keys <= WRAPPER_KEYS | WRAPPER_OPTIONAL:
        raise UnreadableArray("a joblib array header has unexpected fields")
    shape = state["shape"]
    if type(shape) is not tuple or not all(type(n) is int and n >= 0 for n in shape):
        raise UnreadableArray("a joblib array header has no valid shape")
    if state["order"] not in ("C", "F") or type(state["order"]) is not str or type(state["allow_mmap"]) is not bool:
        raise UnreadableArray("a joblib array header has an invalid order")
    alignment = state.get("numpy_array_alignment_bytes")
    if alignment is not None and type(alignment) is not int:
        raise UnreadableArray("a joblib array header has an invalid alignment")
    count = 1
    for n in shape:
        count *= n
    if count > MAX_ELEMENTS:  # NumPy would compute the count in int64 and could wrap around
        raise UnreadableArray("a joblib array header claims more elements than any model holds")
    return count, alignment is not None

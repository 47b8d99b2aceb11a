"""Static safety scan of a pickle or joblib file: what would it import when loaded?

The verdict comes from picklescan's maintained lists of dangerous globals (``os.*``,
``subprocess.*``, ``builtins.eval``/``exec``, ``posix.system`` ...). picklescan alone cannot read a
joblib file to its end: joblib writes each numpy array's raw bytes *inside* the pickle stream,
right after the ``NumpyArrayWrapper`` that describes it, and picklescan's opcode reader stops at
the first array. Everything after it (the rest of the model, or an ``os.system`` hidden there) went
unseen. So this module does joblib's framing itself, without loading anything:

- joblib's compressed containers (zlib, gzip, bz2, lzma, xz) are decompressed as a stream;
- the pickle is walked by a subclass of ``pickle._Unpickler`` -- the very class joblib's own
  ``NumpyUnpickler`` extends, so opcodes, frames and array payloads are consumed exactly as
  ``joblib.load`` would consume them -- whose ``find_class`` records the ``(module, name)`` and
  returns an inert stand-in class instead of importing anything. No module of the file is imported,
  no callable of the file runs; BUILD only stores the state on the stand-in;
- after each ``NumpyArrayWrapper``, the array's bytes are skipped (plain dtypes) or walked as the
  nested pickle joblib writes for object arrays;
- every global the walk met goes to picklescan for the verdict, and picklescan also scans the raw
  decompressed stream on its own (belt and braces).

Anything the walk cannot follow (a truncated stream, a dtype it cannot size, protocol-5 out-of-band
buffers, a legacy joblib format) fails closed: the file is refused with the reason.
"""

from __future__ import annotations

import _compat_pickle
import bz2
import gzip
import io
import lzma
import pickle
import re
import zlib
from dataclasses import dataclass, field
from typing import IO, Any

from picklescan.scanner import SafetyLevel, scan_pickle_bytes

CHUNK = 1024 * 1024
MAX_NESTING = 16

_JOBLIB_WRAPPERS = {
    ("joblib.numpy_pickle", "NumpyArrayWrapper"),
    ("sklearn.externals.joblib.numpy_pickle", "NumpyArrayWrapper"),
}
_NUMPY_DTYPE = {("numpy", "dtype"), ("numpy.core.multiarray", "dtype"), ("numpy._core.multiarray", "dtype")}
_TYPESTR = re.compile(r"^[a-zA-Z?]+(\d+)")
_NPY_ITEM_HASOBJECT = 0x01


class ScanError(Exception):
    """The file cannot be followed statically (fail closed)."""


@dataclass
class ScanVerdict:
    #: dangerous globals as ``module.name``, sorted
    dangerous: list[str] = field(default_factory=list)
    #: every global the file would import
    imports: set[tuple[str, str]] = field(default_factory=set)

    @property
    def safe(self) -> bool:
        return not self.dangerous


class _Stub:
    """What a recorded global stands for: it accepts any call and any state, and does nothing."""

    _global: tuple[str, str] = ("", "")
    args: tuple[Any, ...]
    state: Any
    items: list[Any]

    def __new__(cls, *args: Any, **kwargs: Any) -> _Stub:
        obj = object.__new__(cls)
        obj.args = args  # type: ignore[attr-defined]
        obj.state = None  # type: ignore[attr-defined]
        obj.items = []  # type: ignore[attr-defined]
        return obj

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        pass

    def __setstate__(self, state: Any) -> None:
        self.state = state

    def __setitem__(self, key: Any, value: Any) -> None:
        self.items.append((key, value))

    def append(self, value: Any) -> None:
        self.items.append(value)

    def extend(self, values: Any) -> None:
        self.items.extend(values)


class _Walker(pickle._Unpickler):  # type: ignore[name-defined,misc]
    """joblib's unpickler, minus every import and every call of the file's code."""

    dispatch = dict(pickle._Unpickler.dispatch)  # type: ignore[attr-defined]
    proto: int
    fix_imports: bool
    stack: list[Any]

    def __init__(self, file: IO[bytes], imports: set[tuple[str, str]], *, joblib_frames: bool, depth: int) -> None:
        super().__init__(file)
        self._raw = file
        self._imports = imports
        self._joblib_frames = joblib_frames
        self._depth = depth
        self._stubs: dict[tuple[str, str], type[_Stub]] = {}

    def find_class(self, module: str, name: str) -> type[_Stub]:
        key = (str(module), str(name))
        self._imports.add(key)
        if self.proto < 3 and self.fix_imports:  # what pickle itself would import (py2 names mapped)
            if key in _compat_pickle.NAME_MAPPING:
                key = _compat_pickle.NAME_MAPPING[key]
            elif key[0] in _compat_pickle.IMPORT_MAPPING:
                key = (_compat_pickle.IMPORT_MAPPING[key[0]], key[1])
            self._imports.add(key)
        if key not in self._stubs:
            self._stubs[key] = type("Stub", (_Stub,), {"_global": key})
        return self._stubs[key]

    def persistent_load(self, pid: Any) -> Any:
        raise ScanError("the pickle refers to persistent objects outside the file")

    def _load_build(self) -> None:
        pickle._Unpickler.dispatch[pickle.BUILD[0]](self)  # type: ignore[attr-defined,arg-type]
        top = self.stack[-1]
        if self._joblib_frames and isinstance(top, _Stub) and top._global in _JOBLIB_WRAPPERS:
            self._skip_array(top.state)

    dispatch[pickle.BUILD[0]] = _load_build  # type: ignore[assignment]

    # joblib's NumpyArrayWrapper.read_array, without building the array
    def _skip_array(self, state: Any) -> None:
        if not isinstance(state, dict):
            raise ScanError("a joblib array header has no readable state")
        shape = state.get("shape")
        if not isinstance(shape, tuple) or not all(isinstance(n, int) and n >= 0 for n in shape):
            raise ScanError("a joblib array header has no valid shape")
        count = 1
        for n in shape:
            count *= n
        itemsize, hasobject = _dtype_layout(state.get("dtype"))
        if hasobject:
            if self._depth >= MAX_NESTING:
                raise ScanError("object arrays nested too deeply")
            _Walker(self._raw, self._imports, joblib_frames=False, depth=self._depth + 1).load()
            return
        if state.get("numpy_array_alignment_bytes") is not None:
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


def _dtype_layout(dtype: Any, depth: int = 0) -> tuple[int, bool]:
    """(itemsize, hasobject) of a pickled numpy dtype stand-in, from its reduce arguments and state."""
    if not isinstance(dtype, _Stub) or dtype._global not in _NUMPY_DTYPE or depth > MAX_NESTING:
        raise ScanError("a joblib array has a dtype the scanner cannot read")
    typestr = dtype.args[0] if dtype.args else None  # type: ignore[attr-defined]
    state = dtype.state  # type: ignore[attr-defined]
    if not isinstance(typestr, str) or not isinstance(state, tuple) or len(state) < 8:
        raise ScanError("a joblib array has a dtype the scanner cannot read")
    subarray, fields, elsize, flags = state[2], state[4], state[5], state[7]
    hasobject = typestr.startswith("O") or (isinstance(flags, int) and bool(flags & _NPY_ITEM_HASOBJECT))
    if isinstance(subarray, tuple) and subarray:
        hasobject = hasobject or _dtype_layout(subarray[0], depth + 1)[1]
    if isinstance(fields, dict):
        for spec in fields.values():
            if not isinstance(spec, tuple) or not spec:
                raise ScanError("a joblib array has a dtype the scanner cannot read")
            hasobject = hasobject or _dtype_layout(spec[0], depth + 1)[1]
    if hasobject:
        if not typestr.startswith("O"):
            # joblib would read a nested pickle for it; we refuse rather than guess
            raise ScanError("structured arrays holding Python objects are not supported")
        return 0, True
    if isinstance(elsize, int) and elsize > 0:
        return elsize, False
    match = _TYPESTR.match(typestr)
    if not match:
        raise ScanError(f"a joblib array has a dtype the scanner cannot size ({typestr!r})")
    return int(match.group(1)), False


class _ZlibReader(io.RawIOBase):
    """A bare zlib stream (joblib's default compressor) read as a file."""

    def __init__(self, raw: IO[bytes]) -> None:
        self._raw = raw
        self._inflate = zlib.decompressobj()
        self._buffer = b""

    def readable(self) -> bool:
        return True

    def readinto(self, buf: Any) -> int:
        while not self._buffer:
            if self._inflate.eof:
                return 0
            data = self._raw.read(CHUNK)
            if not data:
                self._buffer = self._inflate.flush()
                if not self._buffer:
                    return 0
                break
            self._buffer = self._inflate.decompress(data, CHUNK)
            while not self._buffer and self._inflate.unconsumed_tail:
                self._buffer = self._inflate.decompress(self._inflate.unconsumed_tail, CHUNK)
        n = min(len(buf), len(self._buffer))
        buf[:n] = self._buffer[:n]
        self._buffer = self._buffer[n:]
        if not self._buffer and self._inflate.unconsumed_tail:
            self._buffer = self._inflate.decompress(self._inflate.unconsumed_tail, CHUNK)
        return n


class _Capped(io.RawIOBase):
    """Refuses to read past ``limit`` bytes (a decompression bomb is refused, not followed)."""

    def __init__(self, inner: IO[bytes], limit: int) -> None:
        self._inner = inner
        self._left = limit

    def readable(self) -> bool:
        return True

    def readinto(self, buf: Any) -> int:
        data = self._inner.read(len(buf))
        if len(data) > self._left:
            raise ScanError("the model file decompresses to more than the size limit allows")
        self._left -= len(data)
        buf[: len(data)] = data
        return len(data)


def open_pickle_stream(stream: IO[bytes], max_bytes: int) -> IO[bytes]:
    """The pickle inside a joblib container (or the file itself when it is a plain pickle)."""
    stream.seek(0)
    head = stream.read(8)
    stream.seek(0)
    inner: IO[bytes]
    if head.startswith(b"\x1f\x8b"):
        inner = gzip.GzipFile(fileobj=stream, mode="rb")  # type: ignore[assignment]
    elif head.startswith(b"BZh"):
        inner = bz2.BZ2File(stream, mode="rb")  # type: ignore[assignment]
    elif head.startswith((b"\xfd7zXZ", b"]\x00\x00")):
        inner = lzma.LZMAFile(stream, mode="rb")  # type: ignore[assignment]  # noqa: SIM115
    elif head.startswith(b"ZF"):
        raise ScanError("the file is in joblib's legacy (before 0.10) format; save it again with a current joblib")
    elif head.startswith(b"\x04\x22\x4d\x18"):
        raise ScanError("lz4-compressed joblib files cannot be scanned; save with compress=3 (zlib) or no compression")
    elif head[:1] == b"x":
        inner = io.BufferedReader(_ZlibReader(stream), CHUNK)
    else:
        return stream
    return io.BufferedReader(_Capped(inner, max_bytes * 8), CHUNK)


def scan_model_file(stream: IO[bytes], max_bytes: int) -> ScanVerdict:
    """The globals a pickle/joblib file would import, and which of them picklescan calls dangerous.

    Raises :class:`ScanError` when the file cannot be followed to its end statically.
    """
    imports: set[tuple[str, str]] = set()
    try:
        walked = open_pickle_stream(stream, max_bytes)
        _Walker(walked, imports, joblib_frames=True, depth=0).load()
    except ScanError:
        raise
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, KeyError, IndexError,
            OSError, lzma.LZMAError, zlib.error, RecursionError, MemoryError, OverflowError) as exc:
        raise ScanError(f"the pickle cannot be read statically ({type(exc).__name__}: {exc})") from exc
    finally:
        stream.seek(0)

    dangerous: set[str] = set()
    for module, name in imports:
        if "\n" in module or "\n" in name or not module or not name:
            dangerous.add(f"{module!r}.{name!r}")
    # picklescan's verdict on every global the walk met (a tiny pickle of GLOBAL opcodes) ...
    clean = sorted(g for g in imports if "\n" not in g[0] + g[1])
    synthetic = b"".join(b"c" + f"{m}\n{n}\n".encode("utf-8", "surrogatepass") + b"0" for m, n in clean) + b"N."
    # ... and on the raw stream as it is (finds globals up to joblib's first array, and in trailing pickles)
    results = [scan_pickle_bytes(io.BytesIO(synthetic), "globals", multiple_pickles=False)]
    try:
        results.append(scan_pickle_bytes(open_pickle_stream(stream, max_bytes), "model"))
    except ScanError:
        raise
    except Exception:  # noqa: BLE001 - picklescan's own parse trouble on the raw stream is not a verdict
        pass
    finally:
        stream.seek(0)
    for result in results:
        for found in result.globals:
            if found.safety == SafetyLevel.Dangerous:
                dangerous.add(f"{found.module}.{found.name}")
                imports.add((found.module, found.name))
    return ScanVerdict(dangerous=sorted(dangerous), imports=imports)

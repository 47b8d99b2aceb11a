"""Hostile model files, generated: every way we know for a pickle to reach a callable.

``malicious_files(marker)`` returns :class:`Hostile` cases; each one's payload, if it ever ran,
would create the file ``marker`` (a shell ``touch``, a Python ``open``, a file-copying or
file-writing API, a spawned process). ``named`` is the first global the guard must name in its refusal
(getattr chains are refused at ``builtins.getattr``; None for the desynchronisation tricks and
the misused listed helper, refused at the header or the call, before the payload is reached).
Built from raw opcodes so that each family is exactly what it says.
"""

from __future__ import annotations

import io
import pickle
import struct
import zlib
from dataclasses import dataclass
from typing import Any

import joblib
import numpy as np

FAMILIES_MIN = 20


@dataclass(frozen=True)
class Hostile:
    family: str
    data: bytes
    named: str | None


# ---------------------------------------------------------------- opcode helpers
P = pickle


def text(s: str) -> bytes:
    raw = s.encode()
    return P.BINUNICODE + struct.pack("<I", len(raw)) + raw


def glob(module: str, name: str) -> bytes:  # GLOBAL (protocol 0+)
    return P.GLOBAL + f"{module}\n{name}\n".encode()


def sglob(module: str, name: str) -> bytes:  # STACK_GLOBAL (protocol 4+)
    return text(module) + text(name) + P.STACK_GLOBAL


def tup(*parts: bytes) -> bytes:
    return P.MARK + b"".join(parts) + P.TUPLE


def call(func: bytes, *args: bytes) -> bytes:  # REDUCE
    return func + tup(*args) + P.REDUCE


def attr(obj: bytes, name: str) -> bytes:  # getattr(obj, name)
    return call(glob("builtins", "getattr"), obj, text(name))


def proto(n: int, body: bytes) -> bytes:
    return P.PROTO + bytes([n]) + body + P.STOP


def shell(marker: str) -> str:
    return f"touch {marker}"


def py(marker: str) -> str:
    return f"open({marker!r}, 'w').close()"


class Reduces:
    """An object that pickles as ``func(*args)``."""

    def __init__(self, func: Any, *args: Any) -> None:
        self.func, self.args = func, args

    def __reduce__(self) -> tuple[Any, ...]:
        return (self.func, self.args)


def _joblib(obj: Any, compress: Any = 0, protocol: int | None = None) -> bytes:
    buffer = io.BytesIO()
    joblib.dump(obj, buffer, compress=compress, protocol=protocol)
    return buffer.getvalue()


# ---------------------------------------------------------------- joblib array headers, crafted
def _dtype(typestr: str, elsize: int = -1, flags: int = 0) -> bytes:
    state = tup(P.BININT1 + b"\x03", text("<"), P.NONE, P.NONE, P.NONE, P.BININT + struct.pack("<i", elsize),
                P.BININT + struct.pack("<i", -1), P.BININT + struct.pack("<i", flags))
    return call(sglob("numpy", "dtype"), text(typestr), P.NEWFALSE, P.NEWTRUE) + state + P.BUILD


def _header(shape: tuple[int, ...], dtype: bytes, aligned: bool = True, subclass: bytes | None = None) -> bytes:
    items = [
        text("subclass"), subclass or sglob("numpy", "ndarray"),
        text("shape"), tup(*(P.LONG1 + bytes([8]) + n.to_bytes(8, "little", signed=True) for n in shape)),
        text("order"), text("C"),
        text("dtype"), dtype,
        text("allow_mmap"), P.NEWFALSE,
    ]
    if aligned:
        items += [text("numpy_array_alignment_bytes"), P.BININT1 + b"\x10"]
    wrapper = sglob("joblib.numpy_pickle", "NumpyArrayWrapper") + P.EMPTY_TUPLE + P.NEWOBJ
    return wrapper + P.EMPTY_DICT + P.MARK + b"".join(items) + P.SETITEMS + P.BUILD


def _after_array(header: bytes, payload: bytes, tail: bytes) -> bytes:
    """A joblib-style stream: header, raw array bytes, then more opcodes (the payload's)."""
    return P.PROTO + b"\x04" + header + payload + P.POP + tail + P.STOP


def malicious_files(marker: str) -> list[Hostile]:
    cmd, src = shell(marker), py(marker)
    system = call(glob("posix", "system"), text(cmd))
    cases: list[Hostile] = []

    def add(family: str, data: bytes, named: str | None) -> None:
        cases.append(Hostile(family, data, named))

    # 1. each opcode path to a callable
    add("GLOBAL+REDUCE", proto(2, system), "posix.system")
    add("STACK_GLOBAL+REDUCE", proto(4, call(sglob("posix", "system"), text(cmd))), "posix.system")
    add("INST", b"(S'" + cmd.encode() + b"'\nios\nsystem\n.", "os.system")
    add("OBJ", P.MARK + glob("posix", "system") + text(cmd) + P.OBJ + P.STOP, "posix.system")
    path = call(glob("pathlib", "PosixPath"), text(marker))
    add("NEWOBJ + getattr chain (pathlib touch)",
        proto(2, glob("pathlib", "PosixPath") + tup(text(marker)) + P.NEWOBJ + P.POP
              + call(attr(path, "touch"))), "pathlib.PosixPath")
    add("NEWOBJ_EX", proto(4, sglob("pathlib", "PosixPath") + tup(text(marker)) + P.EMPTY_DICT + P.NEWOBJ_EX
                           + P.POP + call(attr(path, "touch"))), "pathlib.PosixPath")
    # 2. BUILD gadgets: an instance attribute named __setstate__ is what BUILD calls next
    gadget = P.EMPTY_DICT + text("__setstate__") + glob("posix", "system") + P.SETITEM
    add("BUILD __setstate__ gadget (SimpleNamespace)",
        proto(2, call(glob("types", "SimpleNamespace")) + gadget + P.BUILD + text(cmd) + P.BUILD),
        "types.SimpleNamespace")
    add("BUILD __setstate__ gadget on a listed class",
        proto(2, glob("sklearn.linear_model._logistic", "LogisticRegression") + P.EMPTY_TUPLE + P.NEWOBJ
              + gadget + P.BUILD + text(cmd) + P.BUILD), "posix.system")
    # 3. globals no deny-list names that write files
    add("shutil.copyfile", proto(2, call(glob("shutil", "copyfile"), text(__file__), text(marker))), "shutil.copyfile")
    add("pathlib.Path.write_text (dotted name)",
        proto(4, call(sglob("pathlib", "Path.write_text"), path, text("x"))), "pathlib.Path.write_text")
    add("io.open", proto(2, call(glob("io", "open"), text(marker), text("w"))), "io.open")
    add("builtins.open", proto(2, call(glob("builtins", "open"), text(marker), text("w"))), "builtins.open")
    add("numpy.savetxt", proto(2, call(glob("numpy", "savetxt"), text(marker), P.EMPTY_LIST)), "numpy.savetxt")
    add("numpy.memmap (creates its file)", proto(2, call(glob("numpy", "memmap"), text(marker), P.NONE, text("w+"),
                                                         P.BININT1 + b"\x00", tup(P.BININT1 + b"\x01"))),
        "numpy.memmap")
    add("joblib.dump", proto(2, call(glob("joblib.numpy_pickle", "dump"), P.NONE, text(marker))),
        "joblib.numpy_pickle.dump")
    # 4. compile-and-run helpers
    interp = call(glob("code", "InteractiveInterpreter"))
    add("code.InteractiveInterpreter.runsource", proto(2, call(attr(interp, "runsource"), text(src))),
        "builtins.getattr")
    add("timeit.Timer.timeit", proto(2, call(attr(call(glob("timeit", "Timer"), text(src)), "timeit"),
                                             P.BININT1 + b"\x01")), "builtins.getattr")
    add("builtins.eval", proto(2, call(glob("builtins", "eval"), text(src))), "builtins.eval")
    add("builtins.exec", proto(2, call(glob("builtins", "exec"), text(src))), "builtins.exec")
    # 5. process spawners
    argv = P.EMPTY_LIST + P.MARK + text("touch") + text(marker) + P.APPENDS
    add("subprocess.getoutput", proto(2, call(glob("subprocess", "getoutput"), text(cmd))), "subprocess.getoutput")
    add("subprocess.Popen().wait", proto(2, call(attr(call(glob("subprocess", "Popen"), argv), "wait"))),
        "builtins.getattr")
    add("os.posix_spawn", proto(2, call(glob("posix", "posix_spawnp"), text("touch"), argv, P.EMPTY_DICT)),
        "posix.posix_spawnp")
    add("pty.spawn", proto(2, call(glob("pty", "spawn"), argv)), "pty.spawn")
    add("multiprocessing spawn", proto(2, call(glob("multiprocessing.util", "spawnv_passfds"), text("/usr/bin/touch"),
                                               argv, P.EMPTY_TUPLE)), "multiprocessing.util.spawnv_passfds")
    # 6. import helpers and attribute tricks
    os_module = call(glob("importlib", "import_module"), text("os"))
    add("importlib.import_module", proto(2, call(attr(os_module, "system"), text(cmd))), "builtins.getattr")
    add("builtins.__import__ + getattr", proto(2, call(attr(call(glob("builtins", "__import__"), text("os")), "system"),
                                                       text(cmd))), "builtins.getattr")
    add("builtins.getattr on a listed class", proto(2, call(attr(glob("numpy", "ndarray"), "tofile"))),
        "builtins.getattr")
    add("operator.attrgetter", proto(2, call(call(call(glob("operator", "attrgetter"), text("system")), os_module),
                                             text(cmd))), "operator.attrgetter")
    add("operator.methodcaller", proto(2, call(call(glob("operator", "methodcaller"), text("system"), text(cmd)),
                                               os_module)), "operator.methodcaller")
    add("functools.partial", proto(2, call(call(glob("functools", "partial"), glob("posix", "system"), text(cmd)))),
        "functools.partial")
    add("copyreg._reconstructor", b"ccopyreg\n_reconstructor\n(cpathlib\nPosixPath\ncbuiltins\nobject\nNtR.",
        "copyreg._reconstructor")
    add("listed helper, unlisted use (_codecs.encode with another codec)",
        proto(2, call(glob("_codecs", "encode"), text("x"), text("rot13")) + P.POP + system), None)
    # 7. every protocol, every joblib container
    for n in range(6):
        add(f"protocol {n}", pickle.dumps(Reduces(__import__("os").system, cmd), protocol=n), "posix.system")
    evil = Reduces(__import__("os").system, cmd)
    for compress in (3, ("gzip", 3), ("bz2", 3), ("lzma", 3), ("xz", 3)):
        add(f"joblib container {compress}", _joblib({"m": np.arange(4.0), "x": evil}, compress), "posix.system")
    add("after a joblib array", _joblib({"weights": np.arange(100.0), "x": evil}), "posix.system")
    add("nested pickle inside an object array", _joblib({"a": np.array([evil, 1], dtype=object)}), "posix.system")
    add("object array in a compressed container", _joblib({"a": np.array([1, evil], dtype=object)}, 9), "posix.system")
    # 8. desynchronisation: headers a naive walker sizes differently from joblib
    payload_then_system = system + P.POP
    n = 4
    add("desync: item size in the dtype state (f8 claimed 1 byte)",
        _after_array(_header((n,), _dtype("f8", elsize=1)), b"\x00" + P.STOP * (8 * n), payload_then_system), None)
    add("desync: shape whose element count wraps in int64",
        _after_array(_header((1 << 62, 4), _dtype("f8")), b"\x00", payload_then_system), None)
    add("desync: float dtype claiming to hold objects",
        _after_array(_header((n,), _dtype("f8", flags=1)), b"\x00" + P.STOP + b"\x00" * (8 * n), payload_then_system),
        None)
    add("desync: structured dtype from a string typestr",
        _after_array(_header((n,), _dtype("(2,)f8")), b"\x00" + b"\x00" * (16 * n), payload_then_system), None)
    add("desync: array class that is not an ndarray",
        _after_array(_header((n,), _dtype("f8"), subclass=sglob("numpy", "memmap")), b"\x00" * (1 + 8 * n),
                     payload_then_system), "numpy.memmap")
    # no alignment key: joblib reads no padding byte; a walker that always does is one byte off
    add("desync: no alignment key",
        _after_array(_header((1,), _dtype("f8"), aligned=False), b"\x07" * 8, payload_then_system), "posix.system")
    rebuilt = (P.PROTO + b"\x04" + _header((1,), _dtype("f8")).replace(P.NEWOBJ, P.NEWOBJ + P.MEMOIZE, 1)
               + b"\x00" + b"\x00" * 8 + P.POP + P.BINGET + b"\x00" + P.EMPTY_DICT + P.BUILD + P.POP
               + payload_then_system + P.STOP)
    add("desync: the same header built twice", rebuilt, None)
    add("zlib stream of a desync", zlib.compress(_after_array(_header((n,), _dtype("f8", elsize=1)),
                                                              b"\x00" + P.STOP * (8 * n), payload_then_system)), None)
    return cases


def skops_files(marker: str) -> list[Hostile]:
    """skops archives whose schema was rewritten to reach a callable (skops.io.load would refuse
    most of them too, when asked to trust nothing; modelport refuses them before skops runs)."""
    import json
    import zipfile

    import skops.io
    from sklearn.preprocessing import FunctionTransformer

    benign = skops.io.dumps(FunctionTransformer(np.log1p).fit(np.ones((2, 2))))

    def rewrite(change: Any) -> bytes:
        source = zipfile.ZipFile(io.BytesIO(benign))
        schema = json.loads(source.read("schema.json"))
        change(schema)
        out = io.BytesIO()
        with zipfile.ZipFile(out, "w") as target:
            for item in source.namelist():
                data = source.read(item) if item != "schema.json" else json.dumps(schema).encode()
                target.writestr(item, data)
        return out.getvalue()

    def func(module: str, name: str, loader: str = "FunctionNode") -> Any:
        def change(schema: dict[str, Any]) -> None:
            node = schema["content"]["content"]["func"]
            node.update({"__module__": module, "__class__": name, "__loader__": loader})
        return change

    def obj(module: str, name: str) -> Any:
        def change(schema: dict[str, Any]) -> None:
            schema.update({"__module__": module, "__class__": name})
        return change

    return [
        Hostile("skops function builtins.eval", rewrite(func("builtins", "eval")), "builtins.eval"),
        Hostile("skops function posix.system", rewrite(func("posix", "system")), "posix.system"),
        Hostile("skops functools.partial", rewrite(func("functools", "partial", "PartialNode")), "functools.partial"),
        Hostile("skops object of a file-writing class", rewrite(obj("pathlib", "PosixPath")), "pathlib.PosixPath"),
        Hostile("skops method node", rewrite(func("os", "system", "MethodNode")), None),
        Hostile("skops unknown loader", rewrite(func("os", "system", "EvilNode")), None),
    ]

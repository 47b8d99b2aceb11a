"""skops files (``.skops``, ``skops.io.dump``): which types and functions they would make skops load.

Guarantees: ``is_skops(head)`` tells a skops archive (a zip) from a pickle. ``skops_globals(stream)``
reads only the archive's ``schema.json`` (no array, no code) and returns every ``(module, name)``
its nodes refer to -- classes, functions, types, methods' owners -- except the plain data nodes
skops builds itself (dict, list, tuple, str, numbers, bytes, sets, slices). A node whose loader
modelport does not know, a missing or oversized schema, or a broken archive raises
:class:`SkopsUnreadable` (fail closed). The upload check and the model server both check these
pairs against the same ``PicklePolicy``; the server then loads with ``skops.io.load(trusted=...)``
trusting exactly the admitted types. Pure standard library.
"""

from __future__ import annotations

import json
import zipfile
from typing import IO, Any

SCHEMA = "schema.json"
MAX_SCHEMA_BYTES = 64 * 1024 * 1024
MAX_DEPTH = 200
ZIP_MAGIC = b"PK\x03\x04"

#: what skops builds from data itself, whatever the node says
_DATA = {("builtins", name) for name in ("dict", "list", "tuple", "str", "int", "float", "bool", "NoneType", "bytes",
                                         "bytearray", "complex", "set", "frozenset", "slice")}
#: skops's node loaders (skops 0.16) modelport reads; a file naming another one -- or a method or
#: operator node, which call a name on an object -- is refused
_LOADERS = {
    "BytearrayNode", "BytesNode", "CachedNode", "ConstructorFromReduceNode", "DTypeNode", "DefaultDictNode",
    "DictNode", "FunctionNode", "JsonNode", "ListNode", "LossNode", "MaskedArrayNode", "NdArrayNode", "ObjectNode",
    "PartialNode", "RandomGeneratorNode", "RandomStateNode", "ReduceNode", "SetNode", "SliceNode",
    "SparseMatrixNode", "TreeNode", "TupleNode", "TypeNode",
}


class SkopsUnreadable(Exception):
    """The archive cannot be checked for certain (fail closed)."""


def is_skops(head: bytes) -> bool:
    return head.startswith(ZIP_MAGIC)


def skops_globals(stream: IO[bytes]) -> list[tuple[str, str]]:
    """Every (module, name) the skops file's schema refers to, in order, without duplicates."""
    try:
        with zipfile.ZipFile(stream) as archive:
            info = archive.getinfo(SCHEMA)
            if info.file_size > MAX_SCHEMA_BYTES:
                raise SkopsUnreadable("the skops schema is larger than modelport reads")
            schema = json.loads(archive.read(info))
    except SkopsUnreadable:
        raise
    except (KeyError, ValueError, zipfile.BadZipFile, OSError, RecursionError) as exc:
        raise SkopsUnreadable(f"the skops file cannot be read ({type(exc).__name__}: {exc})") from exc
    found: dict[tuple[str, str], None] = {}
    _walk(schema, found, 0)
    return list(found)


def _walk(node: Any, found: dict[tuple[str, str], None], depth: int) -> None:
    if depth > MAX_DEPTH:
        raise SkopsUnreadable("the skops schema is nested too deeply")
    if isinstance(node, list):
        for item in node:
            _walk(item, found, depth + 1)
        return
    if not isinstance(node, dict):
        return
    if "__loader__" in node:
        loader, module, name = node.get("__loader__"), node.get("__module__"), node.get("__class__")
        if loader not in _LOADERS:
            raise SkopsUnreadable(f"the skops file uses a loader modelport does not know ({loader!r})")
        if not isinstance(module, str) or not isinstance(name, str):
            raise SkopsUnreadable("a skops node does not name its type")
        if (module, name) not in _DATA:
            found.setdefault((module, name), None)
    for key, value in node.items():
        if key not in ("__loader__", "__module__", "__class__"):
            _walk(value, found, depth + 1)

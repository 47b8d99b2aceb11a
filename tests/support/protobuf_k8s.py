"""A minimal decoder for the Kubernetes protobuf wire format, for the API emulator.

client-go (and so Helm's release storage) sends Secrets and ConfigMaps as
``application/vnd.kubernetes.protobuf``: the 4-byte magic ``k8s\\0`` and a ``runtime.Unknown``
envelope whose ``raw`` field holds the object's message. The ``protobuf`` package would need the
generated Kubernetes message classes, which no installed package ships, so the handful of fields
the emulator needs are read by hand here (the wire format is small: varints and length-delimited
fields). Field numbers follow k8s.io/api/core/v1/generated.proto and
k8s.io/apimachinery/pkg/apis/meta/v1/generated.proto.
"""

from __future__ import annotations

import base64
import datetime
from collections.abc import Iterator
from typing import Any

MAGIC = b"k8s\x00"
CONTENT_TYPE = "application/vnd.kubernetes.protobuf"


class ProtobufError(ValueError):
    pass


def _varint(buf: bytes, i: int) -> tuple[int, int]:
    result = 0
    shift = 0
    while True:
        if i >= len(buf):
            raise ProtobufError("truncated varint")
        byte = buf[i]
        i += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, i
        shift += 7


def fields(buf: bytes) -> Iterator[tuple[int, int | bytes]]:
    """Yield (field number, value): ints for varint/fixed fields, bytes for length-delimited."""
    i = 0
    while i < len(buf):
        key, i = _varint(buf, i)
        number, wire = key >> 3, key & 7
        value: int | bytes
        if wire == 0:
            value, i = _varint(buf, i)
        elif wire == 1:
            value, i = int.from_bytes(buf[i : i + 8], "little"), i + 8
        elif wire == 2:
            length, i = _varint(buf, i)
            value, i = buf[i : i + length], i + length
        elif wire == 5:
            value, i = int.from_bytes(buf[i : i + 4], "little"), i + 4
        else:
            raise ProtobufError(f"unsupported wire type {wire}")
        yield number, value


def _bytes(value: int | bytes) -> bytes:
    if not isinstance(value, bytes):
        raise ProtobufError("expected a length-delimited field")
    return value


def _str(value: int | bytes) -> str:
    return _bytes(value).decode("utf-8")


def _int(value: int | bytes) -> int:
    if isinstance(value, bytes):
        raise ProtobufError("expected a varint field")
    return value


def _map_entry(value: int | bytes) -> tuple[str, bytes]:
    key = ""
    val = b""
    for number, item in fields(_bytes(value)):
        if number == 1:
            key = _str(item)
        elif number == 2:
            val = _bytes(item)
    return key, val


def _time(value: int | bytes) -> str:
    seconds = 0
    for number, item in fields(_bytes(value)):
        if number == 1:
            seconds = _int(item)
    return datetime.datetime.fromtimestamp(seconds, tz=datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def object_meta(buf: bytes) -> dict[str, Any]:
    meta: dict[str, Any] = {}
    strings = {1: "name", 2: "generateName", 3: "namespace", 4: "selfLink", 5: "uid", 6: "resourceVersion"}
    for number, value in fields(buf):
        if number in strings:
            meta[strings[number]] = _str(value)
        elif number == 7:
            meta["generation"] = _int(value)
        elif number == 8:
            meta["creationTimestamp"] = _time(value)
        elif number in (11, 12):
            key, val = _map_entry(value)
            meta.setdefault("labels" if number == 11 else "annotations", {})[key] = val.decode("utf-8")
        elif number == 14:
            meta.setdefault("finalizers", []).append(_str(value))
    return meta


def _secret(buf: bytes) -> dict[str, Any]:
    obj: dict[str, Any] = {"apiVersion": "v1", "kind": "Secret", "metadata": {}}
    for number, value in fields(buf):
        if number == 1:
            obj["metadata"] = object_meta(_bytes(value))
        elif number == 2:
            key, val = _map_entry(value)
            obj.setdefault("data", {})[key] = base64.b64encode(val).decode("ascii")
        elif number == 3:
            obj["type"] = _str(value)
        elif number == 4:
            key, val = _map_entry(value)
            obj.setdefault("stringData", {})[key] = val.decode("utf-8")
        elif number == 5:
            obj["immutable"] = bool(_int(value))
    return obj


def _config_map(buf: bytes) -> dict[str, Any]:
    obj: dict[str, Any] = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {}}
    for number, value in fields(buf):
        if number == 1:
            obj["metadata"] = object_meta(_bytes(value))
        elif number == 2:
            key, val = _map_entry(value)
            obj.setdefault("data", {})[key] = val.decode("utf-8")
        elif number == 3:
            key, val = _map_entry(value)
            obj.setdefault("binaryData", {})[key] = base64.b64encode(val).decode("ascii")
        elif number == 4:
            obj["immutable"] = bool(_int(value))
    return obj


def _namespace(buf: bytes) -> dict[str, Any]:
    obj: dict[str, Any] = {"apiVersion": "v1", "kind": "Namespace", "metadata": {}}
    for number, value in fields(buf):
        if number == 1:
            obj["metadata"] = object_meta(_bytes(value))
    return obj


DECODERS = {("v1", "Secret"): _secret, ("v1", "ConfigMap"): _config_map, ("v1", "Namespace"): _namespace}


def decode(body: bytes) -> dict[str, Any] | None:
    """Decode a protobuf request body into the JSON-shaped object; None for kinds not needed
    (e.g. DeleteOptions, whose body the emulator ignores anyway)."""
    if not body.startswith(MAGIC):
        raise ProtobufError("missing the k8s protobuf magic prefix")
    api_version = kind = ""
    raw = b""
    for number, value in fields(body[len(MAGIC) :]):
        if number == 1:
            for sub_number, sub_value in fields(_bytes(value)):
                if sub_number == 1:
                    api_version = _str(sub_value)
                elif sub_number == 2:
                    kind = _str(sub_value)
        elif number == 2:
            raw = _bytes(value)
    decoder = DECODERS.get((api_version, kind))
    if decoder is not None:
        return decoder(raw)
    if kind in ("DeleteOptions", ""):
        return None
    raise ProtobufError(f"the emulator cannot decode a protobuf {api_version} {kind}; send it as JSON")

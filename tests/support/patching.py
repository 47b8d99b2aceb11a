"""The three patch formats a Kubernetes API server accepts, simplified for the API emulator.

- JSON merge patch (RFC 7386): dicts merge, ``null`` deletes, lists are replaced.
- strategic merge patch: as the merge patch, but lists of objects with a known merge key
  (containers by ``name``, container ports by ``containerPort`` ...) merge item by item, and the
  directives client-side ``kubectl apply``/``helm upgrade`` emit are honoured: ``$patch``
  (replace/delete), ``$retainKeys``, ``$setElementOrder/<field>``, ``$deleteFromPrimitiveList/<field>``.
  The merge keys come from a small table of the fields the model-serving chart uses, instead of
  the OpenAPI schema the real server reads them from.
- JSON patch (RFC 6902): add, remove, replace, test, copy, move.
"""

from __future__ import annotations

import copy
from typing import Any

# list field name -> merge key candidates (first present in the items wins)
MERGE_KEYS: dict[str, tuple[str, ...]] = {
    "containers": ("name",),
    "initContainers": ("name",),
    "ephemeralContainers": ("name",),
    "env": ("name",),
    "volumes": ("name",),
    "volumeMounts": ("mountPath",),
    "volumeDevices": ("devicePath",),
    "imagePullSecrets": ("name",),
    "ports": ("containerPort", "port"),
    "conditions": ("type",),
    "ownerReferences": ("uid",),
    "hostAliases": ("ip",),
    "topologySpreadConstraints": ("topologyKey",),
}


def merge_patch(target: Any, patch: Any) -> Any:
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


def _merge_key(field: str, items: list[Any]) -> str | None:
    for candidate in MERGE_KEYS.get(field, ()):
        if any(isinstance(item, dict) and candidate in item for item in items):
            return candidate
    return None


def strategic_merge_patch(target: Any, patch: Any) -> Any:
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    patch = dict(patch)
    directive = patch.pop("$patch", None)
    if directive == "replace":
        return copy.deepcopy(patch)
    if directive == "delete":
        return None
    retain = patch.pop("$retainKeys", None)
    orders = {k.split("/", 1)[1]: patch.pop(k) for k in list(patch) if k.startswith("$setElementOrder/")}
    deletes = {k.split("/", 1)[1]: patch.pop(k) for k in list(patch) if k.startswith("$deleteFromPrimitiveList/")}
    result = copy.deepcopy(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        elif isinstance(value, dict):
            merged = strategic_merge_patch(result.get(key), value)
            if merged is None:
                result.pop(key, None)
            else:
                result[key] = merged
        elif isinstance(value, list):
            result[key] = _merge_list(key, result.get(key), value)
        else:
            result[key] = value
    for key, values in deletes.items():
        if isinstance(result.get(key), list):
            result[key] = [item for item in result[key] if item not in values]
    for key, order in orders.items():
        if isinstance(result.get(key), list):
            result[key] = _order(key, result[key], order)
    if retain is not None:
        result = {k: v for k, v in result.items() if k in retain}
    return result


def _merge_list(field: str, current: Any, patch: list[Any]) -> list[Any]:
    current = current if isinstance(current, list) else []
    merge_key = _merge_key(field, patch + current)
    if merge_key is None:
        if len(patch) == 1 and isinstance(patch[0], dict) and patch[0].get("$patch") == "replace":
            return []
        return copy.deepcopy(patch)
    result = copy.deepcopy(current)
    for item in patch:
        if not isinstance(item, dict):
            continue
        if item.get("$patch") == "replace":
            return [copy.deepcopy({k: v for k, v in i.items() if k != "$patch"}) for i in patch if isinstance(i, dict)]
        index = next(
            (
                i
                for i, existing in enumerate(result)
                if isinstance(existing, dict) and existing.get(merge_key) == item.get(merge_key)
            ),
            None,
        )
        if item.get("$patch") == "delete":
            if index is not None:
                result.pop(index)
            continue
        if index is None:
            result.append(strategic_merge_patch({}, item))
        else:
            result[index] = strategic_merge_patch(result[index], item)
    return result


def _order(field: str, items: list[Any], order: list[Any]) -> list[Any]:
    merge_key = _merge_key(field, order + items)

    def identity(item: Any) -> Any:
        return item.get(merge_key) if merge_key and isinstance(item, dict) else item

    wanted = [identity(o) for o in order]
    ranked = sorted(
        range(len(items)),
        key=lambda i: (wanted.index(identity(items[i])) if identity(items[i]) in wanted else len(wanted), i),
    )
    return [items[i] for i in ranked]


def _pointer(path: str) -> list[str]:
    if path == "":
        return []
    return [part.replace("~1", "/").replace("~0", "~") for part in path.lstrip("/").split("/")]


def json_patch(target: Any, operations: list[dict[str, Any]]) -> Any:
    doc = copy.deepcopy(target)

    def parent(path: str) -> tuple[Any, str]:
        parts = _pointer(path)
        node = doc
        for part in parts[:-1]:
            node = node[int(part)] if isinstance(node, list) else node[part]
        return node, parts[-1]

    def get(path: str) -> Any:
        node = doc
        for part in _pointer(path):
            node = node[int(part)] if isinstance(node, list) else node[part]
        return node

    for op in operations:
        kind = op["op"]
        if kind == "test":
            if get(op["path"]) != op["value"]:
                raise ValueError(f"test failed at {op['path']}")
            continue
        if kind in ("copy", "move"):
            value = copy.deepcopy(get(op["from"]))
            if kind == "move":
                node, key = parent(op["from"])
                del node[int(key) if isinstance(node, list) else key]
            op = {"op": "add", "path": op["path"], "value": value}
            kind = "add"
        node, key = parent(op["path"])
        if kind == "remove":
            del node[int(key) if isinstance(node, list) else key]
        elif kind in ("add", "replace"):
            if isinstance(node, list):
                if key == "-":
                    node.append(op["value"])
                elif kind == "add":
                    node.insert(int(key), op["value"])
                else:
                    node[int(key)] = op["value"]
            else:
                node[key] = op["value"]
        else:
            raise ValueError(f"unsupported JSON patch operation {kind!r}")
    return doc

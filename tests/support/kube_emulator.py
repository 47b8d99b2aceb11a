"""A Kubernetes API emulator that the real ``helm`` and ``kubectl`` binaries can run against.

No real API server can run here (DESIGN.md), so the helm driver is tested against this emulator,
built on ``kmock``'s ``KubernetesEmulator`` (its handler, aiohttp server, bundled discovery data of
a real cluster, and its Kubernetes error rendering). kmock is written for testing operators with
hand-fed objects; helm and kubectl expect more of a server, so this subclass adds, as DESIGN.md
lists:

- discovery that client-go accepts: the core group version is ``v1`` (kmock says ``/v1``), the
  group-version documents are the bundled ones of a real cluster (kinds, scopes, verbs,
  subresources), and the server reports Kubernetes v1.35;
- its own request routing for resource URLs: kmock parses ``/api/v1/namespaces/NAME`` as a
  namespace rather than a ``namespaces`` object, and maps neither PUT (helm's release-storage
  update) nor collection deletes; so resource requests are served here, not through kmock's
  fallback reactions (its ``_handle`` mutates state before routing, with those same parse errors);
- object storage with server-side metadata (namespace, uid, resourceVersion from one global
  counter, creationTimestamp, generation bumped on spec changes), label and field selectors,
  ``kind``/``apiVersion`` on lists and their items, 404 for objects in a missing namespace, 409 on
  duplicates and stale resourceVersions, ``stringData`` folded into Secret ``data``;
- the three patch formats (merge, strategic merge, JSON patch; see ``patching.py``);
- watches with the JSON content type, replay from a resourceVersion (an event log), and WatchList
  (``sendInitialEvents=true``) ending with the ``k8s.io/initial-events-end`` bookmark;
- protobuf request bodies (helm's release Secrets), decoded by ``protobuf_k8s.py``;
- pods, in one of two ways:
  - with a kubelet stand-in (``kubelet.DockerKubelet``, tests marked ``containers``): every Pod
    runs as a real container, the Deployment controller of ``rollouts.py`` rolls out by the real
    readiness of those pods, and ``start_ingress()`` adds the ingress stand-in (``ingress.py``);
  - without one (the fast tests of the deployer's own logic): a controller stand-in gives each
    Deployment a status (observedGeneration, replicas, readyReplicas, conditions ...) and Pods, as
    decided by a readiness policy. A Deployment the policy refuses never becomes ready, so
    ``helm --wait`` times out; its Pods carry a waiting reason (ImagePullBackOff, CrashLoopBackOff
    with a terminated message ...) that ``kubectl get pods`` reads back.

Helm must run with ``--disable-openapi-validation`` (no /openapi documents here) and
``--server-side=false`` (no server-side apply).

``KubeEmulator`` runs the server in a thread with its own event loop on a free loopback port,
writes a kubeconfig, can stop and restart on the same port (an unreachable cluster), and lets
tests read the stored objects.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import datetime
import gzip
import hashlib
import importlib.resources
import json
import re
import secrets
import threading
import uuid
from collections.abc import Callable, Coroutine, Iterator, Mapping
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import aiohttp.web
import attrs
import kmock
from kmock._internal import apps, rendering

from tests.support import patching, protobuf_k8s

if TYPE_CHECKING:
    from modelport.deploy.helm import HelmDriver

T = TypeVar("T")

JsonObj = dict[str, Any]
Key = tuple[str, str, str, str | None, str]  # group, version, plural, namespace, name


@dataclass(frozen=True)
class PodProblem:
    """Why a Deployment's pods never become ready: the container's waiting reason and message;
    with ``exit_code`` the container also shows a last terminated state (a crash loop)."""

    reason: str = "ContainerCreating"
    message: str = ""
    exit_code: int | None = None


Readiness = bool | PodProblem
ReadinessPolicy = Callable[[Mapping[str, Any]], Readiness]


def always_ready(deployment: Mapping[str, Any]) -> Readiness:
    return True


class ApiError(kmock.KubernetesError):
    """A Kubernetes ``Status`` failure with a real StatusReason (client-go checks the reason)."""


def _not_found(plural: str, group: str, name: str) -> ApiError:
    qualified = f"{plural}.{group}" if group else plural
    return ApiError(
        status=404,
        reason="NotFound",
        message=f'{qualified} "{name}" not found',
        details={"name": name, "group": group, "kind": plural},
    )


def _now() -> str:
    return datetime.datetime.now(tz=datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


# --- selectors -------------------------------------------------------------------------------

_SELECTOR_SPLIT = re.compile(r",(?![^()]*\))")


@dataclass(frozen=True)
class _Term:
    op: str  # "=", "!=", "in", "notin", "exists", "!exists"
    key: str
    values: frozenset[str] = frozenset()

    def check(self, value: str | None) -> bool:
        if self.op == "exists":
            return value is not None
        if self.op == "!exists":
            return value is None
        if self.op in ("=", "in"):
            return value in self.values
        return value not in self.values  # "!=", "notin"


def _parse_selector(selector: str | None) -> list[_Term]:
    terms: list[_Term] = []
    for raw in _SELECTOR_SPLIT.split(selector or ""):
        term = raw.strip()
        if not term:
            continue
        if m := re.fullmatch(r"(\S+)\s+(in|notin)\s+\((.*)\)", term):
            terms.append(_Term(m.group(2), m.group(1), frozenset(v.strip() for v in m.group(3).split(","))))
        elif "!=" in term:
            key, value = term.split("!=", 1)
            terms.append(_Term("!=", key.strip(), frozenset({value.strip()})))
        elif "=" in term:
            key, value = term.replace("==", "=").split("=", 1)
            terms.append(_Term("=", key.strip(), frozenset({value.strip()})))
        elif term.startswith("!"):
            terms.append(_Term("!exists", term[1:].strip()))
        else:
            terms.append(_Term("exists", term))
    return terms


def _label_matcher(selector: str | None) -> Callable[[Mapping[str, str]], bool]:
    terms = _parse_selector(selector)
    return lambda labels: all(term.check(labels.get(term.key)) for term in terms)


def _field_value(obj: Mapping[str, Any], path: str) -> str:
    node: Any = obj
    for part in path.split("."):
        node = node.get(part) if isinstance(node, Mapping) else None
    return "" if node is None else str(node)


def _field_matcher(selector: str | None) -> Callable[[Mapping[str, Any]], bool]:
    terms = _parse_selector(selector)
    return lambda obj: all(term.check(_field_value(obj, term.key)) for term in terms)


# --- request routing -------------------------------------------------------------------------


@dataclass(frozen=True)
class Route:
    group: str
    version: str
    plural: str | None
    namespace: str | None
    name: str | None
    subresource: str | None


def parse_route(path: str) -> Route | None:
    parts = [p for p in path.strip("/").split("/") if p]
    if len(parts) >= 2 and parts[0] == "api":
        group, version, rest = "", parts[1], parts[2:]
    elif len(parts) >= 3 and parts[0] == "apis":
        group, version, rest = parts[1], parts[2], parts[3:]
    else:
        return None
    namespace = None
    if rest and rest[0] == "namespaces" and len(rest) >= 3 and rest[2] not in ("status", "finalize"):
        namespace, rest = rest[1], rest[2:]
    if not rest:
        return Route(group, version, None, None, None, None)
    plural = rest[0]
    name = rest[1] if len(rest) > 1 else None
    subresource = "/".join(rest[2:]) or None
    return Route(group, version, plural, namespace, name, subresource)


# --- the handler -------------------------------------------------------------------------------


def _bundled_discovery() -> list[JsonObj]:
    data = importlib.resources.files("kmock._internal").joinpath("resources.json.gz").read_bytes()
    docs: list[JsonObj] = json.loads(gzip.decompress(data))
    # metrics.k8s.io is an aggregated API of a metrics server that is not emulated.
    return [doc for doc in docs if not doc["groupVersion"].startswith("metrics.k8s.io/")]


@attrs.define(kw_only=True)
class ApiServer(kmock.KubernetesEmulator):
    """The kmock handler: discovery through kmock, resource requests served by ``_serve``."""

    readiness: ReadinessPolicy = always_ready
    rollout_delay: float = 0.0
    # With a kubelet stand-in (kubelet.DockerKubelet) pods run as containers and the Deployment
    # controller of rollouts.py follows their readiness; without one the readiness policy decides.
    kubelet: Any = None

    loop: asyncio.AbstractEventLoop | None = attrs.field(default=None, init=False)
    _controller: Any = attrs.field(default=None, init=False)

    _docs: dict[str, JsonObj] = attrs.field(factory=dict, init=False)
    _infos: dict[tuple[str, str, str], JsonObj] = attrs.field(factory=dict, init=False)
    _store: dict[Key, JsonObj] = attrs.field(factory=dict, init=False)
    _log: list[tuple[int, str, str, str, str, JsonObj]] = attrs.field(factory=list, init=False)
    _rv: int = attrs.field(default=100, init=False)
    _changed: asyncio.Event | None = attrs.field(default=None, init=False)
    _stopping: asyncio.Event | None = attrs.field(default=None, init=False)

    def __attrs_post_init__(self) -> None:
        super().__attrs_post_init__()
        for doc in _bundled_discovery():
            self._docs[doc["groupVersion"]] = doc
            group, _, version = doc["groupVersion"].rpartition("/")
            for info in doc["resources"]:
                if "/" not in info["name"]:
                    self._infos[(group, version, info["name"])] = info
        self.resources.load_data(json.dumps(list(self._docs.values())))
        for namespace in ("default", "kube-system", "kube-public"):
            self._put(
                ("", "v1", "namespaces", None, namespace),
                self._new_meta({"metadata": {"name": namespace}}, "", "v1", "namespaces", None),
            )

    # ---- discovery fixes --------------------------------------------------------------------

    async def _serve_version(self, request: rendering.Request) -> rendering.Payload:
        route = parse_route(request.url.path)
        if route is None:
            raise _not_found("", "", request.url.path)
        group_version = f"{route.group}/{route.version}" if route.group else route.version
        if group_version not in self._docs:
            raise _not_found("", "", request.url.path)
        return self._docs[group_version]

    async def _serve_server_version(self, request: rendering.Request) -> rendering.Payload:
        return {
            "major": "1",
            "minor": "35",
            "gitVersion": "v1.35.0",
            "gitCommit": "0000000000000000000000000000000000000000",
            "gitTreeState": "clean",
            "buildDate": "2026-01-01T00:00:00Z",
            "goVersion": "go1.25.0",
            "compiler": "gc",
            "platform": "linux/amd64",
        }

    def _openapi_v3(self, path: str) -> JsonObj:
        """Just enough OpenAPI v3 for client-go's field-validation probe: every PATCH operation
        declares the ``fieldValidation`` parameter, so clients (helm, kubectl) leave validation to
        the server instead of downloading schemas to validate locally. No schemas are served."""
        if path.rstrip("/") == "/openapi/v3":
            return {
                "paths": {
                    ("api/" if "/" not in gv else "apis/") + gv: {
                        "serverRelativeURL": f"/openapi/v3/{'api' if '/' not in gv else 'apis'}/{gv}?hash=0"
                    }
                    for gv in self._docs
                }
            }
        group_version = path.removeprefix("/openapi/v3/").removeprefix("apis/").removeprefix("api/").strip("/")
        doc = self._docs.get(group_version)
        if doc is None:
            raise _not_found("", "", path)
        group, _, version = group_version.rpartition("/")
        prefix = f"/apis/{group_version}" if group else f"/api/{version}"
        paths: JsonObj = {}
        for info in doc["resources"]:
            if "/" in info["name"] or "patch" not in info.get("verbs", []):
                continue
            scope = "/namespaces/{namespace}" if info.get("namespaced") else ""
            paths[f"{prefix}{scope}/{info['name']}/{{name}}"] = {
                "patch": {
                    "operationId": f"patch{info['kind']}",
                    "x-kubernetes-group-version-kind": {"group": group, "version": version, "kind": info["kind"]},
                    "parameters": [
                        {"name": "fieldValidation", "in": "query", "schema": {"type": "string"}},
                        {"name": "fieldManager", "in": "query", "schema": {"type": "string"}},
                        {"name": "dryRun", "in": "query", "schema": {"type": "string"}},
                    ],
                    "responses": {"200": {"description": "OK"}},
                }
            }
        return {
            "openapi": "3.0.0",
            "info": {"title": "Kubernetes", "version": "v1.35.0"},
            "paths": paths,
            "components": {"schemas": {}},
        }

    # ---- entry ------------------------------------------------------------------------------

    async def __call__(self, raw_request: aiohttp.web.BaseRequest) -> aiohttp.web.StreamResponse:
        """As kmock's, but the request is parsed here: kmock's URL parser fails on
        ``/api/v1/namespaces`` (it takes ``namespaces`` for a namespace prefix)."""
        try:
            request = await self._parse(raw_request)
            self._requests.append(request)
            return await self._handle(request)
        except Exception as exc:  # rendered as a Kubernetes Status, as kmock does
            if self._errors and not isinstance(exc, ApiError):
                self._errors[-1].append(exc)
            return await self._render_error(exc)

    async def _parse(self, raw_request: aiohttp.web.BaseRequest) -> rendering.Request:
        body = await raw_request.read()
        route = parse_route(raw_request.path)
        return rendering.Request(
            id=len(self._requests),
            raw_request=raw_request,
            url=raw_request.url,
            method=raw_request.method,
            params=dict(raw_request.query),
            headers=dict(raw_request.headers),
            body=body,
            resource=None if route is None else kmock.resource(route.group, route.version, route.plural or ""),
            namespace=None if route is None else route.namespace,
            name=None if route is None else route.name,
            subresource=None if route is None else route.subresource,
        )

    async def _handle(self, request: rendering.Request) -> aiohttp.web.StreamResponse:
        if request.url.path.startswith("/openapi/v3"):
            return aiohttp.web.json_response(self._openapi_v3(request.url.path))
        route = parse_route(request.url.path)
        if route is None or route.plural is None:
            return await apps.RawHandler._handle(self, request)  # discovery, /version, ...
        return await self._serve(request, route)

    def _info(self, route: Route) -> JsonObj:
        info = self._infos.get((route.group, route.version, route.plural or ""))
        if info is None:
            raise ApiError(
                status=404,
                reason="NotFound",
                message="the server could not find the requested resource",
                details={"group": route.group, "kind": route.plural},
            )
        return info

    async def _serve(self, request: rendering.Request, route: Route) -> aiohttp.web.StreamResponse:
        info = self._info(route)
        method = request.method.value.upper()
        params = request.params
        if method == "GET" and params.get("watch") in ("true", "1"):
            return await self._watch(request, route, info)
        if route.plural == "pods" and (route.subresource or "").split("/")[0] == "proxy" and route.name:
            return await self._proxy(request, route, info)
        if route.subresource == "scale" and route.name is not None:
            return aiohttp.web.json_response(self._scale(request, route, info))
        if method == "GET" and route.name is None:
            return aiohttp.web.json_response(self._list(route, info, params))
        if method == "GET":
            return aiohttp.web.json_response(self._get(route, info))
        body = self._body(request)
        if method == "POST" and route.name is None:
            return aiohttp.web.json_response(self._create(route, info, body, params), status=201)
        if method == "PUT" and route.name is not None:
            return aiohttp.web.json_response(self._replace(route, info, body))
        if method == "PATCH" and route.name is not None:
            content_type = request.headers.get("Content-Type", "")
            return aiohttp.web.json_response(self._patch(route, info, body, content_type))
        if method == "DELETE" and route.name is not None:
            return aiohttp.web.json_response(self._delete(route, info))
        if method == "DELETE":
            for obj in self._select(route, info, params):
                self._delete(
                    Route(
                        route.group,
                        route.version,
                        route.plural,
                        obj["metadata"].get("namespace"),
                        obj["metadata"]["name"],
                        None,
                    ),
                    info,
                )
            return aiohttp.web.json_response(
                {"apiVersion": "v1", "kind": "Status", "status": "Success", "metadata": {}}
            )
        raise ApiError(status=405, reason="MethodNotAllowed", message=f"{method} is not supported here")

    async def _proxy(self, request: rendering.Request, route: Route, info: JsonObj) -> aiohttp.web.StreamResponse:
        """``/api/v1/namespaces/{ns}/pods/{name}[:{port}]/proxy/{path}``: the API server's pod proxy,
        forwarded to the pod's IP (a real container's, with the kubelet stand-in)."""
        if request.method.value.upper() != "GET":
            raise ApiError(status=405, reason="MethodNotAllowed", message="only GET is proxied here")
        assert route.name is not None
        name, _, port = route.name.partition(":")
        pod = self._get(Route(route.group, route.version, "pods", route.namespace, name, None), info)
        ip = (pod.get("status") or {}).get("podIP")
        if not ip:
            raise ApiError(status=503, reason="ServiceUnavailable", message=f"pod {name} has no IP address yet")
        path = (route.subresource or "proxy").split("/", 1)[1] if "/" in (route.subresource or "") else ""
        target = f"http://{ip}:{port or 80}/{path}"
        try:
            async with aiohttp.ClientSession() as session, session.get(
                target, params=request.params, timeout=aiohttp.ClientTimeout(total=10)
            ) as answer:
                body = await answer.read()
                return aiohttp.web.Response(body=body, status=answer.status,
                                            content_type=answer.content_type or "text/plain")
        except aiohttp.ClientError as exc:
            raise ApiError(status=503, reason="ServiceUnavailable",
                           message=f"error trying to reach service: {exc}") from exc

    def _body(self, request: rendering.Request) -> Any:
        if request.headers.get("Content-Type", "").startswith(protobuf_k8s.CONTENT_TYPE):
            try:
                return protobuf_k8s.decode(request.body) if request.body else None
            except protobuf_k8s.ProtobufError as exc:
                raise ApiError(status=415, reason="UnsupportedMediaType", message=str(exc)) from exc
        if not request.body:
            return None
        return json.loads(request.body)

    # ---- storage ----------------------------------------------------------------------------

    def _key(self, route: Route, info: JsonObj, name: str | None = None) -> Key:
        namespace = route.namespace if info.get("namespaced") else None
        return (route.group, route.version, route.plural or "", namespace, name or route.name or "")

    def _next_rv(self) -> str:
        self._rv += 1
        return str(self._rv)

    def _new_meta(self, obj: JsonObj, group: str, version: str, plural: str, namespace: str | None) -> JsonObj:
        info = self._infos[(group, version, plural)]
        obj = copy.deepcopy(obj)
        obj["apiVersion"] = f"{group}/{version}" if group else version
        obj["kind"] = info["kind"]
        meta = obj.setdefault("metadata", {})
        if not meta.get("name") and meta.get("generateName"):
            meta["name"] = meta["generateName"] + secrets.token_hex(3)[:5]
        if namespace is not None:
            meta["namespace"] = namespace
        meta["uid"] = str(uuid.uuid4())
        meta["resourceVersion"] = self._next_rv()
        meta["creationTimestamp"] = _now()
        meta["generation"] = 1
        if plural == "namespaces":
            obj["status"] = {"phase": "Active"}
        return obj

    def _put(self, key: Key, obj: JsonObj, event: str = "ADDED") -> None:
        self._store[key] = obj
        self._emit(key, event, obj)

    def _emit(self, key: Key, event: str, obj: JsonObj) -> None:
        group, version, plural, _, _ = key
        self._log.append((int(obj["metadata"]["resourceVersion"]), group, version, plural, event, copy.deepcopy(obj)))
        if self._changed is not None:
            self._changed.set()
            self._changed = asyncio.Event()
        if self.kubelet is not None:
            self._on_kubelet_event(key, event, obj)
        elif (group, plural) == ("apps", "deployments") and event in ("ADDED", "MODIFIED", "DELETED"):
            self._on_deployment(key, event, obj)

    # ---- pods as containers (a kubelet stand-in attached) ----------------------------------------

    def attach_kubelet(self, kubelet: Any) -> None:
        from tests.support.rollouts import DeploymentController

        self.kubelet = kubelet
        self.loop = asyncio.get_running_loop()
        self._controller = DeploymentController(self)
        kubelet.attach(self)

    def _on_kubelet_event(self, key: Key, event: str, obj: JsonObj) -> None:
        group, _, plural, _, _ = key
        if (group, plural) == ("apps", "deployments"):
            if event == "DELETED":  # the garbage collector: the Deployment's pods go with it
                for pod_key, _ in self._controller.pods_of(key[3], obj["metadata"].get("uid")):
                    self._controller._delete_pod(pod_key)
            else:
                self._controller.schedule(key)
        elif (group, plural) == ("", "pods"):
            if event == "ADDED":
                self.kubelet.pod_added(copy.deepcopy(obj))
            elif event == "DELETED":
                self.kubelet.pod_deleted(obj)
            owner = self._controller.owner_of(obj)
            if owner is not None:
                self._controller.schedule(owner)

    def pod_status(self, namespace: str, name: str, uid: str, status: JsonObj) -> None:
        """The kubelet's report (any thread): the pod's new status, if that pod still exists."""
        assert self.loop is not None
        self.loop.call_soon_threadsafe(self._set_pod_status, ("", "v1", "pods", namespace, name), uid, status)

    def _set_pod_status(self, key: Key, uid: str, status: JsonObj) -> None:
        pod = self._store.get(key)
        if pod is None or pod["metadata"].get("uid") != uid:
            return
        updated = copy.deepcopy(pod)
        updated["status"] = copy.deepcopy(status)
        updated["metadata"]["resourceVersion"] = self._next_rv()
        self._put(key, updated, "MODIFIED")

    def read_object(self, plural: str, namespace: str, name: str) -> JsonObj | None:
        """A stored core/v1 object, read on the loop from any other thread."""
        assert self.loop is not None

        async def read() -> JsonObj | None:
            found = self._store.get(("", "v1", plural, namespace, name))
            return copy.deepcopy(found) if found is not None else None

        return asyncio.run_coroutine_threadsafe(read(), self.loop).result(timeout=30)

    def list_objects(self, plural: str, namespace: str) -> list[JsonObj]:
        """The stored core/v1 objects of a kind in a namespace, read on the loop from any other thread."""
        assert self.loop is not None

        async def read() -> list[JsonObj]:
            return self.snapshot("", "v1", plural, namespace)

        return asyncio.run_coroutine_threadsafe(read(), self.loop).result(timeout=30)

    @staticmethod
    def now() -> str:
        return _now()

    def _namespace_exists(self, namespace: str) -> bool:
        return ("", "v1", "namespaces", None, namespace) in self._store

    def _select(self, route: Route, info: JsonObj, params: Mapping[str, str]) -> list[JsonObj]:
        labels = _label_matcher(params.get("labelSelector"))
        fields = _field_matcher(params.get("fieldSelector"))
        result = []
        for (group, version, plural, namespace, name), obj in self._store.items():
            if (group, version, plural) != (route.group, route.version, route.plural):
                continue
            if info.get("namespaced") and route.namespace is not None and namespace != route.namespace:
                continue
            if route.name is not None and name != route.name:
                continue
            if labels(obj.get("metadata", {}).get("labels") or {}) and fields(obj):
                result.append(obj)
        return result

    def _list(self, route: Route, info: JsonObj, params: Mapping[str, str]) -> JsonObj:
        return {
            "apiVersion": f"{route.group}/{route.version}" if route.group else route.version,
            "kind": f"{info['kind']}List",
            "metadata": {"resourceVersion": str(self._rv)},
            "items": [copy.deepcopy(obj) for obj in self._select(route, info, params)],
        }

    def _get(self, route: Route, info: JsonObj) -> JsonObj:
        obj = self._store.get(self._key(route, info))
        if obj is None:
            raise _not_found(route.plural or "", route.group, route.name or "")
        return copy.deepcopy(obj)

    def _create(self, route: Route, info: JsonObj, body: Any, params: Mapping[str, str]) -> JsonObj:
        if not isinstance(body, dict):
            raise ApiError(status=400, reason="BadRequest", message="the request body is not an object")
        namespace = None
        if info.get("namespaced"):
            namespace = route.namespace or body.get("metadata", {}).get("namespace") or "default"
            if not self._namespace_exists(namespace):
                raise _not_found("namespaces", "", namespace)
        obj = self._new_meta(body, route.group, route.version, route.plural or "", namespace)
        name = obj["metadata"].get("name")
        if not name:
            raise ApiError(status=422, reason="Invalid", message="metadata.name: Required value")
        if info["kind"] == "Secret":
            _fold_string_data(obj)
        key = self._key(Route(route.group, route.version, route.plural, namespace, name, None), info)
        if key in self._store:
            qualified = f"{route.plural}.{route.group}" if route.group else route.plural
            raise ApiError(
                status=409,
                reason="AlreadyExists",
                message=f'{qualified} "{name}" already exists',
                details={"name": name, "group": route.group, "kind": route.plural},
            )
        if "dryRun" in params:
            return obj
        self._put(key, obj)
        return copy.deepcopy(obj)

    def _store_update(self, key: Key, old: JsonObj, new: JsonObj, info: JsonObj) -> JsonObj:
        meta = new.setdefault("metadata", {})
        for field in ("uid", "creationTimestamp", "name", "namespace", "generation"):
            if field in old["metadata"]:
                meta[field] = old["metadata"][field]
        new["apiVersion"], new["kind"] = old["apiVersion"], old["kind"]
        if info["kind"] == "Secret":
            _fold_string_data(new)
        strip = ("metadata", "status")
        if {k: v for k, v in new.items() if k not in strip} != {k: v for k, v in old.items() if k not in strip}:
            meta["generation"] = int(old["metadata"].get("generation", 1)) + 1
        meta["resourceVersion"] = self._next_rv()
        self._put(key, new, "MODIFIED")
        return copy.deepcopy(new)

    def _replace(self, route: Route, info: JsonObj, body: Any) -> JsonObj:
        key = self._key(route, info)
        old = self._store.get(key)
        if old is None:
            raise _not_found(route.plural or "", route.group, route.name or "")
        if not isinstance(body, dict):
            raise ApiError(status=400, reason="BadRequest", message="the request body is not an object")
        expected = body.get("metadata", {}).get("resourceVersion")
        if expected and expected != old["metadata"]["resourceVersion"]:
            raise ApiError(
                status=409,
                reason="Conflict",
                message=f'Operation cannot be fulfilled on {route.plural} "{route.name}": the object has been modified',
            )
        new = copy.deepcopy(body)
        if route.subresource == "status":
            new = dict(copy.deepcopy(old), status=body.get("status"))
        elif "status" in old:
            new["status"] = copy.deepcopy(old["status"])
        return self._store_update(key, old, new, info)

    def _patch(self, route: Route, info: JsonObj, body: Any, content_type: str) -> JsonObj:
        key = self._key(route, info)
        old = self._store.get(key)
        if old is None:
            raise _not_found(route.plural or "", route.group, route.name or "")
        if content_type.startswith("application/merge-patch+json"):
            new = patching.merge_patch(old, body)
        elif content_type.startswith("application/strategic-merge-patch+json"):
            new = patching.strategic_merge_patch(old, body)
        elif content_type.startswith("application/json-patch+json"):
            new = patching.json_patch(old, body)
        else:
            raise ApiError(
                status=415,
                reason="UnsupportedMediaType",
                message=f"the emulator does not support {content_type!r} patches (use --server-side=false)",
            )
        if route.subresource != "status" and "status" in old:
            new["status"] = copy.deepcopy(old["status"])
        return self._store_update(key, old, new, info)

    def _scale(self, request: rendering.Request, route: Route, info: JsonObj) -> JsonObj:
        """The ``scale`` subresource (autoscaling/v1 Scale) of Deployments and the like."""
        key = self._key(route, info)
        obj = self._store.get(key)
        if obj is None:
            raise _not_found(route.plural or "", route.group, route.name or "")
        method = request.method.value.upper()
        if method in ("PUT", "PATCH"):
            body: Any = self._body(request) or {}
            if method == "PATCH" and request.headers.get("Content-Type", "").startswith("application/json-patch"):
                body = patching.json_patch({"spec": {"replicas": obj["spec"].get("replicas")}}, body)
            replicas = (body.get("spec") or {}).get("replicas")
            if replicas is not None:
                new = copy.deepcopy(obj)
                new["spec"]["replicas"] = int(replicas)
                obj = self._store_update(key, obj, new, info)
        selector = (obj.get("spec", {}).get("selector") or {}).get("matchLabels") or {}
        return {
            "apiVersion": "autoscaling/v1",
            "kind": "Scale",
            "metadata": {
                k: obj["metadata"][k] for k in ("name", "namespace", "uid", "resourceVersion") if k in obj["metadata"]
            },
            "spec": {"replicas": obj["spec"].get("replicas", 1)},
            "status": {
                "replicas": (obj.get("status") or {}).get("replicas", 0),
                "selector": ",".join(f"{k}={v}" for k, v in selector.items()),
            },
        }

    def _delete(self, route: Route, info: JsonObj) -> JsonObj:
        key = self._key(route, info)
        obj = self._store.pop(key, None)
        if obj is None:
            raise _not_found(route.plural or "", route.group, route.name or "")
        obj = copy.deepcopy(obj)
        obj["metadata"]["resourceVersion"] = self._next_rv()
        self._emit(key, "DELETED", obj)
        if info["kind"] == "Namespace":
            for other in [k for k in self._store if k[3] == route.name]:
                deleted = self._store.pop(other, None)
                if deleted is None:
                    continue  # already gone with its owner
                deleted["metadata"]["resourceVersion"] = self._next_rv()
                self._emit(other, "DELETED", deleted)
        return obj

    # ---- watches ----------------------------------------------------------------------------

    async def _watch(self, request: rendering.Request, route: Route, info: JsonObj) -> aiohttp.web.StreamResponse:
        assert request._raw_request is not None
        params = request.params
        labels = _label_matcher(params.get("labelSelector"))
        fields = _field_matcher(params.get("fieldSelector"))
        api_version = f"{route.group}/{route.version}" if route.group else route.version

        def matches(obj: JsonObj) -> bool:
            meta = obj.get("metadata", {})
            if info.get("namespaced") and route.namespace is not None and meta.get("namespace") != route.namespace:
                return False
            if route.name is not None and meta.get("name") != route.name:
                return False
            return labels(meta.get("labels") or {}) and fields(obj)

        response = aiohttp.web.StreamResponse(headers={"Content-Type": "application/json"})
        await response.prepare(request._raw_request)
        chunks: list[JsonObj] = []
        since = params.get("resourceVersion", "")
        index = len(self._log)
        if params.get("sendInitialEvents") == "true" or since in ("", "0"):
            chunks += [
                {"type": "ADDED", "object": copy.deepcopy(o)} for o in self._select(route, info, {}) if matches(o)
            ]
            if params.get("sendInitialEvents") == "true":
                chunks.append(
                    {
                        "type": "BOOKMARK",
                        "object": {
                            "apiVersion": api_version,
                            "kind": info["kind"],
                            "metadata": {
                                "resourceVersion": str(self._rv),
                                "annotations": {"k8s.io/initial-events-end": "true"},
                            },
                        },
                    }
                )
        else:
            index = next((i for i, entry in enumerate(self._log) if entry[0] > int(since)), len(self._log))
        loop = asyncio.get_running_loop()
        deadline = loop.time() + float(params.get("timeoutSeconds") or 1800)
        stopping = self._stopping
        try:
            while True:
                for chunk in chunks:
                    await response.write(json.dumps(chunk).encode() + b"\n")
                chunks = []
                while index < len(self._log):
                    _, group, version, plural, event, obj = self._log[index]
                    index += 1
                    if (group, version, plural) == (route.group, route.version, route.plural) and matches(obj):
                        chunks.append({"type": event, "object": obj})
                if chunks:
                    continue
                remaining = deadline - loop.time()
                if remaining <= 0 or stopping is None or stopping.is_set() or self._changed is None:
                    break
                waiters = [asyncio.ensure_future(self._changed.wait()), asyncio.ensure_future(stopping.wait())]
                _, pending = await asyncio.wait(waiters, timeout=remaining, return_when=asyncio.FIRST_COMPLETED)
                for waiter in pending:
                    waiter.cancel()
            await response.write_eof()
        except (ConnectionError, RuntimeError):
            pass  # the client went away
        return response

    # ---- the controller stand-in ------------------------------------------------------------

    def _on_deployment(self, key: Key, event: str, obj: JsonObj) -> None:
        if event == "DELETED":
            self._sync_pods(key, obj, None, 0)
            return
        status = obj.get("status") or {}
        if status.get("observedGeneration") == obj["metadata"].get("generation"):
            return  # the status is current; this event was the status write itself
        loop = asyncio.get_running_loop()
        loop.call_later(self.rollout_delay, self._roll_out, key)

    def _roll_out(self, key: Key) -> None:
        obj = self._store.get(key)
        if obj is None:
            return
        generation = obj["metadata"].get("generation", 1)
        if (obj.get("status") or {}).get("observedGeneration") == generation:
            return
        replicas = int(obj.get("spec", {}).get("replicas", 1))
        verdict = self.readiness(copy.deepcopy(obj)) if replicas else True
        problem = None if verdict is True else (verdict if isinstance(verdict, PodProblem) else PodProblem())
        if problem is None:
            status: JsonObj = {
                "observedGeneration": generation,
                "replicas": replicas,
                "updatedReplicas": replicas,
                "readyReplicas": replicas,
                "availableReplicas": replicas,
                "conditions": [
                    _condition("Available", "True", "MinimumReplicasAvailable", "Deployment has minimum availability."),
                    _condition(
                        "Progressing", "True", "NewReplicaSetAvailable", "ReplicaSet has successfully progressed."
                    ),
                ],
            }
        else:
            status = {
                "observedGeneration": generation,
                "replicas": replicas,
                "updatedReplicas": replicas,
                "unavailableReplicas": replicas,
                "conditions": [
                    _condition(
                        "Available",
                        "False",
                        "MinimumReplicasUnavailable",
                        "Deployment does not have minimum availability.",
                    ),
                    _condition("Progressing", "True", "ReplicaSetUpdated", "ReplicaSet is progressing."),
                ],
            }
        new = copy.deepcopy(obj)
        new["status"] = status
        new["metadata"]["resourceVersion"] = self._next_rv()
        self._put(key, new, "MODIFIED")
        self._sync_pods(key, new, problem, replicas)

    def _sync_pods(self, key: Key, deployment: JsonObj, problem: PodProblem | None, replicas: int) -> None:
        _, _, _, namespace, name = key
        template = deployment.get("spec", {}).get("template", {})
        pod_hash = hashlib.sha256(json.dumps(template, sort_keys=True).encode()).hexdigest()[:10]
        uid = deployment["metadata"].get("uid")
        owned = [
            k
            for k, pod in self._store.items()
            if k[:4] == ("", "v1", "pods", namespace)
            and any(ref.get("uid") == uid for ref in pod["metadata"].get("ownerReferences", []))
        ]
        for pod_key in owned:
            pod = self._store.pop(pod_key)
            pod["metadata"]["resourceVersion"] = self._next_rv()
            self._emit(pod_key, "DELETED", pod)
        containers = template.get("spec", {}).get("containers", [])
        for index in range(replicas):
            pod_name = f"{name}-{pod_hash}-{index}"
            new_pod: JsonObj = {
                "metadata": {
                    "name": pod_name,
                    "labels": dict(template.get("metadata", {}).get("labels") or {}, **{"pod-template-hash": pod_hash}),
                    "ownerReferences": [
                        {"apiVersion": "apps/v1", "kind": "Deployment", "name": name, "uid": uid, "controller": True}
                    ],
                },
                "spec": copy.deepcopy(template.get("spec", {})),
                "status": _pod_status(containers, problem),
            }
            self._put(("", "v1", "pods", namespace, pod_name), self._new_meta(new_pod, "", "v1", "pods", namespace))

    # ---- for the test thread ----------------------------------------------------------------

    def snapshot(self, group: str, version: str, plural: str, namespace: str | None) -> list[JsonObj]:
        return [
            copy.deepcopy(obj)
            for (g, v, p, ns, _), obj in self._store.items()
            if (g, v, p) == (group, version, plural) and (namespace is None or ns == namespace)
        ]

    def resource_for(self, kind_or_plural: str) -> tuple[str, str, str]:
        preferred = {"Ingress": ("networking.k8s.io", "v1", "ingresses"), "Event": ("", "v1", "events")}
        if kind_or_plural in preferred:
            return preferred[kind_or_plural]
        if "/" in kind_or_plural:
            group_version, _, plural = kind_or_plural.rpartition("/")
            group, _, version = group_version.rpartition("/")
            return group, version, plural
        for (group, version, plural), info in self._infos.items():
            if kind_or_plural in (info["kind"], plural):
                return group, version, plural
        raise KeyError(f"unknown kind {kind_or_plural!r}")


def _condition(kind: str, status: str, reason: str, message: str) -> JsonObj:
    now = _now()
    return {
        "type": kind,
        "status": status,
        "reason": reason,
        "message": message,
        "lastUpdateTime": now,
        "lastTransitionTime": now,
    }


def _pod_status(containers: list[JsonObj], problem: PodProblem | None) -> JsonObj:
    statuses = []
    for container in containers:
        status: JsonObj = {
            "name": container.get("name", "main"),
            "image": container.get("image", ""),
            "restartCount": 0,
        }
        if problem is None:
            status.update(ready=True, started=True, state={"running": {"startedAt": _now()}})
        else:
            status.update(
                ready=False, started=False, state={"waiting": {"reason": problem.reason, "message": problem.message}}
            )
            if problem.exit_code is not None:
                status["restartCount"] = 3
                status["lastState"] = {
                    "terminated": {
                        "exitCode": problem.exit_code,
                        "reason": "Error",
                        "message": problem.message,
                        "finishedAt": _now(),
                    }
                }
        statuses.append(status)
    ready = "True" if problem is None else "False"
    return {
        "phase": "Running" if problem is None or problem.exit_code is not None else "Pending",
        "conditions": [{"type": "Ready", "status": ready}, {"type": "ContainersReady", "status": ready}],
        "containerStatuses": statuses,
    }


def _fold_string_data(secret: JsonObj) -> None:
    import base64

    string_data = secret.pop("stringData", None) or {}
    for key, value in string_data.items():
        secret.setdefault("data", {})[key] = base64.b64encode(str(value).encode()).decode("ascii")


# --- the harness -------------------------------------------------------------------------------


class KubeEmulator:
    """The emulator on a loopback port, served from a background thread.

    ``start()`` / ``stop()`` toggle the HTTP server (the port is kept, so a stopped emulator is
    an unreachable cluster and a restarted one has the same objects). ``close()`` ends the thread.
    """

    def __init__(
        self,
        directory: Path,
        *,
        readiness: ReadinessPolicy = always_ready,
        rollout_delay: float = 0.0,
        host: str = "127.0.0.1",
        kubelet: Any = None,
    ) -> None:
        """``readiness`` decides per Deployment whether it becomes ready (True) or not (a
        PodProblem, or False); ``rollout_delay`` is how long a rollout takes (0: at once). With a
        ``kubelet`` (``kubelet.DockerKubelet``, owned by the caller) pods run as real containers
        and neither applies: readiness is what the containers' probes say."""
        self.directory = directory
        self.host = host
        self.kubeconfig = directory / "kubeconfig"
        self._port: int | None = None
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="kube-emulator", daemon=True)
        self._thread.start()
        self.api: ApiServer = self._call(self._make_api(readiness, rollout_delay, kubelet))
        self._server: kmock.Server | None = None
        self._ingress: Any = None
        self._service_proxy: Any = None

    async def _make_api(self, readiness: ReadinessPolicy, rollout_delay: float, kubelet: Any) -> ApiServer:
        api = ApiServer(readiness=readiness, rollout_delay=rollout_delay)
        await api.__aenter__()
        api._changed = asyncio.Event()
        if kubelet is not None:
            api.attach_kubelet(kubelet)
        return api

    def _call(self, coro: Coroutine[Any, Any, T]) -> T:
        future: Future[T] = asyncio.run_coroutine_threadsafe(coro, self._loop)
        return future.result(timeout=30)

    # ---- lifecycle --------------------------------------------------------------------------

    @property
    def running(self) -> bool:
        return self._server is not None

    @property
    def port(self) -> int:
        if self._port is None:
            raise RuntimeError("the emulator has not been started")
        return self._port

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self) -> KubeEmulator:
        if self._server is None:
            self._server = self._call(self._start_server())
            self._port = self._server.port
            self._write_kubeconfig()
        return self

    async def _start_server(self) -> kmock.Server:
        self.api._stopping = asyncio.Event()
        server = kmock.Server(self.api, host=self.host, port=self._port)
        await server.__aenter__()
        return server

    def stop(self) -> None:
        if self._server is not None:
            self._call(self._stop_server(self._server))
            self._server = None

    async def _stop_server(self, server: kmock.Server) -> None:
        if self.api._stopping is not None:
            self.api._stopping.set()
        await server.__aexit__(None, None, None)

    def start_ingress(self, host: str = "127.0.0.1", port: int = 0) -> str:
        """Start the ingress stand-in (ingress.IngressProxy) on this emulator's loop; its base URL."""
        from tests.support.ingress import IngressProxy

        if self._ingress is None:
            self._ingress = IngressProxy(self.api)
            self._call(self._ingress.start(host, port))
        return f"http://{host}:{self._ingress.port}"

    def start_service_proxy(self, host: str, port: int = 80) -> None:
        """Start the kube-proxy stand-in (ingress.ServiceProxy) on ``host:port`` (the kubelet
        stand-in's gateway and the chart's Service port) on this emulator's loop."""
        from tests.support.ingress import ServiceProxy

        if self._service_proxy is None:
            self._service_proxy = ServiceProxy(self.api)
            self._call(self._service_proxy.start(host, port))

    def close(self) -> None:
        self.stop()
        if self._service_proxy is not None:
            self._call(self._service_proxy.stop())
        if self._ingress is not None:
            self._call(self._ingress.stop())
        self._call(self.api.__aexit__(None, None, None))
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._loop.close()

    def __enter__(self) -> KubeEmulator:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _write_kubeconfig(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "emulator", "cluster": {"server": self.url}}],
            "users": [{"name": "emulator", "user": {"token": "emulator"}}],
            "contexts": [{"name": "emulator", "context": {"cluster": "emulator", "user": "emulator"}}],
            "current-context": "emulator",
        }
        self.kubeconfig.write_text(json.dumps(config, indent=2))
        self.kubeconfig.chmod(0o600)

    # ---- policy -----------------------------------------------------------------------------

    @property
    def readiness(self) -> ReadinessPolicy:
        return self.api.readiness

    @readiness.setter
    def readiness(self, policy: ReadinessPolicy) -> None:
        self.api.readiness = policy

    # ---- reading the state ------------------------------------------------------------------

    def objects(self, kind: str, namespace: str | None = None) -> list[JsonObj]:
        """Stored objects of a kind (``Deployment``, ``deployments`` or ``apps/v1/deployments``),
        in one namespace or all."""
        group, version, plural = self.api.resource_for(kind)

        async def read() -> list[JsonObj]:
            return self.api.snapshot(group, version, plural, namespace)

        return self._call(read())

    def wait_for(
        self, kind: str, namespace: str | None, predicate: Callable[[list[JsonObj]], bool], timeout: float = 30
    ) -> list[JsonObj]:
        """Wait (on the emulator's change notifications, no polling) until ``predicate`` holds for
        the objects of a kind; return them. TimeoutError if it does not within ``timeout`` s."""
        group, version, plural = self.api.resource_for(kind)

        async def wait() -> list[JsonObj]:
            loop = asyncio.get_running_loop()
            deadline = loop.time() + timeout
            while True:
                changed = self.api._changed
                objects = self.api.snapshot(group, version, plural, namespace)
                if predicate(objects):
                    return objects
                if changed is None or loop.time() >= deadline:
                    raise TimeoutError(f"{kind} objects never matched the condition")
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(changed.wait(), deadline - loop.time())

        future: Future[list[JsonObj]] = asyncio.run_coroutine_threadsafe(wait(), self._loop)
        return future.result(timeout=timeout + 5)

    def get(self, kind: str, namespace: str | None, name: str) -> JsonObj | None:
        for obj in self.objects(kind, namespace):
            if obj["metadata"]["name"] == name:
                return obj
        return None

    def namespaces(self) -> list[str]:
        return sorted(obj["metadata"]["name"] for obj in self.objects("Namespace"))

    def requests(self) -> Iterator[tuple[str, str]]:
        """(method, path with query) of every request served so far."""
        for request in list(self.api._requests):
            yield request.method.value, str(request.url.relative())

    # ---- a driver for it --------------------------------------------------------------------

    def helm_driver(self, *, helm: str | Path, kubectl: str | Path, chart: str | Path, **kwargs: Any) -> HelmDriver:
        """A HelmDriver pointed at this emulator, with the two flags the emulator needs
        (``--server-side=false``, ``--disable-openapi-validation``); never production defaults."""
        from modelport.deploy.helm import HelmDriver
        from modelport.settings import Settings

        kwargs.setdefault("work_dir", self.directory / "helm-work")
        kwargs.setdefault("settings", Settings())
        return HelmDriver(
            helm_bin=str(helm),
            kubectl_bin=str(kubectl),
            kubeconfig=self.kubeconfig,
            chart=chart,
            server_side="false",
            openapi_validation=False,
            **kwargs,
        )

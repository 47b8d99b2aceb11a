"""An ingress controller stand-in: an HTTP proxy that routes by the emulator's stored Ingresses.

No ingress-nginx can run here (no cluster), so this plays it in front of the kubelet stand-in's
containers (``kubelet.py``), as the chart's Ingress asks ingress-nginx to:

- the Ingresses of the served class (``nginx``; those naming no class too) in every namespace;
  a rule matches the request's host (no host: any host) and its path by ``pathType``:
  ``Exact``, or ``Prefix`` / ``ImplementationSpecific`` matched element by element
  (``/api/v1/predict/1`` matches ``/api/v1/predict/1`` and ``/api/v1/predict/1/v2/...``, never
  ``/api/v1/predict/12``); the longest path wins;
- the backend Service (by name and port name or number) in the Ingress's namespace, its
  ``targetPort`` (a number, or the name of a container port), and its endpoints: the pods its
  selector matches that are Ready and have an IP, taken in turn (round robin);
- ingress-nginx's canary annotations: an Ingress with ``nginx.ingress.kubernetes.io/canary: "true"``
  and ``canary-weight: N`` on the same host and path as a main Ingress takes N of every 100 of
  its requests (spread evenly, in a fixed order, so a test's counts are exact); a canary alone
  is never a route, and a canary with no ready endpoint leaves all to the main one;
- no matching rule: 404, as ingress-nginx's default backend; no ready endpoint: 503; an
  endpoint that does not answer: 502. The path is passed on unchanged (no rewrite: the model
  server serves under its ROOT_PATH).

It runs on the emulator's event loop and reads the store there, so it always sees the current
objects; requests and responses are streamed through (hop-by-hop headers dropped, as a proxy
must).
"""

from __future__ import annotations

import itertools
from typing import TYPE_CHECKING, Any

import aiohttp
import aiohttp.web

from tests.support.rollouts import pod_ready

if TYPE_CHECKING:
    from tests.support.kube_emulator import ApiServer

JsonObj = dict[str, Any]
HOP_BY_HOP = {
    "connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te", "trailers",
    "transfer-encoding", "upgrade", "host", "content-length",
}  # fmt: skip


def path_matches(rule_path: str, path_type: str, path: str) -> bool:
    if path_type == "Exact":
        return path == rule_path
    prefix = rule_path.rstrip("/")
    return prefix == "" or path == prefix or path.startswith(prefix + "/")


CANARY = "nginx.ingress.kubernetes.io/canary"
CANARY_WEIGHT = "nginx.ingress.kubernetes.io/canary-weight"


def canary_weight(ingress: JsonObj) -> int | None:
    """The canary's percentage; None for a main Ingress."""
    annotations = (ingress.get("metadata") or {}).get("annotations") or {}
    if annotations.get(CANARY) != "true":
        return None
    return max(0, min(100, int(annotations.get(CANARY_WEIGHT, "0") or 0)))


def _same_rule(main: JsonObj, canary: JsonObj, path: str) -> bool:
    """ingress-nginx pairs a canary with the main Ingress of the same host and path."""
    def rules(obj: JsonObj) -> set[tuple[str, str]]:
        return {(rule.get("host") or "", entry.get("path") or "/")
                for rule in (obj.get("spec") or {}).get("rules") or []
                for entry in (rule.get("http") or {}).get("paths") or []
                if path_matches(entry.get("path") or "/", entry.get("pathType", "Prefix"), path)}
    return bool(rules(main) & rules(canary))


class IngressProxy:
    def __init__(self, api: ApiServer, *, ingress_class: str = "nginx") -> None:
        self.api = api
        self.ingress_class = ingress_class
        self._turn = itertools.count()
        self._canary_turn: dict[str, itertools.count[int]] = {}
        self._session: aiohttp.ClientSession | None = None
        self._runner: aiohttp.web.AppRunner | None = None
        self.port = 0

    # ---- routing ------------------------------------------------------------------------------

    def route(self, host: str, path: str, *, canary: bool = False) -> tuple[str, JsonObj, JsonObj] | None:
        """(namespace, Service backend, Ingress) of the longest matching rule of the main Ingresses
        (``canary``: of the canary ones); None if no rule."""
        best: tuple[int, str, JsonObj, JsonObj] | None = None
        for obj in self.api.snapshot("networking.k8s.io", "v1", "ingresses", None):
            spec = obj.get("spec") or {}
            if spec.get("ingressClassName") not in (None, self.ingress_class):
                continue
            if (canary_weight(obj) is not None) != canary:
                continue
            for rule in spec.get("rules") or []:
                if rule.get("host") and rule["host"] != host:
                    continue
                for entry in (rule.get("http") or {}).get("paths") or []:
                    rule_path = entry.get("path") or "/"
                    if path_matches(rule_path, entry.get("pathType", "Prefix"), path):
                        candidate = (len(rule_path), obj["metadata"]["namespace"], entry["backend"]["service"], obj)
                        if best is None or candidate[0] > best[0]:
                            best = candidate
        return None if best is None else (best[1], best[2], best[3])

    def endpoints(self, namespace: str, backend: JsonObj) -> list[str] | None:
        """Ready ``ip:port`` of the backend Service's pods; None when the Service is missing."""
        services = [s for s in self.api.snapshot("", "v1", "services", namespace)
                    if s["metadata"]["name"] == backend["name"]]
        if not services:
            return None
        service = services[0]["spec"]
        wanted = backend.get("port") or {}
        port = next((p for p in service.get("ports") or []
                     if p.get("name") == wanted.get("name") or p.get("port") == wanted.get("number")), None)
        if port is None:
            return []
        target = port.get("targetPort", port.get("port"))
        selector = service.get("selector") or {}
        found = []
        for pod in self.api.snapshot("", "v1", "pods", namespace):
            labels = pod["metadata"].get("labels") or {}
            ip = (pod.get("status") or {}).get("podIP")
            if not selector or any(labels.get(k) != v for k, v in selector.items()) or not ip or not pod_ready(pod):
                continue
            number = target
            if isinstance(target, str):
                ports = [p for c in pod["spec"].get("containers") or [] for p in c.get("ports") or []]
                number = next((p["containerPort"] for p in ports if p.get("name") == target), None)
            if number is not None:
                found.append(f"{ip}:{number}")
        return sorted(found)

    # ---- serving ------------------------------------------------------------------------------

    async def handle(self, request: aiohttp.web.Request) -> aiohttp.web.StreamResponse:
        host = request.host.rsplit(":", 1)[0] if request.host else ""
        routed = self.route(host, request.path)
        if routed is None:
            return aiohttp.web.Response(status=404, text="default backend - 404")
        namespace, backend, main = routed
        canary = self.route(host, request.path, canary=True)
        if canary is not None and _same_rule(main, canary[2], request.path):
            weight = canary_weight(canary[2]) or 0
            n = next(self._canary_turn.setdefault(canary[2]["metadata"]["uid"], itertools.count()))
            if (n + 1) * weight // 100 > n * weight // 100 and self.endpoints(canary[0], canary[1]):
                namespace, backend = canary[0], canary[1]
        endpoints = self.endpoints(namespace, backend)
        if not endpoints:
            return aiohttp.web.Response(status=503, text="503 Service Temporarily Unavailable")
        endpoint = endpoints[next(self._turn) % len(endpoints)]
        headers = {k: v for k, v in request.headers.items() if k.lower() not in HOP_BY_HOP}
        headers["X-Forwarded-For"] = request.remote or ""
        headers["X-Forwarded-Host"] = request.host
        assert self._session is not None
        body = await request.read()
        try:
            async with self._session.request(
                request.method, f"http://{endpoint}{request.rel_url}", headers=headers, data=body,
                allow_redirects=False,
            ) as upstream:
                response = aiohttp.web.StreamResponse(
                    status=upstream.status,
                    headers={k: v for k, v in upstream.headers.items() if k.lower() not in HOP_BY_HOP},
                )
                await response.prepare(request)
                async for chunk in upstream.content.iter_chunked(64 * 1024):
                    await response.write(chunk)
                await response.write_eof()
                return response
        except (aiohttp.ClientConnectionError, TimeoutError):
            return aiohttp.web.Response(status=502, text="502 Bad Gateway")

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> int:
        self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=120), auto_decompress=False)
        app = aiohttp.web.Application(client_max_size=1024**3)
        app.router.add_route("*", "/{tail:.*}", self.handle)
        self._runner = aiohttp.web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = aiohttp.web.TCPSite(self._runner, host, port)
        await site.start()
        server = site._server
        assert server is not None
        self.port = server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        return self.port

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
        if self._session is not None:
            await self._session.close()


class ServiceProxy(IngressProxy):
    """The kube-proxy and cluster DNS stand-in: what a pod reaches at a Service's name.

    The kubelet stand-in maps every Service's DNS name to its network's gateway, where this
    listens on the Services' port (the chart's 80); a request is routed by its ``Host`` (``svc``,
    ``svc.ns``, ``svc.ns.svc[.cluster.local]``) to that Service's ready endpoints, as the ingress
    routes (targetPort, round robin, 503 with no ready endpoint, 502 when it does not answer).
    A bare name that two namespaces share is not routed (404): a real resolver would take the
    pod's own namespace; the tests keep one namespace per cluster. HTTP only, which is all that
    pods send one another here (a live model server's copies to its shadow).
    """

    def route(self, host: str, path: str, *, canary: bool = False) -> tuple[str, JsonObj, JsonObj] | None:
        if canary:
            return None
        name, _, rest = host.partition(".")
        namespace = rest.split(".", 1)[0] or None
        services = [s for s in self.api.snapshot("", "v1", "services", namespace) if s["metadata"]["name"] == name]
        if len(services) != 1:
            return None
        service = services[0]
        return service["metadata"]["namespace"], {"name": name, "port": {"number": self.port}}, service

"""The model server's transport: a raw ASGI app (no framework validation on the hot path).

Routing, the deployment token, body limits and the lifespan (which starts ``loading`` in a
thread); everything a route answers comes from the data plane (``dataplane``) shaped by the
protocol's codec (``protocols/``). Routes (every one also under ROOT_PATH, e.g.
``/api/v1/predict/7/predict``, so the server works behind an ingress with or without a rewrite):

- seed: ``POST /predict`` (``protocols.seed``).
- KServe V1: ``GET /v1/models``, ``GET /v1/models/{name}``, ``POST /v1/models/{name}:predict``.
- Open Inference Protocol V2: ``GET /v2``, ``/v2/health/live``, ``/v2/health/ready``,
  ``/v2/models/{name}[/versions/{v}]``, ``.../ready``, ``POST .../infer``.
- a shadow's copies from its live server: ``POST /mirror`` (``protocols.mirror``).
- ``GET /healthz`` (the process), ``GET /readyz`` (503 until the model is loaded), ``GET /metrics``.

A load failure calls the data plane's ``on_failure`` (the server then exits non-zero with it).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import time
from collections.abc import Awaitable, Callable
from typing import Any

from modelport.domain.model_server import ServerConfig
from modelport.serving import loading, metrics
from modelport.serving.dataplane import DataPlane, Receive, Scope
from modelport.serving.errors import Disconnected, InputError
from modelport.serving.protocols import Codec, dumps, mirror, seed, v1, v2
from modelport.serving.sandbox import Confinement

Send = Callable[[dict[str, Any]], Awaitable[None]]

JSON = b"application/json"


class App:
    """ASGI application serving one model."""

    def __init__(self, config: ServerConfig, *, autoload: bool = True,
                 restart: Callable[[], object] | None = None, confinement: Confinement | None = None) -> None:
        self.config = config
        self.autoload = autoload
        self.restart = restart
        self.plane = DataPlane(config, confinement)
        self._recorder = self.plane.recorder
        self._root = config.root_path
        self._name = config.model_name
        self._limit = config.max_request_bytes
        self._seed: Codec = seed.Codec(self._name)
        self._v1: Codec = v1.Codec(self._name)
        self._v2: Codec = v2.Codec(self._name)
        self._mirror: Codec = mirror.Codec(self._name)
        self._read_body = self._body  # bound once: handed to the data plane on every request
        self._static: dict[str, Callable[..., Awaitable[None]]] = {
            "/predict": self._seed_predict,
            "/mirror": self._mirror_predict,
            "/healthz": self._healthz,
            "/readyz": self._readyz,
            "/metrics": self._metrics,
            "/v1/models": self._v1_list,
            "/v2": self._v2_server,
            "/v2/health/live": self._healthz,
            "/v2/health/ready": self._ready_v2,
            "/": self._index,
        }
        # with a deployment token, only the probes' routes answer without it
        self._token_sha256 = config.predict_token_sha256
        self._open_paths = {"/healthz", "/readyz", "/v2/health/live", "/v2/health/ready"}

    # --- lifecycle -------------------------------------------------------------------------------

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                if self.autoload:
                    loading.start(self.config, asyncio.get_running_loop(), self.plane.set_runner, self.plane.fail,
                                  self.restart, self.plane.confinement)
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.plane.stop()
                await send({"type": "lifespan.shutdown.complete"})
                return

    # --- dispatch --------------------------------------------------------------------------------

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind != "http":
            if kind == "lifespan":
                await self._lifespan(receive, send)
            return
        path: str = scope["path"]
        root = self._root
        # /metrics at the bare path (not under the root path) answers without the token: only what
        # reaches the pod itself gets there (Prometheus, the API server's pod proxy the deployer's
        # sampler uses, the local driver); the ingress and the local gateway route only under the root path
        direct_metrics = bool(root) and path == "/metrics"
        if root and path.startswith(root) and (len(path) == len(root) or path[len(root)] == "/"):
            path = path[len(root):] or "/"
        if len(path) > 1 and path.endswith("/"):
            path = path.rstrip("/")
        if self._token_sha256 is not None and path not in self._open_paths and not direct_metrics \
                and not self._authorized(scope):
            await self._json(send, 401, {"code": "unauthorized", "error": "unauthorized",
                                         "message": "this deployment needs 'Authorization: Bearer <token>' "
                                                    "(modelport deployments token ID)"}, "other")
            return
        handler = self._static.get(path)
        try:
            if handler is not None:
                await handler(scope, receive, send)
            elif path.startswith("/v1/models/"):
                await self._v1_model(path[len("/v1/models/"):], scope, receive, send)
            elif path.startswith("/v2/models/"):
                await self._v2_model(path[len("/v2/models/"):], scope, receive, send)
            else:
                await self._json(send, 404, {"code": "not_found", "message": f"no route {scope['path']}",
                                             "error": f"no route {scope['path']}"}, "other")
        except Disconnected:
            return

    # --- helpers ---------------------------------------------------------------------------------

    def _authorized(self, scope: Scope) -> bool:
        for key, value in scope["headers"]:
            if key == b"authorization":
                scheme, _, token = value.decode("latin-1").partition(" ")
                digest = hashlib.sha256(token.strip().encode()).hexdigest()
                return scheme.lower() == "bearer" and hmac.compare_digest(digest, self._token_sha256 or "")
        return False

    async def _send(self, send: Send, status: int, body: bytes, content_type: bytes = JSON) -> None:
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-type", content_type), (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})

    async def _json(self, send: Send, status: int, value: Any, endpoint: str, started: float | None = None) -> None:
        await self._send(send, status, dumps(value))
        self._recorder.observe(endpoint, status, time.perf_counter() - started if started else 0.0)

    async def _error(self, send: Send, codec: Codec, status: int, message: str, code: str, endpoint: str) -> None:
        await self._json(send, status, codec.error(message, code), endpoint, time.perf_counter())

    async def _body(self, scope: Scope, receive: Receive) -> bytes:
        limit = self._limit
        for key, value in scope["headers"]:
            if key == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    raise InputError("bad Content-Length header") from None
                if declared > limit:
                    raise InputError(f"request body is {declared} bytes; the limit is {limit} bytes",
                                     status=413, code="too_large")
                break
        message = await receive()
        if message["type"] == "http.disconnect":
            raise Disconnected
        body: bytes = message.get("body", b"")
        if not message.get("more_body"):
            if len(body) > limit:
                raise InputError(f"request body is over the limit of {limit} bytes", status=413, code="too_large")
            return body
        parts = [body]
        size = len(body)
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise Disconnected
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                raise InputError(f"request body is over the limit of {limit} bytes", status=413, code="too_large")
            parts.append(chunk)
            if not message.get("more_body"):
                return b"".join(parts)

    async def _predict(self, scope: Scope, receive: Receive, send: Send, codec: Codec, version: str) -> None:
        started = time.perf_counter()
        if scope["method"] != "POST":
            await self._error(send, codec, 405, "use POST here", "method_not_allowed", codec.endpoint)
            return
        status, body = await self.plane.predict(codec, scope, receive, self._read_body, version)
        await self._send(send, status, body)
        self._recorder.observe(codec.endpoint, status, time.perf_counter() - started)

    # --- seed, health, metrics, index --------------------------------------------------------------

    async def _seed_predict(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self._predict(scope, receive, send, self._seed, "1")

    async def _mirror_predict(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self._predict(scope, receive, send, self._mirror, "1")

    async def _healthz(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self._json(send, 200, {"live": True}, "health")

    async def _readyz(self, scope: Scope, receive: Receive, send: Send) -> None:
        state = self.plane.readiness()
        await self._json(send, 200 if state["ready"] else 503, state, "health")

    async def _ready_v2(self, scope: Scope, receive: Receive, send: Send) -> None:
        ready = self.plane.runner is not None
        await self._json(send, 200 if ready else 503, {"ready": ready}, "health")

    async def _metrics(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self._send(send, 200, metrics.exposition(), metrics.CONTENT_TYPE)

    async def _index(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self._json(send, 200, self.plane.index(), "metadata")

    # --- KServe V1 -------------------------------------------------------------------------------

    async def _v1_list(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self._json(send, 200, v1.model_list(self._name), "metadata")

    async def _v1_model(self, rest: str, scope: Scope, receive: Receive, send: Send) -> None:
        predict = rest.endswith(":predict")
        name = rest[: -len(":predict")] if predict else rest
        if name != self._name:
            await self._error(send, self._v1, 404, f"Model with name {name} does not exist.", "not_found", "v1")
            return
        if predict:
            await self._predict(scope, receive, send, self._v1, "1")
            return
        if self.plane.runner is None:
            await self._send(send, 503, self._v1.not_ready)
            return
        await self._json(send, 200, v1.model_ready(name), "metadata")

    # --- Open Inference Protocol V2 ----------------------------------------------------------------

    async def _v2_server(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self._json(send, 200, v2.server_metadata(), "metadata")

    async def _v2_model(self, rest: str, scope: Scope, receive: Receive, send: Send) -> None:
        parts = rest.split("/")
        name, tail = parts[0], parts[1:]
        version = "1"
        if len(tail) >= 2 and tail[0] == "versions":
            version, tail = tail[1], tail[2:]
        if name != self._name:
            await self._error(send, self._v2, 404, f"Model {name} not found", "not_found", "v2")
            return
        runner = self.plane.runner
        if not tail:
            if runner is None:
                await self._send(send, 503, self._v2.not_ready)
                return
            await self._json(send, 200, runner.v2_metadata(), "metadata")
        elif tail == ["ready"]:
            ready = runner is not None
            await self._json(send, 200 if ready else 503, v2.model_ready(name, ready), "health")
        elif tail == ["infer"]:
            await self._predict(scope, receive, send, self._v2, version)
        else:
            await self._error(send, self._v2, 404, f"no route {scope['path']}", "not_found", "v2")

"""The local platform's ingress: ``http://localhost:30080/api/v1/predict/{id}/...`` to a model server.

On a cluster the Ingress routes ``{INGRESS_BASE_PATH}/{id}`` to the deployment's Service; here the
gateway does the same for the local driver's processes. The full path is kept (the model servers
serve under ``ROOT_PATH = {base_path}/{id}``, as the pods do behind the Ingress).

- round robin over the ready replicas that ``resolve(id)`` returns (the driver's
  :meth:`~modelport.local.driver.LocalProcessDriver.upstreams`);
- request and response bodies are streamed; a request whose body was complete in its first
  message (every ordinary JSON prediction) is retried on the next replica if the connection to a
  replica fails, so a replica that has just died or is being replaced is not seen by the client;
- unknown id: 404 ``{"code": "deployment_not_found", ...}``; known but no replica ready: 503
  ``{"code": "no_ready_replica", ...}`` with ``Retry-After``; all replicas unreachable: 502;
- CORS for any origin (prediction URLs are public, and a token travels as a bearer header, never a
  cookie), so the dashboard on the API's origin can "try it": a preflight is answered here, and
  every answer carries ``Access-Control-Allow-Origin: *``.

It is a plain ASGI app with a pooled ``httpx.AsyncClient`` under uvicorn with uvloop and httptools.
``UvicornThread`` runs any ASGI app in a thread with its own event loop (the platform runs the API
and the gateway that way, the tests the gateway alone).
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any

import httpx

logger = logging.getLogger("modelport.local.gateway")

Scope = dict[str, Any]
Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
Resolver = Callable[[int], Sequence[str] | None]

HOP_BY_HOP = frozenset({
    b"connection", b"keep-alive", b"proxy-authenticate", b"proxy-authorization", b"te", b"trailer",
    b"transfer-encoding", b"upgrade", b"host",
})
_JSON = [(b"content-type", b"application/json")]
_CORS = [(b"access-control-allow-origin", b"*")]
_PREFLIGHT = [*_CORS, (b"access-control-allow-methods", b"GET, POST, OPTIONS"),
              (b"access-control-allow-headers", b"authorization, content-type"), (b"access-control-max-age", b"600"),
              (b"content-length", b"0")]


class Gateway:
    """ASGI app: routes ``{base_path}/{id}/...`` to the ready replicas of deployment ``id``."""

    def __init__(
        self, resolve: Resolver, *, base_path: str = "/api/v1/predict", connect_timeout: float = 2.0,
        read_timeout: float = 300.0, max_connections: int = 1024,
    ) -> None:
        self.resolve = resolve
        self.base = "/" + base_path.strip("/")
        self._prefix = self.base + "/"
        self._timeout = httpx.Timeout(connect=connect_timeout, read=read_timeout, write=read_timeout, pool=30.0)
        self._limits = httpx.Limits(max_connections=max_connections, max_keepalive_connections=256,
                                    keepalive_expiry=30)
        self._client: httpx.AsyncClient | None = None
        self._rr = itertools.count()

    # ------------------------------------------------------------------ ASGI
    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
        elif scope["type"] == "http":
            if scope["method"] == "OPTIONS" and any(k == b"access-control-request-method" for k, _ in scope["headers"]):
                await send({"type": "http.response.start", "status": 204, "headers": _PREFLIGHT})
                await send({"type": "http.response.body", "body": b""})
                return

            async def send_cors(message: Message) -> None:
                if message["type"] == "http.response.start":
                    headers = [(k, v) for k, v in message.get("headers", []) if k.lower() != _CORS[0][0]]
                    message = {**message, "headers": [*headers, *_CORS]}
                await send(message)

            await self._http(scope, receive, send_cors)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                self._client = self._new_client()
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                if self._client is not None:
                    await self._client.aclose()
                await send({"type": "lifespan.shutdown.complete"})
                return

    def _new_client(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(timeout=self._timeout, limits=self._limits, trust_env=False,
                                 follow_redirects=False)

    @staticmethod
    async def _error(send: Send, status: int, code: str, message: str, extra: list[tuple[bytes, bytes]] | None = None
                     ) -> None:
        body = json.dumps({"code": code, "message": message, "error": message}).encode()
        headers = [*_JSON, (b"content-length", str(len(body)).encode()), *(extra or [])]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        path: str = scope["path"]
        if not path.startswith(self._prefix):
            if path in ("/healthz", "/readyz"):
                await self._error(send, 200, "ok", "the gateway is up")
                return
            await self._error(send, 404, "not_found", f"no route {path}; predictions are under {self.base}/{{id}}")
            return
        segment = path[len(self._prefix):].split("/", 1)[0]
        if not segment.isdigit():
            await self._error(send, 404, "deployment_not_found", f"deployment {segment!r} not found")
            return
        deployment_id = int(segment)
        upstreams = self.resolve(deployment_id)
        if upstreams is None:
            await self._error(send, 404, "deployment_not_found", f"deployment {deployment_id} not found")
            return
        if not upstreams:
            await self._error(send, 503, "no_ready_replica",
                              f"deployment {deployment_id} has no ready replica yet; try again shortly",
                              [(b"retry-after", b"1")])
            return
        await self._proxy(scope, receive, send, deployment_id, upstreams)

    async def _proxy(self, scope: Scope, receive: Receive, send: Send, deployment_id: int,
                     upstreams: Sequence[str]) -> None:
        if self._client is None:  # used without lifespan (e.g. some test clients)
            self._client = self._new_client()
        client = self._client
        first = await receive()
        body: bytes = first.get("body", b"")
        complete = not first.get("more_body", False)
        content: bytes | AsyncIterator[bytes] = body if complete else self._body(body, receive)

        target = scope.get("raw_path") or scope["path"].encode()
        if scope.get("query_string"):
            target = target + b"?" + scope["query_string"]
        headers = [(k, v) for k, v in scope["headers"] if k.lower() not in HOP_BY_HOP]
        client_addr = scope.get("client")
        if client_addr:
            headers.append((b"x-forwarded-for", str(client_addr[0]).encode()))
        for k, v in scope["headers"]:
            if k.lower() == b"host":
                headers.append((b"x-forwarded-host", v))
                break
        headers.append((b"x-forwarded-proto", scope.get("scheme", "http").encode()))

        start = next(self._rr)
        attempts = len(upstreams) if complete else 1
        response: httpx.Response | None = None
        last_error: Exception | None = None
        for attempt in range(attempts):
            upstream = upstreams[(start + attempt) % len(upstreams)]
            request = client.build_request(scope["method"], upstream + target.decode("latin-1"),
                                           headers=headers, content=content)
            try:
                response = await client.send(request, stream=True)
                break
            except (httpx.ConnectError, httpx.RemoteProtocolError) as exc:
                if isinstance(exc, httpx.RemoteProtocolError) and not complete:
                    raise
                last_error = exc
                logger.debug("deployment %d: replica %s unreachable: %s", deployment_id, upstream, exc)
            except httpx.TimeoutException:
                await self._error(send, 504, "upstream_timeout",
                                  f"deployment {deployment_id} did not answer in time")
                return
        if response is None:
            await self._error(send, 502, "upstream_unavailable",
                              f"no replica of deployment {deployment_id} could be reached: {last_error}",
                              [(b"retry-after", b"1")])
            return
        try:
            out_headers = [(k, v) for k, v in response.headers.raw if k.lower() not in HOP_BY_HOP]
            await send({"type": "http.response.start", "status": response.status_code, "headers": out_headers})
            async for chunk in response.aiter_raw():
                if chunk:
                    await send({"type": "http.response.body", "body": chunk, "more_body": True})
            await send({"type": "http.response.body", "body": b""})
        finally:
            await response.aclose()

    @staticmethod
    async def _body(first: bytes, receive: Receive) -> AsyncIterator[bytes]:
        if first:
            yield first
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunk = message.get("body", b"")
            if chunk:
                yield chunk
            if not message.get("more_body", False):
                return


class UvicornThread:
    """An ASGI app under uvicorn (uvloop, httptools) in a thread with its own event loop."""

    def __init__(self, app: Any, *, host: str = "127.0.0.1", port: int, name: str = "http",
                 log_level: str = "warning", access_log: bool = False) -> None:
        import uvicorn

        self.name = name
        self.host, self.port = host, port
        self.config = uvicorn.Config(
            app, host=host, port=port, loop="uvloop", http="httptools", lifespan="on", access_log=access_log,
            log_config=None, log_level=log_level, server_header=False, date_header=False, backlog=2048,
            timeout_keep_alive=30, timeout_graceful_shutdown=5,
        )
        self.server = uvicorn.Server(self.config)
        self.thread = threading.Thread(target=self._run, name=name, daemon=True)
        self.error: BaseException | None = None

    def _run(self) -> None:
        try:
            asyncio.run(self.server.serve())
        except BaseException as exc:  # noqa: BLE001 - surfaced by start()
            self.error = exc

    def start(self, timeout: float = 30.0) -> UvicornThread:
        self.thread.start()
        # uvicorn sets `started` once it listens; a bind failure ends the thread instead
        import time

        deadline = time.monotonic() + timeout
        while not self.server.started:
            if not self.thread.is_alive():
                raise RuntimeError(f"{self.name} could not start on {self.host}:{self.port}"
                                   f"{f': {self.error}' if self.error else ' (is the port in use?)'}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"{self.name} did not start on port {self.port} within {timeout}s")
            time.sleep(0.01)
        return self

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def stop(self, timeout: float = 10.0) -> None:
        self.server.should_exit = True
        if self.thread.is_alive():
            self.thread.join(timeout)

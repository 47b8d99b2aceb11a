"""The model server's HTTP surface: a raw ASGI app (no framework validation on the hot path).

Routes (every one also under ROOT_PATH, e.g. ``/api/v1/predict/7/predict``, so the server works
behind an ingress with or without a rewrite):

- seed: ``POST /predict`` ``{"instances": [[...]]}`` (or ``"inputs"``) -> ``{"predictions": [...]}``;
  ``?proba=true`` or ``"parameters": {"proba": true}`` -> ``predict_proba``.
  Errors: ``{"code", "message", "error"}``.
- KServe V1: ``GET /v1/models``, ``GET /v1/models/{name}``, ``POST /v1/models/{name}:predict``.
- Open Inference Protocol V2: ``GET /v2``, ``/v2/health/live``, ``/v2/health/ready``,
  ``/v2/models/{name}[/versions/{v}]``, ``.../ready``, ``POST .../infer``. Errors: ``{"error"}``.
- ``GET /healthz`` (the process), ``GET /readyz`` (503 until the model is loaded), ``GET /metrics``.

Loading happens in a thread started at ASGI startup, so liveness answers at once and readiness
says 503 while requirements install and the model loads; a load failure calls ``on_failure``
(the server then exits non-zero with the message).
"""

from __future__ import annotations

import asyncio
import gc
import hashlib
import hmac
import logging
import threading
import time
import traceback
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs

import orjson

from modelport import __version__
from modelport.domain.model_server import ServerConfig
from modelport.serving import metrics
from modelport.serving.batcher import Batcher
from modelport.serving.environment import Environment, prepare
from modelport.serving.errors import InputError, ModelLoadError
from modelport.serving.fetch import fetch

if TYPE_CHECKING:
    from modelport.serving.runtime import Runner

log = logging.getLogger("modelport.serving")

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]

JSON = b"application/json"
SEED, V1, V2 = "seed", "v1", "v2"
_DUMP_OPTIONS = orjson.OPT_SERIALIZE_NUMPY


def _default(value: Any) -> Any:
    tolist = getattr(value, "tolist", None)
    if tolist is not None:
        return tolist()
    raise TypeError(f"cannot serialise {type(value).__name__}")


def dumps(value: Any) -> bytes:
    return orjson.dumps(value, default=_default, option=_DUMP_OPTIONS)


class Disconnected(Exception):
    pass


def load(config: ServerConfig, restart: Callable[[], object] | None = None) -> Runner:
    """Fetch the model (and requirements), prepare the environment, unpickle: the whole load.
    ``restart``: see ``environment.prepare`` (a pre-warmed server's way to start afresh)."""
    cache = Path(config.model_cache_dir)
    model_path = fetch(config.model_uri, what="model", cache_dir=cache, config=config, sha256=config.model_sha256)
    environment = Environment()
    if config.requirements_uri:
        requirements_path = fetch(config.requirements_uri, what="requirements.txt", cache_dir=cache,
                                  config=config, sha256=config.requirements_sha256)
        environment = prepare(requirements_path, cache, restart)
    # imported here, not at the top: runtime imports numpy, which must come after the model's
    # requirements environment is active (environment.prepare)
    from modelport.serving.runtime import load_model

    return load_model(model_path, config.model_name, environment.describe())


class App:
    """ASGI application serving one model."""

    def __init__(self, config: ServerConfig, *, autoload: bool = True,
                 restart: Callable[[], object] | None = None) -> None:
        self.config = config
        self.autoload = autoload
        self.restart = restart
        self.runner: Runner | None = None
        self.batcher: Batcher | None = None
        self.failure: str | None = None
        self.on_failure: Callable[[str], None] | None = None
        self.ready_event = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._recorder = metrics.Recorder()
        self._root = config.root_path
        self._name = config.model_name
        self._limit = config.max_request_bytes
        self._static: dict[str, Callable[..., Awaitable[None]]] = {
            "/predict": self._seed_predict,
            "/healthz": self._healthz,
            "/readyz": self._readyz,
            "/metrics": self._metrics,
            "/v1/models": self._v1_list,
            "/v2": self._v2_server,
            "/v2/health/live": self._healthz_v2,
            "/v2/health/ready": self._ready_v2,
            "/": self._index,
        }
        # with a deployment token, only the probes' routes answer without it
        self._token_sha256 = config.predict_token_sha256
        self._open_paths = {"/healthz", "/readyz", "/v2/health/live", "/v2/health/ready"}
        self._not_ready_seed = dumps({"code": "not_ready", "message": f"model {self._name} is not loaded yet",
                                      "error": f"Model {self._name} is not ready yet."})
        self._not_ready_kserve = dumps({"error": f"Model {self._name} is not ready yet."})

    # --- lifecycle -------------------------------------------------------------------------------

    def set_runner(self, runner: Runner) -> None:
        """Serve ``runner`` (called on the event loop once loading is done)."""
        batcher = Batcher(runner, enabled=self.config.microbatch_enabled,
                          max_batch=self.config.microbatch_max_batch, max_wait_ms=self.config.microbatch_max_wait_ms)
        batcher.start()
        # Everything loaded so far (interpreter, numpy, scikit-learn, the model) lives as long as the
        # process: keep it out of the garbage collector's full passes, which would otherwise walk
        # it all and stall requests for tens of ms (seen as a p99 tail on row-heavy requests).
        gc.collect()
        gc.freeze()
        self.batcher = batcher
        self.runner = runner
        metrics.LOAD_SECONDS.set(runner.load_seconds)
        metrics.READY.set(1)
        self.ready_event.set()
        log.info("model %s (%s) ready: %s features, classes %s, loaded in %.2fs", runner.name, runner.model_type,
                 runner.n_features, runner.classes, runner.load_seconds)

    def _fail(self, message: str) -> None:
        self.failure = message
        log.error("cannot serve model %s: %s", self._name, message)
        self.ready_event.set()
        if self.on_failure is not None:
            self.on_failure(message)

    def _load_in_thread(self) -> None:
        assert self._loop is not None
        started = time.perf_counter()
        try:
            runner = load(self.config, self.restart)
            runner.load_seconds = time.perf_counter() - started
        except ModelLoadError as exc:
            self._loop.call_soon_threadsafe(self._fail, exc.message)
            return
        except Exception as exc:  # noqa: BLE001 - report, never a bare traceback as the message
            log.debug("load failed:\n%s", traceback.format_exc())
            message = f"Unexpected error while loading the model: {type(exc).__name__}: {exc}"
            self._loop.call_soon_threadsafe(self._fail, message)
            return
        self._loop.call_soon_threadsafe(self.set_runner, runner)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                self._loop = asyncio.get_running_loop()
                if self.autoload:
                    threading.Thread(target=self._load_in_thread, name="model-loader", daemon=True).start()
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                if self.batcher is not None:
                    await self.batcher.stop()
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
        if root and path.startswith(root) and (len(path) == len(root) or path[len(root)] == "/"):
            path = path[len(root):] or "/"
        if len(path) > 1 and path.endswith("/"):
            path = path.rstrip("/")
        if self._token_sha256 is not None and path not in self._open_paths and not self._authorized(scope):
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

    async def _error(self, send: Send, protocol: str, status: int, message: str, code: str, endpoint: str,
                     started: float) -> None:
        body = {"code": code, "message": message, "error": message} if protocol == SEED else {"error": message}
        await self._json(send, status, body, endpoint, started)

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

    @staticmethod
    def _method(scope: Scope) -> str:
        return str(scope["method"])

    async def _wrong_method(self, send: Send, protocol: str, allowed: str, endpoint: str) -> None:
        await self._error(send, protocol, 405, f"use {allowed} here", "method_not_allowed", endpoint,
                          time.perf_counter())

    # --- prediction (shared by the three protocols) ----------------------------------------------

    async def _predict_request(self, scope: Scope, receive: Receive, send: Send, protocol: str,
                               endpoint: str, parse: Callable[[Any, Runner, Scope], tuple[Any, Any]],
                               answer: Callable[[Any, Any, Runner], Awaitable[Any]]) -> None:
        started = time.perf_counter()
        if scope["method"] != "POST":
            await self._wrong_method(send, protocol, "POST", endpoint)
            return
        batcher, runner = self.batcher, self.runner
        if batcher is None or runner is None:
            body = self._not_ready_seed if protocol == SEED else self._not_ready_kserve
            await self._send(send, 503, body)
            self._recorder.observe(endpoint, 503, time.perf_counter() - started)
            return
        batcher.arrived()
        submitted = False
        try:
            raw = await self._body(scope, receive)
            try:
                payload = orjson.loads(raw)
            except orjson.JSONDecodeError as exc:
                raise InputError(f"malformed JSON: {exc}") from None
            if not isinstance(payload, dict):
                raise InputError("the request body must be a JSON object")
            request, matrix_and_flags = parse(payload, runner, scope)
            submitted = True
            result = await answer(request, matrix_and_flags, runner)
        except InputError as exc:
            if not submitted:
                batcher.gave_up()
            await self._error(send, protocol, exc.status, exc.message, exc.code, endpoint, started)
            return
        except Disconnected:
            if not submitted:
                batcher.gave_up()
            raise
        except (ValueError, TypeError) as exc:
            if not submitted:
                batcher.gave_up()
            await self._error(send, protocol, 400, f"the model rejected the input: {exc}", "bad_input", endpoint,
                              started)
            return
        except Exception as exc:  # noqa: BLE001
            if not submitted:
                batcher.gave_up()
            log.exception("prediction failed")
            await self._error(send, protocol, 500, f"prediction failed: {type(exc).__name__}: {exc}",
                              "prediction_failed", endpoint, started)
            return
        await self._json(send, 200, result, endpoint, started)

    # seed and V1 share a body shape: {"instances": [...]} or {"inputs": [...]}, optional parameters.
    @staticmethod
    def _parse_rows(payload: dict[str, Any], runner: Runner, scope: Scope) -> tuple[Any, Any]:
        if "instances" in payload:
            data, where = payload["instances"], "instances"
        elif "inputs" in payload:
            data, where = payload["inputs"], "inputs"
        else:
            raise InputError("the body needs 'instances' (or 'inputs'): a list of rows, e.g. {\"instances\": [[1, 2]]}")
        proba = _proba_flag(payload, scope)
        if proba and not runner.has_proba:
            raise InputError(f"model {runner.name} ({runner.model_type}) has no predict_proba")
        return None, (runner.to_matrix(data, where), proba)

    async def _answer_rows(self, _request: Any, matrix_and_flags: Any, runner: Runner) -> Any:
        matrix, proba = matrix_and_flags
        assert self.batcher is not None
        return {"predictions": await self.batcher.predict(matrix, proba)}

    async def _seed_predict(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self._predict_request(scope, receive, send, SEED, "predict", self._parse_rows, self._answer_rows)

    # --- health, metrics, index --------------------------------------------------------------------

    async def _healthz(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self._json(send, 200, {"live": True}, "health")

    async def _healthz_v2(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self._json(send, 200, {"live": True}, "health")

    def _readiness(self) -> dict[str, Any]:
        if self.runner is not None:
            return {"ready": True}
        if self.failure is not None:
            return {"ready": False, "reason": f"failed: {self.failure}"}
        return {"ready": False, "reason": "loading"}

    async def _readyz(self, scope: Scope, receive: Receive, send: Send) -> None:
        state = self._readiness()
        await self._json(send, 200 if state["ready"] else 503, state, "health")

    async def _ready_v2(self, scope: Scope, receive: Receive, send: Send) -> None:
        ready = self.runner is not None
        await self._json(send, 200 if ready else 503, {"ready": ready}, "health")

    async def _metrics(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self._send(send, 200, metrics.exposition(), metrics.CONTENT_TYPE)

    async def _index(self, scope: Scope, receive: Receive, send: Send) -> None:
        body: dict[str, Any] = {"name": self._name, **self._readiness(), "protocols": ["seed", "v1", "v2"]}
        if self.runner is not None:
            body["model"] = self.runner.v2_metadata()
            body["environment"] = self.runner.environment
        await self._json(send, 200, body, "metadata")

    # --- KServe V1 -------------------------------------------------------------------------------

    async def _v1_list(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self._json(send, 200, {"models": [self._name]}, "metadata")

    async def _v1_model(self, rest: str, scope: Scope, receive: Receive, send: Send) -> None:
        predict = rest.endswith(":predict")
        name = rest[: -len(":predict")] if predict else rest
        if name != self._name:
            await self._error(send, V1, 404, f"Model with name {name} does not exist.", "not_found", "v1",
                              time.perf_counter())
            return
        if predict:
            await self._predict_request(scope, receive, send, V1, "v1_predict", self._parse_rows, self._answer_rows)
            return
        if self.runner is None:
            await self._send(send, 503, self._not_ready_kserve)
            return
        await self._json(send, 200, {"name": name, "ready": True}, "metadata")

    # --- Open Inference Protocol V2 ----------------------------------------------------------------

    async def _v2_server(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self._json(send, 200, {"name": "modelport", "version": __version__, "extensions": []}, "metadata")

    async def _v2_model(self, rest: str, scope: Scope, receive: Receive, send: Send) -> None:
        parts = rest.split("/")
        name, tail = parts[0], parts[1:]
        version = "1"
        if len(tail) >= 2 and tail[0] == "versions":
            version, tail = tail[1], tail[2:]
        if name != self._name:
            await self._error(send, V2, 404, f"Model {name} not found", "not_found", "v2", time.perf_counter())
            return
        if not tail:
            if self.runner is None:
                await self._send(send, 503, self._not_ready_kserve)
                return
            await self._json(send, 200, self.runner.v2_metadata(), "metadata")
        elif tail == ["ready"]:
            ready = self.runner is not None
            await self._json(send, 200 if ready else 503, {"name": name, "ready": ready}, "health")
        elif tail == ["infer"]:
            await self._predict_request(scope, receive, send, V2, "v2_infer", self._parse_v2, self._answer_v2(version))
        else:
            await self._error(send, V2, 404, f"no route {scope['path']}", "not_found", "v2", time.perf_counter())

    @staticmethod
    def _parse_v2(payload: dict[str, Any], runner: Runner, scope: Scope) -> tuple[Any, Any]:
        matrix = runner.v2_matrix(payload.get("inputs"))
        wanted = payload.get("outputs")
        proba_flag = _proba_flag(payload, scope)
        names: list[str] = []
        if isinstance(wanted, list) and wanted:
            for item in wanted:
                out_name = item.get("name") if isinstance(item, dict) else None
                if out_name in ("output-0", "predict"):
                    names.append("output-0")
                elif out_name in ("predict_proba", "proba", "output-1"):
                    names.append("predict_proba")
                else:
                    raise InputError(f"unknown output {out_name!r}; this model has output-0 and predict_proba")
        else:
            names = ["predict_proba" if proba_flag else "output-0"]
        if "predict_proba" in names and not runner.has_proba:
            raise InputError(f"model {runner.name} ({runner.model_type}) has no predict_proba")
        return payload, (matrix, names)

    def _answer_v2(self, version: str) -> Callable[[Any, Any, Runner], Awaitable[Any]]:
        async def answer(payload: Any, matrix_and_names: Any, runner: Runner) -> Any:
            matrix, names = matrix_and_names
            assert self.batcher is not None
            outputs = []
            for out_name in names:
                result = await self.batcher.predict(matrix, out_name == "predict_proba")
                outputs.append({"name": out_name, "shape": list(result.shape), "datatype": runner.datatype(result),
                                "data": result.ravel()})
                if len(names) > 1 and out_name != names[-1]:
                    self.batcher.arrived()
            request_id = payload.get("id")
            return {"model_name": runner.name, "model_version": version,
                    "id": request_id if isinstance(request_id, str) else str(uuid.uuid4()),
                    "parameters": {}, "outputs": outputs}

        return answer


def _proba_flag(payload: dict[str, Any], scope: Scope) -> bool:
    parameters = payload.get("parameters")
    if isinstance(parameters, dict) and parameters.get("proba") in (True, "true", 1):
        return True
    query: bytes = scope.get("query_string", b"")
    if query and b"proba" in query:
        values = parse_qs(query.decode("latin-1")).get("proba", [])
        return any(v.lower() in ("true", "1", "yes") for v in values)
    return False

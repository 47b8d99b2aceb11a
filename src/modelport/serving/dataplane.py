"""The data plane: what the three protocols share, behind the transport (``asgi``).

- State of the one model: ``runner`` and ``batcher`` once loaded (``set_runner``), ``failure``
  once loading failed (``fail``, which calls ``on_failure``), ``ready_event`` when either happened.
- ``predict(codec, scope, receive, read_body, version) -> (status, body bytes)``: one prediction
  request of any protocol: counts it as arriving for the micro-batcher before its body is read,
  reads it with the transport's ``read_body`` (limits are the transport's), parses JSON, lets the
  protocol's codec (``protocols/``) decode it, predicts through the batcher, and encodes the answer
  or the error in the codec's shape. ``Disconnected`` from ``read_body`` is re-raised. With a
  shadow (MIRROR_URL), an answered request is offered to the ``mirror`` (``serving/mirror.py``).
- ``readiness()`` and ``index()``: what the health and index routes answer; ``recorder``: the
  request metrics every route records.
"""

from __future__ import annotations

import gc
import logging
import threading
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import orjson

from modelport.domain.model_server import ServerConfig
from modelport.serving import metrics
from modelport.serving.batcher import Batcher
from modelport.serving.errors import Disconnected, InputError
from modelport.serving.mirror import Mirror
from modelport.serving.protocols import dumps
from modelport.serving.sandbox import Confinement

if TYPE_CHECKING:
    from modelport.serving.protocols import Codec
    from modelport.serving.runtime import Runner

log = logging.getLogger("modelport.serving")

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
ReadBody = Callable[[Scope, Receive], Awaitable[bytes]]


class DataPlane:
    def __init__(self, config: ServerConfig, confinement: Confinement | None = None) -> None:
        self.config = config
        self.confinement = confinement or Confinement(mode=config.sandbox, reason="not confined by this process")
        self.name = config.model_name
        self.runner: Runner | None = None
        self.batcher: Batcher | None = None
        self.failure: str | None = None
        self.on_failure: Callable[[str], None] | None = None
        self.ready_event = threading.Event()
        self.recorder = metrics.Recorder()
        self.mirror: Mirror | None = None

    # --- lifecycle -------------------------------------------------------------------------------

    def set_runner(self, runner: Runner) -> None:
        """Serve ``runner`` (called on the event loop once loading is done)."""
        config = self.config
        batcher = Batcher(runner, enabled=config.microbatch_enabled, max_batch=config.microbatch_max_batch,
                          max_wait_ms=config.microbatch_max_wait_ms)
        batcher.start()
        # Everything loaded so far (interpreter, numpy, scikit-learn, the model) lives as long as the
        # process: keep it out of the garbage collector's full passes, which would otherwise walk
        # it all and stall requests for tens of ms (seen as a p99 tail on row-heavy requests).
        gc.collect()
        gc.freeze()
        if config.mirror_url:
            self.mirror = Mirror(config, classifier=runner.classes is not None)
            self.mirror.start()
        self.batcher = batcher
        self.runner = runner
        metrics.LOAD_SECONDS.set(runner.load_seconds)
        metrics.READY.set(1)
        self.ready_event.set()
        log.info("model %s (%s) ready: %s features, classes %s, loaded in %.2fs", runner.name, runner.model_type,
                 runner.n_features, runner.classes, runner.load_seconds)

    def fail(self, message: str) -> None:
        self.failure = message
        log.error("cannot serve model %s: %s", self.name, message)
        self.ready_event.set()
        if self.on_failure is not None:
            self.on_failure(message)

    async def stop(self) -> None:
        if self.mirror is not None:
            await self.mirror.stop()
        if self.batcher is not None:
            await self.batcher.stop()

    # --- what the routes answer ------------------------------------------------------------------

    def readiness(self) -> dict[str, Any]:
        if self.runner is not None:
            return {"ready": True}
        if self.failure is not None:
            return {"ready": False, "reason": f"failed: {self.failure}"}
        return {"ready": False, "reason": "loading"}

    def index(self) -> dict[str, Any]:
        body: dict[str, Any] = {"name": self.name, **self.readiness(), "protocols": ["seed", "v1", "v2"],
                                "sandbox": self.confinement.describe()}
        if self.runner is not None:
            body["model"] = self.runner.v2_metadata()
            body["environment"] = self.runner.environment
        return body

    # --- prediction (shared by the three protocols) ----------------------------------------------

    async def predict(self, codec: Codec, scope: Scope, receive: Receive, read_body: ReadBody,
                      version: str) -> tuple[int, bytes]:
        batcher, runner = self.batcher, self.runner
        if batcher is None or runner is None:
            return 503, codec.not_ready
        batcher.arrived()
        submitted = False
        try:
            raw = await read_body(scope, receive)
            try:
                payload = orjson.loads(raw)
            except orjson.JSONDecodeError as exc:
                raise InputError(f"malformed JSON: {exc}") from None
            if not isinstance(payload, dict):
                raise InputError("the request body must be a JSON object")
            matrix, probas, extra = codec.decode(payload, runner, scope.get("query_string", b""))
            submitted = True
            if len(probas) == 1:
                result: Any = await batcher.predict(matrix, probas[0])
            else:
                result = []
                for number, proba in enumerate(probas):
                    if number:
                        batcher.arrived()  # the next call of the same request
                    result.append(await batcher.predict(matrix, proba))
            body = codec.encode(result, extra, runner, version)
        except InputError as exc:
            if not submitted:
                batcher.gave_up()
            return exc.status, dumps(codec.error(exc.message, exc.code))
        except Disconnected:
            if not submitted:
                batcher.gave_up()
            raise
        except (ValueError, TypeError) as exc:
            if not submitted:
                batcher.gave_up()
            return 400, dumps(codec.error(f"the model rejected the input: {exc}", "bad_input"))
        except Exception as exc:  # noqa: BLE001
            if not submitted:
                batcher.gave_up()
            log.exception("prediction failed")
            return 500, dumps(codec.error(f"prediction failed: {type(exc).__name__}: {exc}", "prediction_failed"))
        answer = dumps(body)
        if self.mirror is not None:  # a shadow: a copy, queued; the answer never waits for it
            # the caller's body and this answer go as they are when the body alone says what was asked
            as_sent = raw if codec.forwardable and not scope.get("query_string") else None
            self.mirror.offer(as_sent, answer, matrix, probas, (result,) if len(probas) == 1 else result)
        return 200, answer

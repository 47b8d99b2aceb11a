"""Shadow traffic: a live model server sends copies of what it answered to a candidate's server
and counts how the candidate's answers compare (issue 15; the control plane reads the counters).

Contract:
- ``Mirror(config, classifier=...)`` exists only when ``config.mirror_url`` is set (the chart sets
  it to the shadow release's Service, the local driver to the shadow's process). ``start()`` on the
  event loop once the model is loaded, ``await stop()`` at shutdown.
- ``offer(raw, matrix, probas, results)`` after a 200 answer (the caller's body when it can be
  forwarded as sent, else None; the decoded rows, the model calls' ``proba`` flags and their
  results): O(1) and never awaits, so a caller's answer never waits on the candidate. Exactly
  ``mirror_percent`` of every 100 answered requests are copied (an accumulator, evenly spread, no
  randomness); a copy that finds the bounded queue (``mirror_queue_size`` copies, and at most
  ``MAX_QUEUED_BYTES`` of bodies) full is counted ``dropped``.
- One sender task drains the queue: once a copy is queued it waits ``LINGER_SECONDS`` for more,
  then sends what is queued (calls of up to ``MAX_ROWS`` rows) as one ``POST {mirror_url}/mirror``
  per ``proba`` flag (``protocols/mirror.py``: the callers' seed/V1 bodies spliced in byte for
  byte, so the live server encodes no JSON for them; others as seed bodies it encodes), with
  ``mirror_timeout_seconds``. Many copies per call is what keeps copying cheap for the live server
  (one HTTP exchange and one vectorised comparison per call, not per request). One call in flight
  at a time: a slow candidate fills the queue and copies are dropped, never buffered without
  bound. The candidate's latency
  (``modelport_shadow_duration_seconds``) is per call, so of a batch of copies.
- Counted per copied request (``modelport_shadow_copies{outcome}``): ``compared`` (the candidate
  answered 2xx with one prediction per row), ``failed`` (another status, a timeout, a refused
  connection, an answer of the wrong length) or ``dropped``. Per row
  (``modelport_shadow_rows{result}``): ``agreed`` / ``disagreed``: the same label for a classifier
  (a ``proba`` call: the same most likely class, the classes in the same order), for a regressor
  every output within ``mirror_tolerance`` relative to the live value (absolute below 1). ``proba``
  rows also add up ``modelport_shadow_proba_rows`` and the mean absolute difference of each row's
  probabilities (``modelport_shadow_proba_abs_diff``). A different number of outputs per row
  disagrees on every row.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterator, Sequence
from typing import Any
from urllib.parse import urlsplit

import httptools
import numpy as np
import orjson

from modelport.domain.model_server import ServerConfig
from modelport.serving import metrics
from modelport.serving.protocols.mirror import splice

log = logging.getLogger("modelport.serving.mirror")

# rows per call to the candidate (one copy alone may have more). bench/rollout.py, iris with 100-row
# requests at one connection: 512 -> 0.48x req/s, p99 0.8 ms, 2.7 % of copies dropped (the sender
# waited on too many calls); 2048 -> 0.59x, 1.5 ms, none dropped; 4096 -> 0.64x, 2.4 ms (bigger bursts)
MAX_ROWS = 2048
MAX_QUEUED_BYTES = 64 * 1024 * 1024  # request bodies waiting to be copied; more is dropped
LINGER_SECONDS = 0.02  # how long copies gather before a call: one call carries many, cheap per copy


class ShadowConnection:
    """One keep-alive HTTP/1.1 connection to the shadow's server, opened again when it closes.

    Not httpx (which the control plane uses): profiled with py-spy on a live server copying
    100-row requests, httpx's ``post`` alone took 16 % of the server's CPU (about 1.6 ms a call);
    this is asyncio's streams and httptools' response parser (uvicorn's, already in the image),
    a few µs a call."""

    def __init__(self, url: str) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"MIRROR_URL must be http(s)://host[:port][/path], not {url!r}")
        self.host, self.tls = parts.hostname, parts.scheme == "https"
        self.port = parts.port or (443 if self.tls else 80)
        path = parts.path.rstrip("/") + "/mirror"  # protocols/mirror.py
        self._head = (f"POST {path} HTTP/1.1\r\nHost: {parts.netloc}\r\nContent-Type: application/json\r\n"
                      "Content-Length: ").encode()
        self._streams: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None

    async def post(self, body: bytes, timeout: float) -> tuple[int, bytes]:
        """(status, body); OSError, TimeoutError or httptools.HttpParserError when it went wrong."""
        try:
            return await asyncio.wait_for(self._exchange(body), timeout)
        except BaseException:
            self.close()  # a half-read answer must not be read as the next one's
            raise

    async def _exchange(self, body: bytes) -> tuple[int, bytes]:
        if self._streams is None:
            self._streams = await asyncio.open_connection(self.host, self.port, ssl=self.tls or None)
        reader, writer = self._streams
        writer.write(self._head + str(len(body)).encode() + b"\r\n\r\n" + body)
        answer = _Answer()
        parser = answer.parser = httptools.HttpResponseParser(answer)
        while not answer.complete:
            data = await reader.read(262144)
            if not data:
                raise ConnectionResetError("the shadow closed the connection")
            parser.feed_data(data)
        if not answer.keep_alive:
            self.close()
        return parser.get_status_code(), b"".join(answer.body)

    def close(self) -> None:
        if self._streams is not None:
            self._streams[1].close()
            self._streams = None


class _Answer:
    """httptools' callbacks: the body's parts, whether the connection stays open (asked of the
    parser when the headers are in: once the message is complete it has forgotten) and whether the
    message is complete."""

    def __init__(self) -> None:
        self.parser: httptools.HttpResponseParser | None = None
        self.body: list[bytes] = []
        self.keep_alive = False
        self.complete = False

    def on_headers_complete(self) -> None:
        self.keep_alive = self.parser is not None and self.parser.should_keep_alive()

    def on_body(self, body: bytes) -> None:
        self.body.append(body)

    def on_message_complete(self) -> None:
        self.complete = True


#: one answered request: its body if it can be forwarded as sent, its rows, its model calls'
#: ``proba`` flags and their live results
Copy = tuple[bytes | None, np.ndarray, tuple[bool, ...], Sequence[Any]]


class Mirror:
    def __init__(self, config: ServerConfig, *, classifier: bool) -> None:
        if not config.mirror_url:
            raise ValueError("a mirror needs MIRROR_URL")
        self.url = config.mirror_url
        self._shadow = ShadowConnection(config.mirror_url)
        self.percent = config.mirror_percent
        self.tolerance = config.mirror_tolerance
        self.timeout = config.mirror_timeout_seconds
        self.classifier = classifier
        self._share = 0
        self._queue: asyncio.Queue[Copy] = asyncio.Queue(config.mirror_queue_size)
        self._queued_bytes = 0
        self._task: asyncio.Task[None] | None = None
        self._failing = False
        copies = metrics.SHADOW_COPIES
        self._compared, self._failed, self._dropped = (copies.labels(o) for o in ("compared", "failed", "dropped"))
        self._agreed, self._disagreed = (metrics.SHADOW_ROWS.labels(r) for r in ("agreed", "disagreed"))

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="mirror")
        log.info("copying %s%% of answered requests to %s", self.percent, self.url)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        self._shadow.close()

    # --- on the request path ---------------------------------------------------------------------

    def offer(self, raw: bytes | None, matrix: np.ndarray, probas: tuple[bool, ...], results: Sequence[Any]) -> None:
        self._share += self.percent
        if self._share < 100:
            return
        self._share -= 100
        size = _size(raw, matrix)
        if self._queued_bytes + size > MAX_QUEUED_BYTES:
            self._dropped.inc()
            return
        try:
            self._queue.put_nowait((raw, matrix, probas, results))
        except asyncio.QueueFull:
            self._dropped.inc()
            return
        self._queued_bytes += size

    # --- the sender ------------------------------------------------------------------------------

    async def _run(self) -> None:
        queue = self._queue
        while True:
            copies = [await queue.get()]
            await asyncio.sleep(LINGER_SECONDS)
            while not queue.empty():
                copies.append(queue.get_nowait())
            self._queued_bytes -= sum(_size(raw, matrix) for raw, matrix, _, _ in copies)
            for chunk in _chunks(copies):
                try:
                    await self._send(chunk)
                except asyncio.CancelledError:
                    raise
                except Exception:  # noqa: BLE001 - whatever happens to a copy, the live server goes on
                    log.exception("shadow copy failed")
                    self._failed.inc(len(chunk))

    async def _send(self, copies: list[Copy]) -> None:
        """One call per ``proba`` flag for these copies; all their rows compared at once."""
        failed: set[int] = set()
        for proba in (False, True):
            numbers, bodies, results = [], [], []
            rows = 0
            for number, (raw, matrix, flags, answers) in enumerate(copies):
                for flag, result in zip(flags, answers, strict=True):
                    if flag is proba:
                        numbers.append(number)
                        # the caller's own body when it asked for this one call, else encoded
                        bodies.append(raw if raw is not None and len(flags) == 1 else _body(matrix, proba))
                        results.append(result)
                        rows += len(matrix)
            if not numbers:
                continue
            answer = await self._call(splice(bodies), rows)
            if answer is None:
                failed.update(numbers)
                continue
            live = np.asarray(results[0]) if len(results) == 1 else np.concatenate([np.asarray(r) for r in results])
            self._compare(live, answer, proba)
        self._failed.inc(len(failed))
        self._compared.inc(len(copies) - len(failed))

    async def _call(self, body: bytes, rows: int) -> list[Any] | None:
        """The candidate's predictions for the ``rows`` rows of this body, or None (counted as
        failed, logged once)."""
        started = time.perf_counter()
        try:
            status, content = await self._shadow.post(body, self.timeout)
        except (OSError, TimeoutError, httptools.HttpParserError) as exc:
            problem = f"{type(exc).__name__}: {exc}"
        else:
            if 200 <= status < 300:
                metrics.SHADOW_LATENCY.observe(time.perf_counter() - started)
                predictions = _predictions(content)
                if predictions is not None and len(predictions) == rows:
                    self._recovered()
                    return predictions
                problem = f"an answer without one prediction per row: {content[:200]!r}"
            else:
                problem = f"HTTP {status}: {content[:200]!r}"
        if not self._failing:
            log.warning("the shadow at %s did not answer a copy well (logged once until it does): %s", self.url,
                        problem)
            self._failing = True
        return None

    def _recovered(self) -> None:
        if self._failing:
            log.info("the shadow at %s answers again", self.url)
            self._failing = False

    def _compare(self, live: np.ndarray, shadow: list[Any], proba: bool) -> None:
        rows = len(live)
        numeric = np.issubdtype(live.dtype, np.number)
        try:
            candidate = np.asarray(shadow, dtype=np.float64 if numeric else None)
            if candidate.shape != live.shape:
                raise ValueError("another number of outputs per row")
            if proba:
                same = np.argmax(live, axis=1) == np.argmax(candidate, axis=1)
                diff = float(np.abs(live - candidate).mean(axis=1).sum())
            elif self.classifier or not numeric:
                same = np.asarray(live == candidate, dtype=bool)
            else:
                same = np.abs(live - candidate) <= self.tolerance * np.maximum(1.0, np.abs(live))
            if same.shape[:1] != (rows,):
                raise ValueError("labels of another type")
        except (TypeError, ValueError):
            self._disagreed.inc(rows)
            return
        if proba:
            metrics.SHADOW_PROBA_ROWS.inc(rows)
            metrics.SHADOW_PROBA_ABS_DIFF.inc(diff)
        if same.ndim > 1:
            same = same.reshape(rows, -1).all(axis=1)
        agreed = int(np.count_nonzero(same))
        self._agreed.inc(agreed)
        self._disagreed.inc(rows - agreed)


def _size(raw: bytes | None, matrix: np.ndarray) -> int:
    """What a queued copy holds: its body, or its rows where it has none."""
    return len(raw) if raw is not None else int(matrix.nbytes)


def _chunks(copies: list[Copy]) -> Iterator[list[Copy]]:
    """The copies in calls of at most MAX_ROWS rows."""
    chunk: list[Copy] = []
    rows = 0
    for copy in copies:
        if chunk and rows + len(copy[1]) > MAX_ROWS:
            yield chunk
            chunk, rows = [], 0
        chunk.append(copy)
        rows += len(copy[1])
    if chunk:
        yield chunk


def _body(matrix: np.ndarray, proba: bool) -> bytes:
    """A seed request body for these rows; numeric rows straight from numpy, others as lists."""
    parameters = {"proba": proba}
    try:
        return orjson.dumps({"instances": np.ascontiguousarray(matrix), "parameters": parameters},
                            option=orjson.OPT_SERIALIZE_NUMPY)
    except orjson.JSONEncodeError:  # object columns (strings): not numpy's own types
        return orjson.dumps({"instances": matrix.tolist(), "parameters": parameters})


def _predictions(content: bytes) -> list[Any] | None:
    try:
        body = orjson.loads(content)
    except orjson.JSONDecodeError:
        return None
    predictions = body.get("predictions") if isinstance(body, dict) else None
    return predictions if isinstance(predictions, list) else None

"""Shadow traffic: a live model server sends copies of what it answered to a candidate's server,
which compares its own predictions with the live ones; the live server counts the comparisons
(issue 15; the control plane reads the counters).

Contract:
- ``Mirror(config, classifier=...)`` exists only when ``config.mirror_url`` is set (the chart sets
  it to the shadow release's Service, the local driver to the shadow's process). ``start()`` on the
  event loop once the model is loaded, ``await stop()`` at shutdown.
- ``offer(raw, answer, matrix, probas, results)`` after a 200 answer (the caller's body when it
  can be forwarded as sent, else None; the encoded answer; the decoded rows, the model calls'
  ``proba`` flags and their results): O(calls) and never awaits, so a caller's answer never waits
  on the candidate. Exactly ``mirror_percent`` of every 100 answered requests are copied (an
  accumulator, evenly spread, no randomness); a copy that finds the bounded queue
  (``mirror_queue_size`` copies, and at most ``MAX_QUEUED_BYTES`` of bodies and answers) full is
  counted ``dropped``. ``offer`` puts each model call of a copy straight into the open batch of its
  ``proba`` flag (a batch is one call to the shadow, of up to ``MAX_ROWS`` rows; one copy alone
  may have more), so the sender does no work per copy (bodies and answers are joined in C; only
  copies that could not go as sent are encoded then): spread over the requests, copying costs
  each a few list appends instead of the sender's bursts of work per copy that callers saw as a
  longer p99 (bench/rollout.py).
- One sender task: once a copy is offered it waits ``LINGER_SECONDS`` for more, then sends every
  batch, in order, each as one ``POST {mirror_url}/mirror`` (``protocols/mirror.py``: the
  callers' seed/V1 bodies and the live answers spliced in byte for byte, so the live server
  encodes no JSON for them; others encoded as seed bodies and answers), with
  ``mirror_timeout_seconds``, written in pieces of one system call each, between which the event
  loop serves callers. The shadow answers with its comparison (rows, agreed, and for ``proba``
  calls the sum of the rows' mean absolute differences), so the live server neither parses
  predictions nor compares them.
  Many copies per call keeps copying cheap (one HTTP exchange per call, not per request). One call
  in flight at a time: a slow candidate fills the queue and copies are dropped, never buffered
  without bound. The candidate's latency (``modelport_shadow_duration_seconds``) is per call, so
  of a batch of copies.
- Counted per copied request (``modelport_shadow_copies{outcome}``): ``compared`` (the candidate
  answered 2xx with a comparison of every row), ``failed`` (another status, a timeout, a refused
  connection, an answer that is not a comparison of the call's rows) or ``dropped``; a request of
  two model calls (V2 asking for labels and probabilities) by the outcome of its first. Per row
  (``modelport_shadow_rows{result}``): ``agreed`` / ``disagreed`` (protocols/mirror.py's rules:
  the same label for a classifier, the same most likely class for ``predict_proba``, a
  regressor's outputs within ``mirror_tolerance``). ``proba`` rows also add up
  ``modelport_shadow_proba_rows`` and the mean absolute difference of each row's probabilities
  (``modelport_shadow_proba_abs_diff``).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Sequence
from typing import Any
from urllib.parse import urlsplit

import httptools
import numpy as np
import orjson

from modelport.domain.model_server import ServerConfig
from modelport.serving import metrics
from modelport.serving.protocols import dumps
from modelport.serving.protocols.mirror import Call, splice

log = logging.getLogger("modelport.serving.mirror")

# rows per call to the candidate (one copy alone may have more). bench/rollout.py's stand-in shadow,
# iris with 100-row requests at one connection, once the shadow compares and calls are written in
# pieces (2026-12-06): 2048 -> 0.81-0.85x req/s, p99 1.6-1.7x; 8192 -> 0.87-0.89x, 2.1x; 32768 ->
# 0.89-0.92x, 3.5x (fewer calls cost less, bigger ones show in the tail)
MAX_ROWS = 8192
MAX_QUEUED_BYTES = 64 * 1024 * 1024  # bodies and answers waiting to be copied; more is dropped
# how long copies gather before a call: one call carries many, cheap per copy. Longer was measured
# (bench/rollout.py's stand-in, 2026-12-06): iris, one row, one connection, 0.1 s -> 0.98x req/s
# and p99 1.37x against 0.95x and 1.40x at 0.02 s, 0.5 s -> 0.98x and 1.23x; at 16 connections no
# change; and the queue (MIRROR_QUEUE_SIZE) must then hold rate x linger copies, or they are dropped
LINGER_SECONDS = 0.02


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

    async def post(self, call: Call, timeout: float) -> tuple[int, bytes]:
        """(status, body) of a POST of this call; OSError, TimeoutError or httptools.HttpParserError
        when it went wrong. The event loop serves callers between two pieces: a call of many copies
        is never one long burst of work. A kept-alive connection the shadow has closed meanwhile
        (its server closes idle ones: uvicorn after 5 s) is opened again and the call sent once
        more, as HTTP clients do when nothing of an answer has arrived."""
        try:
            return await asyncio.wait_for(self._exchange(call), timeout)
        except BaseException:
            self.close()  # a half-read answer must not be read as the next one's
            raise

    async def _exchange(self, call: Call) -> tuple[int, bytes]:
        while True:
            streams = self._streams
            fresh = streams is None
            if streams is None:
                streams = self._streams = await asyncio.open_connection(self.host, self.port, ssl=self.tls or None)
            try:
                return await self._once(*streams, call)
            except _Stale:
                self.close()
                if fresh:
                    raise ConnectionResetError("the shadow closed the connection") from None

    async def _once(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                    call: Call) -> tuple[int, bytes]:
        head = self._head + str(call.length).encode() + b"\r\n\r\n"
        for number, piece in enumerate(call.pieces(head)):
            if number:
                await asyncio.sleep(0)  # callers' requests are served between two pieces
            if writer.is_closing() or reader.at_eof():
                raise _Stale
            writer.writelines(piece)  # one system call
        answer = _Answer()
        parser = answer.parser = httptools.HttpResponseParser(answer)
        try:
            data = await reader.read(262144)
        except ConnectionError:
            data = b""
        if not data:
            raise _Stale  # closed before a byte of the answer
        while True:
            parser.feed_data(data)
            if answer.complete:
                break
            data = await reader.read(262144)
            if not data:
                raise ConnectionResetError("the shadow closed the connection in the middle of an answer")
        if not answer.keep_alive:
            self.close()
        return parser.get_status_code(), b"".join(answer.body)

    def close(self) -> None:
        if self._streams is not None:
            self._streams[1].close()
            self._streams = None


class _Stale(Exception):
    """The kept-alive connection was closed by the shadow before any of the answer came."""


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


class _Batch:
    """The copies of one call to the shadow, filled by ``offer`` as requests are answered (so that
    the sender does no work per copy: bodies and answers are joined in C): callers' bodies as sent
    with the live server's encoded answers to them, and the rows and results of the others, encoded
    as seed bodies and answers when sent."""

    __slots__ = ("proba", "bodies", "answers", "matrices", "results", "rows", "copies", "size")

    def __init__(self, proba: bool) -> None:
        self.proba = proba
        self.bodies: list[bytes] = []
        self.answers: list[bytes] = []
        self.matrices: list[np.ndarray] = []
        self.results: list[Any] = []
        self.rows = 0
        self.copies = 0  # the requests whose first model call is in this batch: counted by its outcome
        self.size = 0  # their bytes held (body and answer as sent, or rows)


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
        self._max_copies = config.mirror_queue_size
        self._open: dict[bool, _Batch] = {}  # per proba flag, being filled
        self._sealed: deque[_Batch] = deque()  # full, or lingered long enough: to send in order
        self._queued_copies = 0
        self._queued_bytes = 0
        self._copied = asyncio.Event()  # set by the first copy after the sender last looked
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

    def offer(self, raw: bytes | None, answer: bytes, matrix: np.ndarray, probas: tuple[bool, ...],
              results: Sequence[Any]) -> None:
        self._share += self.percent
        if self._share < 100:
            return
        self._share -= 100
        # the caller's own body and answer when it asked for this one call, else its rows and results
        # (encoded when sent)
        forward = raw if len(probas) == 1 else None
        size = len(forward) + len(answer) if forward is not None else int(matrix.nbytes)  # what is held
        if self._queued_bytes + size > MAX_QUEUED_BYTES or self._queued_copies >= self._max_copies:
            self._dropped.inc()
            return
        rows = len(matrix)
        for number, (proba, result) in enumerate(zip(probas, results, strict=True)):
            batch = self._open.get(proba)
            if batch is None or (batch.rows and batch.rows + rows > MAX_ROWS):
                if batch is not None:
                    self._sealed.append(batch)
                batch = self._open[proba] = _Batch(proba)
            if forward is not None:
                batch.bodies.append(forward)
                batch.answers.append(answer)
            else:
                batch.matrices.append(matrix)
                batch.results.append(result)
            batch.rows += rows
            if number == 0:
                batch.copies += 1
                batch.size += size
        self._queued_copies += 1
        self._queued_bytes += size
        if not self._copied.is_set():
            self._copied.set()

    # --- the sender ------------------------------------------------------------------------------

    async def _run(self) -> None:
        while True:
            await self._copied.wait()
            await asyncio.sleep(LINGER_SECONDS)
            self._copied.clear()
            self._sealed.extend(self._open.values())
            self._open.clear()
            while self._sealed:
                batch = self._sealed.popleft()
                self._queued_copies -= batch.copies
                self._queued_bytes -= batch.size
                try:
                    await self._send(batch)
                except asyncio.CancelledError:
                    raise
                except Exception:  # noqa: BLE001 - whatever happens to a copy, the live server goes on
                    log.exception("shadow copy failed")
                    self._failed.inc(batch.copies)

    async def _send(self, batch: _Batch) -> None:
        """One call for this batch; the shadow compares its rows (protocols/mirror.py)."""
        bodies, answers = batch.bodies, batch.answers
        if batch.matrices:  # a call's order of copies does not matter: each body goes with its answer
            bodies = bodies + [_body(matrix, batch.proba) for matrix in batch.matrices]
            answers = answers + [dumps({"predictions": result}) for result in batch.results]
        tally = await self._call(splice(bodies, answers, classifier=self.classifier, tolerance=self.tolerance),
                                 batch.rows)
        if tally is None:
            self._failed.inc(batch.copies)
            return
        agreed = tally["agreed"]
        self._agreed.inc(agreed)
        self._disagreed.inc(batch.rows - agreed)
        if tally["proba_rows"]:
            metrics.SHADOW_PROBA_ROWS.inc(tally["proba_rows"])
            metrics.SHADOW_PROBA_ABS_DIFF.inc(tally["proba_abs_diff"])
        self._compared.inc(batch.copies)

    async def _call(self, call: Call, rows: int) -> dict[str, Any] | None:
        """The shadow's comparison of the ``rows`` rows of this call, or None (counted as failed,
        logged once)."""
        started = time.perf_counter()
        try:
            status, content = await self._shadow.post(call, self.timeout)
        except (OSError, TimeoutError, httptools.HttpParserError) as exc:
            problem = f"{type(exc).__name__}: {exc}"
        else:
            if 200 <= status < 300:
                metrics.SHADOW_LATENCY.observe(time.perf_counter() - started)
                tally = _tally(content, rows)
                if tally is not None:
                    self._recovered()
                    return tally
                problem = f"an answer that is not a comparison of {rows} rows: {content[:200]!r}"
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


def _body(matrix: np.ndarray, proba: bool) -> bytes:
    """A seed request body for these rows; numeric rows straight from numpy, others as lists."""
    parameters = {"proba": proba}
    try:
        return orjson.dumps({"instances": np.ascontiguousarray(matrix), "parameters": parameters},
                            option=orjson.OPT_SERIALIZE_NUMPY)
    except orjson.JSONEncodeError:  # object columns (strings): not numpy's own types
        return orjson.dumps({"instances": matrix.tolist(), "parameters": parameters})


def _tally(content: bytes, rows: int) -> dict[str, Any] | None:
    """The shadow's comparison (protocols/mirror.py), if it is one of exactly ``rows`` rows."""
    try:
        tally = orjson.loads(content)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(tally, dict) or tally.get("rows") != rows:
        return None
    counts = (tally.get("agreed"), tally.get("proba_rows"))
    if not all(isinstance(n, int) and not isinstance(n, bool) and 0 <= n <= rows for n in counts):
        return None
    diff = tally.get("proba_abs_diff")
    if isinstance(diff, bool) or not isinstance(diff, int | float) or diff < 0:
        return None
    return tally

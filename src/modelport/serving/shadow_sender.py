"""The shadow sender: ``python -m modelport.serving.shadow_sender FD CONFIG``, the process a live
model server starts beside itself to copy requests to its shadow (``serving/mirror.py`` is the
live server's side; this is the other end of its socket).

Why a process of its own: sending copies, reading the shadow's answers and comparing them is work
the live server would otherwise do on its event loop, between its callers' requests; at one
connection every microsecond of it is latency a caller sees. Here it runs at the lowest priority
(nice 19), so it takes only CPU the live server leaves (a live server at its limit leaves none:
copies then queue here and are dropped and counted, never slow a caller).

Contract:
- ``FD`` is a ``SOCK_SEQPACKET`` socket: each message from the live server is one copy
  (``pack_copy``/``unpack_copy``); end of file (the live server stopped or died) ends this process.
  ``CONFIG`` is the JSON of ``SenderConfig``.
- Copies wait in a bounded queue (``queue_size`` copies and ``MAX_QUEUED_BYTES``); a copy that
  finds it full is counted ``dropped``. Once a copy is queued the sender waits ``LINGER_SECONDS``
  for more, then sends what is queued (calls of up to ``MAX_ROWS`` rows) as one
  ``POST {url}/mirror`` per ``proba`` flag (``protocols/mirror.py``: the callers' seed/V1 bodies as
  they were sent, others encoded here as seed bodies), one call in flight, ``timeout`` seconds each.
- Counted per copied request: ``compared`` (the candidate answered 2xx with one prediction per
  row), ``failed`` (another status, a timeout, a refused connection, an answer of the wrong
  length) or ``dropped``. Per row: ``agreed`` / ``disagreed``: the same label for a classifier (a
  ``proba`` call: the same most likely class), for a regressor every output within ``tolerance``
  relative to the live value (absolute below 1). ``proba`` rows also add up ``proba_rows`` and the
  mean absolute difference of each row's probabilities. A different number of outputs per row
  disagrees on every row.
- What it counted goes back over the socket as a JSON report (``Report``) after each call and
  whenever copies were dropped; the live server adds it to its ``modelport_shadow_*`` metrics.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import struct
import sys
import time
from collections.abc import Iterator, Sequence
from typing import Any
from urllib.parse import urlsplit

import httptools
import numpy as np
import orjson
from pydantic import BaseModel, Field

from modelport.serving.logs import configure_logging
from modelport.serving.protocols.mirror import splice

log = logging.getLogger("modelport.serving.mirror")

MAX_ROWS = 512  # rows per call to the candidate (one copy alone may have more)
MAX_QUEUED_BYTES = 64 * 1024 * 1024  # copies waiting to be sent; more is dropped
LINGER_SECONDS = 0.02  # how long copies gather before a call: one call carries many, cheap per copy


# --- the wire: one copy per socket message ----------------------------------------------------------

#: one answered request: its body if it can be forwarded as sent, its rows (with a body: only
#: their number matters, the sender gets an empty matrix of that many rows), its model calls'
#: ``proba`` flags and their live results
Copy = tuple[bytes | None, np.ndarray, tuple[bool, ...], Sequence[Any]]

_HEAD = struct.Struct("<BBI")  # has a body, number of model calls, rows
_BLOB = struct.Struct("<I")


def _pack_array(value: Any) -> bytes:
    array = np.asarray(value)
    if array.dtype.kind in "biuf":
        array = np.ascontiguousarray(array)
        dtype = array.dtype.str.encode()
        return (struct.pack(f"<BB{len(dtype)}sB{array.ndim}Q", 0, len(dtype), dtype, array.ndim, *array.shape)
                + array.tobytes())
    return b"\x01" + orjson.dumps(array.tolist())  # labels that are strings or objects


def _unpack_array(blob: bytes) -> np.ndarray:
    if blob[0] == 1:
        return np.asarray(orjson.loads(blob[1:]))
    size = blob[1]
    dtype = blob[2:2 + size].decode()
    ndim = blob[2 + size]
    start = 3 + size
    shape = struct.unpack_from(f"<{ndim}Q", blob, start)
    return np.frombuffer(blob, dtype=dtype, offset=start + 8 * ndim).reshape(shape)


def _blob(data: bytes) -> bytes:
    return _BLOB.pack(len(data)) + data


def pack_copy(raw: bytes | None, matrix: np.ndarray, probas: tuple[bool, ...], results: Sequence[Any]) -> bytes:
    """One copy as one socket message (``unpack_copy`` reads it back)."""
    parts = [_HEAD.pack(raw is not None, len(probas), len(matrix)), _blob(raw if raw is not None else
                                                                          _pack_array(matrix))]
    for flag, result in zip(probas, results, strict=True):
        parts.append(b"\x01" if flag else b"\x00")
        parts.append(_blob(_pack_array(result)))
    return b"".join(parts)


def unpack_copy(message: bytes) -> Copy:
    has_body, calls, rows = _HEAD.unpack_from(message)
    at = _HEAD.size
    (size,) = _BLOB.unpack_from(message, at)
    at += _BLOB.size
    payload = message[at:at + size]
    at += size
    raw = payload if has_body else None
    matrix = np.empty((rows, 0)) if has_body else _unpack_array(payload)
    flags, results = [], []
    for _ in range(calls):
        flags.append(message[at] == 1)
        (size,) = _BLOB.unpack_from(message, at + 1)
        at += 1 + _BLOB.size
        results.append(_unpack_array(message[at:at + size]))
        at += size
    return raw, matrix, tuple(flags), results



class SenderConfig(BaseModel):
    url: str
    tolerance: float
    queue_size: int
    timeout: float
    classifier: bool
    log_level: str = "INFO"


class Report(BaseModel):
    """What the sender counted since its last report (added up by the live server)."""

    compared: int = 0
    failed: int = 0
    dropped: int = 0
    agreed: int = 0
    disagreed: int = 0
    proba_rows: int = 0
    proba_abs_diff: float = 0.0
    latency: list[float] = Field(default_factory=list, description="seconds, one per call answered")

    def empty(self) -> bool:
        return self == Report()


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


class Sender:
    """The queue, the calls and the comparisons (see the module docstring)."""

    def __init__(self, config: SenderConfig, report: Any) -> None:
        self.url = config.url
        self.tolerance = config.tolerance
        self.timeout = config.timeout
        self.classifier = config.classifier
        self._shadow = ShadowConnection(config.url)
        self._queue: asyncio.Queue[Copy] = asyncio.Queue(config.queue_size)
        self._queued_bytes = 0
        self._failing = False
        self._report = report  # called with a Report when there is something to say
        self.tally = Report()

    def flush(self) -> None:
        if not self.tally.empty():
            tally, self.tally = self.tally, Report()
            self._report(tally)

    def offer(self, copy: Copy) -> None:
        size = _size(copy)
        if self._queued_bytes + size > MAX_QUEUED_BYTES:
            self.tally.dropped += 1
            return
        try:
            self._queue.put_nowait(copy)
        except asyncio.QueueFull:
            self.tally.dropped += 1
            return
        self._queued_bytes += size

    async def run(self) -> None:
        queue = self._queue
        while True:
            copies = [await queue.get()]
            await asyncio.sleep(LINGER_SECONDS)
            while not queue.empty():
                copies.append(queue.get_nowait())
            self._queued_bytes -= sum(_size(copy) for copy in copies)
            for chunk in _chunks(copies):
                try:
                    await self._send(chunk)
                except asyncio.CancelledError:
                    raise
                except Exception:  # noqa: BLE001 - whatever happens to a copy, the sender goes on
                    log.exception("shadow copy failed")
                    self.tally.failed += len(chunk)
                self.flush()

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
        self.tally.failed += len(failed)
        self.tally.compared += len(copies) - len(failed)

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
                self.tally.latency.append(time.perf_counter() - started)
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
            self.tally.disagreed += rows
            return
        if proba:
            self.tally.proba_rows += rows
            self.tally.proba_abs_diff += diff
        if same.ndim > 1:
            same = same.reshape(rows, -1).all(axis=1)
        agreed = int(np.count_nonzero(same))
        self.tally.agreed += agreed
        self.tally.disagreed += rows - agreed

    def close(self) -> None:
        self._shadow.close()


def _size(copy: Copy) -> int:
    raw, matrix, _, _ = copy
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


async def serve(sock: socket.socket, config: SenderConfig) -> None:
    """Take copies from the live server until it closes the socket; report back on it."""
    loop = asyncio.get_running_loop()
    done = loop.create_future()

    def report(tally: Report) -> None:
        with contextlib.suppress(OSError):  # the live server is gone: the read below ends us
            sock.send(tally.model_dump_json().encode())

    sender = Sender(config, report)

    def readable() -> None:
        while True:
            try:
                message = sock.recv(1 << 24)
            except BlockingIOError:
                break
            except OSError:
                message = b""
            if not message:
                if not done.done():
                    done.set_result(None)
                return
            sender.offer(unpack_copy(message))
        if sender.tally.dropped:
            sender.flush()

    sock.setblocking(False)
    loop.add_reader(sock.fileno(), readable)
    task = loop.create_task(sender.run(), name="shadow-sender")
    try:
        await done
    finally:
        loop.remove_reader(sock.fileno())
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        sender.flush()
        sender.close()


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    config = SenderConfig.model_validate_json(args[1])
    configure_logging(config.log_level)
    with contextlib.suppress(OSError):
        os.nice(19)  # only what the live server leaves
    sock = socket.socket(fileno=int(args[0]))
    asyncio.run(serve(sock, config))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Shadow traffic: a live model server sends copies of what it answered to a candidate's server
and counts how the candidate's answers compare (issue 15; the control plane reads the counters).

Contract:
- ``Mirror(config, classifier=...)`` exists only when ``config.mirror_url`` is set (the chart sets
  it to the shadow release's Service, the local driver to the shadow's process). ``start()`` on the
  event loop once the model is loaded, ``await stop()`` at shutdown.
- ``offer(matrix, probas, results)`` after a 200 answer (the decoded rows, the model calls'
  ``proba`` flags and their results): O(1) and never awaits, so a caller's answer never waits on
  the candidate. Exactly ``mirror_percent`` of every 100 answered requests are copied (an
  accumulator, evenly spread, no randomness); a copy that finds the bounded queue
  (``mirror_queue_size``) full is counted ``dropped``.
- One sender task drains the queue: what is queued at that moment (up to ``MAX_ROWS`` rows) goes
  as one ``POST {mirror_url}/predict`` per ``proba`` flag (``{"instances": rows, "parameters":
  {"proba": flag}}``, the seed protocol every model server speaks), with ``mirror_timeout_seconds``.
  One request in flight at a time: a slow candidate fills the queue and copies are dropped, never
  buffered without bound. Under load several copies share one call, as the micro-batcher merges
  callers' requests; the candidate's latency (``modelport_shadow_duration_seconds``) is per call.
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
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import httpx
import numpy as np
import orjson

from modelport.domain.model_server import ServerConfig
from modelport.serving import metrics

log = logging.getLogger("modelport.serving.mirror")

MAX_ROWS = 512  # rows per call to the candidate when copies are merged (one copy alone may have more)


@dataclass(frozen=True, slots=True)
class Copy:
    """One answered request: its rows, and per model call its ``proba`` flag and the live result."""

    matrix: np.ndarray
    probas: tuple[bool, ...]
    results: Sequence[Any]


class Mirror:
    def __init__(self, config: ServerConfig, *, classifier: bool) -> None:
        if not config.mirror_url:
            raise ValueError("a mirror needs MIRROR_URL")
        self.url = config.mirror_url.rstrip("/") + "/predict"
        self.percent = config.mirror_percent
        self.tolerance = config.mirror_tolerance
        self.timeout = config.mirror_timeout_seconds
        self.classifier = classifier
        self._share = 0
        self._queue: asyncio.Queue[Copy] = asyncio.Queue(config.mirror_queue_size)
        self._task: asyncio.Task[None] | None = None
        self._client: httpx.AsyncClient | None = None
        self._failing = False
        copies = metrics.SHADOW_COPIES
        self._compared, self._failed, self._dropped = (copies.labels(o) for o in ("compared", "failed", "dropped"))
        self._agreed, self._disagreed = (metrics.SHADOW_ROWS.labels(r) for r in ("agreed", "disagreed"))

    def start(self) -> None:
        self._client = httpx.AsyncClient(timeout=self.timeout)
        self._task = asyncio.get_running_loop().create_task(self._run(), name="mirror")
        log.info("copying %s%% of answered requests to %s", self.percent, self.url)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    # --- on the request path ---------------------------------------------------------------------

    def offer(self, matrix: np.ndarray, probas: tuple[bool, ...], results: Sequence[Any]) -> None:
        self._share += self.percent
        if self._share < 100:
            return
        self._share -= 100
        try:
            self._queue.put_nowait(Copy(matrix, probas, results))
        except asyncio.QueueFull:
            self._dropped.inc()

    # --- the sender ------------------------------------------------------------------------------

    async def _run(self) -> None:
        queue = self._queue
        while True:
            copies = [await queue.get()]
            rows = len(copies[0].matrix)
            while rows < MAX_ROWS and not queue.empty():
                copy = queue.get_nowait()
                copies.append(copy)
                rows += len(copy.matrix)
            try:
                await self._send(copies)
            except asyncio.CancelledError:
                raise
            except Exception:  # noqa: BLE001 - whatever happens to a copy, the live server goes on
                log.exception("shadow copy failed")
                self._failed.inc(len(copies))

    async def _send(self, copies: list[Copy]) -> None:
        failed = [False] * len(copies)
        for proba in (False, True):
            calls = [(n, copy.matrix, result) for n, copy in enumerate(copies)
                     for flag, result in zip(copy.probas, copy.results, strict=True) if flag is proba]
            if not calls:
                continue
            answer = await self._call([matrix for _, matrix, _ in calls], proba)
            if answer is None:
                for n, _, _ in calls:
                    failed[n] = True
                continue
            start = 0
            for _, matrix, result in calls:
                self._compare(np.asarray(result), answer[start:start + len(matrix)], proba)
                start += len(matrix)
        self._failed.inc(sum(failed))
        self._compared.inc(len(copies) - sum(failed))

    async def _call(self, matrices: list[np.ndarray], proba: bool) -> list[Any] | None:
        """The candidate's predictions for these rows, or None (counted as failed, logged once)."""
        assert self._client is not None
        matrix = matrices[0] if len(matrices) == 1 else np.concatenate(matrices)
        body = orjson.dumps({"instances": matrix.tolist(), "parameters": {"proba": proba}})
        started = time.perf_counter()
        problem = None
        try:
            response = await self._client.post(self.url, content=body, headers={"content-type": "application/json"})
        except httpx.HTTPError as exc:
            problem = f"{type(exc).__name__}: {exc}"
        else:
            if response.is_success:
                metrics.SHADOW_LATENCY.observe(time.perf_counter() - started)
                predictions = _predictions(response.content)
                if predictions is not None and len(predictions) == len(matrix):
                    self._recovered()
                    return predictions
                problem = f"an answer without one prediction per row: {response.content[:200]!r}"
            else:
                problem = f"HTTP {response.status_code}: {response.content[:200]!r}"
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


def _predictions(content: bytes) -> list[Any] | None:
    try:
        body = orjson.loads(content)
    except orjson.JSONDecodeError:
        return None
    predictions = body.get("predictions") if isinstance(body, dict) else None
    return predictions if isinstance(predictions, list) else None

"""Shadow traffic, the live server's side: a live model server hands copies of what it answered to
a sender process beside it (``serving/shadow_sender.py``), which sends them to the candidate's
server and counts how the candidate's answers compare (issue 15; the control plane reads the
counters from this server's ``/metrics``).

Contract:
- ``Mirror(config, classifier=...)`` exists only when ``config.mirror_url`` is set (the chart sets
  it to the shadow release's Service, the local driver to the shadow's process). ``start()`` on the
  event loop once the model is loaded starts the sender (``python -m modelport.serving.
  shadow_sender``, nice 19) on one end of a ``SOCK_SEQPACKET`` socket pair; ``await stop()`` at
  shutdown closes it, which ends the sender. A sender that dies is started again (at most once
  every ``RESTART_SECONDS``); what was in flight is lost, not miscounted.
- ``offer(raw, matrix, probas, results)`` after a 200 answer (the caller's body when it can be
  forwarded as sent, else None; the decoded rows, the model calls' ``proba`` flags and their
  results): exactly ``mirror_percent`` of every 100 answered requests (an accumulator, evenly
  spread, no randomness) are packed (``shadow_sender.pack_copy``: bytes and numpy buffers, no JSON) and written
  to the socket without blocking. That one write is all a copy costs the live server: sending,
  parsing the candidate's answers and comparing them happen in the sender, a process of its own,
  so they never run between this server's requests. A copy the socket cannot take at once (the
  sender is behind, or gone) is counted ``dropped``.
- The sender's reports (``shadow_sender.Report``, one JSON message each) are read on the event
  loop and added to ``modelport_shadow_copies{outcome}``, ``modelport_shadow_rows{result}``,
  ``modelport_shadow_proba_rows``, ``modelport_shadow_proba_abs_diff`` and
  ``modelport_shadow_duration_seconds`` (per call to the candidate, so of a batch of copies).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from modelport.domain.model_server import ServerConfig
from modelport.serving import metrics
from modelport.serving.shadow_sender import Report, SenderConfig, pack_copy

log = logging.getLogger("modelport.serving.mirror")

SENDER_MODULE = "modelport.serving.shadow_sender"
SOCKET_BUFFER_BYTES = 4 * 1024 * 1024  # asked for; the kernel may cap it (net.core.wmem_max)
RESTART_SECONDS = 5.0

class Mirror:
    def __init__(self, config: ServerConfig, *, classifier: bool) -> None:
        if not config.mirror_url:
            raise ValueError("a mirror needs MIRROR_URL")
        self.url = config.mirror_url
        self.percent = config.mirror_percent
        self._sender_config = SenderConfig(
            url=config.mirror_url, tolerance=config.mirror_tolerance, queue_size=config.mirror_queue_size,
            timeout=config.mirror_timeout_seconds, classifier=classifier, log_level=config.log_level,
        ).model_dump_json()
        self._share = 0
        self._sock: socket.socket | None = None
        self._process: subprocess.Popen[bytes] | None = None
        self._started_at = 0.0
        self._stopping = False
        copies = metrics.SHADOW_COPIES
        self._compared, self._failed, self._dropped = (copies.labels(o) for o in ("compared", "failed", "dropped"))
        self._agreed, self._disagreed = (metrics.SHADOW_ROWS.labels(r) for r in ("agreed", "disagreed"))

    def start(self) -> None:
        live, sender = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        with contextlib.suppress(OSError):
            live.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SOCKET_BUFFER_BYTES)
        live.setblocking(False)
        self._process = subprocess.Popen(  # noqa: S603 - this interpreter, this package's module
            [sys.executable, "-m", SENDER_MODULE, str(sender.fileno()), self._sender_config],
            pass_fds=(sender.fileno(),), stdin=subprocess.DEVNULL,
        )
        sender.close()
        self._sock = live
        self._started_at = time.monotonic()
        asyncio.get_running_loop().add_reader(live.fileno(), self._read_reports)
        log.info("copying %s%% of answered requests to %s (sender pid %d)", self.percent, self.url, self._process.pid)

    async def stop(self) -> None:
        self._stopping = True
        self._close_socket()
        process, self._process = self._process, None
        if process is not None:
            try:
                await asyncio.to_thread(process.wait, 5)
            except subprocess.TimeoutExpired:
                process.kill()
                await asyncio.to_thread(process.wait)

    def _close_socket(self) -> None:
        sock, self._sock = self._sock, None
        if sock is not None:
            asyncio.get_running_loop().remove_reader(sock.fileno())
            sock.close()

    # --- on the request path ---------------------------------------------------------------------

    def offer(self, raw: bytes | None, matrix: np.ndarray, probas: tuple[bool, ...], results: Sequence[Any]) -> None:
        self._share += self.percent
        if self._share < 100:
            return
        self._share -= 100
        sock = self._sock
        if sock is None:
            self._dropped.inc()
            return
        try:
            sock.send(pack_copy(raw, matrix, probas, results))
        except OSError:  # full (the sender is behind), too large for one message, or the sender is gone
            self._dropped.inc()

    # --- the sender's reports --------------------------------------------------------------------------

    def _read_reports(self) -> None:
        sock = self._sock
        while sock is not None:
            try:
                message = sock.recv(1 << 20)
            except BlockingIOError:
                return
            except OSError:
                message = b""
            if not message:
                self._sender_gone()
                return
            report = Report.model_validate_json(message)
            self._compared.inc(report.compared)
            self._failed.inc(report.failed)
            self._dropped.inc(report.dropped)
            self._agreed.inc(report.agreed)
            self._disagreed.inc(report.disagreed)
            metrics.SHADOW_PROBA_ROWS.inc(report.proba_rows)
            metrics.SHADOW_PROBA_ABS_DIFF.inc(report.proba_abs_diff)
            for seconds in report.latency:
                metrics.SHADOW_LATENCY.observe(seconds)

    def _sender_gone(self) -> None:
        self._close_socket()
        if self._stopping:
            return
        code = self._process.poll() if self._process is not None else None
        wait = max(0.0, RESTART_SECONDS - (time.monotonic() - self._started_at))
        log.warning("the shadow sender exited (code %s); starting it again in %.1f s; copies meanwhile are dropped",
                    code, wait)
        asyncio.get_running_loop().call_later(wait, self._restart)

    def _restart(self) -> None:
        if self._stopping:
            return
        if self._process is not None and self._process.poll() is None:
            self._process.kill()
        self.start()

"""The restart supervisor: a thread that restarts replicas that exit, with exponential back-off
(1 s doubling to 60 s, reset after a minute of good health), probes them until ready again, and
reports each exit and recovery as a ``ReplicaEvent`` (the platform writes it into the
deployment's ``status_message``).

It acts only on replicas marked ``supervised`` (``deploy`` owns them until they are ready) and
never on one whose release is mid-operation (it skips a release whose lock it cannot take).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Protocol

from modelport.local.release import BACKOFF_FIRST_SECONDS, EventCallback, LocalRelease, Replica, ReplicaEvent
from modelport.local.server_logs import read_tail, stated_reason

logger = logging.getLogger("modelport.local.supervisor")

BACKOFF_MAX_SECONDS = 60.0
HEALTHY_RESET_SECONDS = 60.0
SUPERVISE_INTERVAL_SECONDS = 0.2


class Supervised(Protocol):
    """What the supervisor needs of the driver."""

    def supervised(self) -> list[tuple[LocalRelease, Replica]]: ...

    def spawn(self, replica: Replica) -> None: ...

    def probe(self, replica: Replica) -> bool: ...

    def replicas_changed(self) -> None: ...


class Supervisor:
    def __init__(self, driver: Supervised, on_event: EventCallback | None, stopping: threading.Event,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.driver, self.on_event, self._stop, self._clock = driver, on_event, stopping, clock
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def start(self) -> None:
        with self._lock:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="replica-supervisor", daemon=True)
                self._thread.start()

    def stop(self) -> None:
        self._wake.set()
        if self._thread is not None:
            self._thread.join(5)

    def _run(self) -> None:
        while not self._stop.is_set():
            events: list[ReplicaEvent] = []
            try:
                self.run_once(events)
            except Exception:  # noqa: BLE001 - the supervisor must keep running
                logger.exception("replica supervisor error")
            for event in events:
                self._emit(event)
            self._wake.wait(SUPERVISE_INTERVAL_SECONDS)
            self._wake.clear()

    def run_once(self, events: list[ReplicaEvent]) -> None:
        now = self._clock()
        changed = False
        for rel, replica in self.driver.supervised():
            proc = replica.process
            if replica.restart_at is None and proc is not None and proc.poll() is not None:
                code = proc.returncode
                if now - replica.started_at >= HEALTHY_RESET_SECONDS:
                    replica.backoff = BACKOFF_FIRST_SECONDS
                delay = replica.backoff
                replica.backoff = min(replica.backoff * 2, BACKOFF_MAX_SECONDS)
                replica.ready, replica.probing, replica.restart_at = False, False, now + delay
                changed = True
                message = f"replica {replica.index + 1} exited with code {code}; restarting in {delay:g} s"
                reason = stated_reason(read_tail(replica.log_path))
                logger.warning("deployment %d: %s%s", rel.deployment_id, message, f" ({reason})" if reason else "")
                events.append(ReplicaEvent(rel.deployment_id, rel.namespace, rel.release, replica.index + 1,
                                           "exited", message, code, delay))
            elif replica.restart_at is not None and now >= replica.restart_at:
                if not rel.lock.acquire(blocking=False):  # an operation is replacing this set: next round
                    continue
                try:
                    if replica.stopping or self._stop.is_set():
                        continue
                    replica.restart_at = None
                    replica.restarts += 1
                    self.driver.spawn(replica)
                    replica.probing = True
                finally:
                    rel.lock.release()
            elif replica.probing and proc is not None and proc.poll() is None and self.driver.probe(replica):
                replica.probing, replica.ready = False, True
                changed = True
                message = f"replica {replica.index + 1} restarted and ready (restarts: {replica.restarts})"
                logger.info("deployment %d: %s", rel.deployment_id, message)
                events.append(ReplicaEvent(rel.deployment_id, rel.namespace, rel.release, replica.index + 1,
                                           "recovered", message))
        if changed:
            self.driver.replicas_changed()

    def _emit(self, event: ReplicaEvent) -> None:
        if self.on_event is None:
            return
        try:
            self.on_event(event)
        except Exception:  # noqa: BLE001 - a reporting failure must not stop supervision
            logger.exception("could not report %s", event)

"""The local cluster driver: each deployment's model servers run as processes on this machine.

``LocalProcessDriver`` implements :class:`~modelport.deploy.driver.ClusterDriver` for the local
platform (``modelport up``). A release is a set of replicas, each one ``python -m modelport.serving``
on its own port on 127.0.0.1's machine, configured by environment exactly as the chart configures a
pod (MODEL_URI ``s3://bucket/key``, sha256s, requirements, ROOT_PATH ``{base_path}/{id}``), except
that the object store is the one the control plane itself reaches (its MINIO_* settings), not the
in-cluster ``minio:9000`` of the spec. The gateway (``modelport.local.gateway``) routes
``/api/v1/predict/{id}/...`` to the ready replicas through :meth:`LocalProcessDriver.upstreams`.

Behaviour, mirroring what Helm with ``--wait`` does on a cluster:

- ``deploy`` starts the replicas and returns once every one answers ``/readyz``; a replica that
  exits first, or the timeout, raises ``ClusterError(retryable=False)`` whose message is the model
  server's own reason (e.g. "cannot install scikit-learn==0.0.1 ..."), read from its log.
- A change of artifact (model, requirements, name, path) starts a complete new set of replicas
  before the old set stops (blue-green), so nothing is ever down during an update; an update that
  fails stops only the new processes and leaves the old ones serving (the release is then
  ``FAILED`` like a failed ``helm upgrade``; ``rollback`` marks the good revision current again).
  A change of replicas alone starts or stops the difference.
- A supervisor thread restarts replicas that die, with exponential backoff (1 s doubling to 60 s,
  reset after a minute of good health), and reports each exit and recovery through ``on_event``
  (the platform writes it into the deployment's ``status_message``).
- State: every change is written to ``{state_dir}/local-driver.json`` (specs, revisions, ports and
  pids). :meth:`restore` starts the recorded releases again, which is how ``modelport up --persist``
  brings deployments back after a restart (the driver restores them itself, before ``ready``;
  the reconcile sweep then finds releases that match their records). Leftover processes of a run
  that was killed are recognised by pid and command line and stopped first.

Thread-safe: a lock guards the table of releases, and each release has its own operation lock, so
operations on different releases run in parallel and operations on one release queue up.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, ClassVar

import httpx

from modelport.deploy.driver import (
    NAMESPACE_PREFIX,
    ClusterError,
    DeploySpec,
    ReleaseInfo,
    ReleasePhase,
    ReleaseStatus,
)
from modelport.domain.model_server import READY_PATH, ServerConfig, server_argv
from modelport.local.processes import free_port
from modelport.settings import Settings

logger = logging.getLogger("modelport.local.driver")

STATE_FILE = "local-driver.json"
BACKOFF_FIRST_SECONDS = 1.0
BACKOFF_MAX_SECONDS = 60.0
HEALTHY_RESET_SECONDS = 60.0
SUPERVISE_INTERVAL_SECONDS = 0.2
STOP_GRACE_SECONDS = 10.0
CHART_NAME = "local-process"
_SECRET_FIELDS = {"s3_access_key", "s3_secret_key"}


def _now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class ReplicaEvent:
    """A replica died or came back; ``message`` is meant for the deployment's status message."""

    deployment_id: int
    namespace: str
    release: str
    replica: int  # 1-based, as users count
    kind: str  # "exited" | "recovered"
    message: str
    exit_code: int | None = None
    restart_in: float | None = None


EventCallback = Callable[[ReplicaEvent], None]


@dataclass
class Replica:
    index: int  # 0-based
    port: int
    log_path: Path
    env: dict[str, str]
    process: subprocess.Popen[bytes] | None = None
    ready: bool = False
    supervised: bool = False  # False while deploy() owns it (waiting for readiness)
    stopping: bool = False
    started_at: float = 0.0
    restarts: int = 0
    backoff: float = BACKOFF_FIRST_SECONDS
    restart_at: float | None = None
    probing: bool = False

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None else None


@dataclass
class Revision:
    number: int
    spec: DeploySpec
    phase: ReleasePhase
    message: str
    updated_at: datetime


@dataclass
class LocalRelease:
    namespace: str
    release: str
    deployment_id: int
    spec: DeploySpec | None = None  # the spec the running replicas serve (last good one)
    replicas: list[Replica] = field(default_factory=list)
    history: list[Revision] = field(default_factory=list)
    phase: ReleasePhase = ReleasePhase.PENDING
    message: str = ""
    updated_at: datetime = field(default_factory=_now)
    lock: threading.RLock = field(default_factory=threading.RLock)
    counter: itertools.count[int] = field(default_factory=lambda: itertools.count(1))
    removed: bool = False

    @property
    def revision(self) -> int:
        return self.history[-1].number if self.history else 0


def _artifact_key(spec: DeploySpec) -> tuple[Any, ...]:
    """What makes two specs need different processes (everything but the replica count)."""
    return (spec.model_bucket, spec.model_key, spec.model_sha256, spec.requirements_key,
            spec.requirements_sha256, spec.model_name, spec.path, spec.predict_token_sha256)


def stated_reason(log_text: str) -> str | None:
    """The model server's own explanation in its log: its final 'cannot serve' paragraph, else its
    last error; None if it said nothing of the kind (e.g. it was killed)."""
    raw = [line for line in log_text.splitlines() if line.strip()]
    for line in reversed(raw):
        if line.startswith("modelport model server:"):
            text = line.removeprefix("modelport model server:").strip()
            if ": " in text and text.startswith("cannot serve model"):
                text = text.split(": ", 1)[1]
            return text
    for line in reversed(raw):
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if isinstance(entry, dict) and entry.get("level") in ("ERROR", "CRITICAL") and entry.get("message"):
            return str(entry["message"])
    return None


def failure_reason(log_text: str, *, lines: int = 8) -> str:
    """:func:`stated_reason`, else the log's last lines."""
    stated = stated_reason(log_text)
    if stated is not None:
        return stated
    raw = [line for line in log_text.splitlines() if line.strip()]
    return "\n".join(raw[-lines:]) or "(the log is empty)"


def _read_tail(path: Path, limit: int = 64 * 1024) -> str:
    try:
        with path.open("rb") as handle:
            handle.seek(0, os.SEEK_END)
            size = handle.tell()
            handle.seek(max(0, size - limit))
            return handle.read().decode("utf-8", errors="replace")
    except OSError:
        return ""


_PER_DEPLOYMENT = ("MODEL_URI", "REQUIREMENTS_URI", "MODEL_SHA256", "REQUIREMENTS_SHA256", "ROOT_PATH", "PORT",
                   "PREDICT_TOKEN_SHA256")


def _replica_failure(replica: Replica, what: str, state: str) -> ClusterError:
    """A replica that did not come up, with the server's own reason from its log (read once)."""
    tail = _read_tail(replica.log_path)
    reason = failure_reason(tail)
    return ClusterError(f"{what}: {reason}", retryable=False, pod_reason=f"{state}: {reason}", detail=tail[-8192:])


def _dismiss(process: subprocess.Popen[bytes]) -> None:
    """End a standby that will not be used (an empty line on stdin ends it; else terminate)."""
    with contextlib.suppress(OSError):
        if process.stdin is not None:
            process.stdin.close()
    try:
        process.wait(5)
    except subprocess.TimeoutExpired:
        process.terminate()
        process.wait(5)


def _is_model_server(pid: int) -> bool:
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    return b"modelport.serving" in cmdline


class LocalProcessDriver:
    """Model servers as local processes; see the module docstring."""

    _shared: ClassVar[LocalProcessDriver | None] = None
    _shared_lock: ClassVar[threading.Lock] = threading.Lock()

    def __init__(
        self,
        settings: Settings,
        *,
        state_dir: Path | str | None = None,
        on_event: EventCallback | None = None,
        python_argv: list[str] | None = None,
        extra_env: dict[str, str] | None = None,
        prewarm: bool = True,
    ) -> None:
        self.settings = settings
        self.state_dir = Path(state_dir or settings.state_dir).resolve()
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.log_dir = self.state_dir / "logs"
        self.cache_dir = self.state_dir / "cache"
        self.on_event = on_event
        self.argv = python_argv or server_argv(sys.executable)
        self.extra_env = dict(extra_env or {})
        self._releases: dict[tuple[str, str], LocalRelease] = {}
        self._lock = threading.RLock()
        # deployment id -> ready upstream URLs; None entry = known but nothing ready. Read lock-free
        # by the gateway (a dict lookup is atomic), replaced under self._lock.
        self._routes: dict[int, tuple[str, ...]] = {}
        self._http = httpx.Client(timeout=1.0, trust_env=False)
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._supervisor: threading.Thread | None = None
        self._closed = False
        # one pre-warmed model server (numpy and scikit-learn imported) waits for the next replica
        self.prewarm = prewarm and self.argv == server_argv(sys.executable)
        self._standby: subprocess.Popen[bytes] | None = None
        self._standby_lock = threading.Lock()

    # ------------------------------------------------------------------ process-wide instance
    @classmethod
    def shared(cls, settings: Settings) -> LocalProcessDriver:
        """The one driver of this process (the deployer handler and the gateway must see the same)."""
        with cls._shared_lock:
            if cls._shared is None or cls._shared._closed:
                cls._shared = cls(settings)
            return cls._shared

    @classmethod
    def set_shared(cls, driver: LocalProcessDriver | None) -> None:
        with cls._shared_lock:
            cls._shared = driver

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> LocalProcessDriver:
        """Start the supervisor thread (deploy starts it too, on first use)."""
        with self._lock:
            if self._supervisor is None or not self._supervisor.is_alive():
                self._stop.clear()
                self._supervisor = threading.Thread(target=self._supervise, name="replica-supervisor", daemon=True)
                self._supervisor.start()
        if self._standby is None:
            self._start_standby()
        return self

    def close(self, *, keep_state: bool = True) -> None:
        """Stop the supervisor and every model server. The state file keeps what ran (for restore)
        unless ``keep_state`` is False."""
        self._closed = True
        self._stop.set()
        self._wake.set()
        if self._supervisor is not None:
            self._supervisor.join(5)
        with self._lock:
            releases = list(self._releases.values())
            replicas = [r for rel in releases for r in rel.replicas]
            for replica in replicas:
                replica.stopping = True
            self._routes.clear()
        self._stop_replicas(replicas)
        with self._standby_lock:
            standby, self._standby = self._standby, None
        if standby is not None:
            _dismiss(standby)
        if keep_state:
            self._save(include_pids=False)
        else:
            with contextlib.suppress(FileNotFoundError):
                (self.state_dir / STATE_FILE).unlink()
        self._http.close()

    # ------------------------------------------------------------------ gateway's view
    def upstreams(self, deployment_id: int) -> tuple[str, ...] | None:
        """Base URLs of the ready replicas of a deployment; None if no release serves that id."""
        return self._routes.get(deployment_id)

    def _publish(self) -> None:
        """Recompute the routing table (call with self._lock held)."""
        routes: dict[int, tuple[str, ...]] = {}
        for rel in self._releases.values():
            if rel.removed:
                continue
            urls = tuple(r.url for r in rel.replicas if r.ready and r.supervised and not r.stopping)
            routes[rel.deployment_id] = routes.get(rel.deployment_id, ()) + urls
        self._routes = routes

    # ------------------------------------------------------------------ the ClusterDriver interface
    def deploy(self, spec: DeploySpec) -> ReleaseStatus:
        self._check_open()
        self.start()
        key = (spec.namespace, spec.release)
        while True:
            with self._lock:
                rel = self._releases.get(key)
                if rel is None:
                    rel = LocalRelease(spec.namespace, spec.release, spec.deployment_id)
                    self._releases[key] = rel
                    self._publish()
            with rel.lock:
                if not rel.removed:  # else it was removed while we waited: install afresh
                    return self._deploy_locked(rel, spec)

    def _deploy_locked(self, rel: LocalRelease, spec: DeploySpec) -> ReleaseStatus:
        number = rel.revision + 1
        previous_phase = rel.phase
        rel.phase, rel.message, rel.updated_at = ReleasePhase.PENDING, "deploying", _now()
        first = rel.spec is None
        try:
            if first or _artifact_key(spec) != _artifact_key(rel.spec):  # type: ignore[arg-type]
                self._replace(rel, spec, number)
            else:
                self._scale(rel, spec, number)
        except ClusterError as exc:
            rel.phase, rel.message, rel.updated_at = ReleasePhase.FAILED, exc.message, _now()
            rel.history.append(Revision(number, spec, ReleasePhase.FAILED, exc.message, rel.updated_at))
            self._save()
            logger.warning("release %s/%s failed: %s", rel.namespace, rel.release, exc.message)
            raise
        except BaseException:
            rel.phase = previous_phase
            raise
        rel.spec = spec
        rel.phase, rel.message, rel.updated_at = ReleasePhase.DEPLOYED, "ready", _now()
        for entry in rel.history:
            if entry.phase == ReleasePhase.DEPLOYED:
                entry.phase = ReleasePhase.SUPERSEDED
        rel.history.append(Revision(number, spec, ReleasePhase.DEPLOYED, "ready", rel.updated_at))
        self._save()
        logger.info("release %s/%s revision %d ready with %d replica(s)", rel.namespace, rel.release, number,
                    len(rel.replicas))
        return self._status_of(rel)

    def _replace(self, rel: LocalRelease, spec: DeploySpec, number: int) -> None:
        """Start a complete new set; once all are ready, route to them and stop the old set."""
        new = [self._new_replica(rel, spec, i, number) for i in range(spec.replicas)]
        self._launch_and_wait(rel, spec, new)
        with self._lock:
            old = rel.replicas
            rel.replicas = new
            for replica in new:
                replica.supervised = True
            for replica in old:
                replica.stopping = True
            self._publish()
        self._stop_replicas(old)

    def _scale(self, rel: LocalRelease, spec: DeploySpec, number: int) -> None:
        current = len(rel.replicas)
        if spec.replicas > current:
            new = [self._new_replica(rel, spec, i, number) for i in range(current, spec.replicas)]
            self._launch_and_wait(rel, spec, new)
            with self._lock:
                rel.replicas = rel.replicas + new
                for replica in new:
                    replica.supervised = True
                self._publish()
        elif spec.replicas < current:
            with self._lock:
                extra = rel.replicas[spec.replicas:]
                rel.replicas = rel.replicas[: spec.replicas]
                for replica in extra:
                    replica.stopping = True
                self._publish()
            self._stop_replicas(extra)

    def _new_replica(self, rel: LocalRelease, spec: DeploySpec, index: int, number: int) -> Replica:
        log_path = self.log_dir / rel.namespace / rel.release / f"rev{number}-replica{index + 1}.log"
        port = free_port()
        return Replica(index=index, port=port, log_path=log_path, env=self._env(spec, port))

    def _env(self, spec: DeploySpec, port: int) -> dict[str, str]:
        s = self.settings
        requirements_uri = f"s3://{spec.model_bucket}/{spec.requirements_key}" if spec.requirements_key else None
        env = ServerConfig.model_validate({
            "model_uri": f"s3://{spec.model_bucket}/{spec.model_key}", "port": port, "model_name": spec.model_name,
            "root_path": spec.path, "model_sha256": spec.model_sha256, "requirements_uri": requirements_uri,
            "requirements_sha256": spec.requirements_sha256, "model_cache_dir": str(self.cache_dir),
            "predict_token_sha256": spec.predict_token_sha256, "log_level": s.log_level,
            "host": "127.0.0.1",  # only the gateway reaches a local replica, never the network
            # the object store as this machine reaches it: the control plane's own settings
            "s3_endpoint": s.minio_endpoint or None, "s3_access_key": s.minio_access_key or None,
            "s3_secret_key": s.minio_secret_key or None, "s3_use_ssl": s.minio_use_ssl, "s3_region": s.aws_region,
        }).to_env()
        env.update(self.extra_env)
        return env

    @staticmethod
    def _base_env() -> dict[str, str]:
        """This process's environment less the control plane's settings that would confuse a model server."""
        return {k: v for k, v in os.environ.items() if k not in _PER_DEPLOYMENT}

    def _start_standby(self) -> None:
        """Start the pre-warmed server the next replica takes (see modelport.serving.standby)."""
        if not self.prewarm or self._closed:
            return
        self.log_dir.mkdir(parents=True, exist_ok=True)
        with (self.log_dir / "standby.log").open("ab") as log:
            process = subprocess.Popen(  # noqa: S603
                [*self.argv, "--standby"], env={**self._base_env(), **self.extra_env}, stdin=subprocess.PIPE,
                stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            )
        with self._standby_lock:
            previous, self._standby = self._standby, process
        if previous is not None:
            _dismiss(previous)
        if self._closed:  # closed while it started
            with self._standby_lock:
                self._standby = None
            _dismiss(process)

    def _take_standby(self) -> subprocess.Popen[bytes] | None:
        with self._standby_lock:
            process, self._standby = self._standby, None
        if self.prewarm and not self._closed:
            threading.Thread(target=self._start_standby, name="standby", daemon=True).start()
        return process if process is not None and process.poll() is None else None

    def _spawn(self, replica: Replica) -> None:
        replica.log_path.parent.mkdir(parents=True, exist_ok=True)
        with replica.log_path.open("ab") as log:
            log.write(f"--- starting {' '.join(self.argv)} on port {replica.port} at {_now().isoformat()}\n".encode())
            log.flush()
            standby = self._take_standby() if self.prewarm else None
            if standby is not None and standby.stdin is not None:
                order = {"env": replica.env, "log": str(replica.log_path)}
                try:
                    standby.stdin.write((json.dumps(order) + "\n").encode())
                    standby.stdin.close()
                    replica.process = standby
                except OSError:  # it died meanwhile: start one the ordinary way
                    standby = None
            if standby is None:
                replica.process = subprocess.Popen(  # noqa: S603
                    self.argv, env={**self._base_env(), **replica.env}, stdout=log, stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL, start_new_session=True,
                )
        replica.started_at = time.monotonic()
        replica.ready = False

    def _launch_and_wait(self, rel: LocalRelease, spec: DeploySpec, replicas: list[Replica]) -> None:
        try:
            for replica in replicas:
                self._spawn(replica)
            deadline = time.monotonic() + spec.timeout_seconds
            pending = list(replicas)
            while pending:
                for replica in list(pending):
                    assert replica.process is not None
                    code = replica.process.poll()
                    if code is not None:
                        raise _replica_failure(
                            replica, f"the model server of deployment {spec.deployment_id} did not start "
                            f"(replica {replica.index + 1} exited with code {code})", f"exited with code {code}",
                        )
                    if self._probe(replica):
                        replica.ready = True
                        pending.remove(replica)
                if not pending:
                    break
                if time.monotonic() > deadline:
                    raise _replica_failure(
                        pending[0], f"the model server of deployment {spec.deployment_id} was not ready within "
                        f"{spec.timeout_seconds} s; its last log lines", "not ready",
                    )
                if self._stop.wait(0.05):
                    raise ClusterError("the local platform is stopping", retryable=True)
        except BaseException:
            for replica in replicas:
                replica.stopping = True
            self._stop_replicas(replicas)
            raise

    def _probe(self, replica: Replica) -> bool:
        try:
            return self._http.get(replica.url + READY_PATH, timeout=0.5).status_code == 200
        except httpx.HTTPError:
            return False

    def _stop_replicas(self, replicas: Iterable[Replica]) -> None:
        procs = [r.process for r in replicas if r.process is not None and r.process.poll() is None]
        for proc in procs:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + STOP_GRACE_SECONDS
        for proc in procs:
            try:
                proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)

    def remove(self, namespace: str, release: str) -> bool:
        key = (namespace, release)
        with self._lock:
            rel = self._releases.get(key)
        if rel is None:
            return False
        with rel.lock:
            with self._lock:
                if self._releases.get(key) is not rel:
                    return False
                rel.removed = True
                del self._releases[key]
                for replica in rel.replicas:
                    replica.stopping = True
                self._publish()
            self._stop_replicas(rel.replicas)
            rel.replicas = []
        self._save()
        logger.info("release %s/%s removed", namespace, release)
        return True

    def status(self, namespace: str, release: str) -> ReleaseStatus | None:
        with self._lock:
            rel = self._releases.get((namespace, release))
            return None if rel is None else self._status_of(rel)

    def _status_of(self, rel: LocalRelease) -> ReleaseStatus:
        down = [r for r in rel.replicas if not r.ready]
        pod_reason = None
        if down and rel.phase == ReleasePhase.DEPLOYED:
            pod_reason = f"{len(down)} of {len(rel.replicas)} replicas not ready (restarting)"
        return ReleaseStatus(
            namespace=rel.namespace, release=rel.release, phase=rel.phase, revision=rel.revision,
            message=rel.message, pod_reason=pod_reason, deployment_id=rel.deployment_id, updated_at=rel.updated_at,
        )

    def list_releases(self) -> list[ReleaseInfo]:
        with self._lock:
            return [
                ReleaseInfo(namespace=rel.namespace, release=rel.release, phase=rel.phase, revision=rel.revision,
                            deployment_id=rel.deployment_id, chart=CHART_NAME, updated_at=rel.updated_at,
                            problem=self._status_of(rel).pod_reason)
                for rel in self._releases.values()
                if rel.namespace.startswith(NAMESPACE_PREFIX)
            ]

    def rollback(self, namespace: str, release: str) -> ReleaseStatus:
        with self._lock:
            rel = self._releases.get((namespace, release))
        if rel is None:
            raise ClusterError(f"release {release} does not exist; there is nothing to roll back", retryable=False)
        with rel.lock:
            good = [e for e in rel.history[:-1] if e.phase in (ReleasePhase.DEPLOYED, ReleasePhase.SUPERSEDED)]
            if not good or rel.spec is None:
                raise ClusterError(
                    f"release {release} has no earlier revision that was deployed; there is nothing to roll back to",
                    retryable=False,
                )
            # A failed update never stopped the good replicas, so they still serve the last good spec.
            target = good[-1]
            if rel.spec.replicas != len(rel.replicas):  # pragma: no cover - defensive
                self._scale(rel, rel.spec, rel.revision + 1)
            for entry in rel.history:
                if entry.phase == ReleasePhase.DEPLOYED:
                    entry.phase = ReleasePhase.SUPERSEDED
            rel.phase, rel.updated_at = ReleasePhase.DEPLOYED, _now()
            rel.message = f"rolled back to revision {target.number}"
            rel.history.append(Revision(rel.revision + 1, rel.spec, ReleasePhase.DEPLOYED, rel.message,
                                        rel.updated_at))
            self._save()
            return self._status_of(rel)

    def history(self, namespace: str, release: str) -> list[ReleaseStatus]:
        with self._lock:
            rel = self._releases.get((namespace, release))
            if rel is None:
                return []
            return [ReleaseStatus(namespace=namespace, release=release, phase=e.phase, revision=e.number,
                                  message=e.message, deployment_id=rel.deployment_id, updated_at=e.updated_at)
                    for e in rel.history]

    def replica_pids(self, deployment_id: int) -> list[int | None]:
        """The process ids of a deployment's replicas (tests and diagnostics)."""
        with self._lock:
            return [r.pid for rel in self._releases.values() if rel.deployment_id == deployment_id
                    for r in rel.replicas]

    def _check_open(self) -> None:
        if self._closed:
            raise ClusterError("the local platform is stopping", retryable=True)

    # ------------------------------------------------------------------ supervisor
    def _supervise(self) -> None:
        while not self._stop.is_set():
            events: list[ReplicaEvent] = []
            try:
                self._supervise_once(events)
            except Exception:  # noqa: BLE001 - the supervisor must keep running
                logger.exception("replica supervisor error")
            for event in events:
                self._emit(event)
            self._wake.wait(SUPERVISE_INTERVAL_SECONDS)
            self._wake.clear()

    def _supervise_once(self, events: list[ReplicaEvent]) -> None:
        now = time.monotonic()
        with self._lock:
            work = [(rel, r) for rel in self._releases.values() for r in rel.replicas
                    if r.supervised and not r.stopping and not rel.removed]
        changed = False
        for rel, replica in work:
            proc = replica.process
            if replica.restart_at is None and proc is not None and proc.poll() is not None:
                code = proc.returncode
                up_for = now - replica.started_at
                if up_for >= HEALTHY_RESET_SECONDS:
                    replica.backoff = BACKOFF_FIRST_SECONDS
                delay = replica.backoff
                replica.backoff = min(replica.backoff * 2, BACKOFF_MAX_SECONDS)
                replica.ready, replica.probing, replica.restart_at = False, False, now + delay
                changed = True
                message = f"replica {replica.index + 1} exited with code {code}; restarting in {delay:g} s"
                reason = stated_reason(_read_tail(replica.log_path))
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
                    self._spawn(replica)
                    replica.probing = True
                finally:
                    rel.lock.release()
            elif replica.probing and proc is not None and proc.poll() is None and self._probe(replica):
                replica.probing, replica.ready = False, True
                changed = True
                message = f"replica {replica.index + 1} restarted and ready (restarts: {replica.restarts})"
                logger.info("deployment %d: %s", rel.deployment_id, message)
                events.append(ReplicaEvent(rel.deployment_id, rel.namespace, rel.release, replica.index + 1,
                                           "recovered", message))
        if changed:
            with self._lock:
                self._publish()
            self._save()

    def _emit(self, event: ReplicaEvent) -> None:
        if self.on_event is None:
            return
        try:
            self.on_event(event)
        except Exception:  # noqa: BLE001 - a reporting failure must not stop supervision
            logger.exception("could not report %s", event)

    # ------------------------------------------------------------------ state file
    def _save(self, *, include_pids: bool = True) -> None:
        with self._lock:
            data = {
                "version": 1,
                "releases": [
                    {
                        "namespace": rel.namespace, "release": rel.release, "deployment_id": rel.deployment_id,
                        "revision": rel.revision, "phase": rel.phase.value,
                        "spec": rel.spec.model_dump(mode="json", exclude=_SECRET_FIELDS) if rel.spec else None,
                        "replicas": [{"port": r.port, "pid": r.pid if include_pids else None} for r in rel.replicas],
                    }
                    for rel in self._releases.values()
                ],
            }
            path = self.state_dir / STATE_FILE
            tmp = path.with_suffix(".tmp")
            tmp.write_text(json.dumps(data, indent=1))
            tmp.replace(path)

    def recorded(self) -> list[DeploySpec]:
        """The specs the state file says were serving."""
        path = self.state_dir / STATE_FILE
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError):
            return []
        specs = []
        for entry in data.get("releases", []):
            for replica in entry.get("replicas", []):
                pid = replica.get("pid")
                if pid and _is_model_server(int(pid)):  # left over from a run that was killed
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(int(pid), signal.SIGTERM)
            if entry.get("spec"):
                specs.append(DeploySpec.model_validate(entry["spec"]))
        return specs

    def restore(self, *, keep: Callable[[DeploySpec], bool] | None = None) -> dict[int, str | None]:
        """Start again every release recorded in the state file (in parallel) and wait for them.
        ``keep`` filters them (the platform keeps those whose deployment record still exists).
        Returns deployment id -> None (serving) or the error message."""
        specs = [s for s in self.recorded() if keep is None or keep(s)]
        results: dict[int, str | None] = {}

        def one(spec: DeploySpec) -> None:
            try:
                self.deploy(spec)
                results[spec.deployment_id] = None
            except ClusterError as exc:
                results[spec.deployment_id] = exc.message

        threads = [threading.Thread(target=one, args=(s,), name=f"restore-{s.deployment_id}") for s in specs]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        if not specs:
            self._save()
        return results

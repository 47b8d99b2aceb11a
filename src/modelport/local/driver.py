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

One job per module: ``release`` (the records), ``supervisor`` (restarts), ``standby`` (the
pre-warmed server), ``state`` (the state file), ``server_logs`` (a server's stated reason); this
module is the driver that ties them together.

Thread-safe: a lock guards the table of releases, and each release has its own operation lock, so
operations on different releases run in parallel and operations on one release queue up.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import httpx

from modelport.deploy.driver import (
    NAMESPACE_PREFIX,
    ClusterError,
    DeploySpec,
    PodMetrics,
    ReleaseInfo,
    ReleasePhase,
    ReleaseStatus,
)
from modelport.domain.model_server import ENV_NAMES, METRICS_PATH, READY_PATH, ServerConfig, server_argv
from modelport.local import state
from modelport.local.processes import free_port
from modelport.local.release import (
    EventCallback,
    LocalRelease,
    Replica,
    ReplicaEvent,
    Revision,
    artifact_key,
    now,
)
from modelport.local.server_logs import replica_failure
from modelport.local.standby import StandbyPool
from modelport.local.supervisor import Supervisor
from modelport.settings import Settings

logger = logging.getLogger("modelport.local.driver")

STOP_GRACE_SECONDS = 10.0
CHART_NAME = "local-process"

__all__ = ["LocalProcessDriver", "ReplicaEvent"]


@dataclass(frozen=True)
class Split:
    """Where a deployment's requests go: its stable release's ready replicas, its canary's, and
    the canary's share in percent."""

    stable: tuple[str, ...] = ()
    canary: tuple[str, ...] = ()
    weight: int = 0


class LocalProcessDriver:
    """Model servers as local processes; see the module docstring."""

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
        # the servers' temporary directory, inside the cache: a server confined by serving/sandbox.py
        # may write there and in its cache only, never in the machine's /tmp
        self.tmp_dir = self.cache_dir / "tmp"
        self.tmp_dir.mkdir(parents=True, exist_ok=True)
        self.argv = python_argv or server_argv(sys.executable)
        self.extra_env = dict(extra_env or {})
        self._releases: dict[tuple[str, str], LocalRelease] = {}
        self._lock = threading.RLock()
        # deployment id -> ready upstream URLs of its stable and canary releases and the canary's
        # weight. Read lock-free by the gateway (a dict lookup is atomic), replaced under self._lock.
        self._routes: dict[int, Split] = {}
        self._sent: dict[int, itertools.count[int]] = {}  # requests routed per deployment (the split's clock)
        self._http = httpx.Client(timeout=1.0, trust_env=False)
        self._stop = threading.Event()
        self._closed = False
        self._supervisor = Supervisor(self, on_event, self._stop)
        # one pre-warmed model server (numpy and scikit-learn imported) waits for the next replica
        self._standby = StandbyPool(self.argv, {**self._base_env(), **self.extra_env}, self.log_dir,
                                    enabled=prewarm and self.argv == server_argv(sys.executable))

    @property
    def prewarm(self) -> bool:
        """Whether replicas start from the pre-warmed standby server."""
        return self._standby.enabled

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> LocalProcessDriver:
        """Start the supervisor thread and the standby (deploy starts them too, on first use)."""
        self._supervisor.start()
        self._standby.fill()
        return self

    def close(self, *, keep_state: bool = True) -> None:
        """Stop the supervisor and every model server. The state file keeps what ran (for restore)
        unless ``keep_state`` is False."""
        self._closed = True
        self._stop.set()
        self._supervisor.stop()
        with self._lock:
            releases = list(self._releases.values())
            replicas = [r for rel in releases for r in rel.replicas]
            for replica in replicas:
                replica.stopping = True
            self._routes.clear()
        self._stop_replicas(replicas)
        self._standby.close()
        if keep_state:
            self._save(include_pids=False)
        else:
            with contextlib.suppress(FileNotFoundError):
                (self.state_dir / state.STATE_FILE).unlink()
        self._http.close()

    # ------------------------------------------------------------------ gateway's view
    def upstreams(self, deployment_id: int) -> tuple[str, ...] | None:
        """Base URLs of the ready replicas that should answer this request; None if no release serves
        that id. With a canary, request n goes to the canary's replicas when the canary's share
        ``weight``% crosses a whole number between n and n+1 (exactly ``weight`` of every 100
        requests, spread evenly, the same on every run), to the stable ones otherwise; a side with
        no ready replica leaves all to the other."""
        split = self._routes.get(deployment_id)
        if split is None:
            return None
        if not split.canary or not split.weight:
            return split.stable or split.canary
        if not split.stable:
            return split.canary
        n = next(self._sent.setdefault(deployment_id, itertools.count()))
        to_canary = (n + 1) * split.weight // 100 > n * split.weight // 100
        return split.canary if to_canary else split.stable

    def _publish(self) -> None:
        """Recompute the routing table (call with self._lock held)."""
        routes: dict[int, Split] = {}
        for rel in self._releases.values():
            if rel.removed or not rel.routed:
                continue
            urls = tuple(r.url for r in rel.replicas if r.ready and r.supervised and not r.stopping)
            split = routes.get(rel.deployment_id, Split())
            weight = rel.canary_weight
            if weight is None:
                split = Split(split.stable + urls, split.canary, split.weight)
            else:
                split = Split(split.stable, split.canary + urls, weight)
            routes[rel.deployment_id] = split
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
        with self._lock:
            rel.canary_weight = spec.canary_weight  # a canary's new share applies at once
            rel.routed = spec.ingress_enabled
            self._publish()
        rel.phase, rel.message, rel.updated_at = ReleasePhase.PENDING, "deploying", now()
        first = rel.spec is None
        try:
            if first or artifact_key(spec) != artifact_key(rel.spec):  # type: ignore[arg-type]
                self._replace(rel, spec, number)
            else:
                self._scale(rel, spec, number)
        except ClusterError as exc:
            rel.phase, rel.message, rel.updated_at = ReleasePhase.FAILED, exc.message, now()
            rel.history.append(Revision(number, spec, ReleasePhase.FAILED, exc.message, rel.updated_at))
            self._save()
            logger.warning("release %s/%s failed: %s", rel.namespace, rel.release, exc.message)
            raise
        except BaseException:
            rel.phase = previous_phase
            raise
        rel.spec = spec
        rel.phase, rel.message, rel.updated_at = ReleasePhase.DEPLOYED, "ready", now()
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
        """The server's environment, from one ServerConfig: the spec as the chart renders it, but
        the object store as this machine reaches it (the control plane's own settings) and
        loopback only (only the gateway reaches a local replica, never the network)."""
        s = self.settings
        config = ServerConfig(
            model_uri=f"s3://{spec.model_bucket}/{spec.model_key}", model_sha256=spec.model_sha256,
            model_version_id=spec.model_version_id,
            requirements_uri=f"s3://{spec.model_bucket}/{spec.requirements_key}" if spec.requirements_key else None,
            requirements_sha256=spec.requirements_sha256, requirements_version_id=spec.requirements_version_id,
            model_name=spec.model_name, host="127.0.0.1", port=port,
            trusted_globals=",".join(spec.trusted_globals) or None,
            root_path=spec.path, model_cache_dir=str(self.cache_dir), predict_token_sha256=spec.predict_token_sha256,
            mirror_url=self._mirror_url(spec), mirror_percent=spec.mirror_percent,
            mirror_tolerance=spec.mirror_tolerance,
            log_level=s.log_level, s3_endpoint=s.minio_endpoint, s3_access_key=s.minio_access_key,
            s3_secret_key=s.minio_secret_key, s3_use_ssl=s.minio_use_ssl, s3_region=s.aws_region,
        )
        return {**config.to_env(), **self.extra_env}

    def _mirror_url(self, spec: DeploySpec) -> str | None:
        """The shadow's server a live one copies to: in a cluster its Service; here its first
        replica (the deployer installs the shadow before the live release that copies to it)."""
        if not spec.mirror_release:
            return None
        with self._lock:
            shadow = self._releases.get((spec.namespace, spec.mirror_release))
            replicas = [r for r in shadow.replicas if not r.stopping] if shadow and not shadow.removed else []
        if not replicas:  # (a restore that came to the live release first): serve, copy nothing
            logger.warning("release %s to copy requests to is not running; %s copies nothing", spec.mirror_release,
                           spec.release)
            return None
        return replicas[0].url

    def _base_env(self) -> dict[str, str]:
        """This process's environment less every name a model server reads (its config is its own),
        with the servers' own temporary directory."""
        return {**{k: v for k, v in os.environ.items() if k not in ENV_NAMES}, "TMPDIR": str(self.tmp_dir)}

    def spawn(self, replica: Replica) -> None:
        """Start the replica's server: the standby takes it if one waits, else a fresh process."""
        replica.log_path.parent.mkdir(parents=True, exist_ok=True)
        with replica.log_path.open("ab") as log:
            log.write(f"--- starting {' '.join(self.argv)} on port {replica.port} at {now().isoformat()}\n".encode())
            log.flush()
            replica.process = self._standby.hand_over(replica.env, replica.log_path)
            if replica.process is None:
                replica.process = subprocess.Popen(  # noqa: S603
                    self.argv, env={**self._base_env(), **replica.env}, stdout=log, stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL, start_new_session=True,
                )
        replica.started_at = time.monotonic()
        replica.ready = False

    def _launch_and_wait(self, rel: LocalRelease, spec: DeploySpec, replicas: list[Replica]) -> None:
        try:
            for replica in replicas:
                self.spawn(replica)
            deadline = time.monotonic() + spec.timeout_seconds
            pending = list(replicas)
            while pending:
                for replica in list(pending):
                    assert replica.process is not None
                    code = replica.process.poll()
                    if code is not None:
                        raise replica_failure(
                            replica.log_path, f"the model server of deployment {spec.deployment_id} did not start "
                            f"(replica {replica.index + 1} exited with code {code})", f"exited with code {code}",
                        )
                    if self.probe(replica):
                        replica.ready = True
                        pending.remove(replica)
                if not pending:
                    break
                if time.monotonic() > deadline:
                    raise replica_failure(
                        pending[0].log_path,
                        f"the model server of deployment {spec.deployment_id} was not ready within "
                        f"{spec.timeout_seconds} s; its last log lines", "not ready",
                    )
                if self._stop.wait(0.05):
                    raise ClusterError("the local platform is stopping", retryable=True)
        except BaseException:
            for replica in replicas:
                replica.stopping = True
            self._stop_replicas(replicas)
            raise

    def probe(self, replica: Replica) -> bool:
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

    def scrape(self, namespace: str, release: str) -> list[PodMetrics]:
        with self._lock:
            rel = self._releases.get((namespace, release))
            replicas = [] if rel is None else [r for r in rel.replicas if r.process is not None and not r.stopping]
        scraped = []
        for replica in replicas:
            pod = f"{release}-{replica.index + 1}"
            try:
                answer = self._http.get(replica.url + METRICS_PATH, timeout=2.0)
                answer.raise_for_status()
                scraped.append(PodMetrics(pod=pod, text=answer.text))
            except httpx.HTTPError as exc:
                scraped.append(PodMetrics(pod=pod, error=f"{type(exc).__name__}: {exc}"))
        return scraped

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
            rel.phase, rel.updated_at = ReleasePhase.DEPLOYED, now()
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

    # ------------------------------------------------------------------ what the supervisor needs
    def supervised(self) -> list[tuple[LocalRelease, Replica]]:
        with self._lock:
            return [(rel, r) for rel in self._releases.values() for r in rel.replicas
                    if r.supervised and not r.stopping and not rel.removed]

    def replicas_changed(self) -> None:
        with self._lock:
            self._publish()
        self._save()

    # ------------------------------------------------------------------ state file
    def _save(self, *, include_pids: bool = True) -> None:
        with self._lock:
            state.save(self.state_dir / state.STATE_FILE, self._releases.values(), include_pids=include_pids)

    def recorded(self) -> list[DeploySpec]:
        """The specs the state file says were serving."""
        return state.recorded(self.state_dir / state.STATE_FILE)

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

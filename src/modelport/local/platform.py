"""``modelport up``: all of modelport on one machine, in one process, as a few parts that each
start and stop. ``Platform.start`` starts them in this order; ``stop`` stops them in reverse,
children included (Ctrl-C, SIGTERM: ``foreground.run``):

1. the state directory (``--ephemeral``: a temporary one, removed at stop) and its ``logs/``;
   claimed for this run, after ending what a killed run left, with a watchdog that ends every
   process of this run when the platform dies, however it dies (``ownership``);
2. the AWS stand-ins (``stand_ins.StandIns``: moto in memory; ``--persist``: DynamoDB Local and
   SeaweedFS; or the endpoints given), which say where they keep data;
3. the settings, built here from the options and the stand-ins' endpoints and passed to every part
   (nothing reads them from the environment); the table (``ensure_table``: stream, indexes, TTL);
4. the cluster driver: ``local`` (model servers as processes, ``local.driver``) or ``helm``
   (``--kubeconfig``); with ``--persist`` the local driver first restores the deployments its
   state file recorded (those whose record still exists);
5. the event sources (``events.EventSources``: bucket, uploads queue, stream and queue pollers)
   calling the functions' own handlers (``functions/{deployer,artifacts}/app.py``, loaded by path:
   ``functions.load_function_module``), with template.yaml's batch settings;
6. the API (``create_app``) on ``--port`` and, for the local driver, the gateway on
   ``--gateway-port``; the reconcile sweep, once now and every 5 minutes, and with it the recovery
   of uploads whose event was lost (``ArtifactEvents.recover``: the uploads queue is moto's, in
   memory, even under ``--persist``); the metrics sampler (``deploy.metrics``) and after it the
   canary decisions (``services.rollouts.evaluate``), every ``METRICS_SAMPLE_SECONDS`` (in AWS the
   scheduled function does all three, every minute);
7. a default user (first start only) whose API key is printed once and kept, with the endpoint, in
   ``Options.keys`` (the CLI's config); then one line ``ready api=... gateway=...``.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from rich.console import Console
from rich.logging import RichHandler

from modelport.api.app import create_app
from modelport.artifacts.storage import ObjectStore
from modelport.deploy.driver import ClusterDriver
from modelport.deploy.metrics import sample_all
from modelport.deploy.reconcile import sweep
from modelport.deploy.runtime import build_driver
from modelport.domain.entities import DeploymentStatus
from modelport.local.driver import LocalProcessDriver
from modelport.local.errors import PlatformError
from modelport.local.events import EventSources
from modelport.local.functions import find_root, load_function_module
from modelport.local.gateway import Gateway, UvicornThread
from modelport.local.ownership import claim
from modelport.local.processes import port_open
from modelport.local.stand_ins import CREDENTIALS, Endpoints, StandIns
from modelport.local.template import load_template
from modelport.local.tools import with_tools
from modelport.services import rollouts, users
from modelport.services.artifact_events import ArtifactEvents
from modelport.settings import Settings
from modelport.store.records import ensure_table
from modelport.store.repository import Store

__all__ = ["KeyBook", "Options", "Platform", "PlatformError"]

logger = logging.getLogger("modelport.local.platform")

USER = "default"
SWEEP_INTERVAL_SECONDS = 300.0


@dataclass
class Options:
    port: int = 8000
    gateway_port: int = 30080
    host: str = "127.0.0.1"
    state_dir: Path = Path(".modelport")
    persist: bool = False
    ephemeral: bool = False
    dynamodb_endpoint: str | None = None
    s3_endpoint: str | None = None
    driver: str = "local"
    kubeconfig: str | None = None
    demo: bool = False
    keys: KeyBook | None = None  # where the default user's key is kept for other terminals (the CLI's config)
    verbose: bool = False


class KeyBook(Protocol):
    """Where the CLI keeps an endpoint's API key; ``modelport up`` (the CLI) passes its config file."""

    def known_key(self, endpoint: str) -> str | None: ...

    def save(self, endpoint: str, key: str) -> Path: ...

    def where(self) -> Path: ...

    def note_table(self, endpoint: str, table_endpoint: str, table_name: str) -> None:
        """Where the platform serving ``endpoint`` keeps its table (it moves at each start)."""


@dataclass
class Platform:
    options: Options
    out: Console = field(default_factory=lambda: Console(soft_wrap=True, highlight=False))
    stopped: threading.Event = field(default_factory=threading.Event)

    def __post_init__(self) -> None:
        self._stack: list[tuple[str, Callable[[], None]]] = []
        self.api_url = ""
        self.gateway_url = ""
        self.state_dir = Path()
        self.settings: Any = None
        self.store: Any = None
        self.driver: Any = None
        self.api_key: str | None = None
        self.error: str | None = None
        self._stop_lock = threading.Lock()

    # ------------------------------------------------------------------ helpers
    def _on_stop(self, name: str, fn: Callable[[], None]) -> None:
        self._stack.append((name, fn))

    def say(self, message: str) -> None:
        self.out.print(message)

    # ------------------------------------------------------------------ start
    def start(self) -> None:
        o = self.options
        self._started_at = datetime.now(UTC)
        self._check_options()
        log_dir = self._state_directory() / "logs"
        log_dir.mkdir(parents=True, exist_ok=True)
        run, leftovers = claim(self.state_dir)
        self._on_stop("watchdog", run.release)
        if leftovers:
            self.say(f"ended {len(leftovers)} process(es) that a killed modelport up left running "
                     f"(pids {', '.join(map(str, leftovers))})")
        root = find_root()
        library_environment(o.verbose)

        stand_ins = StandIns(state_dir=self.state_dir, log_dir=log_dir, persist=o.persist,
                             dynamodb_endpoint=o.dynamodb_endpoint, s3_endpoint=o.s3_endpoint)
        self._on_stop("stand-ins", stand_ins.stop)
        endpoints = stand_ins.start()
        self._describe(endpoints)

        self.settings = settings = self._settings(endpoints)
        if ensure_table(settings):
            logger.info("table %s created at %s", settings.table_name, endpoints.dynamodb)
        self.store = Store(settings)
        # the modules are imported before the console takes over the logs: Powertools' Logger, made
        # at their import, would print JSON for the whole "modelport" tree
        deployer, artifacts = (load_function_module(root, name) for name in ("deployer", "artifacts"))
        console_logs(o.verbose)

        self.driver = self._driver(settings)
        sources = EventSources(settings, endpoints, load_template(root / "template.yaml"), from_stream_end=o.persist)
        self._on_stop("event sources", sources.stop)
        sources.start(deployer=deployer.build(settings, store=self.store, driver=self.driver),
                      artifacts=artifacts.build(settings, store=self.store))

        self._serve(settings)
        self._uploads = ArtifactEvents(self.store, ObjectStore(settings), settings)
        self._sweeper = threading.Thread(target=self._sweep_loop, name="sweep", daemon=True)
        self._sweeper.start()
        threading.Thread(target=self._sample_loop, name="metrics", daemon=True).start()
        self._user()
        self.say(f"ready api={self.api_url} gateway={self.gateway_url}")

    def _check_options(self) -> None:
        o = self.options
        if o.persist and o.ephemeral:
            raise PlatformError("--persist and --ephemeral exclude each other")
        # with the helm driver the gateway port is the cluster ingress's (kind maps it): not ours to bind
        ports = [("--port", o.port)] + ([("--gateway-port", o.gateway_port)] if o.driver == "local" else [])
        for name, port in ports:
            if port and port_open(port):
                raise PlatformError(f"port {port} ({name}) is already in use; choose another with {name}")

    def _state_directory(self) -> Path:
        if self.options.ephemeral:
            self.state_dir = Path(tempfile.mkdtemp(prefix="modelport-"))
            self._on_stop("state directory", lambda: shutil.rmtree(self.state_dir, ignore_errors=True))
        else:
            self.state_dir = self.options.state_dir.expanduser().resolve()
            self.state_dir.mkdir(parents=True, exist_ok=True)
        return self.state_dir

    def _describe(self, endpoints: Endpoints) -> None:
        if self.options.persist:
            self.say(f"persistent state in [bold]{self.state_dir}[/]: DynamoDB Local ({endpoints.dynamodb}), "
                     f"SeaweedFS S3 ({endpoints.s3}); SQS on moto ({endpoints.sqs}; queued events are not "
                     "kept, the uploads they announced are found at start)")
        elif self.options.ephemeral:
            self.say(f"ephemeral: in-memory stand-ins (moto {endpoints.sqs}); state in {self.state_dir}, "
                     "removed on exit")
        else:
            self.say(f"[yellow]in-memory stand-ins (moto {endpoints.sqs}): models, versions and deployments are "
                     "forgotten on exit[/] (use --persist to keep them)")

    def _settings(self, endpoints: Endpoints) -> Settings:
        o = self.options
        return Settings(
            table_name=os.environ.get("TABLE_NAME", "modelport"),
            dynamodb_endpoint=endpoints.dynamodb,
            minio_endpoint=endpoints.s3, minio_access_key="testing", minio_secret_key="testing",
            minio_bucket_name=os.environ.get("MINIO_BUCKET_NAME", "models"),
            state_dir=str(self.state_dir), ingress_host="localhost", ingress_port=o.gateway_port,
            cluster_driver=o.driver,
            kubeconfig=str(Path(o.kubeconfig).expanduser().resolve()) if o.kubeconfig else None,
        )

    def _driver(self, settings: Settings) -> ClusterDriver:
        if self.options.driver != "local":
            return build_driver(with_tools(settings))
        driver = LocalProcessDriver(settings, state_dir=self.state_dir / "driver", on_event=self._report)
        self._on_stop("model servers", lambda: driver.close(keep_state=self.options.persist))
        if self.options.persist:
            self._restore(driver)
        return driver

    def _serve(self, settings: Settings) -> None:
        """The API, and the gateway in front of the local driver's model servers."""
        o = self.options
        api = UvicornThread(create_app(settings, self.store), host=o.host, port=o.port, name="api").start()
        self._on_stop("API", api.stop)
        self.api_url = f"http://{'localhost' if o.host in ('127.0.0.1', '0.0.0.0') else o.host}:{o.port}"  # noqa: S104
        if isinstance(self.driver, LocalProcessDriver):
            gateway = UvicornThread(Gateway(self.driver.upstreams, base_path=settings.ingress_base_path),
                                    host=o.host, port=o.gateway_port, name="gateway").start()
            self._on_stop("gateway", gateway.stop)
            self.gateway_url = settings.public_base
        else:
            self.gateway_url = settings.public_base + " (the cluster's ingress)"

    def _restore(self, driver: Any) -> None:
        def keep(spec: Any) -> bool:
            found = self.store.find_deployment(spec.deployment_id)
            return found is not None and spec.release in found.release_names
        started = time.monotonic()
        results = driver.restore(keep=keep)
        for deployment_id, error in sorted(results.items()):
            if error:
                logger.warning("deployment %d could not be restored: %s", deployment_id, error)
        if results:
            ok = sum(1 for e in results.values() if e is None)
            self.say(f"restored {ok} of {len(results)} deployment(s) in {time.monotonic() - started:.1f} s")

    def _sweep_loop(self) -> None:
        # the first sweep re-drives whatever was mid-transition before this start (a killed run's
        # DEPLOYING records): no deployer but this one can be working on them
        stuck_before: datetime | None = self._started_at
        while True:
            try:
                report = sweep(self.store, self.driver, self.settings, stuck_before=stuck_before)
                stuck_before = None
                for line in report.lines():
                    logger.info("sweep: %s", line)
                # uploads whose event was lost (the uploads queue is in memory): handled as the event would
                for outcome in self._uploads.recover():
                    logger.info("upload of version %s found without its event: %s %s", outcome.version_id,
                                outcome.action, outcome.reason)
            except Exception:  # noqa: BLE001 - the next sweep tries again
                logger.warning("sweep failed", exc_info=True)
            if self.stopped.wait(SWEEP_INTERVAL_SECONDS):
                return

    def _sample_loop(self) -> None:
        while not self.stopped.wait(self.settings.metrics_sample_seconds):
            try:
                for line in sample_all(self.store, self.driver, self.settings).lines():
                    logger.debug("metrics: %s", line)
                for deployment_id, decision in rollouts.evaluate(self.store):
                    logger.info("deployment %d canary: %s (%s)", deployment_id, decision.verdict, decision.reason)
            except Exception:  # noqa: BLE001 - the next run tries again
                logger.warning("metrics sampling failed", exc_info=True)

    def _report(self, event: Any) -> None:
        """A replica exited or recovered: say so in the deployment's status message."""
        deployment = self.store.find_deployment(event.deployment_id)
        if deployment is None or deployment.status != DeploymentStatus.READY:
            return
        self.store.set_deployment_status(deployment.id, DeploymentStatus.READY, event.message,
                                         generation=deployment.generation)

    def _user(self) -> None:
        book = self.options.keys
        if book is not None and self.settings.dynamodb_endpoint:
            book.note_table(self.api_url, self.settings.dynamodb_endpoint, self.settings.table_name)
        key = book.known_key(self.api_url) if book is not None else None
        if key and users.owner_of_key(self.store, key) == USER:
            self.api_key = key
            self.say(f"user {USER}: its API key is in {book.where() if book else ''}")
            return
        if self.store.user_exists(USER):
            key = users.add_api_key(self.store, USER)
            self.say(f"user {USER}: a new API key (shown once): [bold]{key}[/]")
        else:
            _, key = users.create_user(self.store, USER)
            self.say(f"user {USER} created; its API key (shown once): [bold]{key}[/]")
        self.api_key = key
        if book is not None:
            saved = book.save(self.api_url, key)
            self.say(f"endpoint and key written to {saved}: `modelport` commands work in another terminal")

    # ------------------------------------------------------------------ stop
    def stop(self) -> None:
        self.stopped.set()
        with self._stop_lock:
            self._stop_all()

    def _stop_all(self) -> None:
        while self._stack:
            name, fn = self._stack.pop()
            try:
                fn()
            except Exception:  # noqa: BLE001 - stop everything else regardless
                logger.warning("stopping %s failed", name, exc_info=True)
            logger.debug("%s stopped", name)


def library_environment(verbose: bool) -> None:
    """The environment the libraries read for themselves (not modelport's settings): boto3's
    default credential chain needs credentials, which every stand-in accepts, and Powertools takes
    its service name, metric namespace and log level from the environment only."""
    defaults = {**CREDENTIALS, "AWS_DEFAULT_REGION": "us-east-1", "AWS_REGION": "us-east-1",
                "POWERTOOLS_SERVICE_NAME": "modelport", "POWERTOOLS_METRICS_NAMESPACE": "modelport-local",
                "POWERTOOLS_METRICS_DISABLED": "true", "POWERTOOLS_LOG_LEVEL": "INFO" if verbose else "WARNING"}
    for key, value in defaults.items():
        os.environ.setdefault(key, value)


def console_handler() -> logging.Handler:
    return RichHandler(console=Console(stderr=True), show_path=False, rich_tracebacks=False,
                       log_time_format="%H:%M:%S")


def console_logs(verbose: bool) -> None:
    """The "modelport" logger tree to the one readable console log. Powertools' Logger(service=
    "modelport") prints JSON on stdout for the whole tree, and reuses the tree's first handler for
    later Logger instances, so that handler is replaced, not removed."""
    tree = logging.getLogger("modelport")
    tree.handlers[:] = [console_handler()]  # a fresh one: Powertools filters "modelport" off root's
    tree.propagate = False
    tree.setLevel(logging.DEBUG if verbose else logging.INFO)

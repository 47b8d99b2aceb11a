"""Run the model server: uvicorn (uvloop + httptools, no access log) around the ASGI app."""

from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import Callable, Mapping
from typing import Any

import orjson
import uvicorn

from modelport.domain.model_server import ServerConfig, failure_line
from modelport.serving.asgi import App
from modelport.serving.sandbox import SandboxUnavailable, confine_process


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message (and the exception, if any)."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname, "logger": record.name, "message": record.getMessage(),
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return orjson.dumps(entry).decode()


def configure_logging(level: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for name in ("uvicorn", "uvicorn.error"):
        logging.getLogger(name).handlers[:] = []
        logging.getLogger(name).propagate = True
    logging.getLogger("botocore").setLevel(logging.WARNING)


def run(config: ServerConfig, restart: Callable[[], object] | None = None,
        env: Mapping[str, str] | None = None) -> int:
    """Serve until stopped; 0 on a clean stop, 1 (after a ``failure_line`` on stderr) when the model
    could not be loaded or ``MODEL_SANDBOX=required`` cannot be had. ``env``: the environment the
    server was given (``os.environ`` unless a standby took an order)."""
    configure_logging(config.log_level)
    try:  # before anything serves or loads: every thread and child from here on inherits it
        confinement = confine_process(config, dict(os.environ if env is None else env))
    except SandboxUnavailable as exc:
        return _failed(config, str(exc))
    app = App(config, restart=restart, confinement=confinement)
    server = uvicorn.Server(uvicorn.Config(
        app, host=config.host, port=config.port, loop="uvloop", http="httptools", lifespan="on",
        access_log=False, log_config=None, log_level=config.log_level.lower(), server_header=False,
        date_header=False, backlog=2048, timeout_keep_alive=75, timeout_graceful_shutdown=10,
    ))

    def stop(_message: str) -> None:
        server.should_exit = True

    app.plane.on_failure = stop
    logging.getLogger("modelport.serving").info(
        "serving model %s from %s on port %d%s", config.model_name, config.model_uri, config.port,
        f" (also under {config.root_path})" if config.root_path else "",
    )
    server.run()
    failure = app.plane.failure
    if failure is not None:
        return _failed(config, failure)
    return 0


def _failed(config: ServerConfig, failure: str) -> int:
    # the human line, then the contract's structured line the starter reads back (parse_failure)
    print(f"modelport model server: cannot serve model '{config.model_name}': {failure}", file=sys.stderr)
    print(failure_line(failure), file=sys.stderr, flush=True)
    return 1


def main() -> int:
    try:
        config = ServerConfig.from_env(os.environ)
    except ValueError as exc:
        print(f"modelport model server: bad configuration: {exc}", file=sys.stderr)
        return 2
    return run(config)

"""Child processes that serve on a port: start, wait until they accept, stop.

Shared by the test fixtures and the local platform, which start the same stand-ins (DynamoDB
Local, moto server) the same way.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from modelport.local.tools import Tools, ensure_tools, java


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.2)
        return sock.connect_ex((host, port)) == 0


@dataclass
class ServerProcess:
    name: str
    port: int
    process: subprocess.Popen[bytes]
    log_path: Path | None = None
    extra: dict[str, str] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def wait_ready(self, timeout: float = 60.0) -> ServerProcess:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.process.returncode}: {self.log_tail()}")
            if port_open(self.port):
                return self
            time.sleep(0.05)
        self.stop()
        raise TimeoutError(f"{self.name} did not accept connections on port {self.port} in {timeout}s")

    def log_tail(self, lines: int = 20) -> str:
        if self.log_path and self.log_path.exists():
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        return ""

    def stop(self, timeout: float = 10.0) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout)


def start(
    name: str, argv: Sequence[str], port: int, *, log_dir: Path | None = None, cwd: Path | None = None,
    env: dict[str, str] | None = None,
) -> ServerProcess:
    log_path = None
    out: Any = subprocess.DEVNULL
    if log_dir is not None:
        log_dir.mkdir(parents=True, exist_ok=True)
        log_path = log_dir / f"{name}.log"
        out = open(log_path, "ab")  # noqa: SIM115 - the child owns it
    process = subprocess.Popen(  # noqa: S603
        list(argv), cwd=cwd, stdout=out, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})},
        start_new_session=True,
    )
    return ServerProcess(name, port, process, log_path)


def start_dynamodb_local(
    port: int | None = None, *, data_dir: Path | None = None, log_dir: Path | None = None,
    tools: Tools | None = None,
) -> ServerProcess:
    """Amazon's DynamoDB Local: in memory, or persisted under ``data_dir``."""
    tools = tools or ensure_tools()
    port = port or free_port()
    storage = ["-inMemory"] if data_dir is None else ["-dbPath", str(data_dir)]
    if data_dir is not None:
        data_dir.mkdir(parents=True, exist_ok=True)
    argv = [
        java(), "-Djava.library.path=DynamoDBLocal_lib", "-jar", "DynamoDBLocal.jar",
        *storage, "-sharedDb", "-disableTelemetry", "-port", str(port),
    ]
    proc = start("dynamodb-local", argv, port, log_dir=log_dir, cwd=tools.dynamodb_local_dir)
    return proc.wait_ready(60)


def start_moto_server(port: int | None = None, *, log_dir: Path | None = None) -> ServerProcess:
    """moto's server: S3 (with notifications into SQS), SQS, DynamoDB and friends on one port."""
    port = port or free_port()
    argv = [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)]
    return start("moto-server", argv, port, log_dir=log_dir).wait_ready(60)

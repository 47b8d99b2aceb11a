"""``modelport up`` as a user runs it, for the e2e tests: a subprocess on free ports whose
``ready`` line is awaited, driven over HTTP with the key it wrote to its CLI config."""

from __future__ import annotations

import os
import queue
import signal
import subprocess
import sys
import threading
import time
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from modelport.local.processes import free_port


@dataclass
class Up:
    process: subprocess.Popen[str]
    api: str
    gateway: str
    config: Path
    lines: list[str] = field(default_factory=list)

    @property
    def key(self) -> str:
        return str(tomllib.loads(self.config.read_text())["api_key"])

    def client(self) -> httpx.Client:
        return httpx.Client(base_url=self.api + "/api/v1", headers={"Authorization": f"Bearer {self.key}"},
                            timeout=60)

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(60)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        return self.process.returncode


def start_up(tmp: Path, *args: str, port: int | None = None, gateway_port: int | None = None,
             own_group: bool = False, env_extra: dict[str, str] | None = None) -> Up:
    """``modelport up ARGS`` in ``tmp``; ``env_extra``: settings for it (e.g. CLUSTER_S3_ENDPOINT)."""
    port, gateway_port = port or free_port(), gateway_port or free_port()
    config = tmp / "config.toml"
    env = {**os.environ, "MODELPORT_CONFIG": str(config), "TERM": "dumb"}
    for name in ("TABLE_NAME", "DYNAMODB_ENDPOINT", "MINIO_ENDPOINT", "MINIO_BUCKET_NAME", "CLUSTER_DRIVER"):
        env.pop(name, None)
    env.update(env_extra or {})
    process = subprocess.Popen(  # noqa: S603
        [sys.executable, "-m", "modelport.cli", "up", "--port", str(port), "--gateway-port", str(gateway_port),
         *args],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, cwd=tmp, start_new_session=own_group,
    )
    up = Up(process, f"http://localhost:{port}", f"http://localhost:{gateway_port}", config)
    lines: queue.Queue[str | None] = queue.Queue()

    def pump() -> None:
        assert process.stdout is not None
        for line in process.stdout:
            up.lines.append(line.rstrip())
            lines.put(line)
        lines.put(None)

    threading.Thread(target=pump, daemon=True).start()
    deadline = time.monotonic() + 180
    while True:
        line = lines.get(timeout=max(0.1, deadline - time.monotonic()))
        if line is None:
            raise AssertionError("modelport up exited before ready:\n" + "\n".join(up.lines))
        if line.startswith("ready "):
            assert f"api={up.api}" in line and f"gateway={up.gateway}" in line
            return up


def wait_status(client: httpx.Client, deployment_id: int, *, replicas: int | None = None,
                timeout: float = 120) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        answer = client.get(f"/deployments/{deployment_id}")
        assert answer.status_code == 200, answer.text
        body: dict[str, Any] = answer.json()
        if body["status"] == "FAILED":
            raise AssertionError(f"deployment failed: {body}")
        if body["status"] == "READY" and (replicas is None or body["replicas"] == replicas):
            return body
        assert time.monotonic() < deadline, f"not READY in {timeout}s: {body}"
        time.sleep(0.2)


def refuse_a_duplicate(client: httpx.Client) -> None:
    """A 409 (a cancelled transaction in the table): every later deployment must still converge."""
    name = f"twice-{time.monotonic_ns()}"
    assert client.post("/models", json={"name": name}).status_code == 201
    again = client.post("/models", json={"name": name})
    assert again.status_code == 409 and again.json()["code"] == "model_exists", again.text


def second_terminal_creates_a_user(up: Up, tmp: Path) -> str:
    """`modelport users create` from another terminal: no AWS credentials there, only the CLI config.
    Returns the new user's API key."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "MODELPORT_"))}
    for name in ("TABLE_NAME", "DYNAMODB_ENDPOINT"):
        env.pop(name, None)
    env.update(MODELPORT_CONFIG=str(up.config), HOME=str(tmp / "home"))
    name = f"bob{time.monotonic_ns()}"
    done = subprocess.run([sys.executable, "-m", "modelport.cli", "users", "create", name], env=env,  # noqa: S603
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    me = httpx.get(up.api + "/api/v1/me", headers={"Authorization": f"Bearer {done.stdout.strip()}"})
    assert me.status_code == 200 and me.json()["owner"] == name, me.text
    return done.stdout.strip()


def upload_and_deploy(client: httpx.Client, model_path: Path, requirements: bytes | None = None,
                      replicas: int = 1) -> dict[str, Any]:
    model = client.post("/models", json={"name": f"iris-{time.monotonic_ns()}"}).raise_for_status().json()
    version = client.post(f"/models/{model['id']}/versions", json={}).raise_for_status().json()
    files: dict[str, Any] = {"model_file": ("model.joblib", model_path.read_bytes())}
    if requirements is not None:
        files["requirements_file"] = ("requirements.txt", requirements)
    uploaded = client.post(f"/versions/{version['id']}/upload", files=files)
    assert uploaded.status_code == 200, uploaded.text
    assert uploaded.json()["status"] == "READY"
    created = client.post(f"/versions/{version['id']}/deployments", json={"replicas": replicas})
    assert created.status_code == 201, created.text
    return dict(created.json())

"""Canary rollouts and shadows on ``modelport up`` (the local process driver and its gateway),
driven over HTTP as a user would, with a client load running throughout that counts every answer."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import pytest

from modelport.local import ownership
from tests.support.models import (
    FAILING_GLOBAL,
    IRIS_ROWS,
    SHADOW_CANDIDATE,
    SHADOW_LIVE,
    train_failing_iris,
    train_iris,
    train_steps,
)
from tests.support.up import Up, start_up, upload_and_deploy, wait_status

pytestmark = pytest.mark.e2e
ROOT = Path(__file__).resolve().parents[2]


class Load:
    """Single-row predictions in a loop, cycling through IRIS_ROWS, until stopped: answers by status."""

    def __init__(self, url: str) -> None:
        self.url, self.codes, self._stop = url, Counter[int](), threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        with httpx.Client(timeout=30) as client:
            n = 0
            while not self._stop.is_set():
                row = IRIS_ROWS[n % len(IRIS_ROWS)]
                n += 1
                try:
                    self.codes[client.post(self.url, json={"instances": [row]}).status_code] += 1
                except httpx.HTTPError:
                    self.codes[0] += 1

    def __enter__(self) -> Load:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(30)


def add_version(client: httpx.Client, model_id: int, path: Path, trusted: list[str] | None = None) -> int:
    version = client.post(f"/models/{model_id}/versions", json={"trusted_globals": trusted or []})
    assert version.status_code == 201, version.text
    uploaded = client.post(f"/versions/{version.json()['id']}/upload",
                           files={"model_file": ("model.joblib", path.read_bytes())})
    assert uploaded.status_code == 200 and uploaded.json()["status"] == "READY", uploaded.text
    return int(version.json()["id"])


def deployed(client: httpx.Client, path: Path) -> tuple[dict[str, Any], str, int]:
    """``path`` uploaded and deployed, READY: the deployment as created, its predict URL, its model's id."""
    created = upload_and_deploy(client, path)
    url = wait_status(client, created["id"])["url"] + "/predict"
    return created, url, int(client.get(f"/versions/{created['version_id']}").json()["model_id"])


def until_rollout(client: httpx.Client, deployment_id: int, state: str, timeout: float = 120) -> dict[str, Any]:
    """The record once its canary ended in ``state`` and the deployer converged it (its message)."""
    deadline = time.monotonic() + timeout
    while True:
        body = client.get(f"/deployments/{deployment_id}").json()
        rollout = body.get("rollout") or {}
        ended = {"promoted": "canary promoted", "rolled_back": "canary rolled back"}[state]
        if rollout.get("state") == state and body["status"] == "READY" \
                and (body["status_message"] or "").startswith(ended):
            return dict(body)
        assert time.monotonic() < deadline, body
        time.sleep(0.2)


def test_a_good_canary_promotes_through_every_step_without_a_failed_request_and_a_bad_one_rolls_back(
    tmp_path: Path,
) -> None:
    stable_path, _ = train_iris(tmp_path / "stable.joblib")
    candidate_path, _ = train_iris(tmp_path / "candidate.joblib")
    failing_path = train_failing_iris(tmp_path / "failing.joblib")
    up = start_up(tmp_path, "--ephemeral", env_extra={"METRICS_SAMPLE_SECONDS": "0.5", "PYTHONPATH": str(ROOT)})
    try:
        with up.client() as client:
            created, url, model_id = deployed(client, stable_path)
            deployment_id = created["id"]
            good = add_version(client, model_id, candidate_path)
            bad = add_version(client, model_id, failing_path, trusted=[FAILING_GLOBAL])
            # decided on errors only: latency on a shared machine is no fixed fact (the rule is unit-tested)
            rollout = {"strategy": "canary", "steps": [10, 50], "step_seconds": 1, "min_requests": 5,
                       "max_error_rate": 0.01, "max_p99_ratio": None}

            with Load(url) as load:
                # as a user would, from the CLI: it follows the canary and ends when it is promoted
                cli = subprocess.Popen(  # noqa: S603
                    [sys.executable, "-m", "modelport.cli", "deploy", str(good), "--to", str(deployment_id),
                     "--canary", "10,50", "--step-seconds", "1", "--min-requests", "5", "--no-latency-check",
                     "--wait", "--json"],
                    env={**os.environ, "MODELPORT_CONFIG": str(up.config)}, stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE, text=True)
                seen_steps = set()
                deadline = time.monotonic() + 180
                while cli.poll() is None:
                    rollout_now = client.get(f"/deployments/{deployment_id}").json().get("rollout") or {}
                    if rollout_now.get("state") == "progressing":
                        seen_steps.add(rollout_now["weight"])
                    assert time.monotonic() < deadline, rollout_now
                    time.sleep(0.1)
                out, err = cli.communicate()
                assert cli.returncode == 0, err
                promoted = json.loads(out)
            assert promoted["version_id"] == good and promoted["rollout"]["weight"] == 100
            assert seen_steps <= {10, 50} and 50 in seen_steps, seen_steps
            assert promoted["status_message"].startswith("canary promoted"), promoted
            assert promoted["rollout"]["candidate"]["requests"] >= 5
            assert set(load.codes) == {200}, load.codes  # not one failed request through the rollout

            with Load(url) as load:
                started = client.patch(f"/deployments/{deployment_id}", json={"version_id": bad, "rollout": rollout})
                assert started.status_code == 200, started.text
                rolled_back = until_rollout(client, deployment_id, "rolled_back")
            assert rolled_back["version_id"] == good  # still serving the stable version
            assert "rolled back" in rolled_back["status_message"] and "error rate" in rolled_back["status_message"]
            assert rolled_back["rollout"]["candidate"]["errors"] >= 1
            assert load.codes[500] >= 1 and load.codes[200] > load.codes[500]
            # afterwards every row, the candidate's failing one too, is answered by the stable version
            for row in IRIS_ROWS * 10:
                assert httpx.post(url, json={"instances": [row]}).status_code == 200
    finally:
        assert up.stop() == 0, "\n".join(up.lines[-30:])


def cli(up: Up, *args: str) -> Any:
    done = subprocess.run([sys.executable, "-m", "modelport.cli", *args], capture_output=True, text=True,  # noqa: S603
                          env={**os.environ, "MODELPORT_CONFIG": str(up.config)}, timeout=300)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def _listening_inodes() -> set[str]:
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError):
            for line in Path(table).read_text().splitlines()[1:]:
                fields = line.split()
                if fields[3] == "0A":  # LISTEN
                    inodes.add(fields[9])
    return inodes


def model_servers(up: Up) -> int:
    """Model servers this ``modelport up`` runs that serve (listen on a port): its own marked
    processes of ``modelport.serving``; a pre-warmed standby listens only once it has a replica."""
    listening, count = _listening_inodes(), 0
    for pid, mark in ownership.marked().items():
        if not mark.startswith(f"{up.process.pid}:"):
            continue
        with contextlib.suppress(OSError):  # gone meanwhile
            if b"modelport.serving" not in Path(f"/proc/{pid}/cmdline").read_bytes():
                continue
            sockets = {os.readlink(fd).removeprefix("socket:[").removesuffix("]")
                       for fd in Path(f"/proc/{pid}/fd").iterdir()}
            count += bool(sockets & listening)
    return count


def until(check: Any, what: str, timeout: float = 120) -> Any:
    deadline = time.monotonic() + timeout
    while not (value := check()):
        assert time.monotonic() < deadline, what
        time.sleep(0.1)
    return value


def converged(client: httpx.Client, deployment_id: int, message: str) -> Any:
    """The record once READY with a status message that starts with ``message``."""
    def check() -> Any:
        body = client.get(f"/deployments/{deployment_id}").json()
        return body if body["status"] == "READY" and (body["status_message"] or "").startswith(message) else None
    return until(check, f"deployment {deployment_id} not READY with {message!r}")


def test_a_shadow_reports_its_agreement_callers_get_the_live_answers_and_stop_and_promote_clean_up(
    tmp_path: Path,
) -> None:
    live_path = train_steps(tmp_path / "live.joblib", SHADOW_LIVE)
    candidate_path = train_steps(tmp_path / "candidate.joblib", SHADOW_CANDIDATE)
    up = start_up(tmp_path, "--ephemeral", env_extra={"METRICS_SAMPLE_SECONDS": "0.5"})
    try:
        with up.client() as client:
            created, url, model_id = deployed(client, live_path)
            deployment_id = created["id"]
            candidate = add_version(client, model_id, candidate_path)

            # from the CLI, as a user would: it returns once the shadow runs
            started = cli(up, "deployments", "shadow", str(deployment_id), str(candidate), "--json")
            assert started["shadow"]["state"] == "running" and started["status"] == "READY", started
            assert started["status_message"] == f"shadow: version id {candidate} gets a copy of 100% of requests"
            until(lambda: model_servers(up) == 2, "the live server and the shadow's")

            xs = [2.0 if n % 10 < 3 else float(n % 2) for n in range(100)]  # the two disagree on 30 of 100
            with httpx.Client(timeout=30) as callers:
                for x in xs:
                    answer = callers.post(url, json={"instances": [[x]]})
                    assert answer.json() == {"predictions": [0 if x < 0.5 else 1]}, answer.text  # the live model's
            report = until(lambda: (r := client.get(f"/deployments/{deployment_id}/shadow").json())["mirrored"] >= 100
                           and r, "the shadow's report never counted the copies")
            assert (report["mirrored"], report["dropped"], report["candidate_errors"]) == (100, 0, 0), report
            assert (report["rows_compared"], report["agreement"]) == (100, 0.7), report
            assert report["live"]["requests"] >= 100 and report["copy_p99_ms"] is not None, report
            shown = cli(up, "deployments", "shadow-report", str(deployment_id), "--json")
            assert (shown["mirrored"], shown["agreement"]) == (100, 0.7), shown

            stopped = client.delete(f"/deployments/{deployment_id}/shadow")
            assert stopped.status_code == 200 and stopped.json()["shadow"]["state"] == "stopped", stopped.text
            converged(client, deployment_id, f"shadow of version id {candidate} stopped (stopped by the owner)")
            until(lambda: model_servers(up) == 1, "the shadow's server is still running")
            kept = client.get(f"/deployments/{deployment_id}/shadow").json()  # a stopped shadow's report stays
            assert kept["shadow"]["state"] == "stopped" and kept["mirrored"] == 100, kept
            again = client.delete(f"/deployments/{deployment_id}/shadow")
            assert again.status_code == 409 and again.json()["code"] == "no_shadow", again.text

            # again, then promoted to a canary (which waits on far more requests than come), then aborted
            assert client.put(f"/deployments/{deployment_id}/shadow",
                              json={"version_id": candidate, "percent": 50}).status_code == 200
            converged(client, deployment_id, f"shadow: version id {candidate} gets a copy of 50%")
            promoted = client.post(f"/deployments/{deployment_id}/shadow/promote",
                                   json={"steps": [50], "min_requests": 1_000_000})
            assert promoted.status_code == 200, promoted.text
            assert promoted.json()["shadow"]["state"] == "promoted"
            assert promoted.json()["rollout"]["candidate_version_id"] == candidate
            converged(client, deployment_id, f"canary: version id {candidate} gets 50%")
            until(lambda: model_servers(up) == 2, "the stable server and the canary's (the shadow's gone)")
            aborted = client.post(f"/deployments/{deployment_id}/rollout/abort")
            assert aborted.status_code == 200, aborted.text
            done = converged(client, deployment_id, "canary aborted: all requests to version id")
            assert done["version_id"] == created["version_id"]
            until(lambda: model_servers(up) == 1, "the canary's server is still running")
            for x in (0.0, 1.0, 2.0):
                assert httpx.post(url, json={"instances": [[x]]}).json() == {"predictions": [0 if x < 0.5 else 1]}
    finally:
        assert up.stop() == 0, "\n".join(up.lines[-30:])

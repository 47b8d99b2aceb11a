"""``modelport up`` as a user runs it: a subprocess on free ports, driven over HTTP only, walking
the seed's Testing section (upload, deploy, status, predict, scale, delete), and a restart with
``--persist`` that serves the same deployment at the same URL again."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from modelport.local import ownership
from modelport.local.processes import free_port
from tests.support.models import IRIS_ROWS, train_iris
from tests.support.up import (
    refuse_a_duplicate,
    second_terminal_creates_a_user,
    start_up,
    upload_and_deploy,
    wait_status,
)

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def iris(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[int]]:
    path, model = train_iris(tmp_path_factory.mktemp("iris") / "model.joblib")
    return path, [int(v) for v in model.predict(IRIS_ROWS)]


def test_the_seed_testing_section(tmp_path: Path, iris: tuple[Path, list[int]]) -> None:
    model_path, expected = iris
    up = start_up(tmp_path, "--ephemeral")
    try:
        assert any("forgotten on exit" in line or "ephemeral" in line for line in up.lines)
        assert any(line.startswith("user default created") for line in up.lines)
        second_terminal_creates_a_user(up, tmp_path)
        with up.client() as client:
            refuse_a_duplicate(client)
            # 1-2. upload a model (with requirements.txt) and create a deployment
            from importlib.metadata import version

            created = upload_and_deploy(client, model_path, f"scikit-learn=={version('scikit-learn')}\n".encode())
            deployment_id = created["id"]
            assert created["url"] == f"{up.gateway}/api/v1/predict/{deployment_id}"
            # 3. status until READY
            ready = wait_status(client, deployment_id)
            url = ready["url"]
            # 4. predict through the gateway: the model's own answers
            answer = httpx.post(url + "/predict", json={"instances": IRIS_ROWS}, timeout=30)
            assert answer.status_code == 200, answer.text
            assert answer.json()["predictions"] == expected
            # scale to 2 replicas: READY again, still the same answers, at the same URL
            patched = client.patch(f"/deployments/{deployment_id}", json={"replicas": 2})
            assert patched.status_code == 200, patched.text
            wait_status(client, deployment_id, replicas=2)
            for _ in range(6):
                assert httpx.post(url + "/predict", json={"instances": IRIS_ROWS}).json()["predictions"] == expected
            # 5. delete: the record goes, then the URL answers 404
            assert client.delete(f"/deployments/{deployment_id}").status_code == 202
            deadline = time.monotonic() + 60
            while client.get(f"/deployments/{deployment_id}").status_code != 404:
                assert time.monotonic() < deadline, "the deployment record was not deleted"
                time.sleep(0.2)
            gone = httpx.post(url + "/predict", json={"instances": IRIS_ROWS})
            assert gone.status_code == 404 and gone.json()["code"] == "deployment_not_found"
    finally:
        assert up.stop() == 0, "\n".join(up.lines[-30:])
    assert up.lines[-1] == "stopped"


def test_the_metrics_series_counts_what_callers_sent_once(tmp_path: Path, iris: tuple[Path, list[int]]) -> None:
    """The sampler reads the model servers' own /metrics; the API serves the per-minute series to
    the owner only: every request counted once over both replicas, a caller's mistake not an error."""
    model_path, expected = iris
    up = start_up(tmp_path, "--ephemeral", env_extra={"METRICS_SAMPLE_SECONDS": "0.5"})
    try:
        bob = second_terminal_creates_a_user(up, tmp_path)
        with up.client() as client:
            deployment_id = upload_and_deploy(client, model_path, replicas=2)["id"]
            url = wait_status(client, deployment_id, replicas=2)["url"]
            for _ in range(9):
                assert httpx.post(url + "/predict", json={"instances": IRIS_ROWS}).json()["predictions"] == expected
            wrong = httpx.post(url + "/predict", json={"instances": [[1.0, 2.0]]})
            assert 400 <= wrong.status_code < 500, wrong.text

            def series() -> dict[str, Any]:
                answer = client.get(f"/deployments/{deployment_id}/metrics", params={"window": "15m"})
                assert answer.status_code == 200, answer.text
                return dict(answer.json())

            def counted(found: dict[str, Any]) -> int:
                return sum(p["requests"] for p in found["points"])

            deadline = time.monotonic() + 60
            while counted(seen := series()) < 10:
                assert time.monotonic() < deadline, seen
                time.sleep(0.2)
            # two more samples later the counts have not moved: nothing is counted twice
            for _ in range(2):
                last = seen["sampled_at"]
                while (seen := series())["sampled_at"] == last:
                    assert time.monotonic() < deadline, seen
                    time.sleep(0.2)
            points = seen["points"]
            assert counted(seen) == 10 and sum(p["errors"] for p in points) == 0
            assert points[-1]["replicas_ready"] == 2
            assert all(p["p50_ms"] > 0 for p in points if p["requests"])
            other = httpx.get(f"{up.api}/api/v1/deployments/{deployment_id}/metrics",
                              headers={"Authorization": f"Bearer {bob}"})
            assert other.status_code == 404 and other.json()["code"] == "deployment_not_found"
    finally:
        assert up.stop() == 0, "\n".join(up.lines[-30:])


def test_a_persisted_deployment_serves_again_after_a_restart(tmp_path: Path, iris: tuple[Path, list[int]]) -> None:
    model_path, expected = iris
    state = tmp_path / "state"
    port, gateway_port = free_port(), free_port()
    up = start_up(tmp_path, "--persist", "--state-dir", str(state), port=port, gateway_port=gateway_port)
    try:
        second_terminal_creates_a_user(up, tmp_path)
        with up.client() as client:
            refuse_a_duplicate(client)
            deployment_id = upload_and_deploy(client, model_path)["id"]
            url = wait_status(client, deployment_id)["url"]
        assert httpx.post(url + "/predict", json={"instances": IRIS_ROWS}).json()["predictions"] == expected
    finally:
        assert up.stop() == 0, "\n".join(up.lines[-30:])
    with pytest.raises(httpx.ConnectError):
        httpx.post(url + "/predict", json={"instances": IRIS_ROWS})

    again = start_up(tmp_path, "--persist", "--state-dir", str(state), port=port, gateway_port=gateway_port)
    try:
        assert any(line.startswith("restored 1 of 1 deployment") for line in again.lines), again.lines
        assert not any("created" in line and "user default" in line for line in again.lines)  # the same user
        answer = httpx.post(url + "/predict", json={"instances": IRIS_ROWS}, timeout=30)
        assert answer.status_code == 200, answer.text
        assert answer.json()["predictions"] == expected
        with again.client() as client:
            assert client.get(f"/deployments/{deployment_id}").json()["status"] == "READY"
    finally:
        assert again.stop() == 0, "\n".join(again.lines[-30:])


def test_a_killed_platform_leaves_nothing_running_and_the_next_start_converges(
    tmp_path: Path, iris: tuple[Path, list[int]],
) -> None:
    """SIGKILL of the whole process group (a closed laptop, an OOM kill) while a deployment is in
    flight: no process of that run survives, and the next start serves the deployment again."""
    model_path, expected = iris
    state = tmp_path / "state"
    port, gateway_port = free_port(), free_port()
    up = start_up(tmp_path, "--persist", "--state-dir", str(state), port=port, gateway_port=gateway_port,
                  own_group=True)
    try:
        with up.client() as client:
            deployment_id = upload_and_deploy(client, model_path)["id"]
            version_id = client.get(f"/deployments/{deployment_id}").json()["version_id"]
            model_id = client.get(f"/versions/{version_id}").json()["model_id"]
        # a presigned upload that returns as soon as the object is stored: its S3 event is (most likely)
        # still in the in-memory queue when the platform dies, and lost with it
        uploaded = subprocess.run(  # noqa: S603
            [sys.executable, "-m", "modelport.cli", "upload", str(model_id), str(model_path), "--no-wait", "--json"],
            env={**os.environ, "MODELPORT_CONFIG": str(up.config)}, capture_output=True, text=True, timeout=120,
        )
        assert uploaded.returncode == 0, uploaded.stderr
        late_version = json.loads(uploaded.stdout)["id"]
        run = {pid for pid, mark in ownership.marked().items() if mark.startswith(f"{up.process.pid}:")}
        assert len(run) >= 3, "moto, DynamoDB Local and SeaweedFS at least"
    except BaseException:
        up.stop()
        raise
    os.killpg(up.process.pid, signal.SIGKILL)
    up.process.wait(30)

    again = start_up(tmp_path, "--persist", "--state-dir", str(state), port=port, gateway_port=gateway_port)
    try:
        left = sorted(pid for pid in run if ownership.alive(pid))
        assert left == [], f"processes of the killed run still running: {left}"
        with again.client() as client:
            url = wait_status(client, deployment_id)["url"]
            deadline = time.monotonic() + 60
            while (late := client.get(f"/versions/{late_version}").json())["status"] != "READY":
                assert late["status"] == "PENDING_UPLOAD" and time.monotonic() < deadline, late
                time.sleep(0.2)
        answer = httpx.post(url + "/predict", json={"instances": IRIS_ROWS}, timeout=30)
        assert answer.status_code == 200 and answer.json()["predictions"] == expected, answer.text
    finally:
        assert again.stop() == 0, "\n".join(again.lines[-30:])
    # and a clean stop leaves nothing either
    assert not [pid for pid, mark in ownership.marked().items() if mark.startswith(f"{again.process.pid}:")]


def test_sigterm_stops_the_platform_whichever_of_its_threads_receives_it(tmp_path: Path) -> None:
    """A signal to the process may be delivered to any thread; Python runs the handler in the
    main thread only. Sent here to one thread other than the main one (tgkill), every time."""
    import ctypes

    up = start_up(tmp_path, "--ephemeral")
    try:
        with up.client() as client:
            assert client.get("/me").status_code == 200  # serving: every thread of the platform runs
        threads = sorted(int(t) for t in os.listdir(f"/proc/{up.process.pid}/task") if int(t) != up.process.pid)
        assert threads, "the platform runs threads beside the main one"
        libc = ctypes.CDLL(None, use_errno=True)
        sys_tgkill = 234  # x86_64
        assert libc.syscall(sys_tgkill, up.process.pid, threads[-1], signal.SIGTERM) == 0, ctypes.get_errno()
        assert up.process.wait(60) == 0, "\n".join(up.lines[-20:])
        assert any("stopped" in line for line in up.lines[-5:]), up.lines[-5:]
    finally:
        up.stop()


def test_a_second_start_on_the_same_state_directory_is_refused(tmp_path: Path) -> None:
    state = tmp_path / "state"
    up = start_up(tmp_path, "--persist", "--state-dir", str(state))
    try:
        second = subprocess.run(  # noqa: S603
            [sys.executable, "-m", "modelport.cli", "up", "--persist", "--state-dir", str(state),
             "--port", str(free_port()), "--gateway-port", str(free_port())],
            capture_output=True, text=True, timeout=120, env={**os.environ, "TERM": "dumb"}, cwd=tmp_path,
        )
        assert second.returncode == 1
        assert f"another modelport up (pid {up.process.pid})" in second.stdout + second.stderr
        assert "Traceback" not in second.stdout + second.stderr
    finally:
        assert up.stop() == 0


def presigned_upload(target: dict[str, Any], content: bytes) -> None:
    answer = httpx.post(target["url"], data=target["fields"], files={"file": ("model.joblib", content)}, timeout=60)
    assert answer.status_code in (200, 201, 204), answer.text


def test_an_old_presigned_url_cannot_change_what_a_deployment_serves(
    tmp_path: Path, iris: tuple[Path, list[int]],
) -> None:
    """The upload URL stays valid for its expiry; a second upload through it after the version is
    deployed must not change what any replica, old or new, loads (the record pins the object version)."""
    import joblib
    from sklearn.datasets import load_iris
    from sklearn.dummy import DummyClassifier

    model_path, expected = iris
    other = tmp_path / "constant.joblib"
    x, y = load_iris(return_X_y=True)
    joblib.dump(DummyClassifier(strategy="constant", constant=2).fit(x, y), other)
    up = start_up(tmp_path, "--ephemeral")
    try:
        with up.client() as client:
            model = client.post("/models", json={"name": "pinned"}).raise_for_status().json()
            version = client.post(f"/models/{model['id']}/versions", json={}).raise_for_status().json()
            target = client.post(f"/versions/{version['id']}/upload-url", json={}).raise_for_status().json()["model"]
            presigned_upload(target, model_path.read_bytes())
            deadline = time.monotonic() + 60
            while (ready := client.get(f"/versions/{version['id']}").json())["status"] != "READY":
                assert ready["status"] == "PENDING_UPLOAD" and time.monotonic() < deadline, ready
                time.sleep(0.2)
            created = client.post(f"/versions/{version['id']}/deployments", json={"replicas": 1}).raise_for_status()
            deployment_id = created.json()["id"]
            url = wait_status(client, deployment_id)["url"]
            assert httpx.post(url + "/predict", json={"instances": IRIS_ROWS}).json()["predictions"] == expected

            presigned_upload(target, other.read_bytes())  # the same URL, another model
            assert client.patch(f"/deployments/{deployment_id}", json={"replicas": 2}).status_code == 200
            wait_status(client, deployment_id, replicas=2)
            for _ in range(6):  # both replicas, the new one fetched after the overwrite
                assert httpx.post(url + "/predict", json={"instances": IRIS_ROWS}).json()["predictions"] == expected
            after = client.get(f"/versions/{version['id']}").json()
            assert after["status"] == "READY" and after["model_artifact"]["sha256"] == ready["model_artifact"]["sha256"]
            assert after["model_artifact"]["version_id"]  # the object version the checks read, pinned
    finally:
        assert up.stop() == 0, "\n".join(up.lines[-30:])


def test_soak_random_operations_and_a_restart_end_in_final_states_that_match_what_serves(
    tmp_path: Path, iris: tuple[Path, list[int]],
) -> None:
    """A bounded soak (fixed seed, so a failure replays): creates, duplicate creates, deploys,
    scales, deletes, a restart in the middle; afterwards every deployment record is READY and
    serves, and every deleted one is gone and answers 404."""
    import random

    model_path, expected = iris
    rng = random.Random(20261203)
    state = tmp_path / "state"
    port, gateway_port = free_port(), free_port()
    args = ("--persist", "--state-dir", str(state))
    up = start_up(tmp_path, *args, port=port, gateway_port=gateway_port)
    live: dict[int, int] = {}  # deployment id -> replicas asked for
    gone: set[int] = set()
    versions: list[int] = []
    names: list[str] = []
    try:
        for step in range(30):
            if step == 15:  # a restart in the middle, with deployments in every state
                assert up.stop() == 0, "\n".join(up.lines[-30:])
                up = start_up(tmp_path, *args, port=port, gateway_port=gateway_port)
            with up.client() as client:
                choice = rng.choice(["model", "duplicate", "deploy", "deploy", "scale", "scale", "delete"])
                if choice == "model" or not versions:
                    names.append(f"soak-{step}")
                    created = client.post("/models", json={"name": names[-1]}).raise_for_status().json()
                    version = client.post(f"/models/{created['id']}/versions", json={}).raise_for_status().json()
                    with model_path.open("rb") as handle:
                        uploaded = client.post(f"/versions/{version['id']}/upload",
                                               files={"model_file": ("model.joblib", handle)})
                    assert uploaded.status_code == 200, uploaded.text
                    versions.append(version["id"])
                elif choice == "duplicate" and names:
                    assert client.post("/models", json={"name": rng.choice(names)}).status_code == 409
                elif choice == "deploy" or not live:
                    replicas = rng.randint(1, 2)
                    made = client.post(f"/versions/{rng.choice(versions)}/deployments", json={"replicas": replicas})
                    assert made.status_code == 201, made.text
                    live[made.json()["id"]] = replicas
                elif choice == "scale":
                    target = rng.choice(sorted(live))
                    live[target] = rng.randint(1, 3)
                    scaled = client.patch(f"/deployments/{target}", json={"replicas": live[target]})
                    assert scaled.status_code == 200, scaled.text
                else:
                    target = rng.choice(sorted(live))
                    assert client.delete(f"/deployments/{target}").status_code == 202
                    gone.add(target)
                    del live[target]
        with up.client() as client:
            for deployment_id, replicas in sorted(live.items()):
                url = wait_status(client, deployment_id, replicas=replicas, timeout=180)["url"]
                answer = httpx.post(url + "/predict", json={"instances": IRIS_ROWS}, timeout=30)
                assert answer.status_code == 200 and answer.json()["predictions"] == expected, answer.text
            deadline = time.monotonic() + 120
            for deployment_id in sorted(gone):
                while client.get(f"/deployments/{deployment_id}").status_code != 404:
                    assert time.monotonic() < deadline, f"deployment {deployment_id} was not deleted"
                    time.sleep(0.2)
                answer = httpx.post(f"{up.gateway}/api/v1/predict/{deployment_id}/predict",
                                    json={"instances": IRIS_ROWS})
                assert answer.status_code == 404
            listed = client.get("/deployments", params={"limit": 100}).json()["items"]
            assert sorted(d["id"] for d in listed) == sorted(live)
            assert all(d["status"] == "READY" for d in listed)
    finally:
        assert up.stop() == 0, "\n".join(up.lines[-30:])

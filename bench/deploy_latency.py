"""Deploy latency on the local platform: what a user waits for, median of N runs.

    .venv/bin/python bench/deploy_latency.py [--runs 10] [--replicas 1]

Starts ``modelport up --ephemeral`` on free ports (the local driver), then N times: create a model
and a version, upload the iris model (the seed's API upload), deploy it, poll the deployment every
50 ms until READY, and predict through the gateway URL until the first 200. Prints

- upload -> first prediction: from the upload call to the first successful prediction;
- deploy -> READY: from the create-deployment call to the status READY.

Each deployment is deleted after its run, so every run is a first install with one fresh
model-server process per replica.

The named competitor, in the same script: MLServer (with mlserver-sklearn, in its own venv, as in
bench/serving.py) started on the same model file, from process start to its first successful
prediction: the cold start a KServe or Seldon user waits for once the pod is scheduled.
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import tomllib
from pathlib import Path

import httpx
from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from modelport.local.processes import free_port  # noqa: E402
from tests.support.models import IRIS_ROWS, train_iris  # noqa: E402

POLL = 0.05


def start(tmp: Path) -> tuple[subprocess.Popen[str], str, str, str]:
    port, gateway_port = free_port(), free_port()
    config = tmp / "config.toml"
    env = {**os.environ, "MODELPORT_CONFIG": str(config)}
    process = subprocess.Popen(  # noqa: S603
        [sys.executable, "-m", "modelport.cli", "up", "--ephemeral", "--port", str(port),
         "--gateway-port", str(gateway_port)],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env, cwd=tmp,
    )
    assert process.stdout is not None
    for line in process.stdout:
        if line.startswith("ready "):
            break
    else:
        raise SystemExit("modelport up exited before it was ready")
    key = str(tomllib.loads(config.read_text())["api_key"])
    return process, f"http://localhost:{port}", f"http://localhost:{gateway_port}", key


def one_run(api: httpx.Client, model_path: Path, replicas: int) -> tuple[float, float]:
    model = api.post("/models", json={"name": f"bench-{time.monotonic_ns()}"}).raise_for_status().json()
    version = api.post(f"/models/{model['id']}/versions", json={}).raise_for_status().json()
    t_upload = time.perf_counter()
    api.post(f"/versions/{version['id']}/upload",
             files={"model_file": ("model.joblib", model_path.read_bytes())}).raise_for_status()
    t_deploy = time.perf_counter()
    deployment = api.post(f"/versions/{version['id']}/deployments",
                          json={"replicas": replicas}).raise_for_status().json()
    while True:
        state = api.get(f"/deployments/{deployment['id']}").raise_for_status().json()
        if state["status"] == "READY":
            t_ready = time.perf_counter()
            break
        if state["status"] == "FAILED":
            raise SystemExit(f"deployment failed: {state.get('status_message')}")
        time.sleep(POLL)
    with httpx.Client(timeout=30) as gateway:
        while gateway.post(state["url"] + "/predict", json={"instances": IRIS_ROWS}).status_code != 200:
            time.sleep(POLL)
    t_predict = time.perf_counter()
    api.delete(f"/deployments/{deployment['id']}").raise_for_status()
    while api.get(f"/deployments/{deployment['id']}").status_code != 404:
        time.sleep(POLL)
    return t_predict - t_upload, t_ready - t_deploy


def mlserver_cold_starts(model_path: Path, runs: int) -> list[float] | None:
    """Seconds from starting MLServer on the model to its first successful prediction."""
    import importlib.util

    import numpy as np

    spec = importlib.util.spec_from_file_location("bench_serving", ROOT / "bench" / "serving.py")
    assert spec is not None and spec.loader is not None
    serving = importlib.util.module_from_spec(spec)
    sys.modules["bench_serving"] = serving  # dataclasses look their module up
    spec.loader.exec_module(serving)
    python = serving.ensure_venv("mlserver")
    if python is None:
        return None
    model = serving.Model("iris", model_path, np.array(IRIS_ROWS))
    body = serving.v2_body(np.array(IRIS_ROWS))
    times = []
    for _ in range(runs):
        started = time.monotonic()
        running = serving.start_server("mlserver", model, python)
        try:
            while httpx.post(f"{running.url}/v2/models/iris/infer", content=body,
                             headers={"content-type": "application/json"}, timeout=30).status_code != 200:
                time.sleep(POLL)
            times.append(time.monotonic() - started)
        finally:
            running.stop()
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description="deploy latency on the local platform")
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--replicas", type=int, default=1)
    args = parser.parse_args()
    console = Console()
    with tempfile.TemporaryDirectory(prefix="bench-deploy-") as tmp_name:
        tmp = Path(tmp_name)
        model_path, _ = train_iris(tmp / "model.joblib")
        process, api_url, _gateway, key = start(tmp)
        try:
            upload_to_predict: list[float] = []
            deploy_to_ready: list[float] = []
            with httpx.Client(base_url=api_url + "/api/v1", headers={"Authorization": f"Bearer {key}"},
                              timeout=60) as api:
                for run in range(args.runs):
                    a, b = one_run(api, model_path, args.replicas)
                    upload_to_predict.append(a)
                    deploy_to_ready.append(b)
                    console.print(f"run {run + 1}: upload->prediction {a:.2f} s, deploy->READY {b:.2f} s")
        finally:
            process.send_signal(signal.SIGTERM)
            process.wait(60)
        competitor = mlserver_cold_starts(model_path, args.runs)
    table = Table(title=f"deploy latency, local driver, {args.replicas} replica(s), {args.runs} runs")
    for column in ("measure", "median (s)", "min (s)", "max (s)"):
        table.add_column(column, justify="right" if column != "measure" else "left")
    for name, values in (("upload -> first prediction", upload_to_predict), ("deploy -> READY", deploy_to_ready)):
        table.add_row(name, f"{statistics.median(values):.2f}", f"{min(values):.2f}", f"{max(values):.2f}")
    if competitor:
        table.add_row("MLServer: start -> first prediction", f"{statistics.median(competitor):.2f}",
                      f"{min(competitor):.2f}", f"{max(competitor):.2f}")
        ratio = statistics.median(upload_to_predict) / statistics.median(competitor)
        table.add_row("ratio modelport upload->prediction / MLServer", f"{ratio:.2f}x", "", "")
    else:
        console.print("MLServer could not be installed here: no competitor row")
    console.print(table)
    console.print(f"machine: {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()

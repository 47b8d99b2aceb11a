"""Deploy latency on the local platform: what a user waits for, median of N runs.

    .venv/bin/python bench/deploy_latency.py [--runs 10] [--replicas 1]

Starts ``modelport up --ephemeral`` on free ports (the local driver), then N times: create a model
and a version, upload the iris model (the seed's API upload), deploy it, poll the deployment every
50 ms until READY, and predict through the gateway URL until the first 200. Prints

- upload -> first prediction: from the upload call to the first successful prediction;
- deploy -> READY: from the create-deployment call to the status READY.

Each deployment is deleted after its run, so every run is a first install with one fresh
model-server process per replica.
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
    table = Table(title=f"deploy latency, local driver, {args.replicas} replica(s), {args.runs} runs")
    for column in ("measure", "median (s)", "min (s)", "max (s)"):
        table.add_column(column, justify="right" if column != "measure" else "left")
    for name, values in (("upload -> first prediction", upload_to_predict), ("deploy -> READY", deploy_to_ready)):
        table.add_row(name, f"{statistics.median(values):.2f}", f"{min(values):.2f}", f"{max(values):.2f}")
    console.print(table)
    console.print(f"machine: {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()

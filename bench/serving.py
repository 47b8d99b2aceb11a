"""Model-server benchmark: modelport vs the bare Starlette limit vs KServe vs MLServer, cell by cell.

    .venv/bin/python bench/serving.py [--duration 3] [--connections 1,16,64] [--rows 1,100] [--models iris,forest]
                                      [--servers reference,modelport,mlserver,kserve] [--json FILE]

Wrap every run in `flock /tmp/modelport-bench.lock ...` (one benchmark at a time on a shared machine).

Models (trained here with the project's scikit-learn): iris LogisticRegression (4 features) and a
100-tree RandomForest on 20 features. Payloads: 1 row and 100 rows. Load: `wrk` (Debian package
`wrk`) on loopback with 1, 16 and 64 keep-alive connections, a few seconds per cell; without wrk a
small asyncio/httpx client is used instead (slower, so numbers are lower for everyone).

Servers, each on one process, all started before the first cell; then every cell (model, rows,
connections) runs every server's load one after the other, in an order that rotates from cell to
cell, so that drift on a shared machine hits all of them alike. Before each load the script waits
until every server is idle (an overloaded server keeps answering its backlog after wrk stops,
which would otherwise land on the next server's load). By default (`--no-pin` to switch it off)
every server runs on CPU 0 and wrk on CPU 1 (`taskset`), so the load generator never shares a
core with the server it measures:

- `reference` (the named limit, issue 14): `bench/reference_server.py`, 30 lines of Starlette on
  uvicorn (uvloop, httptools) that loads the same joblib and calls `predict` inline on the event
  loop; no token, limits, metrics or input checks. It speaks the seed protocol (`POST /predict`
  with `{"instances": [...]}`), in the project's own venv (the same uvicorn, uvloop, httptools,
  numpy and scikit-learn as modelport).
- `modelport` as deployed: a deployment token (every request carries `Authorization: Bearer`),
  the body limit, metrics recording, input checks and micro-batching all on; driven with the seed
  protocol (`/predict`), KServe V1 (`POST /v1/models/{name}:predict`) and Open Inference V2
  (`POST /v2/models/{name}/infer`).
- `kserve` with KServe V1 and `mlserver` with Open Inference V2, in their own virtualenvs under
  `.tools/bench-venvs/` (created here with uv; never the project's .venv), with their default
  settings except: KServe with gRPC and per-request latency logging off; MLServer with
  `parallel_workers: 0` (inference in its one process; its worker pool crashes on the uvloop that
  pip installs today). KServe's sklearn runtime (`sklearnserver`) is not published on PyPI, so
  KServe runs a `kserve.Model` subclass that does what sklearnserver does (joblib.load, then
  predict on a numpy array).

Ratios, per cell and modelport protocol: `x ref` is modelport's req/s over the reference's (seed
body for both; V2's body is a flat tensor, so its `x ref` compares across protocols), `x best`
over the better of KServe and MLServer, and `p99 vs best` modelport's p99 over the lower p99 of
the two (at most 1.00: no worse).
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import joblib
import numpy as np
import sklearn
from rich.console import Console
from rich.table import Table
from sklearn.datasets import load_iris
from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import LogisticRegression

from modelport.domain.model_server import ServerConfig, server_argv

REPO = Path(__file__).resolve().parent.parent
VENVS = REPO / ".tools" / "bench-venvs"
WORK = REPO / ".tools" / "bench-work"
COMPETITORS = {
    "mlserver": ["mlserver==1.7.1", "mlserver-sklearn==1.7.1"],
    "kserve": ["kserve==0.21.0", "joblib"],
}
console = Console(width=160)
# `taskset` prefixes (--pin): every server on CPU 0, the load generator on CPU 1; empty: unpinned
PINNING: dict[str, list[str]] = {"servers": [], "load": []}
# modelport runs with a deployment token, as deployed; every server gets the header (the others ignore it)
TOKEN = "bench-token"
HEADERS = {"content-type": "application/json", "authorization": f"Bearer {TOKEN}"}

KSERVE_SERVER = textwrap.dedent(
    """
    import sys

    import joblib
    import kserve
    import numpy as np


    class SKLearnModel(kserve.Model):  # what kserve's sklearnserver does, for V1 requests
        def __init__(self, name, path):
            super().__init__(name)
            self.path = path
            self.load()

        def load(self):
            self._model = joblib.load(self.path)
            self.ready = True
            return self.ready

        def predict(self, payload, headers=None):
            instances = np.array(payload["instances"])
            return {"predictions": self._model.predict(instances).tolist()}


    if __name__ == "__main__":
        name, path, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
        kserve.ModelServer(http_port=port, enable_grpc=False, enable_latency_logging=False).start(
            [SKLearnModel(name, path)]
        )
    """
)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# --- environments -----------------------------------------------------------------------------------


def uv_binary() -> str:
    candidate = Path(sys.executable).with_name("uv")
    return str(candidate) if candidate.exists() else (shutil.which("uv") or "uv")


def ensure_venv(name: str) -> Path | None:
    """The competitor's own virtualenv (created on first use); None if it cannot be installed."""
    venv = VENVS / name
    python = venv / "bin" / "python"
    marker = venv / ".bench-installed"
    if marker.exists():
        return python
    VENVS.mkdir(parents=True, exist_ok=True)
    console.print(f"[bold]installing {name} into {venv}[/bold]")
    subprocess.run([sys.executable, "-m", "venv", "--clear", str(venv)], check=True)
    packages = [*COMPETITORS[name], f"scikit-learn=={sklearn.__version__}"]
    result = subprocess.run([uv_binary(), "pip", "install", "-q", "--python", str(python), *packages],
                            capture_output=True, text=True)
    if result.returncode != 0:
        console.print(f"[red]{name} cannot be installed here:[/red] {result.stderr.strip()[-800:]}")
        return None
    marker.write_text(" ".join(packages) + "\n")
    return python


# --- models and payloads ------------------------------------------------------------------------------


@dataclass
class Model:
    name: str
    path: Path
    x: np.ndarray


def train_models() -> list[Model]:
    WORK.mkdir(parents=True, exist_ok=True)
    x_iris, y_iris = load_iris(return_X_y=True)
    rng = np.random.default_rng(0)
    x_rf = rng.normal(size=(2000, 20))
    y_rf = (x_rf[:, 0] + x_rf[:, 1] * x_rf[:, 2] > 0).astype(np.int64)
    models = [
        Model("iris", WORK / "iris" / "model.joblib", x_iris),
        Model("forest", WORK / "forest" / "model.joblib", x_rf),
    ]
    estimators = [LogisticRegression(max_iter=500).fit(x_iris, y_iris),
                  RandomForestClassifier(n_estimators=100, random_state=0).fit(x_rf, y_rf)]
    for model, estimator in zip(models, estimators, strict=True):
        model.path.parent.mkdir(parents=True, exist_ok=True)
        joblib.dump(estimator, model.path)
    return models


def v1_body(rows: np.ndarray) -> bytes:
    return json.dumps({"instances": rows.tolist()}).encode()


def v2_body(rows: np.ndarray) -> bytes:
    return json.dumps({"inputs": [{"name": "input-0", "shape": list(rows.shape), "datatype": "FP64",
                                   "data": rows.ravel().tolist()}]}).encode()


# --- servers --------------------------------------------------------------------------------------------


@dataclass
class Running:
    server: str
    process: subprocess.Popen[bytes]
    port: int
    log: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)


def start_server(server: str, model: Model, python: Path) -> Running:
    port = free_port()
    log = WORK / f"{server}-{model.name}.log"
    env = {**os.environ}
    cwd = REPO
    if server == "reference":
        argv = [sys.executable, str(REPO / "bench" / "reference_server.py"), str(model.path), str(port)]
    elif server == "modelport":
        argv = server_argv(sys.executable)
        env.update(ServerConfig(model_uri=str(model.path), model_name=model.name, port=port, log_level="WARNING",
                                model_cache_dir=str(WORK / "cache"),
                                predict_token_sha256=hashlib.sha256(TOKEN.encode()).hexdigest()).to_env())
    elif server == "mlserver":
        folder = WORK / f"mlserver-{model.name}"
        folder.mkdir(parents=True, exist_ok=True)
        shutil.copy(model.path, folder / "model.joblib")
        (folder / "model-settings.json").write_text(json.dumps({
            "name": model.name, "implementation": "mlserver_sklearn.SKLearnModel",
            "parameters": {"uri": "./model.joblib", "version": "v1"},
        }))
        (folder / "settings.json").write_text(json.dumps({
            "http_port": port, "grpc_port": free_port(), "metrics_port": free_port(),
            # In-process inference: MLServer 1.7.1's worker pool crashes with the current uvloop
            # ("There is no current event loop"), and one process is also its fastest setting here.
            "parallel_workers": 0,
        }))
        argv = [str(python.with_name("mlserver")), "start", str(folder)]
        cwd = folder
    else:
        script = WORK / "kserve_server.py"
        script.write_text(KSERVE_SERVER)
        argv = [str(python), str(script), model.name, str(model.path), str(port)]
    handle = open(log, "wb")  # noqa: SIM115 - the child owns it
    process = subprocess.Popen([*PINNING["servers"], *argv], cwd=cwd, env=env, stdout=handle, stderr=subprocess.STDOUT,
                               start_new_session=True)
    running = Running(server, process, port, log)
    ready = {"kserve": f"/v1/models/{model.name}", "reference": "/ready"}.get(server, "/v2/health/ready")
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{server} exited: {log.read_text()[-2000:]}")
        try:
            if httpx.get(running.url + ready, timeout=2, headers=HEADERS).status_code == 200:
                return running
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    running.stop()
    raise TimeoutError(f"{server} did not become ready: {log.read_text()[-2000:]}")


# --- load generation ------------------------------------------------------------------------------------


@dataclass
class Result:
    rps: float
    p50_ms: float
    p99_ms: float
    errors: int


_UNITS = {"us": 0.001, "ms": 1.0, "s": 1000.0}


def _ms(text: str) -> float:
    match = re.match(r"([\d.]+)(us|ms|s)", text)
    if not match:
        return float("nan")
    return float(match.group(1)) * _UNITS[match.group(2)]


def run_wrk(url: str, body: bytes, connections: int, duration: float) -> Result:
    with tempfile.TemporaryDirectory() as tmp:
        body_path = Path(tmp) / "body.json"
        body_path.write_bytes(body)
        script = Path(tmp) / "post.lua"
        script.write_text(
            f'wrk.method = "POST"\nwrk.headers["Content-Type"] = "application/json"\n'
            f'wrk.headers["Authorization"] = "{HEADERS["authorization"]}"\n'
            f'local f = io.open("{body_path}", "rb")\nwrk.body = f:read("*a")\nf:close()\n'
        )
        out = subprocess.run(
            [*PINNING["load"], "wrk", "-t", "1", "-c", str(connections), "-d", f"{max(1, round(duration))}s",
             "--latency", "--timeout", "10s", "-s", str(script), url], capture_output=True, text=True, check=True,
        ).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    p50 = _ms(re.search(r"\s50%\s+(\S+)", out).group(1))  # type: ignore[union-attr]
    p99 = _ms(re.search(r"\s99%\s+(\S+)", out).group(1))  # type: ignore[union-attr]
    errors = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    socket_errors = re.search(r"Socket errors:.*", out)
    count = int(errors.group(1)) if errors else 0
    if socket_errors:
        count += sum(int(n) for n in re.findall(r"\d+", socket_errors.group(0)))
    return Result(rps, p50, p99, count)


async def _python_load(url: str, body: bytes, connections: int, duration: float) -> Result:
    latencies: list[float] = []
    errors = 0
    stop_at = time.perf_counter() + duration
    limits = httpx.Limits(max_connections=connections, max_keepalive_connections=connections)
    async with httpx.AsyncClient(limits=limits, timeout=10) as client:
        async def worker() -> None:
            nonlocal errors
            while time.perf_counter() < stop_at:
                started = time.perf_counter()
                answer = await client.post(url, content=body, headers=HEADERS)
                latencies.append(time.perf_counter() - started)
                errors += answer.status_code != 200

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(connections)))
        elapsed = time.perf_counter() - started
    values = np.array(latencies) * 1000
    return Result(len(latencies) / elapsed, float(np.percentile(values, 50)), float(np.percentile(values, 99)), errors)


def load(url: str, body: bytes, connections: int, duration: float) -> Result:
    if shutil.which("wrk"):
        return run_wrk(url, body, connections, duration)
    return asyncio.run(_python_load(url, body, connections, duration))


def cpu_ticks(pid: int) -> int:
    """User + system CPU of a process (all its threads) in clock ticks; 0 once it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0
    return int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15 of proc(5))


def wait_idle(processes: list[subprocess.Popen[bytes]], timeout: float = 30.0) -> None:
    """Until every server is idle (at most 1 tick of CPU in 0.25 s): a server that was overloaded
    keeps answering its backlog after wrk stops, which must not overlap the next server's load."""
    deadline = time.monotonic() + timeout
    before = [cpu_ticks(p.pid) for p in processes]
    while time.monotonic() < deadline:
        time.sleep(0.25)
        after = [cpu_ticks(p.pid) for p in processes]
        if all(a - b <= 1 for a, b in zip(after, before, strict=True)):
            return
        before = after


# --- the run ---------------------------------------------------------------------------------------------

#: (server, protocol) loads of every cell; the reference speaks the seed protocol
LOADS = [("reference", "seed"), ("modelport", "seed"), ("modelport", "v1"), ("modelport", "v2"),
         ("kserve", "v1"), ("mlserver", "v2")]
COMPETITORS_PROTOCOL = {"kserve": "v1", "mlserver": "v2"}
Key = tuple[str, str, str, int, int]  # server, protocol, model, rows, connections


def request_path(protocol: str, model: Model) -> str:
    return {"seed": "/predict", "v1": f"/v1/models/{model.name}:predict",
            "v2": f"/v2/models/{model.name}/infer"}[protocol]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, default=3.0, help="seconds per cell")
    parser.add_argument("--connections", default="1,16,64")
    parser.add_argument("--rows", default="1,100")
    parser.add_argument("--models", default="iris,forest")
    parser.add_argument("--servers", default="reference,modelport,mlserver,kserve")
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("--no-pin", action="store_true",
                        help="leave servers and wrk unpinned (default: servers on CPU 0, wrk on CPU 1)")
    args = parser.parse_args()
    if not args.no_pin and shutil.which("taskset") and len(os.sched_getaffinity(0)) >= 2:
        PINNING["servers"], PINNING["load"] = ["taskset", "-c", "0"], ["taskset", "-c", "1"]
    connections = [int(c) for c in args.connections.split(",")]
    row_counts = [int(r) for r in args.rows.split(",")]
    servers = args.servers.split(",")
    if not shutil.which("wrk"):
        console.print("[yellow]wrk not found (apt-get install wrk): using the slower Python load generator[/yellow]")
    models = [m for m in train_models() if m.name in args.models.split(",")]
    pythons: dict[str, Path | None] = {"modelport": Path(sys.executable), "reference": Path(sys.executable)}
    for name in servers:
        if name in COMPETITORS:
            pythons[name] = ensure_venv(name)
    started: dict[tuple[str, str], Running] = {}
    results: dict[Key, Result] = {}
    try:
        for server in servers:  # all up before the first cell: the cells then alternate between them
            python = pythons.get(server)
            if python is not None:
                for model in models:
                    started[(server, model.name)] = start_server(server, model, python)
        cell = 0
        for model in models:
            for rows in row_counts:
                bodies = {"v2": v2_body(model.x[:rows])}
                bodies["seed"] = bodies["v1"] = v1_body(model.x[:rows])
                loads = [(s_, p) for s_, p in LOADS if (s_, model.name) in started]
                for server, protocol in loads:  # each answers before it is timed
                    url = started[(server, model.name)].url + request_path(protocol, model)
                    httpx.post(url, content=bodies[protocol], headers=HEADERS, timeout=30).raise_for_status()
                for conns in connections:
                    shift = cell % len(loads)
                    cell += 1
                    for server, protocol in loads[shift:] + loads[:shift]:
                        url = started[(server, model.name)].url + request_path(protocol, model)
                        wait_idle([running.process for running in started.values()])
                        result = load(url, bodies[protocol], conns, args.duration)
                        results[(server, protocol, model.name, rows, conns)] = result
                        console.print(f"{server:9} {protocol:4} {model.name:6} rows={rows:<3} c={conns:<3} "
                                      f"{result.rps:9.0f} req/s  p50 {result.p50_ms:7.2f} ms  "
                                      f"p99 {result.p99_ms:7.2f} ms  errors {result.errors}")
    finally:
        for running in started.values():
            running.stop()
    report(results, models, row_counts, connections)
    if args.json:
        args.json.write_text(json.dumps([
            {"server": k[0], "protocol": k[1], "model": k[2], "rows": k[3], "connections": k[4], **vars(v)}
            for k, v in results.items()
        ], indent=1))
    return 0


def _best_other(results: dict[Key, Result], model: str, rows: int, conns: int) -> tuple[Result | None, float]:
    """The better competitor's result (by req/s) and the lower of their p99s."""
    others = [r for s, p in COMPETITORS_PROTOCOL.items() if (r := results.get((s, p, model, rows, conns)))]
    if not others:
        return None, float("nan")
    return max(others, key=lambda r: r.rps), min(r.p99_ms for r in others)


def report(results: dict[Key, Result], models: list[Model], row_counts: list[int], connections: list[int]) -> None:
    table = Table(title="model servers on loopback (wrk): req/s, p50/p99 latency; "
                        "x ref = modelport / reference req/s, x best = modelport / better of KServe and MLServer, "
                        "p99 vs best = modelport p99 / lower competitor p99")
    for column in ("model", "rows", "conns", "server", "proto", "req/s", "p50 ms", "p99 ms", "err",
                   "x ref", "x best", "p99 vs best"):
        table.add_column(column, justify="right" if column not in ("model", "server", "proto") else "left")
    worst: dict[str, list[float]] = {"x ref": [], "x best": [], "p99 vs best": []}
    misses: list[str] = []
    for model in models:
        for rows in row_counts:
            for conns in connections:
                reference = results.get(("reference", "seed", model.name, rows, conns))
                best, best_p99 = _best_other(results, model.name, rows, conns)
                for server, protocol in LOADS:
                    result = results.get((server, protocol, model.name, rows, conns))
                    if result is None:
                        continue
                    x_ref = x_best = p99_best = ""
                    if server == "modelport":
                        where = f"{model.name} rows={rows} c={conns} {protocol}"
                        if reference is not None:
                            ratio = result.rps / reference.rps
                            worst["x ref"].append(ratio)
                            x_ref = f"{ratio:.2f}x"
                            if ratio < 1.0:
                                misses.append(f"{where}: {ratio:.2f}x the reference")
                        if best is not None:
                            ratio, p99_ratio = result.rps / best.rps, result.p99_ms / best_p99
                            worst["x best"].append(ratio)
                            worst["p99 vs best"].append(p99_ratio)
                            x_best, p99_best = f"{ratio:.1f}x", f"{p99_ratio:.2f}"
                            if ratio < 2.0:
                                misses.append(f"{where}: {ratio:.2f}x the better competitor")
                            if p99_ratio > 1.0:
                                misses.append(f"{where}: p99 {result.p99_ms:.2f} ms against {best_p99:.2f} ms")
                        if result.errors:
                            misses.append(f"{where}: {result.errors} errors")
                    table.add_row(model.name, str(rows), str(conns), server, protocol, f"{result.rps:,.0f}",
                                  f"{result.p50_ms:.2f}", f"{result.p99_ms:.2f}", str(result.errors),
                                  x_ref, x_best, p99_best)
                table.add_section()
    console.print(table)
    # issue 14's goals: >= 1.0x the reference and >= 2x the better competitor with a p99 no worse, every cell
    if worst["x ref"]:
        console.print(f"modelport vs the Starlette reference: worst {min(worst['x ref']):.2f}x, "
                      f"best {max(worst['x ref']):.2f}x over {len(worst['x ref'])} cells x protocols")
    if worst["x best"]:
        console.print(f"modelport vs the better of KServe and MLServer: worst {min(worst['x best']):.1f}x, "
                      f"best {max(worst['x best']):.1f}x; p99 ratio worst {max(worst['p99 vs best']):.2f}")
    console.print("every cell meets the goals" if not misses else "cells short of the goals:\n  " + "\n  ".join(misses))


if __name__ == "__main__":
    sys.exit(main())

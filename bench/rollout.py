"""Shadow traffic's cost to callers: the live endpoint with a shadow at 100 % against the same
endpoint without one, in one run (issue 15's goal: >= 0.9x req/s, p99 within 10 %).

    .venv/bin/python bench/rollout.py [--duration 3] [--rounds 3] [--connections 1,16]

Three model servers (`python -m modelport.serving`) on the same model: ``plain`` (no shadow),
``shadowed`` (MIRROR_URL at the candidate, MIRROR_PERCENT=100) and the ``candidate`` they copy
to (the same model, so every copy agrees). Models: iris LogisticRegression and a 100-tree
RandomForest (bench/serving.py's); payloads of 1 and 100 rows on the seed protocol; load from
`wrk` (Debian's `wrk`; else bench/serving.py's slower Python client) with 1 and 16 connections.
Each cell runs plain and shadowed alternately, ``--rounds`` times each, and reports the medians,
so drift on a shared machine hits both alike.

In a cluster the shadow's pods run elsewhere; here every process shares the machine. So that the
shadow's own predictions do not take the live server's CPU, the two live servers are pinned to
CPU 0 and the candidate and the load generator to the other CPUs (where there are at least 2),
the candidate at the idle priority (`chrt --idle 0`) so that it gets only what the load
generator leaves: what is measured is what copying costs the live server (queueing, the calls it sends,
comparing), which is what a caller could notice. A candidate that cannot keep up shows as copies
dropped (printed below the table), as it would in a cluster.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import httpx
from rich.console import Console
from rich.table import Table
from serving import WORK, Model, Result, cpu_ticks, free_port, load, train_models, v1_body

from modelport.domain.model_server import ServerConfig, server_argv
from modelport.domain.serving_metrics import parse
from modelport.local.processes import ServerProcess, start

console = Console(width=150)
REPO = WORK.parent.parent


def pin(cpus: set[int]) -> None:
    if len(os.sched_getaffinity(0)) >= 2:
        os.sched_setaffinity(0, cpus)


def launch(name: str, model: Model, cpus: set[int], extra: dict[str, str] | None = None,
           idle: bool = False) -> ServerProcess:
    port = free_port()
    env = {**os.environ, **ServerConfig(model_uri=str(model.path), model_name=model.name, port=port,
                                        log_level="WARNING", model_cache_dir=str(WORK / "cache")).to_env(),
           **(extra or {})}
    argv = ["chrt", "--idle", "0", *server_argv(sys.executable)] if idle else server_argv(sys.executable)
    if len(os.sched_getaffinity(0)) >= 2:
        argv = ["taskset", "-c", ",".join(map(str, sorted(cpus))), *argv]
    proc = start(f"{name}-{model.name}", argv, port, log_dir=WORK, cwd=REPO, env=env).wait_ready(60)
    deadline = time.monotonic() + 120
    while httpx.get(f"{proc.url}/readyz", timeout=5).status_code != 200:
        if time.monotonic() > deadline:
            raise TimeoutError(f"{name} not ready: {proc.log_tail()}")
        time.sleep(0.1)
    return proc


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far."""
    return cpu_ticks(pid) / os.sysconf("SC_CLK_TCK")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, default=3.0, help="seconds per measurement")
    parser.add_argument("--rounds", type=int, default=3, help="measurements per server and cell")
    parser.add_argument("--connections", default="1,16")
    args = parser.parse_args()
    connections = [int(c) for c in args.connections.split(",")]
    every = os.sched_getaffinity(0)
    live_cpus = {min(every)}
    other_cpus = (every - live_cpus) or every
    pin(other_cpus)  # this process and the load generator it starts
    results: dict[tuple[str, int, int, str], list[Result]] = {}
    cpu: dict[tuple[str, int, int, str], list[float]] = {}  # the live server's CPU µs per answered request
    copies: dict[str, tuple[int, int]] = {}
    for model in train_models():
        candidate = launch("candidate", model, other_cpus, idle=True)
        plain = launch("plain", model, live_cpus)
        shadowed = launch("shadowed", model, live_cpus, {"MIRROR_URL": candidate.url, "MIRROR_PERCENT": "100"})
        try:
            for rows in (1, 100):
                body = v1_body(model.x[:rows])
                for conns in connections:
                    for _ in range(args.rounds):
                        for name, server in (("plain", plain), ("shadowed", shadowed)):  # alternating
                            pid = server.process.pid  # taskset and chrt exec the server: its own pid
                            before = cpu_seconds(pid)
                            result = load(f"{server.url}/predict", body, conns, args.duration)
                            used = cpu_seconds(pid) - before
                            results.setdefault((model.name, rows, conns, name), []).append(result)
                            cpu.setdefault((model.name, rows, conns, name), []).append(
                                used * 1e6 / max(1.0, result.rps * max(1, round(args.duration))))
                            console.print(f"{model.name:6} rows={rows:<3} c={conns:<3} {name:8} {result.rps:9.0f} "
                                          f"req/s  p99 {result.p99_ms:7.2f} ms  errors {result.errors}")
            counters = parse(httpx.get(f"{shadowed.url}/metrics", timeout=10).text)
            copies[model.name] = (counters.shadow_compared + counters.shadow_failed, counters.shadow_dropped)
        finally:
            for proc in (shadowed, plain, candidate):
                proc.stop()
    report(results, cpu, copies, connections)
    return 0


def report(results: dict[tuple[str, int, int, str], list[Result]], cpu: dict[tuple[str, int, int, str], list[float]],
           copies: dict[str, tuple[int, int]], connections: list[int]) -> None:
    table = Table(title="the live endpoint with a shadow at 100 % vs without (medians; ratio = shadowed / plain)")
    for column in ("model", "rows", "conns", "plain req/s", "shadowed req/s", "rps ratio", "plain p99 ms",
                   "shadowed p99 ms", "p99 ratio", "CPU µs/req plain", "shadowed", "errors"):
        table.add_column(column, justify="left" if column == "model" else "right")
    worst_rps, worst_p99 = float("inf"), 0.0
    for model in copies:
        for rows in (1, 100):
            for conns in connections:
                plain, shadowed = (results[(model, rows, conns, name)] for name in ("plain", "shadowed"))
                rps = [statistics.median(r.rps for r in runs) for runs in (plain, shadowed)]
                p99 = [statistics.median(r.p99_ms for r in runs) for runs in (plain, shadowed)]
                worst_rps, worst_p99 = min(worst_rps, rps[1] / rps[0]), max(worst_p99, p99[1] / p99[0])
                errors = sum(r.errors for r in plain + shadowed)
                per = [statistics.median(cpu[(model, rows, conns, name)]) for name in ("plain", "shadowed")]
                table.add_row(model, str(rows), str(conns), f"{rps[0]:,.0f}", f"{rps[1]:,.0f}",
                              f"{rps[1] / rps[0]:.2f}x", f"{p99[0]:.2f}", f"{p99[1]:.2f}", f"{p99[1] / p99[0]:.2f}",
                              f"{per[0]:.0f}", f"{per[1]:.0f}", str(errors))
        table.add_section()
    console.print(table)
    for model, (sent, dropped) in copies.items():
        share = dropped / (sent + dropped) if sent + dropped else 0.0
        console.print(f"{model}: {sent:,} copies sent to the shadow, {dropped:,} dropped ({share:.1%}: queue full)")
    verdict = "met" if worst_rps >= 0.9 and worst_p99 <= 1.1 else "NOT met"
    console.print(f"goal (>= 0.9x req/s, p99 within 10 % in every cell): {verdict}; worst cell {worst_rps:.2f}x "
                  f"req/s, p99 {worst_p99:.2f}x")


if __name__ == "__main__":
    sys.exit(main())

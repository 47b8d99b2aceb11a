"""Shadow traffic's cost to callers: the live endpoint with a shadow at 100 % against the same
endpoint without one, in one run (issue 15's goal: >= 0.9x req/s, p99 within 10 %).

    .venv/bin/python bench/rollout.py [--duration 3] [--rounds 3] [--connections 1,16]

Model servers (`python -m modelport.serving`) on the same model, three arms per cell:
``plain`` (no shadow); ``stand-in`` (MIRROR_URL at bench/shadow_stand_in.py, MIRROR_PERCENT=100):
the shadow as it is in a cluster, on another node, so that what is measured is what copying costs
the live server (queueing, splicing, the calls it sends, reading the answers, comparing every
row); ``model`` (MIRROR_URL at a real model server on this machine, the candidate): the same plus
the candidate's own predictions competing for this machine's two CPUs. Models: iris
LogisticRegression and a 100-tree RandomForest (bench/serving.py's); payloads of 1 and 100 rows
on the seed protocol; load from `wrk` (Debian's `wrk`; else bench/serving.py's slower Python
client) with 1 and 16 connections. Each cell runs the three arms alternately, ``--rounds`` times
each, and reports the medians, so drift on a shared machine hits all alike.

Live servers are pinned to CPU 0; the shadows and the load generator to the other CPUs (where
there are at least 2), the shadows at the idle priority (`chrt --idle 0`). On these machines even
that does not keep a busy shadow out of the figure (shadow_stand_in.py's docstring has the
measurement), which is why the ``stand-in`` arm exists and the issue's goal is judged on it; the
``model`` arm says what a shadow costs when it must share two CPUs with the live server and the
load. A shadow that cannot keep up shows as copies dropped (printed below the table).

``a copy alone``: the CPU one copy costs the live server by itself (``copying_alone``: offered at
the busiest plain rate of the cell, into the stand-in, no request served). It is what copying costs
a live server on any machine; the stand-in arm's extra CPU per request beyond it, and its p99, is
what sharing two CPUs between the server, the load generator and a shadow costs on this one.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import statistics
import sys
import time
from pathlib import Path

import httpx
import numpy as np
import uvloop
from prometheus_client import REGISTRY
from rich.console import Console
from rich.table import Table
from serving import WORK, Model, Result, cpu_ticks, free_port, load, train_models, v1_body

from modelport.domain.model_server import ServerConfig, server_argv
from modelport.domain.serving_metrics import parse
from modelport.local.processes import ServerProcess, start
from modelport.serving.mirror import Mirror

console = Console(width=150)
REPO = WORK.parent.parent


def pin(cpus: set[int]) -> None:
    if len(os.sched_getaffinity(0)) >= 2:
        os.sched_setaffinity(0, cpus)


def placed(argv: list[str], cpus: set[int], idle: bool) -> list[str]:
    """``argv`` on these CPUs (where there are at least 2), at the idle priority if ``idle``."""
    if idle:
        argv = ["chrt", "--idle", "0", *argv]
    if len(os.sched_getaffinity(0)) >= 2:
        argv = ["taskset", "-c", ",".join(map(str, sorted(cpus))), *argv]
    return argv


def launch(name: str, model: Model, cpus: set[int], extra: dict[str, str] | None = None,
           idle: bool = False) -> ServerProcess:
    port = free_port()
    env = {**os.environ, **ServerConfig(model_uri=str(model.path), model_name=model.name, port=port,
                                        log_level="WARNING", model_cache_dir=str(WORK / "cache")).to_env(),
           **(extra or {})}
    argv = placed(server_argv(sys.executable), cpus, idle)
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


ARMS = ("plain", "stand-in", "model")  # no shadow; a shadow on the stand-in; a shadow on the model, co-located


def stand_in(model: Model, body: bytes, live: ServerProcess, cpus: set[int]) -> tuple[ServerProcess, bytes]:
    """bench/shadow_stand_in.py answering with what ``live`` answers to ``body``, at the idle
    priority; and that answer."""
    answer = httpx.post(f"{live.url}/predict", content=body, timeout=30).raise_for_status().content
    path = WORK / f"stand-in-{model.name}.json"
    path.write_bytes(answer)
    port = free_port()
    argv = placed([sys.executable, str(Path(__file__).with_name("shadow_stand_in.py")), str(port), str(path)],
                  cpus, idle=True)
    return start(f"stand-in-{model.name}", argv, port, log_dir=WORK, cwd=REPO).wait_ready(60), answer


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
    copies: dict[tuple[str, str], list[int]] = {}  # (model, arm) -> [compared, failed, dropped]
    alone: dict[tuple[str, int], float] = {}  # (model, rows) -> the live server's CPU µs per copy, copying alone
    for model in train_models():
        candidate = launch("candidate", model, other_cpus, idle=True)
        plain = launch("plain", model, live_cpus)
        shadowed = launch("shadowed", model, live_cpus, {"MIRROR_URL": candidate.url, "MIRROR_PERCENT": "100"})
        started = [shadowed, plain, candidate]
        try:
            for rows in (1, 100):
                body = v1_body(model.x[:rows])
                double, answer = stand_in(model, body, plain, other_cpus)
                started.append(double)
                on_double = launch("on-stand-in", model, live_cpus, {"MIRROR_URL": double.url, "MIRROR_PERCENT": "100"})
                started.append(on_double)
                servers = {"plain": plain, "stand-in": on_double, "model": shadowed}
                for conns in connections:
                    for _ in range(args.rounds):
                        for name in ARMS:  # alternating
                            server = servers[name]
                            pid = server.process.pid  # taskset and chrt exec the server: its own pid
                            before = cpu_seconds(pid)
                            result = load(f"{server.url}/predict", body, conns, args.duration)
                            used = cpu_seconds(pid) - before
                            results.setdefault((model.name, rows, conns, name), []).append(result)
                            cpu.setdefault((model.name, rows, conns, name), []).append(
                                used * 1e6 / max(1.0, result.rps * max(1, round(args.duration))))
                            console.print(f"{model.name:6} rows={rows:<3} c={conns:<3} {name:8} {result.rps:9.0f} "
                                          f"req/s  p99 {result.p99_ms:7.2f} ms  errors {result.errors}")
                count(copies, (model.name, "stand-in"), on_double)
                on_double.stop()
                busiest = statistics.median(r.rps for r in results[(model.name, rows, max(connections), "plain")])
                alone[(model.name, rows)] = copying_alone(double.url, body, answer, model.x[:rows], busiest,
                                                          args.duration, args.rounds, live_cpus)
                double.stop()
            count(copies, (model.name, "model"), shadowed)
        finally:
            for proc in started:
                proc.stop()
    report(results, cpu, copies, alone, connections)
    return 0


def copying_alone(url: str, body: bytes, answer: bytes, matrix: np.ndarray, rate: float, seconds: float,
                  rounds: int, cpus: set[int]) -> float:
    """The CPU (user + system, µs) one copy costs a live server by itself: ``Mirror.offer`` of
    ``body`` and ``answer`` ``rate`` times a second for ``seconds``, into the stand-in at ``url``,
    in this process on the live servers' CPUs with no request served, less the same loop without
    a mirror (alternately, ``rounds`` times each; medians). A live server pays this per copied
    request on any machine; what the table's stand-in arm adds beyond it is this machine
    (shadow_stand_in.py's docstring)."""
    every = os.sched_getaffinity(0)
    pin(cpus)
    try:
        used: dict[bool, list[float]] = {False: [], True: []}
        for _ in range(rounds):
            for on in used:
                used[on].append(_offering(url, body, answer, matrix, rate, seconds, on))
    finally:
        pin(every)
    return (statistics.median(used[True]) - statistics.median(used[False])) * 1e6 / (rate * seconds)


def _offering(url: str, body: bytes, answer: bytes, matrix: np.ndarray, rate: float, seconds: float,
              mirror_on: bool) -> float:
    """CPU seconds of this process while offering (or, without a mirror, only pacing) the copies,
    until the stand-in has compared every one."""

    async def run() -> float:
        mirror = None
        if mirror_on:
            config = ServerConfig(model_uri="bench", mirror_url=url, mirror_percent=100, mirror_queue_size=1 << 20)
            mirror = Mirror(config, classifier=True)
            mirror.start()
        counted = _copies()
        total, started, before = int(rate * seconds), time.perf_counter(), _cpu()
        for n in range(1, total + 1):
            if mirror is not None:
                mirror.offer(body, answer, matrix, (False,), (None,))
            if n % 50 == 0:  # paced as requests would come
                await asyncio.sleep(max(0.0, started + n / rate - time.perf_counter()))
        deadline = time.monotonic() + 30
        while mirror is not None and sum(_copies()) - sum(counted) < total and time.monotonic() < deadline:
            await asyncio.sleep(0.005)
        spent = _cpu() - before
        if mirror is not None:
            await mirror.stop()
            compared, failed, dropped = (now - then for now, then in zip(_copies(), counted, strict=True))
            if compared != total:
                raise RuntimeError(f"the stand-in compared {compared} of {total} copies ({failed} failed, "
                                   f"{dropped} dropped)")
        return spent

    return uvloop.run(run())


def _copies() -> tuple[float, ...]:
    """This process's copies compared, failed and dropped so far."""
    return tuple(REGISTRY.get_sample_value("modelport_shadow_copies_total", {"outcome": outcome}) or 0.0
                 for outcome in ("compared", "failed", "dropped"))


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def count(copies: dict[tuple[str, str], list[int]], key: tuple[str, str], server: ServerProcess) -> None:
    """Add a shadowed server's copies compared, failed and dropped so far to ``copies[key]``."""
    counters = parse(httpx.get(f"{server.url}/metrics", timeout=10).text)
    compared, failed, dropped = copies.setdefault(key, [0, 0, 0])
    copies[key] = [compared + counters.shadow_compared, failed + counters.shadow_failed,
                   dropped + counters.shadow_dropped]


def report(results: dict[tuple[str, int, int, str], list[Result]], cpu: dict[tuple[str, int, int, str], list[float]],
           copies: dict[tuple[str, str], list[int]], alone: dict[tuple[str, int], float],
           connections: list[int]) -> None:
    table = Table(title="the live endpoint with a shadow at 100 % vs without (medians; x = shadowed / plain)")
    for column in ("model", "rows", "conns", "plain req/s", "plain p99 ms", "stand-in req/s x", "p99 ms (x)",
                   "model req/s x", "p99 ms (x)", "CPU µs/req plain", "stand-in", "model", "a copy alone",
                   "errors"):
        table.add_column(column, justify="left" if column == "model" else "right")
    worst = {arm: [float("inf"), 0.0] for arm in ARMS[1:]}
    for model in dict.fromkeys(m for m, _ in copies):
        for rows in (1, 100):
            for conns in connections:
                runs = {arm: results[(model, rows, conns, arm)] for arm in ARMS}
                rps = {arm: statistics.median(r.rps for r in runs[arm]) for arm in ARMS}
                p99 = {arm: statistics.median(r.p99_ms for r in runs[arm]) for arm in ARMS}
                cells = []
                for arm in ARMS[1:]:
                    ratio, tail = rps[arm] / rps["plain"], p99[arm] / p99["plain"]
                    worst[arm] = [min(worst[arm][0], ratio), max(worst[arm][1], tail)]
                    cells += [f"{rps[arm]:,.0f} ({ratio:.2f}x)", f"{p99[arm]:.2f} ({tail:.2f}x)"]
                per = [statistics.median(cpu[(model, rows, conns, arm)]) for arm in ARMS]
                errors = sum(r.errors for arm in ARMS for r in runs[arm])
                table.add_row(model, str(rows), str(conns), f"{rps['plain']:,.0f}", f"{p99['plain']:.2f}", *cells,
                              *(f"{p:.0f}" for p in per), f"{alone[(model, rows)]:.1f}", str(errors))
        table.add_section()
    console.print(table)
    for (model, arm), (compared, failed, dropped) in copies.items():
        share = dropped / (compared + failed + dropped) if compared + failed + dropped else 0.0
        console.print(f"{model}, shadow on the {arm}: {compared:,} copies compared, {failed:,} failed, "
                      f"{dropped:,} dropped ({share:.1%}: queue full)")
    for arm, label in (("stand-in", "the shadow elsewhere (stand-in)"), ("model", "the shadow co-located (model)")):
        rps_worst, p99_worst = worst[arm]
        verdict = "met" if rps_worst >= 0.9 and p99_worst <= 1.1 else "NOT met"
        console.print(f"{label}: goal (>= 0.9x req/s, p99 within 10 % in every cell) {verdict}; worst cell "
                      f"{rps_worst:.2f}x req/s, p99 {p99_worst:.2f}x")


if __name__ == "__main__":
    sys.exit(main())

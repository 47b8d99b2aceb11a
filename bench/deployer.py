"""Deployer throughput: N deployment records through DynamoDB Local's stream, the poller, the
deployer handler and the real helm binary into the Kubernetes API emulator (tests/support; no
real API server runs here, so this measures modelport's and helm's own work, not pod start-up).

The named competitor is the seed's design run in the same script against the same emulator:
the API calling `helm install --wait` inline, one request after another (HelmDeploymentService).

    .venv/bin/python bench/deployer.py [--records 50] [--concurrency 4]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--records", type=int, default=50)
    parser.add_argument("--concurrency", type=int, default=4)
    args = parser.parse_args()
    for key, value in {"AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench",
                       "AWS_DEFAULT_REGION": "us-east-1", "POWERTOOLS_LOG_LEVEL": "ERROR",
                       "POWERTOOLS_METRICS_NAMESPACE": "bench", "LOG_LEVEL": "ERROR"}.items():
        os.environ.setdefault(key, value)

    from modelport.deploy.reconcile import build_spec
    from modelport.domain.entities import Artifact, DeploymentStatus
    from modelport.local.processes import start_dynamodb_local
    from modelport.local.streams import StreamPoller, StreamSourceConfig
    from modelport.local.tools import ensure_tools
    from modelport.services import deployments, users
    from modelport.settings import Settings
    from modelport.store.records import ensure_table
    from modelport.store.repository import Store
    from tests.support.functions import load_function
    from tests.support.kube_emulator import KubeEmulator

    tools = ensure_tools()
    dynamodb = start_dynamodb_local(tools=tools)
    work = Path(tempfile.mkdtemp(prefix="bench-deployer-"))
    cluster = KubeEmulator(work / "cluster").start()
    try:
        os.environ.update({"TABLE_NAME": f"bench-{uuid.uuid4().hex[:6]}", "DYNAMODB_ENDPOINT": dynamodb.url,
                           "DEPLOYER_CONCURRENCY": str(args.concurrency), "CLUSTER_DRIVER": "helm"})
        settings = Settings()
        ensure_table(settings)
        driver = cluster.helm_driver(helm=tools.helm, kubectl=tools.kubectl, chart=ROOT / "charts/model-serving",
                                     settings=settings)
        store = Store(settings)
        deployer = load_function("deployer").build(settings, store=store, driver=driver)
        users.create_user(store, "bench")
        model = store.create_model("bench", "iris", None)
        version = store.create_version("bench", model.id, None)
        store.set_version_artifacts(
            version.id, s3_path="s3://models/iris/model.joblib",
            model_artifact=Artifact(key="iris/model.joblib", size=1, sha256="d" * 64), requirements_artifact=None,
        )
        version = store.get_version("bench", version.id)

        # --- modelport: records in, the stream drives the rest
        poller = StreamPoller(table_name=settings.table_name, handler=deployer, endpoint_url=dynamodb.url,
                              config=StreamSourceConfig.from_template("deployer")).start()
        created: dict[int, float] = {}
        ready: dict[int, float] = {}
        start = time.perf_counter()
        for _ in range(args.records):
            deployment = deployments.create_deployment(store, settings, "bench", version.id, 1)
            created[deployment.id] = time.perf_counter()
        while len(ready) < args.records:
            for deployment_id in created.keys() - ready.keys():
                current = store.find_deployment(deployment_id)
                if current and current.status == DeploymentStatus.READY:
                    ready[deployment_id] = time.perf_counter()
                elif current and current.status == DeploymentStatus.FAILED:
                    raise SystemExit(f"deployment {deployment_id} failed: {current.status_message}")
            time.sleep(0.05)
        ours_total = time.perf_counter() - start
        poller.stop()
        ours = [ready[i] - created[i] for i in created]

        # --- the seed: helm install --wait inline in the request, one after another
        theirs: list[float] = []
        start = time.perf_counter()
        for i in range(args.records):
            seed_deployment = store.find_deployment(next(iter(created)))
            assert seed_deployment is not None
            spec = build_spec(seed_deployment, version, settings).model_copy(
                update={"deployment_id": 10_000 + i, "release": f"model-{10_000 + i}-1700000000",
                        "namespace": "user-seed"})
            t0 = time.perf_counter()
            driver.deploy(spec)
            theirs.append(time.perf_counter() - t0 + (t0 - start))  # request i waits for those before it
        theirs_total = time.perf_counter() - start
    finally:
        cluster.close()
        dynamodb.stop()

    table = Table(title=f"{args.records} deployments to READY (real helm + Kubernetes API emulator)")
    for column in ("deployer", "total s", "records/s", "p50 record->READY s", "p99 record->READY s"):
        table.add_column(column, justify="right")
    rows = [
        (f"modelport stream deployer (concurrency {args.concurrency})", ours_total, ours),
        ("seed: inline helm install, sequential", theirs_total, theirs),
    ]
    for label, total, latencies in rows:
        table.add_row(label, f"{total:.1f}", f"{args.records / total:.2f}",
                      f"{statistics.median(latencies):.2f}", f"{percentile(latencies, 0.99):.2f}")
    table.add_row("ratio modelport / seed (throughput)", "", f"{theirs_total / ours_total:.2f}x", "", "")
    Console().print(table)


if __name__ == "__main__":
    main()

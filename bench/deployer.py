"""Deployer throughput: N deployment records through DynamoDB Local's stream, the poller, the
deployer handler and the real helm binary into the Kubernetes API emulator (tests/support; no
real API server runs here).

Two modes:
- default: the emulator's readiness policy makes pods ready at once, so this measures modelport's
  and helm's own work, not pod start-up;
- ``--containers``: the kubelet stand-in runs every pod as a real container of the model-server
  image (``make image`` first; needs the Docker Engine, ``make engine``), which fetches the iris
  model from SeaweedFS and is READY when its readiness probe answers. It also times the image's
  start to ready on its own (``docker run`` to ``/readyz`` 200, the chart's flags).

The named competitor is the seed's design run in the same script against the same emulator:
the API calling `helm install --wait` inline, one request after another (HelmDeploymentService).

    .venv/bin/python bench/deployer.py [--records 50] [--concurrency 4]
    .venv/bin/python bench/deployer.py --containers [--records 20]
"""

from __future__ import annotations

import argparse
import ipaddress
import os
import statistics
import subprocess
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
    parser.add_argument("--records", type=int, default=None, help="default 50, 20 with --containers")
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--containers", action="store_true", help="pods as real containers (kubelet stand-in)")
    args = parser.parse_args()
    args.records = args.records or (20 if args.containers else 50)
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
    artifact = Artifact(key="iris/model.joblib", size=1, sha256="d" * 64)
    kubelet, seaweed, starts = None, None, []
    if args.containers:
        kubelet, seaweed, artifact, image = containers_setup(work)
        starts = start_to_ready(image, seaweed[1])
    cluster = KubeEmulator(work / "cluster", kubelet=kubelet).start()
    try:
        os.environ.update({"TABLE_NAME": f"bench-{uuid.uuid4().hex[:6]}", "DYNAMODB_ENDPOINT": dynamodb.url,
                           "DEPLOYER_CONCURRENCY": str(args.concurrency), "CLUSTER_DRIVER": "helm"})
        if seaweed is not None:
            os.environ.update({"CLUSTER_S3_ENDPOINT": seaweed[1], "MINIO_ACCESS_KEY": "testing",
                               "MINIO_SECRET_KEY": "testing", "MODEL_SERVER_IMAGE": image,
                               "HELM_TIMEOUT_SECONDS": "300"})
        settings = Settings()
        ensure_table(settings)
        driver = cluster.helm_driver(helm=tools.helm, kubectl=tools.kubectl, chart=ROOT / "charts/model-serving",
                                     settings=settings)
        store = Store(settings)
        deployer = load_function("deployer").build(settings, store=store, driver=driver)
        users.create_user(store, "bench")
        model = store.create_model("bench", "iris", None)
        version = store.create_version("bench", model.id, None)
        store.set_version_artifacts(version.id, s3_path="s3://models/iris/model.joblib", model_artifact=artifact,
                                    requirements_artifact=None)
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
        if kubelet is not None:
            kubelet.close()
        cluster.close()
        dynamodb.stop()
        if seaweed is not None:
            seaweed[0].stop()

    pods = "pods as real containers (kubelet stand-in)" if args.containers else "pods ready by policy"
    table = Table(title=f"{args.records} deployments to READY (real helm + Kubernetes API emulator, {pods})")
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
    if starts:
        print(f"model-server image, docker run -> /readyz 200 (iris from S3, chart's flags), {len(starts)} runs: "
              f"median {statistics.median(starts):.2f} s, min {min(starts):.2f} s, max {max(starts):.2f} s")


def containers_setup(work: Path) -> tuple[object, tuple[object, str], object, str]:
    """The kubelet stand-in, SeaweedFS on every address with the iris model, and the image."""
    import hashlib

    import docker

    from modelport.artifacts.storage import ObjectStore
    from modelport.domain.entities import Artifact
    from modelport.local.stand_ins import start_seaweedfs
    from modelport.settings import Settings
    from tests.support.kubelet import DockerKubelet
    from tests.support.models import train_iris

    image = subprocess.run([str(ROOT / "infra/image/build.sh")], capture_output=True, text=True, check=True,
                           timeout=1800).stdout.strip().splitlines()[-1]
    client = docker.from_env()
    ipam = client.networks.get("bridge").attrs["IPAM"]["Config"][0]
    gateway = ipam.get("Gateway") or str(ipaddress.ip_network(ipam["Subnet"])[1])
    proc = start_seaweedfs(work / "s3", work, bind="0.0.0.0")  # noqa: S104 - containers reach it
    store = ObjectStore(Settings(minio_endpoint=proc.url, minio_access_key="testing", minio_secret_key="testing"))
    store.ensure_bucket()
    path, _ = train_iris(work / "model.joblib")
    with path.open("rb") as stream:
        store.put("iris/model.joblib", stream)
    artifact = Artifact(key="iris/model.joblib", size=path.stat().st_size,
                        sha256=hashlib.sha256(path.read_bytes()).hexdigest())
    return DockerKubelet(), (proc, f"{gateway}:{proc.port}"), artifact, image


def start_to_ready(image: str, s3_endpoint: str, runs: int = 5) -> list[float]:
    """Seconds from `docker run` (read-only root, user 10001, no capabilities, /tmp a tmpfs) to the
    first 200 from /readyz, polled every 20 ms."""
    import docker
    import httpx

    client = docker.from_env()
    env = {"MODEL_URI": "s3://models/iris/model.joblib", "MINIO_ENDPOINT": s3_endpoint, "MINIO_ACCESS_KEY": "testing",
           "MINIO_SECRET_KEY": "testing", "PORT": "8080"}
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        container = client.containers.run(image, environment=env, user="10001:10001", read_only=True,
                                          cap_drop=["ALL"], tmpfs={"/tmp": "mode=1777"}, detach=True)  # noqa: S108
        try:
            container.reload()
            address = container.attrs["NetworkSettings"]["IPAddress"]
            while True:
                try:
                    if httpx.get(f"http://{address}:8080/readyz", timeout=1).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                container.reload()
                if container.status == "exited":
                    raise SystemExit(f"the model server exited: {container.logs(tail=5).decode()}")
                time.sleep(0.02)
            times.append(time.perf_counter() - t0)
        finally:
            container.remove(force=True)
    return times


if __name__ == "__main__":
    main()

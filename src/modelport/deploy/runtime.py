"""The cluster driver an entry point builds from its settings (``CLUSTER_DRIVER``).

Only ``helm`` can be built from settings alone. The local process driver belongs to the one
``modelport up`` process that runs its model servers: that process builds it and hands it to the
deployer itself; any other process asking for it gets a ValueError saying so.
"""

from __future__ import annotations

from modelport.deploy.driver import ClusterDriver
from modelport.deploy.helm import HelmDriver
from modelport.settings import Settings


def build_driver(settings: Settings) -> ClusterDriver:
    kind = settings.cluster_driver
    if kind == "helm":
        return HelmDriver(settings=settings)
    if kind == "local":
        raise ValueError("CLUSTER_DRIVER=local: the local driver runs inside `modelport up`, which builds it")
    raise ValueError(f"CLUSTER_DRIVER must be 'helm' or 'local', not {kind!r}")

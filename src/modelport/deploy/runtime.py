"""Which cluster driver this process uses: Helm (a Kubernetes cluster) or local processes."""

from __future__ import annotations

from modelport.deploy.driver import ClusterDriver
from modelport.settings import Settings

_drivers: dict[str, ClusterDriver] = {}


def get_driver(settings: Settings) -> ClusterDriver:
    """One driver per process and kind, created on first use (``CLUSTER_DRIVER``: helm | local)."""
    kind = settings.cluster_driver
    if kind not in _drivers:
        if kind == "helm":
            from modelport.deploy.helm import HelmDriver

            _drivers[kind] = HelmDriver(settings=settings)
        elif kind == "local":
            from modelport.deploy.local import LocalProcessDriver

            _drivers[kind] = LocalProcessDriver.shared(settings)
        else:
            raise ValueError(f"CLUSTER_DRIVER must be 'helm' or 'local', not {kind!r}")
    return _drivers[kind]


def set_driver(settings: Settings, driver: ClusterDriver) -> None:
    """Install a driver for this process (the local platform and tests build their own)."""
    _drivers[settings.cluster_driver] = driver

"""The local driver's state file, ``{state_dir}/local-driver.json``: the specs, revisions, ports
and pids of what runs, written after every change (atomically: a temporary file replaced).
``recorded`` reads the specs back for ``restore`` and first stops the model servers a killed run
left behind (recognised by pid and command line). Credentials are never written."""

from __future__ import annotations

import contextlib
import json
import os
import signal
from collections.abc import Iterable
from pathlib import Path

from modelport.deploy.driver import DeploySpec
from modelport.domain.model_server import MODULE
from modelport.local.release import LocalRelease

STATE_FILE = "local-driver.json"
_SECRET_FIELDS = {"s3_access_key", "s3_secret_key"}


def save(path: Path, releases: Iterable[LocalRelease], *, include_pids: bool = True) -> None:
    data = {
        "version": 1,
        "releases": [
            {
                "namespace": rel.namespace, "release": rel.release, "deployment_id": rel.deployment_id,
                "revision": rel.revision, "phase": rel.phase.value,
                "spec": rel.spec.model_dump(mode="json", exclude=_SECRET_FIELDS) if rel.spec else None,
                "replicas": [{"port": r.port, "pid": r.pid if include_pids else None} for r in rel.replicas],
            }
            for rel in releases
        ],
    }
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=1))
    tmp.replace(path)


def _is_model_server(pid: int) -> bool:
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    return MODULE.encode() in cmdline


def recorded(path: Path) -> list[DeploySpec]:
    """The specs the state file says were serving (leftover servers of a killed run stopped)."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return []
    specs = []
    for entry in data.get("releases", []):
        for replica in entry.get("replicas", []):
            pid = replica.get("pid")
            if pid and _is_model_server(int(pid)):  # left over from a run that was killed
                with contextlib.suppress(ProcessLookupError):
                    os.kill(int(pid), signal.SIGTERM)
        if entry.get("spec"):
            specs.append(DeploySpec.model_validate(entry["spec"]))
    return specs

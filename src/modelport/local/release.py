"""The local driver's records of what runs: releases, their revisions and replicas, and the
events a replica's exit or recovery sends. Data only; the driver and the supervisor change them
under the driver's locks."""

from __future__ import annotations

import itertools
import subprocess
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from modelport.deploy.driver import DeploySpec, ReleasePhase

BACKOFF_FIRST_SECONDS = 1.0


def now() -> datetime:
    return datetime.now(UTC)

@dataclass(frozen=True)
class ReplicaEvent:
    """A replica died or came back; ``message`` is meant for the deployment's status message."""

    deployment_id: int
    namespace: str
    release: str
    replica: int  # 1-based, as users count
    kind: str  # "exited" | "recovered"
    message: str
    exit_code: int | None = None
    restart_in: float | None = None


EventCallback = Callable[[ReplicaEvent], None]


@dataclass
class Replica:
    index: int  # 0-based
    port: int
    log_path: Path
    env: dict[str, str]
    process: subprocess.Popen[bytes] | None = None
    ready: bool = False
    supervised: bool = False  # False while deploy() owns it (waiting for readiness)
    stopping: bool = False
    started_at: float = 0.0
    restarts: int = 0
    backoff: float = BACKOFF_FIRST_SECONDS
    restart_at: float | None = None
    probing: bool = False

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None else None


@dataclass
class Revision:
    number: int
    spec: DeploySpec
    phase: ReleasePhase
    message: str
    updated_at: datetime


@dataclass
class LocalRelease:
    namespace: str
    release: str
    deployment_id: int
    spec: DeploySpec | None = None  # the spec the running replicas serve (last good one)
    replicas: list[Replica] = field(default_factory=list)
    history: list[Revision] = field(default_factory=list)
    phase: ReleasePhase = ReleasePhase.PENDING
    message: str = ""
    updated_at: datetime = field(default_factory=now)
    lock: threading.RLock = field(default_factory=threading.RLock)
    counter: itertools.count[int] = field(default_factory=lambda: itertools.count(1))
    removed: bool = False
    canary_weight: int | None = None  # set: a canary beside the deployment's stable release
    routed: bool = True  # False: the gateway sends it no callers (a shadow: it gets copies only)

    @property
    def revision(self) -> int:
        return self.history[-1].number if self.history else 0



def artifact_key(spec: DeploySpec) -> tuple[Any, ...]:
    """What makes two specs need different processes (everything but the replica count)."""
    return (spec.model_bucket, spec.model_key, spec.model_sha256, spec.model_version_id, spec.requirements_key,
            spec.requirements_sha256, spec.requirements_version_id, spec.model_name, spec.path,
            spec.predict_token_sha256, spec.trusted_globals, spec.mirror_release, spec.mirror_percent,
            spec.mirror_tolerance)

"""A cluster driver for unit tests of the reconcile decisions: it keeps releases in a dict and
fails on request. Integration tests use the real HelmDriver against the API emulator instead."""

from __future__ import annotations

import threading

from modelport.deploy.driver import ClusterError, DeploySpec, PodMetrics, ReleaseInfo, ReleasePhase, ReleaseStatus


class RecordingDriver:
    def __init__(self) -> None:
        self.releases: dict[tuple[str, str], list[DeploySpec]] = {}  # revisions, newest last
        self.calls: list[tuple[str, str]] = []
        self.unreachable = False
        self.failing_keys: set[str] = set()  # model keys whose pods never become ready
        self.problems: dict[tuple[str, str], str] = {}  # releases whose pods stopped being ready
        self.metrics: dict[tuple[str, str], list[PodMetrics]] = {}  # what scrape() answers, per release
        self._lock = threading.Lock()

    def _check(self) -> None:
        if self.unreachable:
            raise ClusterError("cannot reach the cluster: connection refused", retryable=True)

    def deploy(self, spec: DeploySpec) -> ReleaseStatus:
        with self._lock:
            self.calls.append(("deploy", spec.release))
        self._check()
        with self._lock:
            self.releases.setdefault((spec.namespace, spec.release), []).append(spec)
        if spec.model_key in self.failing_keys:
            raise ClusterError(
                "the release did not become ready in time",
                retryable=False,
                pod_reason="CrashLoopBackOff: model failed to load",
            )
        return ReleaseStatus(
            namespace=spec.namespace,
            release=spec.release,
            phase=ReleasePhase.DEPLOYED,
            revision=len(self.releases[(spec.namespace, spec.release)]),
        )

    def remove(self, namespace: str, release: str) -> bool:
        self.calls.append(("remove", release))
        self._check()
        with self._lock:
            return self.releases.pop((namespace, release), None) is not None

    def status(self, namespace: str, release: str) -> ReleaseStatus | None:
        self._check()
        revisions = self.releases.get((namespace, release))
        if not revisions:
            return None
        return ReleaseStatus(namespace=namespace, release=release, phase=ReleasePhase.DEPLOYED, revision=len(revisions))

    def list_releases(self) -> list[ReleaseInfo]:
        self._check()
        return [
            ReleaseInfo(
                namespace=ns,
                release=rel,
                phase=ReleasePhase.DEPLOYED,
                revision=len(revs),
                deployment_id=revs[-1].deployment_id,
                problem=self.problems.get((ns, rel)),
            )
            for (ns, rel), revs in self.releases.items()
        ]

    def scrape(self, namespace: str, release: str) -> list[PodMetrics]:
        self._check()
        return list(self.metrics.get((namespace, release), []))

    def rollback(self, namespace: str, release: str) -> ReleaseStatus:
        self.calls.append(("rollback", release))
        self._check()
        with self._lock:
            revisions = self.releases[(namespace, release)]
            good = [r for r in revisions[:-1] if r.model_key not in self.failing_keys]
            revisions.append(good[-1])
        return ReleaseStatus(namespace=namespace, release=release, phase=ReleasePhase.DEPLOYED, revision=len(revisions))

    def current(self, namespace: str, release: str) -> DeploySpec | None:
        revisions = self.releases.get((namespace, release))
        return revisions[-1] if revisions else None

"""The metrics sampler: reads every live deployment's model servers and writes what they did since
the last run into the table, the series behind ``GET /api/v1/deployments/{id}/metrics`` and the
figures the rollout decisions use.

Run by the scheduled reconcile function (every minute, before its sweep) and by the local platform
(every ``METRICS_SAMPLE_SECONDS``). The API never talks to the cluster: this is how the figures
reach it. Rules:
- a deployment whose release may have running model servers (DEPLOYING, READY, UPDATING) is
  sampled, one release at a time (its canary's too, while one progresses), through
  ``ClusterDriver.scrape``;
- the sample is the difference between each pod's counters now and at the last run (a restarted
  pod, or one not seen before, counts from zero), summed over pods; replicas ready is the number of
  pods whose model is loaded now; pods that could not be read count as not ready;
- baseline and sample are written in one conditional transaction (``store.metrics``), so two
  samplers never count the same requests twice;
- one deployment's failure (cluster unreachable, unreadable text) never stops the others.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Protocol

from aws_lambda_powertools import Logger

from modelport.deploy.driver import ClusterDriver, ClusterError
from modelport.domain.entities import Deployment, DeploymentStatus
from modelport.domain.serving_metrics import Baseline, Counters, MetricsUnreadable, Sample, parse, since
from modelport.settings import Settings

logger = Logger(service="modelport")

SAMPLED_STATUSES = frozenset({DeploymentStatus.DEPLOYING, DeploymentStatus.READY, DeploymentStatus.UPDATING})


class MetricsRecords(Protocol):
    """What the sampler needs of the table (``store.repository.Store``)."""

    def all_deployments(self) -> list[Deployment]: ...

    def metrics_baseline(self, deployment_id: int, release: str) -> Baseline | None: ...

    def record_metrics(self, deployment_id: int, baseline: Baseline, sample: Sample | None, *,
                       previous: Baseline | None, retention_seconds: int) -> bool: ...


@dataclass
class SampleReport:
    sampled: list[tuple[int, str, int]] = field(default_factory=list)  # deployment, release, requests
    skipped: list[tuple[int, str, str]] = field(default_factory=list)  # deployment, release, why

    def lines(self) -> list[str]:
        return [f"sampled deployment {d} {r}: {n} request(s)" for d, r, n in self.sampled] + [
            f"not sampled deployment {d} {r}: {why}" for d, r, why in self.skipped
        ]


def sample_release(store: MetricsRecords, driver: ClusterDriver, settings: Settings, deployment_id: int,
                   namespace: str, release: str, *, now: float | None = None) -> Sample | None:
    """Scrape one release and record its sample; None if another sampler recorded first."""
    sampled_at = time.time() if now is None else now
    current: dict[str, Counters] = {}
    for pod in driver.scrape(namespace, release):
        if pod.text is None:
            logger.info("pod not scraped", extra={"pod": pod.pod, "error": pod.error})
            continue
        try:
            current[pod.pod] = parse(pod.text)
        except MetricsUnreadable as exc:
            logger.warning("pod metrics unreadable", extra={"pod": pod.pod, "error": str(exc)})
    previous = store.metrics_baseline(deployment_id, release)
    total = Counters()
    for name, counters in current.items():
        total = total + since(previous.pods.get(name) if previous else None, counters)
    sample = Sample(release=release, sampled_at=sampled_at, counters=total, replicas_ready=total.ready)
    baseline = Baseline(release=release, sampled_at=sampled_at, pods=current)
    if previous is not None and previous.sampled_at >= sampled_at:
        return None  # a later run already recorded
    written = store.record_metrics(deployment_id, baseline, sample, previous=previous,
                                   retention_seconds=settings.metrics_retention_seconds)
    return sample if written else None


def sample_all(store: MetricsRecords, driver: ClusterDriver, settings: Settings, *,
               now: float | None = None) -> SampleReport:
    report = SampleReport()
    targets = [(d.id, d.namespace, release) for d in store.all_deployments() if d.status in SAMPLED_STATUSES
               for release in d.release_names]

    def one(target: tuple[int, str, str]) -> None:
        deployment_id, namespace, release = target
        try:
            sample = sample_release(store, driver, settings, deployment_id, namespace, release, now=now)
        except ClusterError as exc:
            report.skipped.append((deployment_id, release, exc.message))
            return
        if sample is None:
            report.skipped.append((deployment_id, release, "another sampler recorded first"))
        else:
            report.sampled.append((deployment_id, release, sample.counters.requests))

    with ThreadPoolExecutor(max_workers=max(1, settings.deployer_concurrency)) as pool:
        list(pool.map(one, targets))
    return report

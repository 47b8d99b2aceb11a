"""Model-server metrics samples: a compact series per deployment, kept for a retention period (TTL).

Each sampler run writes, per release, the new baseline (each pod's cumulative counters) and the
sample (what happened since the previous baseline) in one transaction whose condition is that
the baseline is still the one the sampler started from. Two samplers that race (an overlapping
scheduled run, a retried one) cannot both count the same requests: the second one's write fails
and it writes nothing.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from pynamodb.exceptions import TransactWriteError

from modelport.domain.serving_metrics import Baseline, Counters, Sample
from modelport.store import keys
from modelport.store.records import MetricsBaselineRecord, MetricsSampleRecord
from modelport.store.table import Table


class MetricsRepository(Table):
    def metrics_baseline(self, deployment_id: int, release: str) -> Baseline | None:
        try:
            record = self.records.MetricsBaseline.get(*keys.metrics_baseline(deployment_id, release),
                                                      consistent_read=True)
        except self.records.MetricsBaseline.DoesNotExist:
            return None
        pods = {pod: Counters.model_validate(c) for pod, c in (record.pods or {}).items()}
        return Baseline(release=record.release, sampled_at=float(record.sampled_at), pods=pods)

    def record_metrics(
        self, deployment_id: int, baseline: Baseline, sample: Sample | None, *,
        previous: Baseline | None, retention_seconds: int,
    ) -> bool:
        """Write the new baseline and its sample; False if another sampler moved the baseline first."""
        expires = _expiry(baseline.sampled_at, retention_seconds)
        new_baseline = self.records.MetricsBaseline(
            *keys.metrics_baseline(deployment_id, baseline.release), type="METRICS_BASELINE",
            deployment_id=deployment_id, release=baseline.release, sampled_at=baseline.sampled_at,
            pods={pod: c.model_dump() for pod, c in baseline.pods.items()}, ttl=expires,
        )
        condition: Any = (
            MetricsBaselineRecord.PK.does_not_exist() if previous is None
            else MetricsBaselineRecord.sampled_at == previous.sampled_at
        )
        transaction = self._transact()
        try:
            with transaction:
                transaction.save(new_baseline, condition=condition, name="baseline")
                if sample is not None:
                    record = self.records.MetricsSample(
                        *keys.metrics_sample(deployment_id, sample.release, int(sample.sampled_at)),
                        type="METRICS_SAMPLE", deployment_id=deployment_id, release=sample.release,
                        sampled_at=sample.sampled_at, counters=sample.counters.model_dump(),
                        replicas_ready=sample.replicas_ready, ttl=expires,
                    )
                    transaction.save(record, condition=MetricsSampleRecord.PK.does_not_exist(), name="sample")
        except TransactWriteError as exc:
            if transaction.failed(exc):
                return False
            raise
        return True

    def metrics_samples(self, deployment_id: int, since_epoch: float) -> list[Sample]:
        """Samples taken at or after ``since_epoch``, oldest first."""
        since_key = f"{keys.metrics_samples_prefix()}{int(since_epoch):012d}"
        found = self.records.MetricsSample.query(
            keys.metrics_partition(deployment_id),
            MetricsSampleRecord.SK.between(since_key, f"{keys.metrics_samples_prefix()}~"),
        )
        return [
            Sample(release=r.release, sampled_at=float(r.sampled_at), replicas_ready=int(r.replicas_ready),
                   counters=Counters.model_validate(r.counters))
            for r in found
        ]


def _expiry(epoch: float, retention_seconds: int) -> datetime:
    return datetime.fromtimestamp(epoch, UTC) + timedelta(seconds=retention_seconds)

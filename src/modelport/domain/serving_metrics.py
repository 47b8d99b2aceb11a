"""What the control plane reads of a model server's ``/metrics``, and the figures made from it.

The dashboard's charts (``GET /api/v1/deployments/{id}/metrics``) and the rollout decisions
(canary steps) use these same functions, so a chart and a decision never disagree.

Contract:
- ``parse(text)`` reads the Prometheus text exposition a model server exports (the names of
  ``modelport.serving.metrics``) into ``Counters``, cumulative since that process started: answers
  of the prediction endpoints (``PREDICTION_ENDPOINTS``) and those of them with a 5xx code, the
  latency histogram's cumulative bucket counts, rows predicted and model calls, and whether the
  model is ready. Text that is not an exposition raises ``MetricsUnreadable``.
- ``since(previous, current)``: what one process did between two scrapes. A counter that went
  down means the process restarted: then everything it counts now happened since.
- ``Counters`` add up (pods of a release, samples of a minute); ``Figures.of(counters)`` gives
  requests, errors, error rate, p50/p99 in milliseconds (as Prometheus's ``histogram_quantile``:
  linear inside the bucket, the highest finite bound for the +Inf bucket) and mean rows per
  model call; None where there were no requests.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from datetime import UTC, datetime

from prometheus_client.parser import text_string_to_metric_families
from pydantic import BaseModel, Field

#: the model server's prediction endpoints (its health, metadata and /metrics answers do not count)
PREDICTION_ENDPOINTS = frozenset({"predict", "v1_predict", "v2_infer"})
REQUESTS = "modelport_requests"
LATENCY = "modelport_request_duration_seconds"
ROWS = "modelport_batch_rows"
READY = "modelport_model_ready"


class MetricsUnreadable(ValueError):
    """The text is not a Prometheus exposition."""


class Counters(BaseModel):
    """Cumulative counts of one model-server process, or a sum of such differences."""

    requests: int = 0
    errors: int = Field(default=0, description="answers with a 5xx code")
    latency: dict[str, float] = Field(
        default_factory=dict, description="cumulative bucket counts by upper bound in seconds ('+Inf' last)"
    )
    rows: float = 0.0
    calls: int = Field(default=0, description="model calls (a batch of merged requests is one call)")
    ready: int = 0

    def __add__(self, other: Counters) -> Counters:
        bounds = set(self.latency) | set(other.latency)
        return Counters(
            requests=self.requests + other.requests,
            errors=self.errors + other.errors,
            latency={b: self.latency.get(b, 0.0) + other.latency.get(b, 0.0) for b in bounds},
            rows=self.rows + other.rows,
            calls=self.calls + other.calls,
            ready=self.ready + other.ready,
        )


def parse(text: str) -> Counters:
    counters = Counters()
    latency: dict[str, float] = {}
    try:
        families = list(text_string_to_metric_families(text))
    except (ValueError, IndexError, TypeError) as exc:
        raise MetricsUnreadable(f"not a Prometheus exposition: {exc}") from exc
    for family in families:
        for sample in family.samples:
            labels = sample.labels
            if sample.name == f"{REQUESTS}_total" and labels.get("endpoint") in PREDICTION_ENDPOINTS:
                counters.requests += int(sample.value)
                if labels.get("code", "").startswith("5"):
                    counters.errors += int(sample.value)
            elif sample.name == f"{LATENCY}_bucket" and labels.get("endpoint") in PREDICTION_ENDPOINTS:
                bound = _bound(labels.get("le", "+Inf"))
                latency[bound] = latency.get(bound, 0.0) + sample.value
            elif sample.name == f"{ROWS}_sum":
                counters.rows += sample.value
            elif sample.name == f"{ROWS}_count":
                counters.calls += int(sample.value)
            elif sample.name == READY:
                counters.ready = int(sample.value >= 1)
    counters.latency = latency
    return counters


def _bound(le: str) -> str:
    value = float(le)
    return "+Inf" if math.isinf(value) else repr(value)


def since(previous: Counters | None, current: Counters) -> Counters:
    """What the process did between the scrape ``previous`` and the scrape ``current``."""
    if previous is None or _restarted(previous, current):
        return current
    return Counters(
        requests=current.requests - previous.requests,
        errors=current.errors - previous.errors,
        latency={b: max(0.0, v - previous.latency.get(b, 0.0)) for b, v in current.latency.items()},
        rows=max(0.0, current.rows - previous.rows),
        calls=current.calls - previous.calls,
        ready=current.ready,
    )


def _restarted(previous: Counters, current: Counters) -> bool:
    return (
        current.requests < previous.requests or current.calls < previous.calls
        or any(current.latency.get(b, 0.0) < v for b, v in previous.latency.items())
    )


class Figures(BaseModel):
    requests: int
    errors: int
    error_rate: float | None
    p50_ms: float | None
    p99_ms: float | None
    mean_batch_rows: float | None

    @classmethod
    def of(cls, counters: Counters) -> Figures:
        n = counters.requests
        return cls(
            requests=n,
            errors=counters.errors,
            error_rate=counters.errors / n if n else None,
            p50_ms=_ms(quantile(0.5, counters.latency)),
            p99_ms=_ms(quantile(0.99, counters.latency)),
            mean_batch_rows=counters.rows / counters.calls if counters.calls else None,
        )


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000.0, 3)


def quantile(q: float, buckets: dict[str, float]) -> float | None:
    """``histogram_quantile(q, ...)`` of cumulative bucket counts keyed by upper bound."""
    ordered = sorted(((math.inf if b == "+Inf" else float(b)), count) for b, count in buckets.items())
    if not ordered or ordered[-1][1] <= 0:
        return None
    rank = q * ordered[-1][1]
    lower, below = 0.0, 0.0
    for bound, count in ordered:
        if count >= rank:
            if math.isinf(bound):
                return lower
            if count == below:
                return bound
            return lower + (bound - lower) * (rank - below) / (count - below)
        lower, below = bound, count
    return lower


class Baseline(BaseModel):
    """The last scrape of one release: each pod's cumulative counters, when they were read."""

    release: str
    sampled_at: float = Field(description="epoch seconds")
    pods: dict[str, Counters]


class Sample(BaseModel):
    """What one release's model servers did between two scrapes, summed over its pods."""

    release: str
    sampled_at: float
    counters: Counters
    replicas_ready: int


MINUTE = 60


class Point(Figures):
    """One minute of a deployment's series."""

    at: datetime
    replicas_ready: int


def total(samples: Iterable[Sample]) -> Figures:
    """Figures of everything the samples counted."""
    return Figures.of(sum((s.counters for s in samples), Counters()))


def per_minute(samples: Iterable[Sample]) -> list[Point]:
    """The samples summed per minute (of every release of the deployment), oldest first; replicas
    ready is the minute's last reading of each release, summed."""
    counters: dict[int, Counters] = {}
    ready: dict[int, dict[str, int]] = {}
    for sample in sorted(samples, key=lambda s: s.sampled_at):
        minute = int(sample.sampled_at // MINUTE) * MINUTE
        counters[minute] = counters.get(minute, Counters()) + sample.counters
        ready.setdefault(minute, {})[sample.release] = sample.replicas_ready
    return [
        Point(at=datetime.fromtimestamp(minute, UTC), replicas_ready=sum(ready[minute].values()),
              **Figures.of(c).model_dump())
        for minute, c in sorted(counters.items())
    ]

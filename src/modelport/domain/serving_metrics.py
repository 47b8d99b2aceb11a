"""What the control plane reads of a model server's ``/metrics``, and the figures made from it.

The dashboard's charts (``GET /api/v1/deployments/{id}/metrics``) and the rollout decisions
(canary steps) use these same functions, so a chart and a decision never disagree.

Contract:
- ``parse(text)`` reads the Prometheus text exposition a model server exports (the names of
  ``modelport.serving.metrics``) into ``Counters``, cumulative since that process started: answers
  of the prediction endpoints (``PREDICTION_ENDPOINTS``) and those of them with a 5xx code, the
  latency histogram's cumulative bucket counts, rows predicted and model calls, whether the
  model is ready, and a live server's counts of its shadow copies (``modelport_shadow_*``:
  copies compared, failed and dropped, rows agreed and disagreed, predict_proba rows and their
  summed mean absolute difference, the calls' latency histogram). Text that is not an exposition
  raises ``MetricsUnreadable``.
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
from typing import Any

from prometheus_client.parser import text_string_to_metric_families
from pydantic import BaseModel, Field

#: the model server's prediction endpoints (its health, metadata and /metrics answers do not count)
PREDICTION_ENDPOINTS = frozenset({"predict", "v1_predict", "v2_infer", "mirror"})  # mirror: a shadow's copies
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
    # what a live server counted of the copies it sent to a shadow (serving/mirror.py)
    shadow_compared: int = 0
    shadow_failed: int = Field(default=0, description="copies the candidate did not answer well (5xx, timeout, down)")
    shadow_dropped: int = Field(default=0, description="copies not sent: the queue was full")
    shadow_agreed: int = Field(default=0, description="rows")
    shadow_disagreed: int = 0
    shadow_proba_rows: int = 0
    shadow_proba_abs_diff: float = Field(default=0.0, description="sum over rows of the mean |p_live - p_shadow|")
    shadow_latency: dict[str, float] = Field(default_factory=dict, description="the calls to the candidate")

    def __add__(self, other: Counters) -> Counters:
        return Counters(**{name: _combine(getattr(self, name), getattr(other, name), 1)
                           for name in Counters.model_fields})


_GAUGES = frozenset({"ready"})  # read as they are now, never differenced
_HISTOGRAMS = ("latency", "shadow_latency")


def _combine(a: Any, b: Any, sign: int) -> Any:
    """a + sign * b, per bucket for histograms (a difference never goes below zero)."""
    if isinstance(a, dict):
        return {k: max(0.0, a.get(k, 0.0) + sign * b.get(k, 0.0)) if sign < 0 else a.get(k, 0.0) + b.get(k, 0.0)
                for k in set(a) | set(b)}
    value = a + sign * b
    return max(type(a)(0), value) if sign < 0 else value


#: the live server's counters of its shadow copies (serving/metrics.py): sample name -> Counters field
_SHADOW_COUNTERS = {
    "modelport_shadow_proba_rows_total": "shadow_proba_rows",
    "modelport_shadow_proba_abs_diff_total": "shadow_proba_abs_diff",
}
#: ... and those split by a label: (sample name, label) -> label value -> Counters field
_SHADOW_LABELLED = {
    ("modelport_shadow_copies_total", "outcome"): {"compared": "shadow_compared", "failed": "shadow_failed",
                                                   "dropped": "shadow_dropped"},
    ("modelport_shadow_rows_total", "result"): {"agreed": "shadow_agreed", "disagreed": "shadow_disagreed"},
}
SHADOW_LATENCY = "modelport_shadow_duration_seconds"


def parse(text: str) -> Counters:
    counters = Counters()
    latency: dict[str, float] = {}
    shadow_latency: dict[str, float] = {}
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
            elif sample.name == f"{SHADOW_LATENCY}_bucket":
                bound = _bound(labels.get("le", "+Inf"))
                shadow_latency[bound] = shadow_latency.get(bound, 0.0) + sample.value
            elif sample.name in _SHADOW_COUNTERS:
                name = _SHADOW_COUNTERS[sample.name]
                setattr(counters, name, getattr(counters, name) + type(getattr(counters, name))(sample.value))
            else:
                for (metric, label), fields in _SHADOW_LABELLED.items():
                    if sample.name == metric and labels.get(label) in fields:
                        name = fields[labels[label]]
                        setattr(counters, name, getattr(counters, name) + int(sample.value))
    counters.latency = latency
    counters.shadow_latency = shadow_latency
    return counters


def _bound(le: str) -> str:
    value = float(le)
    return "+Inf" if math.isinf(value) else repr(value)


def since(previous: Counters | None, current: Counters) -> Counters:
    """What the process did between the scrape ``previous`` and the scrape ``current``."""
    if previous is None or _restarted(previous, current):
        return current
    return Counters(**{name: getattr(current, name) if name in _GAUGES
                       else _combine(getattr(current, name), getattr(previous, name), -1)
                       for name in Counters.model_fields})


def _restarted(previous: Counters, current: Counters) -> bool:
    """A counter went down: the process restarted (everything it counts now happened since)."""
    for name in Counters.model_fields:
        if name in _GAUGES:
            continue
        before, now = getattr(previous, name), getattr(current, name)
        if isinstance(before, dict):
            if any(now.get(b, 0.0) < v for b, v in before.items()):
                return True
        elif now < before:
            return True
    return False


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


def quantile_ms(q: float, buckets: dict[str, float]) -> float | None:
    """``quantile`` in milliseconds, as every figure here gives it."""
    return _ms(quantile(q, buckets))


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

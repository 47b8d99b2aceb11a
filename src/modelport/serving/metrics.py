"""Prometheus metrics of the model server (served at ``/metrics``)."""

from __future__ import annotations

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
)

disable_created_metrics()

LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 4096)

REQUESTS = Counter("modelport_requests", "HTTP requests answered", ["endpoint", "code"])
ERRORS = Counter("modelport_errors", "requests answered with an error", ["endpoint", "kind"])
LATENCY = Histogram("modelport_request_duration_seconds", "time from request start to answer", ["endpoint"],
                    buckets=LATENCY_BUCKETS)
BATCH_ROWS = Histogram("modelport_batch_rows", "rows per model call", buckets=BATCH_BUCKETS)
BATCH_REQUESTS = Histogram("modelport_batch_requests", "requests merged into one model call", buckets=BATCH_BUCKETS)
ROWS = Counter("modelport_predicted_rows", "rows predicted")
LOAD_SECONDS = Gauge("modelport_model_load_seconds", "seconds to fetch, install requirements and load the model")
READY = Gauge("modelport_model_ready", "1 when the model is loaded and serving")
# a live server's copies to its shadow (serving/mirror.py; read by domain/serving_metrics.py)
SHADOW_COPIES = Counter("modelport_shadow_copies", "answered requests copied to the shadow", ["outcome"])
SHADOW_ROWS = Counter("modelport_shadow_rows", "copied rows the shadow answered alike or not", ["result"])
SHADOW_PROBA_ROWS = Counter("modelport_shadow_proba_rows", "copied predict_proba rows")
SHADOW_PROBA_ABS_DIFF = Counter("modelport_shadow_proba_abs_diff",
                                "sum over copied predict_proba rows of the mean absolute difference")
SHADOW_LATENCY = Histogram("modelport_shadow_duration_seconds", "calls to the shadow, sent until answered",
                           buckets=LATENCY_BUCKETS)

CONTENT_TYPE = CONTENT_TYPE_LATEST.encode()


class Recorder:
    """Label children resolved once per (endpoint, code), not on every request."""

    def __init__(self) -> None:
        self._requests: dict[tuple[str, int], object] = {}
        self._latency: dict[str, object] = {}

    def observe(self, endpoint: str, code: int, seconds: float) -> None:
        key = (endpoint, code)
        counter = self._requests.get(key)
        if counter is None:
            counter = self._requests[key] = REQUESTS.labels(endpoint, str(code))
        counter.inc()  # type: ignore[attr-defined]
        histogram = self._latency.get(endpoint)
        if histogram is None:
            histogram = self._latency[endpoint] = LATENCY.labels(endpoint)
        histogram.observe(seconds)  # type: ignore[attr-defined]
        if code >= 400:
            ERRORS.labels(endpoint, "client" if code < 500 else "server").inc()


def exposition() -> bytes:
    return generate_latest(REGISTRY)

"""The figures the dashboard charts and the rollout decisions use: read from what the model server
really exports, sampled into the table without double counting, served to the owner only."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient
from moto import mock_aws

from modelport.api.app import create_app
from modelport.deploy.driver import PodMetrics
from modelport.deploy.metrics import sample_all, sample_release
from modelport.domain.entities import Artifact
from modelport.domain.serving_metrics import (
    Baseline,
    Counters,
    Figures,
    MetricsUnreadable,
    Sample,
    parse,
    quantile,
    since,
)
from modelport.services import deployments, users
from modelport.serving import metrics as served
from modelport.settings import Settings
from modelport.store.records import ensure_table
from modelport.store.repository import Store
from tests.support.drivers import RecordingDriver


def exposition(requests: int, errors: int = 0, seconds: float = 0.003, ready: int = 1, rows: int = 1) -> str:
    """Text as the model server exports it, made with prometheus_client and its metric names."""
    from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

    registry = CollectorRegistry()
    counter = Counter(served.REQUESTS._name, "", ["endpoint", "code"], registry=registry)
    latency = Histogram(served.LATENCY._name, "", ["endpoint"], buckets=served.LATENCY_BUCKETS, registry=registry)
    batch = Histogram(served.BATCH_ROWS._name, "", buckets=served.BATCH_BUCKETS, registry=registry)
    Gauge(served.READY._name, "", registry=registry).set(ready)
    for _ in range(requests - errors):
        counter.labels("predict", "200").inc()
        latency.labels("predict").observe(seconds)
        batch.observe(rows)
    for _ in range(errors):
        counter.labels("v2_infer", "500").inc()
        latency.labels("v2_infer").observe(seconds)
    counter.labels("healthz", "200").inc(50)  # probes are not predictions
    return generate_latest(registry).decode()


def test_the_model_servers_own_exposition_is_read_as_it_counts():
    before = parse(served.exposition().decode())
    recorder = served.Recorder()
    for code in (200, 200, 200, 422, 503):
        recorder.observe("predict", code, 0.002)
    recorder.observe("v2_infer", 200, 0.004)
    recorder.observe("metadata", 200, 0.001)  # not a prediction endpoint
    after = parse(served.exposition().decode())
    done = since(before, after)
    assert (done.requests, done.errors) == (6, 1)  # a 4xx is the caller's mistake, not the server's
    assert Figures.of(done).p50_ms is not None and 1.0 <= Figures.of(done).p50_ms <= 2.5


def test_quantiles_interpolate_inside_the_bucket_as_prometheus_does():
    buckets = {"0.001": 0.0, "0.005": 100.0, "0.01": 100.0, "+Inf": 100.0}
    assert quantile(0.5, buckets) == pytest.approx(0.003)
    assert quantile(0.99, buckets) == pytest.approx(0.00496)
    assert quantile(0.99, {"0.1": 1.0, "+Inf": 10.0}) == 0.1  # in +Inf: the highest finite bound
    assert quantile(0.5, {"0.1": 0.0, "+Inf": 0.0}) is None
    figures = Figures.of(Counters())
    assert (figures.requests, figures.error_rate, figures.p99_ms, figures.mean_batch_rows) == (0, None, None, None)


def test_a_restarted_server_counts_from_zero():
    old, new = parse(exposition(40)), parse(exposition(5))
    assert since(old, new).requests == 5
    assert since(parse(exposition(5)), parse(exposition(12))).requests == 7


def test_text_that_is_not_an_exposition_is_refused():
    with pytest.raises(MetricsUnreadable):
        parse("modelport_requests_total{endpoint=predict 3\n")


# --- sampling into the table and the API that serves it -------------------------------------------

@pytest.fixture()
def platform() -> Iterator[tuple[Store, RecordingDriver, int]]:
    with mock_aws():
        settings = Settings(table_name="metrics")
        ensure_table(settings)
        store = Store(settings)
        users.create_user(store, "alice")
        users.create_user(store, "bob")
        model = store.create_model("alice", "iris", None)
        version = store.create_version("alice", model.id, None)
        store.set_version_artifacts(version.id, s3_path="s3://b/k", requirements_artifact=None,
                                    model_artifact=Artifact(key="k", size=1, sha256="e" * 64))
        deployment = deployments.create_deployment(store, settings, "alice", version.id, 2)
        driver = RecordingDriver()
        yield store, driver, deployment.id


def scraped(driver: RecordingDriver, store: Store, deployment_id: int, *pods: PodMetrics) -> None:
    deployment = store.find_deployment(deployment_id)
    assert deployment is not None
    driver.metrics[(deployment.namespace, deployment.k8s_service_name)] = list(pods)


def test_samples_count_each_request_once_across_pods_and_restarts(platform):
    store, driver, deployment_id = platform
    settings = store.settings
    ready_deployment(store, deployment_id)
    scraped(driver, store, deployment_id, PodMetrics(pod="a", text=exposition(10)),
            PodMetrics(pod="b", text=exposition(4, errors=1)))
    sample_all(store, driver, settings, now=1_000_000.0)
    scraped(driver, store, deployment_id, PodMetrics(pod="a", text=exposition(25)),  # +15
            PodMetrics(pod="b", text=exposition(2)),  # restarted: +2
            PodMetrics(pod="c", error="connection refused"))  # not read: not ready, counts nothing
    report = sample_all(store, driver, settings, now=1_000_030.0)
    assert report.sampled == [(deployment_id, store.find_deployment(deployment_id).k8s_service_name, 17)]
    samples = store.metrics_samples(deployment_id, 0)
    assert [(s.counters.requests, s.counters.errors, s.replicas_ready) for s in samples] == [(14, 1, 2), (17, 0, 2)]


def test_two_samplers_racing_never_count_the_same_requests_twice(platform):
    store, driver, deployment_id = platform
    deployment = ready_deployment(store, deployment_id)
    release = deployment.k8s_service_name
    scraped(driver, store, deployment_id, PodMetrics(pod="a", text=exposition(3)))
    previous = store.metrics_baseline(deployment_id, release)
    assert previous is None
    first = Baseline(release=release, sampled_at=10.0, pods={"a": parse(exposition(3))})
    sample = Sample(release=release, sampled_at=10.0, counters=parse(exposition(3)), replicas_ready=1)
    assert store.record_metrics(deployment_id, first, sample, previous=None, retention_seconds=3600)
    late = Baseline(release=release, sampled_at=11.0, pods={"a": parse(exposition(3))})
    late_sample = sample.model_copy(update={"sampled_at": 11.0})
    assert not store.record_metrics(deployment_id, late, late_sample, previous=None, retention_seconds=3600)
    assert sample_release(store, driver, store.settings, deployment_id, deployment.namespace, release,
                          now=12.0) is not None
    assert [s.counters.requests for s in store.metrics_samples(deployment_id, 0)] == [3, 0]


def ready_deployment(store: Store, deployment_id: int):
    from modelport.domain.entities import DeploymentStatus

    deployment = store.find_deployment(deployment_id)
    assert deployment is not None
    return store.set_deployment_status(deployment_id, DeploymentStatus.READY, None,
                                       generation=deployment.generation, observed_generation=deployment.generation,
                                       deployed=(deployment.version_id, deployment.replicas))


def test_the_api_serves_the_series_per_minute_to_its_owner_only(platform):
    store, driver, deployment_id = platform
    ready_deployment(store, deployment_id)
    app = create_app(store.settings, store)
    alice_key, bob_key = (users.add_api_key(store, name) for name in ("alice", "bob"))
    client = TestClient(app)
    alice = {"Authorization": f"Bearer {alice_key}"}
    empty = client.get(f"/api/v1/deployments/{deployment_id}/metrics", headers=alice)
    assert empty.status_code == 200 and empty.json()["points"] == [] and empty.json()["sampled_at"] is None
    now = time.time()
    minute = int(now // 60) * 60
    for offset, requests in ((-120.0, 8), (-119.0, 2), (-30.0, 5)):
        scraped(driver, store, deployment_id, PodMetrics(pod="a", text=exposition(requests)))
        sample_all(store, driver, store.settings, now=minute + offset)
    series = client.get(f"/api/v1/deployments/{deployment_id}/metrics?window=15m", headers=alice).json()
    assert series["window_seconds"] == 900 and series["interval_seconds"] == 60
    # 8 first, then a restart to 2 (+2) in the same minute; then 5 (+3) a minute and a half later
    assert [(p["requests"], p["errors"], p["replicas_ready"]) for p in series["points"]] == [(10, 0, 1), (3, 0, 1)]
    # every request took 3 ms: in the 2.5-5 ms bucket, whose middle is the median
    assert series["points"][0]["p50_ms"] == pytest.approx(3.75)
    bob = client.get(f"/api/v1/deployments/{deployment_id}/metrics", headers={"Authorization": f"Bearer {bob_key}"})
    assert bob.status_code == 404 and bob.json()["code"] == "deployment_not_found"
    for bad in ("0m", "2d", "abc", "26h", "-1h"):
        answer = client.get(f"/api/v1/deployments/{deployment_id}/metrics?window={bad}", headers=alice)
        assert answer.status_code == 422 and answer.json()["code"] == "invalid_window", bad

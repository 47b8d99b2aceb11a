"""Shadow rules through the store: what a shadow holds, what it refuses, its report from the metrics
samples, its promotion to a canary, and one write per decision."""

from __future__ import annotations

from datetime import timedelta

import pytest

from modelport.domain.errors import BadRequest, Conflict, NotFound
from modelport.domain.rollouts import CanaryRequest, RolloutState, ShadowRequest, ShadowState
from modelport.domain.serving_metrics import Baseline, Counters, Sample, parse
from modelport.services import deployments, rollouts, shadows
from modelport.store.repository import Store
from tests.unit import test_rollouts as rollout_cases
from tests.unit.test_rollouts import T0, converge, counts, serving

store = rollout_cases.store  # the same fixture: a moto table with users alice and bob


def record(store: Store, deployment_id: int, release: str, at: float, counters: Counters) -> None:
    previous = store.metrics_baseline(deployment_id, release)
    assert store.record_metrics(deployment_id, Baseline(release=release, sampled_at=at, pods={}),
                                Sample(release=release, sampled_at=at, counters=counters, replicas_ready=1),
                                previous=previous, retention_seconds=7200)


def test_a_shadow_holds_its_version_refuses_a_version_change_and_stopping_gives_it_back(store: Store):
    deployment, stable, candidate = serving(store)
    started = shadows.start_shadow(store, "alice", deployment.id, ShadowRequest(version_id=candidate, percent=50),
                                   now=T0)
    assert started.shadow is not None and started.shadow.running and started.version_id == stable
    assert started.generation == deployment.generation + 1 and counts(store, stable, candidate) == [1, 1]
    # the same request again is the same shadow: no new generation
    again = shadows.start_shadow(store, "alice", deployment.id, ShadowRequest(version_id=candidate, percent=50))
    assert again.generation == started.generation
    with pytest.raises(Conflict) as plain:
        deployments.update_deployment(store, store.settings, "alice", deployment.id, version_id=candidate)
    assert plain.value.code == "shadow_running"
    with pytest.raises(Conflict) as canary:
        rollouts.start_canary(store, "alice", deployment.id, candidate, CanaryRequest())
    assert canary.value.code == "shadow_running"
    deployments.update_deployment(store, store.settings, "alice", deployment.id, replicas=3)  # replicas can change
    stopped = shadows.stop_shadow(store, "alice", deployment.id)
    assert stopped.shadow.state == ShadowState.STOPPED and stopped.shadow.reason == "stopped by the owner"
    assert counts(store, stable, candidate) == [1, 0]
    with pytest.raises(Conflict) as none:
        shadows.stop_shadow(store, "alice", deployment.id)
    assert none.value.code == "no_shadow"


def test_shadows_are_refused_where_they_cannot_work(store: Store):
    deployment, stable, candidate = serving(store)
    with pytest.raises(BadRequest) as same:
        shadows.start_shadow(store, "alice", deployment.id, ShadowRequest(version_id=stable))
    assert same.value.code == "shadow_of_same_version"
    with pytest.raises(NotFound) as foreign:  # another user's deployment looks like a missing one
        shadows.start_shadow(store, "bob", deployment.id, ShadowRequest(version_id=candidate))
    assert foreign.value.code == "deployment_not_found"
    with pytest.raises(NotFound) as foreign_report:
        shadows.shadow_report(store, "bob", deployment.id)
    assert foreign_report.value.code == "deployment_not_found"
    with pytest.raises(Conflict) as no_shadow:
        shadows.shadow_report(store, "alice", deployment.id)
    assert no_shadow.value.code == "no_shadow"
    rollouts.start_canary(store, "alice", deployment.id, candidate, CanaryRequest())
    with pytest.raises(Conflict) as canary:
        shadows.start_shadow(store, "alice", deployment.id, ShadowRequest(version_id=candidate))
    assert canary.value.code == "rollout_in_progress"


def test_the_report_adds_up_what_the_live_servers_counted_of_the_copies_since_the_shadow_started(store: Store):
    deployment, _, candidate = serving(store)
    release = deployment.k8s_service_name
    start = T0.timestamp()
    record(store, deployment.id, release, start - 30, Counters(requests=999, shadow_compared=999))  # before it
    started = shadows.start_shadow(store, "alice", deployment.id, ShadowRequest(version_id=candidate), now=T0)
    empty = shadows.shadow_report(store, "alice", deployment.id, now=start + 1)
    assert empty.mirrored == 0 and empty.agreement is None and empty.sampled_at is None
    exposition = "\n".join([
        'modelport_requests_total{endpoint="predict",code="200"} 100',
        'modelport_request_duration_seconds_bucket{endpoint="predict",le="0.005"} 100',
        'modelport_request_duration_seconds_bucket{endpoint="predict",le="+Inf"} 100',
        'modelport_shadow_copies_total{outcome="compared"} 96',
        'modelport_shadow_copies_total{outcome="failed"} 2',
        'modelport_shadow_copies_total{outcome="dropped"} 2',
        'modelport_shadow_rows_total{result="agreed"} 72',
        'modelport_shadow_rows_total{result="disagreed"} 24',
        "modelport_shadow_proba_rows_total 10",
        "modelport_shadow_proba_abs_diff_total 1.5",
        'modelport_shadow_duration_seconds_bucket{le="0.01"} 98',
        'modelport_shadow_duration_seconds_bucket{le="+Inf"} 98',
        "",
    ])
    record(store, started.id, release, start + 30, parse(exposition))
    record(store, started.id, release + "-shadow", start + 30, Counters(
        requests=98, errors=2, latency={"0.0025": 98.0, "+Inf": 98.0}))
    report = shadows.shadow_report(store, "alice", deployment.id, now=start + 40)
    assert (report.mirrored, report.dropped, report.candidate_errors, report.rows_compared) == (98, 2, 2, 96)
    assert report.agreement == pytest.approx(0.75) and report.proba_mean_abs_diff == pytest.approx(0.15)
    assert report.live.requests == 100 and report.candidate.requests == 98 and report.candidate.errors == 2
    assert report.copy_p99_ms is not None and report.copy_p99_ms <= 10.0
    # the charts count callers' requests only, never the copies the shadow answered
    from modelport.services.metrics import deployment_metrics

    series = deployment_metrics(store, store.settings, "alice", deployment.id, "1h", now=start + 40)
    assert sum(p.requests for p in series.points) == 100 + 999


def test_a_shadow_promoted_becomes_a_canary_of_its_version_in_one_write(store: Store):
    deployment, stable, candidate = serving(store)
    shadows.start_shadow(store, "alice", deployment.id, ShadowRequest(version_id=candidate), now=T0)
    converge(store, deployment.id)
    promoted = shadows.promote_shadow(store, "alice", deployment.id, CanaryRequest(steps=[25]),
                                      now=T0 + timedelta(minutes=5))
    assert promoted.shadow.state == ShadowState.PROMOTED and not promoted.shadow.running
    assert promoted.rollout is not None and promoted.rollout.state == RolloutState.PROGRESSING
    assert promoted.rollout.candidate_version_id == candidate and promoted.rollout.weight == 25
    assert counts(store, stable, candidate) == [1, 1]  # the candidate held once, by the canary now
    assert promoted.release_names == (deployment.k8s_service_name, deployment.k8s_service_name + "-canary")


def test_two_writers_from_the_same_state_land_one_shadow_change(store: Store):
    deployment, _, candidate = serving(store)
    seen = shadows.start_shadow(store, "alice", deployment.id, ShadowRequest(version_id=candidate), now=T0)
    assert seen.shadow is not None
    first = store.write_shadow(seen, seen.shadow.model_copy(update={"state": ShadowState.STOPPED}))
    second = store.write_shadow(seen, seen.shadow.model_copy(update={"percent": 10}))
    assert first is not None and second is None
    assert store.find_deployment(deployment.id).shadow.state == ShadowState.STOPPED


def test_a_call_of_many_copies_is_written_in_pieces_that_make_one_exact_body(monkeypatch: pytest.MonkeyPatch):
    """The live server writes a call piece by piece (callers are served in between), each piece
    one system call, after a Content-Length computed before any piece exists: a wrong length would
    hang or cut the call."""
    import orjson

    from modelport.serving.protocols import mirror

    head = b"POST /mirror HTTP/1.1\r\n\r\n"
    bodies = [orjson.dumps({"instances": [[n, n + 0.5]]}) for n in range(3)]
    answers = [orjson.dumps({"predictions": [n % 2]}) for n in range(3)]
    assert len(list(mirror.splice(bodies, answers, classifier=True, tolerance=0).pieces(head))) == 1  # one write
    monkeypatch.setattr(mirror, "PIECE_BYTES", 64)
    for copies in (1, 2, 3, 50):
        bodies = [orjson.dumps({"instances": [[n, n + 0.5]]}) for n in range(copies)]
        answers = [orjson.dumps({"predictions": [n % 2]}) for n in range(copies)]
        call = mirror.splice(bodies, answers, classifier=False, tolerance=0.25)
        written = [b"".join(piece) for piece in call.pieces(head)]
        sent = b"".join(written)
        assert sent.startswith(head) and len(sent) - len(head) == call.length
        assert [b"".join(piece) for piece in call.pieces(head)] == written  # the same again when sent again
        assert orjson.loads(sent[len(head):]) == {
            "classifier": False, "tolerance": 0.25, "bodies": [orjson.loads(b) for b in bodies],
            "answers": [orjson.loads(a) for a in answers]}
        assert all(len(piece) <= 64 + 40 for piece in written[1:])  # a piece passes the bound by one copy at most
        assert copies < 10 or len(written) > 10

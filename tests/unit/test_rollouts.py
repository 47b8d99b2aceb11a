"""Canary rules: when a step advances, promotes or rolls back (pure), and what the store keeps
true under them (version counts, one decision per step, the owner's own early decisions)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from moto import mock_aws
from pydantic import ValidationError

from modelport.domain.entities import Artifact, Deployment, DeploymentStatus
from modelport.domain.errors import BadRequest, Conflict
from modelport.domain.rollouts import CanaryRequest, Rollout, RolloutState, Verdict, decide
from modelport.domain.serving_metrics import Counters, Figures, Sample
from modelport.services import deployments, rollouts, users
from modelport.settings import Settings
from modelport.store.records import ensure_table
from modelport.store.repository import Store

T0 = datetime(2026, 12, 3, 12, 0, tzinfo=UTC)


def figures(requests: int, errors: int = 0, p99_bucket: str = "0.005") -> Figures:
    return Figures.of(Counters(requests=requests, errors=errors, latency={p99_bucket: float(requests),
                                                                           "+Inf": float(requests)}))


def rollout(**changes: object) -> Rollout:
    fields: dict[str, object] = {"steps": [10, 50], "step_seconds": 60, "min_requests": 50,
                                 "candidate_version_id": 2, "stable_version_id": 1, "started_at": T0,
                                 "step_started_at": T0}
    fields.update(changes)
    return Rollout(**fields)


def test_a_step_waits_for_its_time_and_its_requests_then_advances_and_finally_promotes():
    later = T0 + timedelta(seconds=61)
    assert decide(rollout(), figures(500), figures(500), T0 + timedelta(seconds=30)).verdict == Verdict.HOLD
    assert decide(rollout(), figures(49), figures(500), later).verdict == Verdict.HOLD
    assert decide(rollout(), figures(50), figures(500), later).verdict == Verdict.ADVANCE
    assert decide(rollout(step=1), figures(50), figures(50), later).verdict == Verdict.PROMOTE
    assert rollout(step=1).weight == 50 and rollout(state=RolloutState.PROMOTED).weight == 100
    assert rollout(state=RolloutState.ROLLED_BACK).weight == 0


def test_a_breach_rolls_back_at_once_and_says_why_with_the_figures():
    early = T0 + timedelta(seconds=1)
    errors = decide(rollout(), figures(20, errors=1), figures(20), early)
    assert errors.verdict == Verdict.ROLL_BACK and "5.00%" in errors.reason and "1 of 20" in errors.reason
    # within the limit, but well above the stable version's own rate
    relative = decide(rollout(max_error_rate=0.5), figures(100, errors=3), figures(100), early)
    assert relative.verdict == Verdict.ROLL_BACK and "stable version's" in relative.reason
    # the same error rate as stable, within the limit: no breach
    assert decide(rollout(max_error_rate=0.5), figures(100, errors=3), figures(100, errors=3),
                  early).verdict == Verdict.HOLD
    slow = decide(rollout(max_p99_ms=50.0), figures(60, p99_bucket="0.25"), figures(60), early)
    assert slow.verdict == Verdict.ROLL_BACK and "p99" in slow.reason
    slower_than_stable = decide(rollout(), figures(100, p99_bucket="0.25"), figures(100), early)
    assert slower_than_stable.verdict == Verdict.ROLL_BACK and "stable version's" in slower_than_stable.reason
    # a p99 of fewer than 100 requests is no measure; a user may also leave the comparison out
    assert decide(rollout(), figures(60, p99_bucket="0.25"), figures(60), early).verdict == Verdict.HOLD
    assert decide(rollout(max_p99_ratio=None), figures(100, p99_bucket="0.25"), figures(100),
                  early).verdict == Verdict.HOLD
    # latency is judged only on min_requests: a few slow first requests (model warm-up) are not a breach
    assert decide(rollout(max_p99_ms=50.0), figures(5, p99_bucket="0.25"), figures(60), early).verdict == Verdict.HOLD


@pytest.mark.parametrize("steps", [[], [0], [50, 50], [60, 10], [100], list(range(1, 13))])
def test_steps_are_increasing_percentages_below_100(steps: list[int]):
    with pytest.raises(ValidationError):
        CanaryRequest(steps=steps)


# --- through the store ------------------------------------------------------------------------------

@pytest.fixture()
def store() -> Iterator[Store]:
    with mock_aws():
        settings = Settings(table_name="rollouts")
        ensure_table(settings)
        store = Store(settings)
        users.create_user(store, "alice")
        users.create_user(store, "bob")
        yield store


def ready_version(store: Store, model_id: int, owner: str = "alice") -> int:
    version = store.create_version(owner, model_id, None)
    store.set_version_artifacts(version.id, s3_path=f"s3://b/{version.id}", requirements_artifact=None,
                                model_artifact=Artifact(key=str(version.id), size=1, sha256="e" * 64))
    return version.id


def serving(store: Store) -> tuple[Deployment, int, int]:
    model = store.create_model("alice", "iris", None)
    stable, candidate = ready_version(store, model.id), ready_version(store, model.id)
    created = deployments.create_deployment(store, store.settings, "alice", stable, 2)
    ready = store.set_deployment_status(created.id, DeploymentStatus.READY, None, generation=created.generation,
                                        observed_generation=created.generation, deployed=(stable, 2))
    assert ready is not None
    return ready, stable, candidate


def counts(store: Store, *versions: int) -> list[int]:
    return [store.get_version("alice", v).deployments for v in versions]


def converge(store: Store, deployment_id: int) -> Deployment:
    """What the deployer writes once the cluster serves the record's desired state."""
    current = store.find_deployment(deployment_id)
    assert current is not None
    done = store.set_deployment_status(deployment_id, DeploymentStatus.READY, None, generation=current.generation,
                                       observed_generation=current.generation,
                                       deployed=(current.version_id, current.replicas))
    assert done is not None
    return done


def test_a_canary_holds_both_versions_until_it_ends(store: Store):
    deployment, stable, candidate = serving(store)
    started = rollouts.start_canary(store, "alice", deployment.id, candidate, CanaryRequest(), now=T0)
    assert started.rollout is not None and started.rollout.weight == 10 and started.version_id == stable
    assert started.generation == deployment.generation + 1
    assert counts(store, stable, candidate) == [1, 1]  # neither can be deleted now
    # asking again is the same canary; another version, or a plain version change, is refused
    assert rollouts.start_canary(store, "alice", deployment.id, candidate, CanaryRequest()).generation \
        == started.generation
    with pytest.raises(Conflict) as plain:
        deployments.update_deployment(store, store.settings, "alice", deployment.id, version_id=candidate)
    assert plain.value.code == "rollout_in_progress"
    promoted = rollouts.promote(store, "alice", deployment.id)
    assert promoted.version_id == candidate and promoted.rollout.state == RolloutState.PROMOTED
    assert counts(store, stable, candidate) == [0, 1]
    with pytest.raises(Conflict) as none:
        rollouts.abort(store, "alice", deployment.id)
    assert none.value.code == "no_rollout"


def test_an_aborted_canary_gives_its_candidate_back_and_a_deleted_deployment_both(store: Store):
    deployment, stable, candidate = serving(store)
    rollouts.start_canary(store, "alice", deployment.id, candidate, CanaryRequest())
    aborted = rollouts.abort(store, "alice", deployment.id)
    assert aborted.rollout.state == RolloutState.ABORTED and aborted.version_id == stable
    assert counts(store, stable, candidate) == [1, 0]
    converge(store, deployment.id)
    rollouts.start_canary(store, "alice", deployment.id, candidate, CanaryRequest())
    deleting = deployments.delete_deployment(store, "alice", deployment.id)
    store.delete_deployment_record(deleting.id)
    assert counts(store, stable, candidate) == [0, 0]


def test_canaries_are_refused_where_they_cannot_work(store: Store):
    deployment, stable, candidate = serving(store)
    with pytest.raises(BadRequest) as same:
        rollouts.start_canary(store, "alice", deployment.id, stable, CanaryRequest())
    assert same.value.code == "canary_of_same_version"
    other_model = store.create_model("alice", "other", None)
    with pytest.raises(BadRequest) as other:
        rollouts.start_canary(store, "alice", deployment.id, ready_version(store, other_model.id), CanaryRequest())
    assert other.value.code == "version_of_other_model"
    with pytest.raises(Exception) as foreign:
        rollouts.start_canary(store, "bob", deployment.id, candidate, CanaryRequest())
    assert getattr(foreign.value, "code", None) == "deployment_not_found"
    deployments.update_deployment(store, store.settings, "alice", deployment.id, replicas=3)  # not converged yet
    with pytest.raises(Conflict) as busy:
        rollouts.start_canary(store, "alice", deployment.id, candidate, CanaryRequest())
    assert busy.value.code == "deployment_not_ready"


def sample(store: Store, deployment: Deployment, release: str, at: datetime, requests: int, errors: int = 0) -> None:
    from modelport.domain.serving_metrics import Baseline

    counters = Counters(requests=requests, errors=errors, latency={"0.005": float(requests), "+Inf": float(requests)})
    previous = store.metrics_baseline(deployment.id, release)
    assert store.record_metrics(deployment.id, Baseline(release=release, sampled_at=at.timestamp(), pods={}),
                                Sample(release=release, sampled_at=at.timestamp(), counters=counters,
                                       replicas_ready=1), previous=previous, retention_seconds=7200)


def test_the_decider_takes_one_decision_per_step_however_often_it_runs(store: Store):
    deployment, stable, candidate = serving(store)
    request = CanaryRequest(steps=[10, 50], step_seconds=60, min_requests=20)
    started = rollouts.start_canary(store, "alice", deployment.id, candidate, request, now=T0)
    assert rollouts.evaluate(store, now=T0 + timedelta(seconds=90)) == []  # not converged: nothing measured
    converge(store, deployment.id)
    release = deployment.k8s_service_name
    sample(store, started, release + "-canary", T0 + timedelta(seconds=30), 25)
    sample(store, started, release, T0 + timedelta(seconds=30), 200)
    assert rollouts.evaluate(store, now=T0 + timedelta(seconds=59)) == []  # the step's time is not up
    first = rollouts.evaluate(store, now=T0 + timedelta(seconds=61))
    assert [d.verdict for _, d in first] == [Verdict.ADVANCE]
    assert rollouts.evaluate(store, now=T0 + timedelta(seconds=62)) == []  # a retried run: not converged again
    advanced = converge(store, deployment.id)
    assert advanced.rollout.step == 1 and advanced.rollout.weight == 50
    assert advanced.rollout.candidate is not None and advanced.rollout.candidate.requests == 25
    # a 5xx on the candidate in the new step: rolled back at once, the reason on the record
    sample(store, advanced, release + "-canary", T0 + timedelta(seconds=70), 30, errors=2)
    (decision,) = rollouts.evaluate(store, now=T0 + timedelta(seconds=71))
    assert decision[1].verdict == Verdict.ROLL_BACK
    ended = store.find_deployment(deployment.id)
    assert ended.rollout.state == RolloutState.ROLLED_BACK and "2 of 30" in ended.rollout.reason
    assert ended.version_id == stable and counts(store, stable, candidate) == [1, 0]


def test_two_deciders_from_the_same_state_land_one_decision(store: Store):
    deployment, _, candidate = serving(store)
    rollouts.start_canary(store, "alice", deployment.id, candidate, CanaryRequest(min_requests=1), now=T0)
    seen = converge(store, deployment.id)
    assert seen.rollout is not None
    first = store.write_rollout(seen, seen.rollout.model_copy(update={"step": 1}))
    second = store.write_rollout(seen, seen.rollout.model_copy(update={"state": RolloutState.ROLLED_BACK}))
    assert first is not None and second is None
    assert store.find_deployment(deployment.id).rollout.step == 1

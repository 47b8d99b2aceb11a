"""The deployer's decisions, record by record, on an in-memory fake of the table
(``tests/support/deployment_records.py``) and a recording driver: no DynamoDB, no cluster."""

from __future__ import annotations

import copy
from datetime import UTC, datetime, timedelta

import pytest

from modelport.deploy.reconcile import Action, NotEnoughTime, Reconciler
from modelport.deploy.stream import handle_batch
from modelport.domain.entities import DeploymentStatus
from modelport.local.streams import LocalLambdaContext
from modelport.settings import Settings
from tests.support.deployment_records import InMemoryDeploymentRecords
from tests.support.drivers import RecordingDriver


@pytest.fixture()
def settings() -> Settings:
    return Settings(table_name="unit", cluster_retries=3, cluster_retry_backoff_seconds=0.0,
                    failed_record_ttl_seconds=3600, helm_timeout_seconds=60)


@pytest.fixture()
def store() -> InMemoryDeploymentRecords:
    return InMemoryDeploymentRecords()


@pytest.fixture()
def driver() -> RecordingDriver:
    return RecordingDriver()


@pytest.fixture()
def reconciler(store: InMemoryDeploymentRecords, driver: RecordingDriver, settings: Settings) -> Reconciler:
    return Reconciler(store, driver, settings, sleep=lambda _: None)


def deploy(store: InMemoryDeploymentRecords, key: str = "v", replicas: int = 1):
    return store.add_deployment(store.add_version(key).id, replicas)


def test_a_new_deployment_becomes_ready_with_the_right_release(store, driver, reconciler):
    version_id = store.add_version("good").id
    deployment = store.add_deployment(version_id, 2)
    outcome = reconciler.reconcile(deployment.id)
    assert outcome.action == Action.DEPLOYED
    after = store.find_deployment(deployment.id)
    assert after.status == DeploymentStatus.READY
    assert (after.deployed_version_id, after.deployed_replicas) == (version_id, 2)
    spec = driver.current("user-alice", deployment.k8s_service_name)
    assert spec is not None
    assert (spec.model_bucket, spec.model_key, spec.replicas) == ("models", "good/model.joblib", 2)
    assert spec.path == f"/api/v1/predict/{deployment.id}"
    assert spec.s3_endpoint == "minio:9000"


def test_the_same_record_twice_makes_one_release(store, driver, reconciler):
    deployment = deploy(store)
    reconciler.reconcile(deployment.id)
    assert reconciler.reconcile(deployment.id).action == Action.NOTHING
    assert [c for c in driver.calls if c[0] == "deploy"] == [("deploy", deployment.k8s_service_name)]
    assert len(driver.releases) == 1


def test_a_replicas_change_upgrades(store, driver, reconciler):
    deployment = deploy(store)
    reconciler.reconcile(deployment.id)
    store.change(deployment.id, replicas=3)
    assert reconciler.reconcile(deployment.id).action == Action.DEPLOYED
    assert driver.current("user-alice", deployment.k8s_service_name).replicas == 3
    assert store.find_deployment(deployment.id).status == DeploymentStatus.READY


def test_a_failed_first_install_is_removed_and_failed_with_a_reason(store, driver, reconciler):
    driver.failing_keys.add("broken/model.joblib")
    version_id = store.add_version("broken").id
    deployment = store.add_deployment(version_id, 1)
    outcome = reconciler.reconcile(deployment.id)
    assert outcome.action == Action.FAILED
    after = store.find_deployment(deployment.id)
    assert after.status == DeploymentStatus.FAILED
    assert "CrashLoopBackOff" in (after.status_message or "")
    assert not driver.releases  # nothing orphaned
    # the failed deployment gave its version back (it can be re-uploaded, the model deleted) and
    # its record lives on for the TTL the settings give, so the user can read why
    assert store.held(version_id) == 0
    assert store.expires_in[deployment.id] == 3600


def test_failed_record_ttl_zero_deletes_it_at_once(store, driver, settings):
    settings.failed_record_ttl_seconds = 0
    reconciler = Reconciler(store, driver, settings, sleep=lambda _: None)
    driver.failing_keys.add("broken/model.joblib")
    broken = store.add_version("broken").id
    deployment = store.add_deployment(broken, 1)
    assert reconciler.reconcile(deployment.id).action == Action.FAILED
    assert store.find_deployment(deployment.id) is None
    assert store.held(broken) == 0


def test_a_failed_update_rolls_back_and_keeps_serving(store, driver, reconciler):
    good = store.add_version("good").id
    driver.failing_keys.add("bad/model.joblib")
    bad = store.add_version("bad").id
    deployment = store.add_deployment(good, 2)
    reconciler.reconcile(deployment.id)
    store.change(deployment.id, version_id=bad, replicas=4)

    outcome = reconciler.reconcile(deployment.id)
    assert outcome.action == Action.ROLLED_BACK
    after = store.find_deployment(deployment.id)
    assert after.status == DeploymentStatus.READY
    assert (after.version_id, after.replicas) == (good, 2)
    assert "update failed" in (after.status_message or "") and "still serving" in (after.status_message or "")
    assert driver.current("user-alice", deployment.k8s_service_name).model_key == "good/model.joblib"
    # the version counts followed the rollback: the bad version is free, the good one held
    assert (store.held(bad), store.held(good)) == (0, 1)
    # and the rollback's own write is converged: nothing more to do
    assert reconciler.reconcile(deployment.id).action == Action.NOTHING


def test_delete_uninstalls_then_removes_the_record(store, driver, reconciler):
    deployment = deploy(store)
    reconciler.reconcile(deployment.id)
    store.request_delete(deployment.id)
    assert reconciler.reconcile(deployment.id).action == Action.DELETED
    assert store.find_deployment(deployment.id) is None
    assert not driver.releases
    assert store.held(deployment.version_id) == 0  # nothing holds the version any more


def test_unreachable_cluster_is_retried_then_delete_follows_the_seed(store, driver, reconciler):
    deployment = deploy(store)
    reconciler.reconcile(deployment.id)
    driver.unreachable = True
    store.request_delete(deployment.id)
    assert reconciler.reconcile(deployment.id).action == Action.DELETED
    assert [c for c in driver.calls if c[0] == "remove"] == [("remove", deployment.k8s_service_name)] * 3
    assert store.find_deployment(deployment.id) is None
    # the leftover release is found by the sweep once the cluster answers again
    driver.unreachable = False
    outcomes = reconciler.sweep()
    assert [o.action for o in outcomes] == [Action.REMOVED_ORPHAN]
    assert not driver.releases


def test_unreachable_cluster_on_first_install_fails_it(store, driver, reconciler):
    driver.unreachable = True
    deployment = deploy(store)
    assert reconciler.reconcile(deployment.id).action == Action.FAILED
    assert "cannot reach the cluster" in (store.find_deployment(deployment.id).status_message or "")


def test_a_stale_write_never_overwrites_a_newer_desired_state(store, driver, settings):
    deployment = deploy(store)

    class ChangingDriver(RecordingDriver):
        def deploy(self, spec):  # the user scales while the install runs
            result = super().deploy(spec)
            if spec.replicas == 1:
                store.change(deployment.id, replicas=5)
            return result

    changing = ChangingDriver()
    reconciler = Reconciler(store, changing, settings)
    assert reconciler.reconcile(deployment.id).action == Action.SUPERSEDED
    assert store.find_deployment(deployment.id).status != DeploymentStatus.READY
    assert reconciler.reconcile(deployment.id).action == Action.DEPLOYED
    after = store.find_deployment(deployment.id)
    assert (after.status, after.replicas) == (DeploymentStatus.READY, 5)
    assert changing.current("user-alice", deployment.k8s_service_name).replicas == 5


def test_no_install_starts_without_time_to_finish(store, reconciler):
    deployment = deploy(store)
    with pytest.raises(NotEnoughTime):
        reconciler.reconcile(deployment.id, seconds_left=10)
    assert store.find_deployment(deployment.id).status == DeploymentStatus.PENDING


def test_sweep_redrives_stuck_records_and_reinstalls_lost_releases(store, driver, reconciler):
    stuck = deploy(store, "a", 1)
    lost = deploy(store, "b", 1)
    reconciler.reconcile(lost.id)
    driver.releases.clear()  # the cluster lost it
    later = datetime.now(UTC) + timedelta(hours=1)
    actions = {o.deployment_id: o.action for o in reconciler.sweep(now=later)}
    assert actions == {stuck.id: Action.DEPLOYED, lost.id: Action.DEPLOYED}
    assert {spec[-1].deployment_id for spec in driver.releases.values()} == {stuck.id, lost.id}


# ------------------------------------------------------------------ the batch


def stream_record(deployment_id: int, sequence: int, event: str = "MODIFY", pk_prefix: str = "DEPLOYMENT#") -> dict:
    return {
        "eventID": str(sequence), "eventName": event, "eventSource": "aws:dynamodb",
        "dynamodb": {
            "Keys": {"PK": {"S": f"{pk_prefix}{deployment_id}"}, "SK": {"S": "DEPLOYMENT"}},
            "SequenceNumber": str(sequence), "StreamViewType": "NEW_AND_OLD_IMAGES",
        },
    }


def test_a_batch_with_duplicates_reordered_and_foreign_records_converges(store, driver, reconciler):
    first = deploy(store, "a", 1)
    second = deploy(store, "b", 2)
    records = [
        stream_record(second.id, 5), stream_record(first.id, 1, "INSERT"), stream_record(first.id, 2),
        stream_record(second.id, 3, "INSERT"), stream_record(7, 4, pk_prefix="MODEL#"),
    ]
    response = handle_batch({"Records": records + copy.deepcopy(records)}, LocalLambdaContext("deployer", 900),
                            reconciler, concurrency=4)
    assert response == {"batchItemFailures": []}
    assert len(driver.releases) == 2
    assert [c for c in driver.calls if c[0] == "deploy"].count(("deploy", first.k8s_service_name)) == 1
    for deployment in (first, second):
        assert store.find_deployment(deployment.id).status == DeploymentStatus.READY


def test_one_bad_record_does_not_fail_the_batch(store, reconciler):
    ok = deploy(store)
    short = LocalLambdaContext("deployer", 900)
    records = [stream_record(ok.id, 1, "INSERT"), stream_record(999, 2, "INSERT")]

    class Exploding(Reconciler):
        def reconcile(self, deployment_id, *, seconds_left=None):
            if deployment_id == 999:
                raise RuntimeError("table unavailable")
            return super().reconcile(deployment_id, seconds_left=seconds_left)

    exploding = Exploding(store, reconciler.driver, reconciler.settings)
    response = handle_batch({"Records": records}, short, exploding, concurrency=2)
    assert response == {"batchItemFailures": [{"itemIdentifier": "2"}]}
    assert store.find_deployment(ok.id).status == DeploymentStatus.READY


def test_a_record_without_time_left_is_reported_for_retry(store, reconciler):
    deployment = deploy(store)
    response = handle_batch({"Records": [stream_record(deployment.id, 9, "INSERT")]},
                            LocalLambdaContext("deployer", 5), reconciler, concurrency=1)
    assert response == {"batchItemFailures": [{"itemIdentifier": "9"}]}
    assert store.find_deployment(deployment.id).status == DeploymentStatus.PENDING


def test_protecting_the_url_rolls_out_the_tokens_digest(store, driver, reconciler):
    deployment = deploy(store)
    reconciler.reconcile(deployment.id)
    store.set_token(deployment.id, "f" * 64)
    assert reconciler.reconcile(deployment.id).action == Action.DEPLOYED
    assert driver.current("user-alice", deployment.k8s_service_name).predict_token_sha256 == "f" * 64
    store.set_token(deployment.id, None)
    reconciler.reconcile(deployment.id)
    assert driver.current("user-alice", deployment.k8s_service_name).predict_token_sha256 is None


def test_the_sweep_never_lets_ready_hide_a_crash_loop(store, driver, reconciler):
    deployment = deploy(store, replicas=2)
    reconciler.reconcile(deployment.id)
    key = ("user-alice", deployment.k8s_service_name)
    driver.problems[key] = "pod model-x-1: CrashLoopBackOff: last run ended with exit code 137"
    reconciler.sweep()
    degraded = store.find_deployment(deployment.id)
    assert degraded.status == DeploymentStatus.READY
    assert degraded.status_message == "degraded: pod model-x-1: CrashLoopBackOff: last run ended with exit code 137"
    assert reconciler.reconcile(deployment.id).action == Action.NOTHING  # the message is not a new request
    del driver.problems[key]
    reconciler.sweep()
    assert store.find_deployment(deployment.id).status_message is None


def test_a_restarted_deployer_redrives_what_was_mid_transition_before_it_started(store, driver, reconciler):
    """A platform killed mid-install leaves DEPLOYING behind; the next start's first sweep drives it
    to READY at once instead of waiting out the helm timeout."""
    deployment = deploy(store)
    store.set_deployment_status(deployment.id, DeploymentStatus.DEPLOYING, "installing", generation=1)
    assert reconciler.sweep() == []  # a moment ago: perhaps still being worked on
    restarted_at = datetime.now(UTC) + timedelta(seconds=1)
    actions = [o.action for o in reconciler.sweep(stuck_before=restarted_at)]
    assert actions == [Action.DEPLOYED]
    assert store.find_deployment(deployment.id).status == DeploymentStatus.READY


# --- canaries --------------------------------------------------------------------------------------

def start_canary(store: InMemoryDeploymentRecords, deployment_id: int, candidate_key: str, steps=(10, 50)):
    from modelport.domain.rollouts import Rollout

    current = store.find_deployment(deployment_id)
    now = datetime.now(UTC)
    rollout = Rollout(steps=list(steps), candidate_version_id=store.add_version(candidate_key).id,
                      stable_version_id=current.version_id, started_at=now, step_started_at=now)
    return store.write_rollout(current, rollout)


def test_a_canary_runs_as_its_own_release_at_its_weight_and_a_candidate_that_cannot_start_ends_it(
    store, driver, reconciler,
):
    deployment = deploy(store, replicas=4)
    reconciler.reconcile(deployment.id)
    start_canary(store, deployment.id, "candidate")
    reconciler.reconcile(deployment.id)
    canary = driver.current("user-alice", deployment.k8s_service_name + "-canary")
    assert canary is not None and canary.canary_weight == 10 and canary.model_key == "candidate/model.joblib"
    assert canary.replicas == 1  # 10% of 4 replicas, at least one
    assert "10% of requests" in store.find_deployment(deployment.id).status_message
    # the sweep keeps a progressing canary's release (it is no orphan)
    assert [o.action for o in reconciler.sweep()] == []
    # a candidate whose pods never become ready: the canary ends, the stable release untouched
    driver.failing_keys.add("broken/model.joblib")
    ended = store.find_deployment(deployment.id)
    store.write_rollout(ended, ended.rollout.model_copy(update={
        "candidate_version_id": store.add_version("broken").id}))
    assert reconciler.reconcile(deployment.id).action == Action.ROLLED_BACK
    after = store.find_deployment(deployment.id)
    assert after.rollout.state == "rolled_back" and "did not start" in after.rollout.reason
    assert driver.current("user-alice", deployment.k8s_service_name + "-canary") is None
    reconciler.reconcile(deployment.id)  # the rollback's own record converges it
    after = store.find_deployment(deployment.id)
    assert after.status == DeploymentStatus.READY and after.status_message.startswith("canary rolled back")
    assert driver.current("user-alice", deployment.k8s_service_name).model_key == "v/model.joblib"


def test_deleting_a_deployment_removes_its_canary_too(store, driver, reconciler):
    deployment = deploy(store)
    reconciler.reconcile(deployment.id)
    start_canary(store, deployment.id, "candidate")
    reconciler.reconcile(deployment.id)
    store.request_delete(deployment.id)
    assert reconciler.reconcile(deployment.id).action == Action.DELETED
    assert not driver.releases


# --- shadows ---------------------------------------------------------------------------------------

def start_shadow(store: InMemoryDeploymentRecords, deployment_id: int, candidate_key: str, percent: int = 100):
    from modelport.domain.rollouts import Shadow

    current = store.find_deployment(deployment_id)
    shadow = Shadow(version_id=store.add_version(candidate_key).id, percent=percent, started_at=datetime.now(UTC))
    return store.write_shadow(current, shadow)


def test_a_shadow_is_its_own_unrouted_release_the_live_one_copies_to_and_stopping_it_removes_it(
    store, driver, reconciler,
):
    deployment = deploy(store, replicas=4)
    reconciler.reconcile(deployment.id)
    start_shadow(store, deployment.id, "candidate", percent=50)
    assert reconciler.reconcile(deployment.id).action == Action.DEPLOYED
    live_name = deployment.k8s_service_name
    shadow = driver.current("user-alice", live_name + "-shadow")
    assert shadow is not None and shadow.model_key == "candidate/model.joblib"
    assert not shadow.ingress_enabled and shadow.predict_token_sha256 is None and shadow.mirrored_by == live_name
    assert shadow.replicas == 2  # half of the live replicas' load
    live = driver.current("user-alice", live_name)
    assert live.mirror_release == live_name + "-shadow" and live.mirror_percent == 50
    assert live.model_key == "v/model.joblib"  # callers' version untouched
    assert "copy of 50% of requests" in store.find_deployment(deployment.id).status_message
    assert [o.action for o in reconciler.sweep()] == []  # a running shadow is no orphan

    current = store.find_deployment(deployment.id)
    stopped = current.shadow.model_copy(update={"state": "stopped", "reason": "stopped by the owner"})
    store.write_shadow(current, stopped)
    reconciler.reconcile(deployment.id)
    assert driver.current("user-alice", live_name + "-shadow") is None
    assert driver.current("user-alice", live_name).mirror_release is None
    assert "stopped (stopped by the owner)" in store.find_deployment(deployment.id).status_message


def test_a_shadow_that_cannot_start_is_stopped_with_the_reason_and_the_live_release_never_copies(
    store, driver, reconciler,
):
    deployment = deploy(store)
    reconciler.reconcile(deployment.id)
    driver.failing_keys.add("broken/model.joblib")
    start_shadow(store, deployment.id, "broken")
    assert reconciler.reconcile(deployment.id).action == Action.ROLLED_BACK
    after = store.find_deployment(deployment.id)
    assert after.shadow.state == "stopped" and "the shadow did not start" in after.shadow.reason
    assert driver.current("user-alice", deployment.k8s_service_name + "-shadow") is None
    reconciler.reconcile(deployment.id)  # its own record converges it
    live = driver.current("user-alice", deployment.k8s_service_name)
    assert live.mirror_release is None and store.find_deployment(deployment.id).status == DeploymentStatus.READY


def test_deleting_a_deployment_removes_its_shadow_too(store, driver, reconciler):
    deployment = deploy(store)
    reconciler.reconcile(deployment.id)
    start_shadow(store, deployment.id, "candidate")
    reconciler.reconcile(deployment.id)
    assert len(driver.releases) == 2
    store.request_delete(deployment.id)
    assert reconciler.reconcile(deployment.id).action == Action.DELETED
    assert not driver.releases

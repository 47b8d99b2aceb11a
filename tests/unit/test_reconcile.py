"""The deployer's decisions, record by record, on moto's DynamoDB and a recording driver."""

from __future__ import annotations

import copy
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from moto import mock_aws

from modelport.deploy.reconcile import Action, NotEnoughTime, Reconciler
from modelport.deploy.stream import handle_batch
from modelport.domain.entities import Artifact, DeploymentStatus
from modelport.domain.errors import Conflict
from modelport.local.streams import LocalLambdaContext
from modelport.services import deployments, users
from modelport.settings import Settings
from modelport.store.records import ensure_table
from modelport.store.repository import Store
from tests.support.drivers import RecordingDriver

OWNER = "alice"


@pytest.fixture()
def settings() -> Settings:
    return Settings(table_name="unit", cluster_retries=3, cluster_retry_backoff_seconds=0.0,
                    failed_record_ttl_seconds=3600, helm_timeout_seconds=60)


@pytest.fixture()
def store(settings: Settings) -> Iterator[Store]:
    with mock_aws():
        ensure_table(settings)
        store = Store(settings)
        users.create_user(store, OWNER)
        yield store


@pytest.fixture()
def driver() -> RecordingDriver:
    return RecordingDriver()


@pytest.fixture()
def reconciler(store: Store, driver: RecordingDriver, settings: Settings) -> Reconciler:
    return Reconciler(store, driver, settings, sleep=lambda _: None)


def ready_version(store: Store, model_id: int, key: str = "v") -> int:
    version = store.create_version(OWNER, model_id, None)
    store.set_version_artifacts(
        version.id, s3_path=f"s3://models/{key}/model.joblib",
        model_artifact=Artifact(key=f"{key}/model.joblib", size=10, sha256="ab" * 32), requirements_artifact=None,
    )
    return version.id


@pytest.fixture()
def model_id(store: Store) -> int:
    return store.create_model(OWNER, "iris", None).id


def test_a_new_deployment_becomes_ready_with_the_right_release(store, driver, reconciler, model_id):
    version_id = ready_version(store, model_id, "good")
    deployment = deployments.create_deployment(store, store.settings, OWNER, version_id, 2)
    outcome = reconciler.reconcile(deployment.id)
    assert outcome.action == Action.DEPLOYED
    after = store.get_deployment(OWNER, deployment.id)
    assert after.status == DeploymentStatus.READY
    assert (after.deployed_version_id, after.deployed_replicas) == (version_id, 2)
    spec = driver.current("user-alice", deployment.k8s_service_name)
    assert spec is not None
    assert (spec.model_bucket, spec.model_key, spec.replicas) == ("models", "good/model.joblib", 2)
    assert spec.path == f"/api/v1/predict/{deployment.id}"
    assert spec.s3_endpoint == "minio:9000"


def test_the_same_record_twice_makes_one_release(store, driver, reconciler, model_id):
    deployment = deployments.create_deployment(store, store.settings, OWNER, ready_version(store, model_id), 1)
    reconciler.reconcile(deployment.id)
    assert reconciler.reconcile(deployment.id).action == Action.NOTHING
    assert [c for c in driver.calls if c[0] == "deploy"] == [("deploy", deployment.k8s_service_name)]
    assert len(driver.releases) == 1


def test_a_replicas_change_upgrades(store, driver, reconciler, model_id):
    deployment = deployments.create_deployment(store, store.settings, OWNER, ready_version(store, model_id), 1)
    reconciler.reconcile(deployment.id)
    deployments.update_deployment(store, store.settings, OWNER, deployment.id, replicas=3)
    assert reconciler.reconcile(deployment.id).action == Action.DEPLOYED
    assert driver.current("user-alice", deployment.k8s_service_name).replicas == 3
    assert store.get_deployment(OWNER, deployment.id).status == DeploymentStatus.READY


def test_a_failed_first_install_is_removed_and_failed_with_a_reason(store, driver, reconciler, model_id):
    driver.failing_keys.add("broken/model.joblib")
    version_id = ready_version(store, model_id, "broken")
    deployment = deployments.create_deployment(store, store.settings, OWNER, version_id, 1)
    outcome = reconciler.reconcile(deployment.id)
    assert outcome.action == Action.FAILED
    after = store.get_deployment(OWNER, deployment.id)
    assert after.status == DeploymentStatus.FAILED
    assert "CrashLoopBackOff" in (after.status_message or "")
    assert not driver.releases  # nothing orphaned
    # the failed deployment no longer holds the version: it can be re-uploaded, the model deleted
    assert store.get_version(OWNER, version_id).deployments == 0
    with pytest.raises(Conflict):
        deployments.update_deployment(store, store.settings, OWNER, deployment.id, replicas=2)


def test_failed_record_ttl_zero_deletes_it_at_once(store, driver, settings, model_id):
    settings.failed_record_ttl_seconds = 0
    reconciler = Reconciler(store, driver, settings, sleep=lambda _: None)
    driver.failing_keys.add("broken/model.joblib")
    broken = ready_version(store, model_id, "broken")
    deployment = deployments.create_deployment(store, store.settings, OWNER, broken, 1)
    assert reconciler.reconcile(deployment.id).action == Action.FAILED
    assert store.find_deployment(deployment.id) is None
    store.delete_model(OWNER, model_id)  # counts were given back


def test_a_failed_update_rolls_back_and_keeps_serving(store, driver, reconciler, model_id):
    good = ready_version(store, model_id, "good")
    driver.failing_keys.add("bad/model.joblib")
    bad = ready_version(store, model_id, "bad")
    deployment = deployments.create_deployment(store, store.settings, OWNER, good, 2)
    reconciler.reconcile(deployment.id)
    deployments.update_deployment(store, store.settings, OWNER, deployment.id, version_id=bad, replicas=4)

    outcome = reconciler.reconcile(deployment.id)
    assert outcome.action == Action.ROLLED_BACK
    after = store.get_deployment(OWNER, deployment.id)
    assert after.status == DeploymentStatus.READY
    assert (after.version_id, after.replicas) == (good, 2)
    assert "update failed" in (after.status_message or "") and "still serving" in (after.status_message or "")
    assert driver.current("user-alice", deployment.k8s_service_name).model_key == "good/model.joblib"
    # the version counts followed the rollback: the bad version is free, the good one held
    assert store.get_version(OWNER, bad).deployments == 0
    assert store.get_version(OWNER, good).deployments == 1
    # and the rollback's own write is converged: nothing more to do
    assert reconciler.reconcile(deployment.id).action == Action.NOTHING


def test_delete_uninstalls_then_removes_the_record(store, driver, reconciler, model_id):
    deployment = deployments.create_deployment(store, store.settings, OWNER, ready_version(store, model_id), 1)
    reconciler.reconcile(deployment.id)
    store.request_delete(OWNER, deployment.id)
    assert reconciler.reconcile(deployment.id).action == Action.DELETED
    assert store.find_deployment(deployment.id) is None
    assert not driver.releases
    store.delete_model(OWNER, model_id)  # nothing holds the model any more


def test_unreachable_cluster_is_retried_then_delete_follows_the_seed(store, driver, reconciler, model_id):
    deployment = deployments.create_deployment(store, store.settings, OWNER, ready_version(store, model_id), 1)
    reconciler.reconcile(deployment.id)
    driver.unreachable = True
    store.request_delete(OWNER, deployment.id)
    assert reconciler.reconcile(deployment.id).action == Action.DELETED
    assert [c for c in driver.calls if c[0] == "remove"] == [("remove", deployment.k8s_service_name)] * 3
    assert store.find_deployment(deployment.id) is None
    # the leftover release is found by the sweep once the cluster answers again
    driver.unreachable = False
    outcomes = reconciler.sweep()
    assert [o.action for o in outcomes] == [Action.REMOVED_ORPHAN]
    assert not driver.releases


def test_unreachable_cluster_on_first_install_fails_it(store, driver, reconciler, model_id):
    driver.unreachable = True
    deployment = deployments.create_deployment(store, store.settings, OWNER, ready_version(store, model_id), 1)
    assert reconciler.reconcile(deployment.id).action == Action.FAILED
    assert "cannot reach the cluster" in (store.get_deployment(OWNER, deployment.id).status_message or "")


def test_a_stale_write_never_overwrites_a_newer_desired_state(store, driver, settings, model_id):
    deployment = deployments.create_deployment(store, store.settings, OWNER, ready_version(store, model_id), 1)

    class ChangingDriver(RecordingDriver):
        def deploy(self, spec):  # the user scales while the install runs
            result = super().deploy(spec)
            if spec.replicas == 1:
                deployments.update_deployment(store, store.settings, OWNER, deployment.id, replicas=5)
            return result

    changing = ChangingDriver()
    reconciler = Reconciler(store, changing, settings)
    assert reconciler.reconcile(deployment.id).action == Action.SUPERSEDED
    assert store.get_deployment(OWNER, deployment.id).status != DeploymentStatus.READY
    assert reconciler.reconcile(deployment.id).action == Action.DEPLOYED
    after = store.get_deployment(OWNER, deployment.id)
    assert (after.status, after.replicas) == (DeploymentStatus.READY, 5)
    assert changing.current("user-alice", deployment.k8s_service_name).replicas == 5


def test_no_install_starts_without_time_to_finish(store, reconciler, model_id):
    deployment = deployments.create_deployment(store, store.settings, OWNER, ready_version(store, model_id), 1)
    with pytest.raises(NotEnoughTime):
        reconciler.reconcile(deployment.id, seconds_left=10)
    assert store.get_deployment(OWNER, deployment.id).status == DeploymentStatus.PENDING


def test_sweep_redrives_stuck_records_and_reinstalls_lost_releases(store, driver, reconciler, model_id):
    stuck = deployments.create_deployment(store, store.settings, OWNER, ready_version(store, model_id, "a"), 1)
    lost = deployments.create_deployment(store, store.settings, OWNER, ready_version(store, model_id, "b"), 1)
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


def test_a_batch_with_duplicates_reordered_and_foreign_records_converges(store, driver, reconciler, model_id):
    first = deployments.create_deployment(store, store.settings, OWNER, ready_version(store, model_id, "a"), 1)
    second = deployments.create_deployment(store, store.settings, OWNER, ready_version(store, model_id, "b"), 2)
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
        assert store.get_deployment(OWNER, deployment.id).status == DeploymentStatus.READY


def test_one_bad_record_does_not_fail_the_batch(store, reconciler, model_id):
    ok = deployments.create_deployment(store, store.settings, OWNER, ready_version(store, model_id), 1)
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
    assert store.get_deployment(OWNER, ok.id).status == DeploymentStatus.READY


def test_a_record_without_time_left_is_reported_for_retry(store, reconciler, model_id):
    deployment = deployments.create_deployment(store, store.settings, OWNER, ready_version(store, model_id), 1)
    response = handle_batch({"Records": [stream_record(deployment.id, 9, "INSERT")]},
                            LocalLambdaContext("deployer", 5), reconciler, concurrency=1)
    assert response == {"batchItemFailures": [{"itemIdentifier": "9"}]}
    assert store.get_deployment(OWNER, deployment.id).status == DeploymentStatus.PENDING


def test_protecting_the_url_rolls_out_the_tokens_digest(store, driver, reconciler, model_id):
    deployment = deployments.create_deployment(store, store.settings, OWNER, ready_version(store, model_id), 1)
    reconciler.reconcile(deployment.id)
    store.set_predict_token(OWNER, deployment.id, "f" * 64)
    assert reconciler.reconcile(deployment.id).action == Action.DEPLOYED
    assert driver.current("user-alice", deployment.k8s_service_name).predict_token_sha256 == "f" * 64
    store.set_predict_token(OWNER, deployment.id, None)
    reconciler.reconcile(deployment.id)
    assert driver.current("user-alice", deployment.k8s_service_name).predict_token_sha256 is None


def test_the_sweep_never_lets_ready_hide_a_crash_loop(store, driver, reconciler, model_id):
    deployment = deployments.create_deployment(store, store.settings, OWNER, ready_version(store, model_id), 2)
    reconciler.reconcile(deployment.id)
    key = ("user-alice", deployment.k8s_service_name)
    driver.problems[key] = "pod model-x-1: CrashLoopBackOff: last run ended with exit code 137"
    reconciler.sweep()
    degraded = store.get_deployment(OWNER, deployment.id)
    assert degraded.status == DeploymentStatus.READY
    assert degraded.status_message == "degraded: pod model-x-1: CrashLoopBackOff: last run ended with exit code 137"
    assert reconciler.reconcile(deployment.id).action == Action.NOTHING  # the message is not a new request
    del driver.problems[key]
    reconciler.sweep()
    assert store.get_deployment(OWNER, deployment.id).status_message is None

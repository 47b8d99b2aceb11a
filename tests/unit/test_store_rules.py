"""Rules the store keeps in DynamoDB conditions and transactions, checked on moto: one follower per
model, version counts that follow failures and rollbacks, one table per store."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from moto import mock_aws

from modelport.domain.entities import Artifact, DeploymentStatus
from modelport.domain.errors import Conflict
from modelport.services import deployments, users
from modelport.settings import Settings
from modelport.store.records import ensure_table
from modelport.store.repository import Store


@pytest.fixture()
def store() -> Iterator[Store]:
    with mock_aws():
        settings = Settings(table_name="rules")
        ensure_table(settings)
        store = Store(settings)
        users.create_user(store, "alice")
        yield store


def ready(store: Store, model_id: int) -> int:
    version = store.create_version("alice", model_id, None)
    store.set_version_artifacts(version.id, s3_path=f"s3://b/{version.id}",
                                model_artifact=Artifact(key=str(version.id), size=1, sha256="e" * 64),
                                requirements_artifact=None)
    return version.id


def test_a_model_has_one_deployment_following_its_latest_version(store: Store):
    model = store.create_model("alice", "iris", None)
    first, second = ready(store, model.id), ready(store, model.id)
    follower = deployments.create_deployment(store, store.settings, "alice", first, 1, follow_latest=True)
    with pytest.raises(Conflict) as refused:
        deployments.create_deployment(store, store.settings, "alice", second, 1, follow_latest=True)
    assert refused.value.code == "follower_exists"
    assert store.get_version("alice", second).deployments == 0  # nothing of the refused one stuck
    # deployments that do not follow are not limited
    deployments.create_deployment(store, store.settings, "alice", second, 1)
    # the slot is free again once the follower goes (deleted, or failed)
    store.delete_deployment_record(follower.id)
    again = deployments.create_deployment(store, store.settings, "alice", second, 1, follow_latest=True)
    store.fail_deployment(again.id, "it broke", generation=again.generation, expires_in=60)
    assert deployments.create_deployment(store, store.settings, "alice", first, 1, follow_latest=True).follow_latest


def test_two_stores_in_one_process_keep_to_their_own_tables():
    """Each Store is bound to the table its settings name: a model made through one is not seen
    through the other, and the first store still writes to its own table after the second exists."""
    with mock_aws():
        first_settings, second_settings = Settings(table_name="first"), Settings(table_name="second")
        ensure_table(first_settings)
        first = Store(first_settings)
        users.create_user(first, "alice")
        ensure_table(second_settings)
        second = Store(second_settings)
        users.create_user(second, "alice")
        model = first.create_model("alice", "iris", None)
        assert [m.name for m in second.list_models("alice", 10, None).items] == []
        assert first.get_model("alice", model.id).name == "iris"
        # the same name is free on the other table, and ids count per table
        assert second.create_model("alice", "iris", None).id == model.id


def test_a_failed_first_install_gives_its_version_back_and_takes_no_more_changes(store: Store):
    model = store.create_model("alice", "iris", None)
    version_id = ready(store, model.id)
    deployment = deployments.create_deployment(store, store.settings, "alice", version_id, 1)
    assert store.get_version("alice", version_id).deployments == 1
    failed = store.fail_deployment(deployment.id, "CrashLoopBackOff", generation=deployment.generation, expires_in=60)
    assert failed is not None and failed.status_message == "CrashLoopBackOff"
    assert store.get_version("alice", version_id).deployments == 0
    with pytest.raises(Conflict) as refused:
        deployments.update_deployment(store, store.settings, "alice", deployment.id, replicas=2)
    assert refused.value.code == "deployment_failed"
    # a second failure report (a retried event) changes nothing, and the model can go
    assert store.fail_deployment(deployment.id, "again", generation=deployment.generation, expires_in=60) is None
    store.delete_deployment_record(deployment.id)
    store.delete_model("alice", model.id)


def test_a_rollback_moves_the_version_counts_back(store: Store):
    model = store.create_model("alice", "iris", None)
    good, bad = ready(store, model.id), ready(store, model.id)
    deployment = deployments.create_deployment(store, store.settings, "alice", good, 2)
    moved = deployments.update_deployment(store, store.settings, "alice", deployment.id, version_id=bad, replicas=4)
    assert (store.get_version("alice", good).deployments, store.get_version("alice", bad).deployments) == (0, 1)
    back = store.set_deployment_status(deployment.id, DeploymentStatus.READY, "update failed",
                                       generation=moved.generation, restore=(good, 2))
    assert back is not None and (back.version_id, back.replicas) == (good, 2)
    assert back.observed_generation == back.generation == moved.generation + 1
    assert (store.get_version("alice", good).deployments, store.get_version("alice", bad).deployments) == (1, 0)
    # a write-back for the superseded generation does not land
    assert store.set_deployment_status(deployment.id, DeploymentStatus.READY, None, generation=moved.generation) is None

"""Models as a user changes them. Deleting one deletes its versions' records and artifacts."""

from __future__ import annotations

from modelport.artifacts.storage import ObjectStore
from modelport.domain.paths import artifact_prefix
from modelport.store.repository import Store


def delete_model(store: Store, objects: ObjectStore, owner: str, model_id: int) -> None:
    """409 ``model_in_use`` while a deployment uses one of its versions. The records go first (in
    transactions that check for deployments), then the artifacts: a crash in between leaves
    objects without records, never records without objects."""
    for version in store.delete_model(owner, model_id):
        objects.delete_prefix(artifact_prefix(model_id, version.id))

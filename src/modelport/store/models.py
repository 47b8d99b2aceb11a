"""Models: a unique name per owner (a guard item), deleted with their versions."""

from __future__ import annotations

from typing import Any

from pynamodb.exceptions import TransactWriteError, UpdateError

from modelport.domain.entities import (
    AutoDeploy,
    Model,
    Version,
    utcnow,
)
from modelport.domain.errors import Conflict, NotFound
from modelport.store import keys, schema
from modelport.store.records import (
    GuardRecord,
    ModelRecord,
    VersionRecord,
)
from modelport.store.table import (
    MAX_TRANSACT_ITEMS,
    Page,
    Table,
    conditional_failed,
)


class ModelRepository(Table):
    def create_model(self, owner: str, name: str, description: str | None) -> Model:
        model_id = self.next_id("model")
        now = utcnow()
        record = self.records.Model(
            *keys.model(model_id), type="MODEL", id=model_id, owner=owner, name=name,
            description=description, auto_deploy=AutoDeploy().model_dump(), deployments=0, version_counter=0,
            created_at=now, updated_at=now, GSI1PK=keys.owner_listing(owner), GSI1SK=keys.listed("model", model_id),
        )
        guard = self.records.Guard(*keys.model_name_guard(owner, name), ref=model_id, type="GUARD")
        try:
            with self._transact() as tx:
                tx.save(record, condition=ModelRecord.PK.does_not_exist())
                tx.save(guard, condition=GuardRecord.PK.does_not_exist())
        except TransactWriteError as exc:
            raise Conflict(f"you already have a model named {name!r}", code="model_exists") from exc
        return self._model(record)

    def get_model(self, owner: str, model_id: int) -> Model:
        return self._model(self._model_record(owner, model_id))

    def list_models(self, owner: str, limit: int, cursor: str | None) -> Page:
        return self._page(
            self.records.Model.owner_index, keys.owner_listing(owner), keys.listed_prefix("model"), ModelRecord.GSI1SK,
            schema.GSI1PK, limit, cursor, self._model,
        )

    def update_model(
        self, owner: str, model_id: int, *, description: str | None = None, auto_deploy: AutoDeploy | None = None
    ) -> Model:
        record = self._model_record(owner, model_id)
        actions: list[Any] = [ModelRecord.updated_at.set(utcnow())]
        if description is not None:
            actions.append(ModelRecord.description.set(description))
        if auto_deploy is not None:
            actions.append(ModelRecord.auto_deploy.set(auto_deploy.model_dump()))
        try:
            record.update(actions=actions, condition=ModelRecord.owner == owner)
        except UpdateError as exc:
            if conditional_failed(exc):
                raise NotFound(f"model {model_id} not found", code="model_not_found") from exc
            raise
        return self._model(record)

    def delete_model(self, owner: str, model_id: int) -> list[Version]:
        """Delete a model and its versions; 409 while any deployment uses one. Returns the versions.

        Versions go first, each batch checking in the same transaction that the model has no
        deployment; the model and its name go last. A crash halfway leaves a smaller model that
        a repeated DELETE finishes.
        """
        record = self._model_record(owner, model_id)
        in_use = Conflict(
            f"model {model_id} has deployments; delete them first", code="model_in_use"
        )
        if record.deployments:
            raise in_use
        versions = list(self._version_records(model_id))
        model_key = (record.PK, record.SK)
        no_deployments = (ModelRecord.deployments == 0) & (ModelRecord.owner == owner)
        batch_size = MAX_TRANSACT_ITEMS // 2 - 1  # each version has a label guard too
        try:
            for start in range(0, len(versions), batch_size):
                with self._transact() as tx:
                    tx.condition_check(self.records.Model, *model_key, condition=no_deployments)
                    for version in versions[start : start + batch_size]:
                        tx.delete(version, condition=VersionRecord.deployments == 0)
                        tx.delete(self.records.Guard(*keys.label_guard(int(record.id), version.version)))
            with self._transact() as tx:
                tx.delete(record, condition=no_deployments)
                tx.delete(self.records.Guard(*keys.model_name_guard(owner, record.name)))
        except TransactWriteError as exc:
            raise in_use from exc
        return [self._version(v) for v in versions]

"""Versions: a unique label per model (a guard item), READY or REJECTED by their artifacts, never
changed while a deployment uses them."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from pynamodb.exceptions import TransactWriteError, UpdateError

from modelport.domain.entities import (
    Artifact,
    Version,
    VersionStatus,
    utcnow,
)
from modelport.domain.errors import Conflict, NotFound
from modelport.domain.pickle_policy import trust_note
from modelport.store import keys, schema
from modelport.store.records import (
    GuardRecord,
    ModelRecord,
    VersionRecord,
)
from modelport.store.table import (
    Page,
    Table,
    conditional_failed,
    found,
    owned,
)


class VersionRepository(Table):
    def _version_record(self, owner: str | None, version_id: int) -> VersionRecord:
        return owned(self.records.Version, "version", version_id, owner)

    def create_version(self, owner: str, model_id: int, label: str | None,
                       trusted_globals: Sequence[str] = ()) -> Version:
        model = self._model_record(owner, model_id)
        model.update(actions=[ModelRecord.version_counter.add(1)])
        label = label or str(int(model.version_counter))
        version_id = self.next_id("version")
        now = utcnow()
        record = self.records.Version(
            *keys.version(version_id), type="VERSION", id=version_id, model_id=model_id,
            owner=owner, version=label, status=VersionStatus.PENDING_UPLOAD.value, deployments=0,
            created_at=now, updated_at=now, GSI2PK=keys.model_children(model_id),
            GSI2SK=keys.listed("version", version_id), trusted_globals=list(trusted_globals) or None,
        )
        guard = self.records.Guard(*keys.label_guard(model_id, label), ref=version_id, type="GUARD")
        try:
            with self._transact() as tx:
                tx.condition_check(self.records.Model, model.PK, model.SK, condition=ModelRecord.owner == owner,
                                   name="model")
                tx.save(record, condition=VersionRecord.PK.does_not_exist())
                tx.save(guard, condition=GuardRecord.PK.does_not_exist())
        except TransactWriteError as exc:
            if "model" in tx.failed(exc):
                raise NotFound(f"model {model_id} not found", code="model_not_found") from exc
            raise Conflict(f"model {model_id} already has a version {label!r}", code="version_exists") from exc
        return self._version(record)

    def get_version(self, owner: str, version_id: int) -> Version:
        return self._version(self._version_record(owner, version_id))

    def find_version(self, version_id: int) -> Version | None:
        """A version by id whoever owns it (for event handlers, never for a user's request)."""
        record = found(self.records.Version, "version", version_id)
        return self._version(record) if record else None

    def versions_waiting_for_upload(self) -> list[Version]:
        """Every version still PENDING_UPLOAD (a Scan: only for the local platform's recovery sweep)."""
        scan = self.records.Version.scan(
            (VersionRecord.type == "VERSION") & (VersionRecord.status == VersionStatus.PENDING_UPLOAD.value)
        )
        return [self._version(record) for record in scan]

    def list_versions(self, owner: str, model_id: int, limit: int, cursor: str | None) -> Page:
        self._model_record(owner, model_id)
        return self._page(
            self.records.Version.model_index, keys.model_children(model_id), keys.listed_prefix("version"),
            VersionRecord.GSI2SK, schema.GSI2PK, limit, cursor, self._version,
        )

    def set_version_artifacts(
        self, version_id: int, *, s3_path: str, model_artifact: Artifact, requirements_artifact: Artifact | None,
    ) -> Version:
        """Mark a version READY with its artifacts; 409 while a deployment uses the version. A version
        with an owner trust list says so in its status_message ("trusted by owner: mypkg.MyTransformer")."""
        record = self._version_record(None, version_id)
        trusted = [str(entry) for entry in record.trusted_globals or []]
        actions = [
            VersionRecord.status.set(VersionStatus.READY.value),
            VersionRecord.status_message.set(trust_note(trusted)) if trusted
            else VersionRecord.status_message.remove(),
            VersionRecord.s3_path.set(s3_path),
            VersionRecord.model_artifact.set(model_artifact.model_dump()),
            VersionRecord.updated_at.set(utcnow()),
        ]
        if requirements_artifact is not None:
            actions.append(VersionRecord.requirements_artifact.set(requirements_artifact.model_dump()))
        else:
            actions.append(VersionRecord.requirements_artifact.remove())
        self._update_unused_version(record, actions)
        return self._version(record)

    def reject_version(self, version_id: int, reason: str) -> Version:
        record = self._version_record(None, version_id)
        actions = [
            VersionRecord.status.set(VersionStatus.REJECTED.value),
            VersionRecord.status_message.set(reason),
            VersionRecord.updated_at.set(utcnow()),
        ]
        self._update_unused_version(record, actions)
        return self._version(record)

    def _update_unused_version(self, record: VersionRecord, actions: list[Any]) -> None:
        condition = VersionRecord.PK.exists() & (
            VersionRecord.deployments.does_not_exist() | (VersionRecord.deployments == 0)
        )
        try:
            record.update(actions=actions, condition=condition)
        except UpdateError as exc:
            if conditional_failed(exc):
                raise Conflict(
                    f"version {record.id} is used by a deployment; upload a new version instead",
                    code="version_in_use",
                ) from exc
            raise

    def ensure_version_unused(self, owner: str, version_id: int) -> Version:
        version = self.get_version(owner, version_id)
        if version.deployments:
            raise Conflict(
                f"version {version_id} is used by a deployment; upload a new version instead", code="version_in_use"
            )
        return version

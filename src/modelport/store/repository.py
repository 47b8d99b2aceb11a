"""Repositories: every read and write of the table, as operations on domain entities.

Rules kept here, in DynamoDB conditions and transactions, so no race can break them:
- a record is reached only through its owner (another owner's id is NotFound, like a missing id);
- ids come from atomic counters; names of models (per owner) and version labels (per model) are
  unique through guard items written in the same transaction as the record;
- ``Version.deployments`` and ``Model.deployments`` count the deployments whose desired version
  they hold; every write that moves a deployment changes the counts in the same transaction, so
  "is this version in use" is one conditional write, not a query that can go stale;
- a change of desired state adds one to ``Deployment.generation``; the deployer writes back what
  it converged to with a condition on that generation, so it never overwrites a newer request.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Callable, Iterable
from datetime import timedelta
from typing import Any, TypeVar

from pydantic import BaseModel
from pynamodb.connection import Connection
from pynamodb.exceptions import DeleteError, DoesNotExist, PutError, TransactWriteError, UpdateError
from pynamodb.expressions.condition import Condition

from modelport.domain.entities import (
    Artifact,
    AutoDeploy,
    Deployment,
    DeploymentStatus,
    Model,
    Version,
    VersionStatus,
    release_name,
    utcnow,
)
from modelport.domain.errors import BadRequest, Conflict, NotFound
from modelport.domain.paths import namespace_for
from modelport.settings import Settings
from modelport.store import schema
from modelport.store.records import (
    ApiKeyRecord,
    CounterRecord,
    DeploymentRecord,
    GuardRecord,
    ModelRecord,
    Record,
    UserRecord,
    VersionRecord,
    configure,
)
from modelport.store.transactions import Transaction

E = TypeVar("E", bound=BaseModel)
MAX_TRANSACT_ITEMS = 100


def _to_entity(record: Record, entity: type[E], **overrides: Any) -> E:
    data = {name: getattr(record, name, None) for name in entity.model_fields}
    data = {k: v for k, v in data.items() if v is not None}
    data.update(overrides)
    return entity.model_validate(data)


def _conditional_failed(exc: PutError | UpdateError | DeleteError) -> bool:
    return getattr(exc, "cause_response_code", None) == "ConditionalCheckFailedException"


def _cursor_encode(key: dict[str, Any] | None) -> str | None:
    if not key:
        return None
    return base64.urlsafe_b64encode(json.dumps(key, separators=(",", ":")).encode()).decode().rstrip("=")


def _cursor_decode(cursor: str | None, partition: str, attr: str) -> dict[str, Any] | None:
    if not cursor:
        return None
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        key = json.loads(base64.urlsafe_b64decode(padded.encode()))
        ok = isinstance(key, dict) and key.get(attr, {}).get("S") == partition
    except (ValueError, binascii.Error, AttributeError):
        ok = False
    if not ok:
        raise BadRequest("the cursor is not one this listing returned", code="bad_cursor")
    return key


R = TypeVar("R", bound=Record)


def _follower_guard(model_id: int, deployment_id: int) -> GuardRecord:
    return GuardRecord(f"{schema.MODEL_PREFIX}{model_id}", "FOLLOWER", ref=deployment_id, type="GUARD")


def _found(cls: type[R], kind: str, record_id: int) -> R | None:
    """The ``kind`` record with this id, whoever owns it; None if there is none."""
    try:
        return cls.get(f"{kind.upper()}#{record_id}", kind.upper())
    except DoesNotExist:
        return None


def _owned(cls: type[R], kind: str, record_id: int, owner: str | None) -> R:
    """The ``kind`` record with this id, if ``owner`` owns it (None: whoever does). Another
    owner's record is NotFound, exactly like a missing one: ids reveal nothing."""
    record = _found(cls, kind, record_id)
    if record is None or (owner is not None and getattr(record, "owner", None) != owner):
        raise NotFound(f"{kind} {record_id} not found", code=f"{kind}_not_found")
    return record


class Page(BaseModel):
    items: list[Any]
    next_cursor: str | None = None


class Store:
    """The table, reached through pynamodb. One instance per process is enough."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        configure(settings)
        self._connection = Connection(region=settings.aws_region, host=settings.dynamodb_endpoint)

    def _transact(self) -> Transaction:
        return Transaction(connection=self._connection)

    # ------------------------------------------------------------------ counters
    def next_id(self, kind: str) -> int:
        counter = CounterRecord(f"{schema.COUNTER_PREFIX}{kind}", "COUNTER")
        counter.update(actions=[CounterRecord.value.add(1)])
        return int(counter.value)

    # ------------------------------------------------------------------ users
    def create_user(self, name: str, key_sha256: str) -> None:
        """A user and its first API key (its sha256), or Conflict ``user_exists``."""
        now = utcnow()
        user = UserRecord(f"{schema.USER_PREFIX}{name}", "USER", owner=name, name=name, created_at=now, type="USER")
        api_key = ApiKeyRecord(
            f"{schema.APIKEY_PREFIX}{key_sha256}", "APIKEY", owner=name, created_at=now, type="APIKEY"
        )
        try:
            with self._transact() as tx:
                tx.save(user, condition=UserRecord.PK.does_not_exist())
                tx.save(api_key, condition=ApiKeyRecord.PK.does_not_exist())
        except TransactWriteError as exc:
            raise Conflict(f"user {name!r} already exists", code="user_exists") from exc

    def add_api_key(self, owner: str, key_sha256: str) -> None:
        ApiKeyRecord(
            f"{schema.APIKEY_PREFIX}{key_sha256}", "APIKEY", owner=owner, created_at=utcnow(), type="APIKEY"
        ).save(condition=ApiKeyRecord.PK.does_not_exist())

    def user_exists(self, name: str) -> bool:
        try:
            UserRecord.get(f"{schema.USER_PREFIX}{name}", "USER")
        except DoesNotExist:
            return False
        return True

    def owner_for_key_hash(self, key_sha256: str) -> str | None:
        try:
            return ApiKeyRecord.get(f"{schema.APIKEY_PREFIX}{key_sha256}", "APIKEY").owner
        except DoesNotExist:
            return None

    # ------------------------------------------------------------------ paging
    def _page(
        self, index: Any, partition: str, prefix: str, sort_attr: Any, hash_attr: str,
        limit: int, cursor: str | None, convert: Callable[[Any], Any],
    ) -> Page:
        start = _cursor_decode(cursor, partition, hash_attr)
        result = index.query(
            partition, sort_attr.startswith(prefix), limit=limit, page_size=limit, last_evaluated_key=start
        )
        items = [convert(record) for record in result]
        return Page(items=items, next_cursor=_cursor_encode(result.last_evaluated_key))

    # ------------------------------------------------------------------ models
    @staticmethod
    def _model(record: ModelRecord) -> Model:
        return _to_entity(record, Model, auto_deploy=AutoDeploy.model_validate(record.auto_deploy or {}))

    def _model_record(self, owner: str, model_id: int) -> ModelRecord:
        return _owned(ModelRecord, "model", model_id, owner)

    def create_model(self, owner: str, name: str, description: str | None) -> Model:
        model_id = self.next_id("model")
        now = utcnow()
        record = ModelRecord(
            f"{schema.MODEL_PREFIX}{model_id}", "MODEL", type="MODEL", id=model_id, owner=owner, name=name,
            description=description, auto_deploy=AutoDeploy().model_dump(), deployments=0, version_counter=0,
            created_at=now, updated_at=now, GSI1PK=f"OWNER#{owner}", GSI1SK=f"MODEL#{model_id:012d}",
        )
        guard = GuardRecord(f"{schema.USER_PREFIX}{owner}", f"MODELNAME#{name}", ref=model_id, type="GUARD")
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
            ModelRecord.owner_index, f"OWNER#{owner}", "MODEL#", ModelRecord.GSI1SK, schema.GSI1PK,
            limit, cursor, self._model,
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
            if _conditional_failed(exc):
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
                    tx.condition_check(ModelRecord, *model_key, condition=no_deployments)
                    for version in versions[start : start + batch_size]:
                        tx.delete(version, condition=VersionRecord.deployments == 0)
                        tx.delete(GuardRecord(record.PK, f"LABEL#{version.version}"))
            with self._transact() as tx:
                tx.delete(record, condition=no_deployments)
                tx.delete(GuardRecord(f"{schema.USER_PREFIX}{owner}", f"MODELNAME#{record.name}"))
        except TransactWriteError as exc:
            raise in_use from exc
        return [self._version(v) for v in versions]

    # ------------------------------------------------------------------ versions
    @staticmethod
    def _version(record: VersionRecord) -> Version:
        return _to_entity(record, Version)

    def _version_records(self, model_id: int) -> Iterable[VersionRecord]:
        return VersionRecord.model_index.query(
            f"{schema.MODEL_PREFIX}{model_id}", VersionRecord.GSI2SK.startswith("VERSION#")
        )

    def _version_record(self, owner: str | None, version_id: int) -> VersionRecord:
        return _owned(VersionRecord, "version", version_id, owner)

    def create_version(self, owner: str, model_id: int, label: str | None) -> Version:
        model = self._model_record(owner, model_id)
        model.update(actions=[ModelRecord.version_counter.add(1)])
        label = label or str(int(model.version_counter))
        version_id = self.next_id("version")
        now = utcnow()
        record = VersionRecord(
            f"{schema.VERSION_PREFIX}{version_id}", "VERSION", type="VERSION", id=version_id, model_id=model_id,
            owner=owner, version=label, status=VersionStatus.PENDING_UPLOAD.value, deployments=0,
            created_at=now, updated_at=now, GSI2PK=f"{schema.MODEL_PREFIX}{model_id}",
            GSI2SK=f"VERSION#{version_id:012d}",
        )
        guard = GuardRecord(model.PK, f"LABEL#{label}", ref=version_id, type="GUARD")
        try:
            with self._transact() as tx:
                tx.condition_check(ModelRecord, model.PK, model.SK, condition=ModelRecord.owner == owner, name="model")
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
        record = _found(VersionRecord, "version", version_id)
        return self._version(record) if record else None

    def list_versions(self, owner: str, model_id: int, limit: int, cursor: str | None) -> Page:
        self._model_record(owner, model_id)
        return self._page(
            VersionRecord.model_index, f"{schema.MODEL_PREFIX}{model_id}", "VERSION#", VersionRecord.GSI2SK,
            schema.GSI2PK, limit, cursor, self._version,
        )

    def set_version_artifacts(
        self, version_id: int, *, s3_path: str, model_artifact: Artifact, requirements_artifact: Artifact | None,
    ) -> Version:
        """Mark a version READY with its artifacts; 409 while a deployment uses the version."""
        record = self._version_record(None, version_id)
        actions = [
            VersionRecord.status.set(VersionStatus.READY.value),
            VersionRecord.status_message.remove(),
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
            if _conditional_failed(exc):
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

    # ------------------------------------------------------------------ deployments
    @staticmethod
    def _deployment(record: DeploymentRecord) -> Deployment:
        return _to_entity(record, Deployment, follow_latest=bool(record.follow_latest))

    def _deployment_record(self, owner: str | None, deployment_id: int) -> DeploymentRecord:
        return _owned(DeploymentRecord, "deployment", deployment_id, owner)

    @staticmethod
    def _not_ready(version: Version) -> Conflict:
        detail = f": {version.status_message}" if version.status_message else ""
        return Conflict(
            f"version {version.id} is {version.status.value}{detail}; only a READY version with an "
            "uploaded artifact can be deployed",
            code="version_not_ready",
        )

    def ready_version(self, owner: str, version_id: int) -> Version:
        """The owner's version if it is READY with an artifact; Conflict ``version_not_ready`` else."""
        version = self.get_version(owner, version_id)
        if version.status != VersionStatus.READY or not version.s3_path:
            raise self._not_ready(version)
        return version

    @staticmethod
    def _take_version(tx: Transaction, version_id: int) -> None:
        """One more deployment holds the version; the item is named ``version`` in ``tx``."""
        tx.update(
            VersionRecord(f"{schema.VERSION_PREFIX}{version_id}", "VERSION"),
            actions=[VersionRecord.deployments.add(1)],
            condition=(VersionRecord.status == VersionStatus.READY.value) & VersionRecord.s3_path.exists(),
            name="version",
        )

    @staticmethod
    def _release_version(tx: Transaction, version_id: int) -> None:
        tx.update(
            VersionRecord(f"{schema.VERSION_PREFIX}{version_id}", "VERSION"),
            actions=[VersionRecord.deployments.add(-1)],
            condition=VersionRecord.PK.exists(),
        )

    def create_deployment(
        self, owner: str, version_id: int, replicas: int, *, url_for: Callable[[int], str],
        follow_latest: bool = False,
    ) -> Deployment:
        """A PENDING deployment of a READY version. A model has at most one deployment that follows
        its latest version (auto-deploy): a guard item ``(MODEL#{id}, FOLLOWER)`` is written in the
        same transaction, so events delivered again or at once for two versions create one, and the
        second gets Conflict ``follower_exists`` (it moves that one instead)."""
        version = self.ready_version(owner, version_id)
        deployment_id = self.next_id("deployment")
        now = utcnow()
        record = DeploymentRecord(
            f"{schema.DEPLOYMENT_PREFIX}{deployment_id}", "DEPLOYMENT", type="DEPLOYMENT", id=deployment_id,
            owner=owner, namespace=namespace_for(owner), model_id=version.model_id, version_id=version_id,
            replicas=replicas, k8s_service_name=release_name(deployment_id, now),
            url=url_for(deployment_id), status=DeploymentStatus.PENDING.value,
            generation=1, observed_generation=0, follow_latest=int(follow_latest), status_changed_at=now,
            created_at=now, updated_at=now, GSI1PK=f"OWNER#{owner}", GSI1SK=f"DEPLOYMENT#{deployment_id:012d}",
            GSI2PK=f"{schema.MODEL_PREFIX}{version.model_id}", GSI2SK=f"DEPLOYMENT#{deployment_id:012d}",
        )
        try:
            with self._transact() as tx:
                tx.save(record, condition=DeploymentRecord.PK.does_not_exist())
                self._take_version(tx, version_id)
                tx.update(
                    ModelRecord(f"{schema.MODEL_PREFIX}{version.model_id}", "MODEL"),
                    actions=[ModelRecord.deployments.add(1)],
                    condition=ModelRecord.PK.exists(),
                )
                if follow_latest:
                    tx.save(_follower_guard(version.model_id, deployment_id), condition=GuardRecord.PK.does_not_exist(),
                            name="follower")
        except TransactWriteError as exc:
            if "follower" in tx.failed(exc):
                raise Conflict(
                    f"model {version.model_id} already has a deployment that follows its latest version",
                    code="follower_exists",
                ) from exc
            # the version changed (re-upload, rejection) or the model went between read and write
            current = self.find_version(version_id)
            if current is None:
                raise NotFound(f"version {version_id} not found", code="version_not_found") from exc
            raise self._not_ready(current) from exc
        return self._deployment(record)

    def get_deployment(self, owner: str, deployment_id: int) -> Deployment:
        return self._deployment(self._deployment_record(owner, deployment_id))

    def find_deployment(self, deployment_id: int) -> Deployment | None:
        """A deployment by id whoever owns it (for the deployer, never for a user's request)."""
        record = _found(DeploymentRecord, "deployment", deployment_id)
        return self._deployment(record) if record else None

    def list_deployments(self, owner: str, limit: int, cursor: str | None) -> Page:
        return self._page(
            DeploymentRecord.owner_index, f"OWNER#{owner}", "DEPLOYMENT#", DeploymentRecord.GSI1SK,
            schema.GSI1PK, limit, cursor, self._deployment,
        )

    def model_deployments(self, model_id: int) -> list[Deployment]:
        records = DeploymentRecord.model_index.query(
            f"{schema.MODEL_PREFIX}{model_id}", DeploymentRecord.GSI2SK.startswith("DEPLOYMENT#")
        )
        return [self._deployment(r) for r in records]

    def change_deployment(
        self, current: Deployment, *, replicas: int | None = None, version_id: int | None = None,
    ) -> Deployment | None:
        """Write a new desired state over ``current`` (as read): a new generation, and with a new
        version the version counts moved in the same transaction. None when the record changed
        since it was read (read again and re-apply); Conflict ``version_not_ready`` when the new
        version stopped being deployable meanwhile."""
        record = self._deployment_record(current.owner, current.id)
        actions: list[Any] = [DeploymentRecord.updated_at.set(utcnow()), DeploymentRecord.generation.add(1)]
        condition: Condition = (
            (DeploymentRecord.owner == current.owner)
            & (DeploymentRecord.generation == current.generation)
            & (DeploymentRecord.status != DeploymentStatus.DELETING.value)
            & (DeploymentRecord.released != 1)
        )
        if replicas is not None:
            actions.append(DeploymentRecord.replicas.set(replicas))
        if version_id is not None:
            actions.append(DeploymentRecord.version_id.set(version_id))
        try:
            with self._transact() as tx:
                tx.update(record, actions=actions, condition=condition)
                if version_id is not None:
                    self._take_version(tx, version_id)
                    self._release_version(tx, current.version_id)
        except TransactWriteError as exc:
            if "version" in tx.failed(exc):
                raise self._not_ready(self.get_version(current.owner, version_id or 0)) from exc
            return None
        return self.get_deployment(current.owner, current.id)

    def set_predict_token(self, owner: str, deployment_id: int, token_sha256: str | None) -> Deployment:
        """Protect the prediction URL with a token (its sha256), or open it again (None). A change of
        desired state like any other: the deployer rolls it out."""
        record = self._deployment_record(owner, deployment_id)
        if record.status == DeploymentStatus.DELETING.value or record.released == 1:
            raise Conflict(f"deployment {deployment_id} is {record.status}", code="deployment_not_changeable")
        action = (DeploymentRecord.predict_token_sha256.set(token_sha256) if token_sha256
                  else DeploymentRecord.predict_token_sha256.remove())
        try:
            record.update(
                actions=[action, DeploymentRecord.generation.add(1), DeploymentRecord.updated_at.set(utcnow())],
                condition=(DeploymentRecord.owner == owner)
                & (DeploymentRecord.status != DeploymentStatus.DELETING.value)
                & (DeploymentRecord.released != 1),
            )
        except UpdateError as exc:
            if _conditional_failed(exc):
                raise Conflict(f"deployment {deployment_id} changed meanwhile; try again", code="concurrent_update") \
                    from exc
            raise
        return self._deployment(record)

    def request_delete(self, owner: str, deployment_id: int) -> Deployment:
        record = self._deployment_record(owner, deployment_id)
        if record.status == DeploymentStatus.DELETING.value:
            return self._deployment(record)
        now = utcnow()
        try:
            record.update(
                actions=[
                    DeploymentRecord.status.set(DeploymentStatus.DELETING.value),
                    DeploymentRecord.status_message.set("deletion requested"),
                    DeploymentRecord.status_changed_at.set(now),
                    DeploymentRecord.updated_at.set(now),
                    DeploymentRecord.generation.add(1),
                    DeploymentRecord.ttl.remove(),
                ],
                condition=DeploymentRecord.owner == owner,
            )
        except UpdateError as exc:
            if _conditional_failed(exc):
                raise NotFound(f"deployment {deployment_id} not found", code="deployment_not_found") from exc
            raise
        return self._deployment(record)

    # ------------------------------------------------------------------ deployer writes
    def set_deployment_status(
        self, deployment_id: int, status: DeploymentStatus, message: str | None, *,
        generation: int | None = None, observed_generation: int | None = None,
        deployed: tuple[int, int] | None = None, restore: tuple[int, int] | None = None,
    ) -> Deployment | None:
        """The deployer's write-back. With ``generation``, it lands only while the record still
        asks for that generation (a newer desired state wins); returns None when it did not land.

        ``deployed`` records (version_id, replicas) as the last good state; ``restore`` puts the
        desired state back to it after a failed update (and moves the version counts back).
        """
        record = DeploymentRecord(f"{schema.DEPLOYMENT_PREFIX}{deployment_id}", "DEPLOYMENT")
        now = utcnow()
        actions: list[Any] = [
            DeploymentRecord.status.set(status.value),
            DeploymentRecord.status_changed_at.set(now),
            DeploymentRecord.updated_at.set(now),
        ]
        actions.append(
            DeploymentRecord.status_message.set(message) if message else DeploymentRecord.status_message.remove()
        )
        if observed_generation is not None:
            actions.append(DeploymentRecord.observed_generation.set(observed_generation))
        if deployed is not None:
            actions += [
                DeploymentRecord.deployed_version_id.set(deployed[0]),
                DeploymentRecord.deployed_replicas.set(deployed[1]),
            ]
        condition: Condition = DeploymentRecord.PK.exists()
        if generation is not None:
            condition = condition & (DeploymentRecord.generation == generation)
        try:
            if restore is None:
                record.update(actions=actions, condition=condition)
            else:
                current = self._deployment_record(None, deployment_id)
                actions += [
                    DeploymentRecord.version_id.set(restore[0]),
                    DeploymentRecord.replicas.set(restore[1]),
                    DeploymentRecord.generation.add(1),
                    DeploymentRecord.observed_generation.set(int(current.generation) + 1),
                ]
                with self._transact() as tx:
                    tx.update(record, actions=actions, condition=condition)
                    if current.version_id != restore[0]:
                        self._release_version(tx, int(current.version_id))
                        tx.update(
                            VersionRecord(f"{schema.VERSION_PREFIX}{restore[0]}", "VERSION"),
                            actions=[VersionRecord.deployments.add(1)],
                            condition=VersionRecord.PK.exists(),
                        )
        except UpdateError as exc:
            if _conditional_failed(exc):
                return None
            raise
        except (TransactWriteError, NotFound):
            return None
        return self.find_deployment(deployment_id)

    def request_reinstall(self, deployment_id: int, *, generation: int) -> bool:
        """A READY deployment whose release is gone: install it again, as a first install."""
        now = utcnow()
        try:
            DeploymentRecord(f"{schema.DEPLOYMENT_PREFIX}{deployment_id}", "DEPLOYMENT").update(
                actions=[
                    DeploymentRecord.status.set(DeploymentStatus.PENDING.value),
                    DeploymentRecord.status_message.set("the release is missing from the cluster; reinstalling"),
                    DeploymentRecord.status_changed_at.set(now),
                    DeploymentRecord.updated_at.set(now),
                    DeploymentRecord.observed_generation.set(0),
                    DeploymentRecord.deployed_version_id.remove(),
                    DeploymentRecord.deployed_replicas.remove(),
                ],
                condition=(DeploymentRecord.generation == generation)
                & (DeploymentRecord.status == DeploymentStatus.READY.value),
            )
        except UpdateError as exc:
            if _conditional_failed(exc):
                return False
            raise
        return True

    def _give_back_counts(self, tx: Transaction, record: DeploymentRecord) -> None:
        """The version's and model's counts, and the model's follower slot if this one held it."""
        if record.follow_latest:
            tx.delete(_follower_guard(int(record.model_id), int(record.id)))
        self._release_version(tx, int(record.version_id))
        tx.update(
            ModelRecord(f"{schema.MODEL_PREFIX}{int(record.model_id)}", "MODEL"),
            actions=[ModelRecord.deployments.add(-1)],
            condition=ModelRecord.PK.exists(),
        )

    def fail_deployment(
        self, deployment_id: int, message: str, *, generation: int, expires_in: int
    ) -> Deployment | None:
        """A first install failed: FAILED with the reason and a TTL, and the version it held is
        free again (its count given back in the same transaction). None if a newer desired state
        or a deletion came meanwhile."""
        try:
            record = self._deployment_record(None, deployment_id)
        except NotFound:
            return None
        now = utcnow()
        try:
            with self._transact() as tx:
                tx.update(
                    record,
                    actions=[
                        DeploymentRecord.status.set(DeploymentStatus.FAILED.value),
                        DeploymentRecord.status_message.set(message),
                        DeploymentRecord.status_changed_at.set(now),
                        DeploymentRecord.updated_at.set(now),
                        DeploymentRecord.observed_generation.set(generation),
                        DeploymentRecord.released.set(1),
                        DeploymentRecord.ttl.set(timedelta(seconds=max(expires_in, 1))),  # type: ignore[arg-type]
                    ],
                    condition=(DeploymentRecord.generation == generation)
                    & (DeploymentRecord.status != DeploymentStatus.DELETING.value)
                    & (DeploymentRecord.released != 1),
                )
                self._give_back_counts(tx, record)
        except TransactWriteError:
            return None
        return self.find_deployment(deployment_id)

    def delete_deployment_record(self, deployment_id: int, *, generation: int | None = None) -> bool:
        """Remove the record and give back its version's and model's counts, in one transaction."""
        try:
            record = self._deployment_record(None, deployment_id)
        except NotFound:
            return False
        condition: Condition = DeploymentRecord.PK.exists()
        if generation is not None:
            condition = condition & (DeploymentRecord.generation == generation)
        try:
            with self._transact() as tx:
                if record.released == 1:
                    tx.delete(record, condition=condition & (DeploymentRecord.released == 1))
                else:
                    tx.delete(record, condition=condition & (DeploymentRecord.released != 1))
                    self._give_back_counts(tx, record)
        except TransactWriteError:
            return False
        return True

    def all_deployments(self) -> list[Deployment]:
        """Every deployment record (a Scan: only for the periodic sweep, never a request path)."""
        return [self._deployment(r) for r in DeploymentRecord.scan(DeploymentRecord.type == "DEPLOYMENT")]

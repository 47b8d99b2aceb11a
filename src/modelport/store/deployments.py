"""Deployments: desired state with a generation counter, the version counts moved in the same
transaction, the deployer's conditional write-backs."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any

from pynamodb.exceptions import TransactWriteError, UpdateError
from pynamodb.expressions.condition import Condition

from modelport.domain.entities import (
    Deployment,
    DeploymentStatus,
    Version,
    VersionStatus,
    release_name,
    utcnow,
)
from modelport.domain.errors import Conflict, NotFound
from modelport.domain.paths import namespace_for
from modelport.domain.rollouts import Rollout, Shadow
from modelport.store import keys, schema
from modelport.store.records import (
    DeploymentRecord,
    GuardRecord,
    ModelRecord,
    VersionRecord,
)
from modelport.store.table import Page, conditional_failed, found, owned, to_entity
from modelport.store.transactions import Transaction
from modelport.store.versions import VersionRepository


def _status_actions(status: DeploymentStatus, message: str | None) -> list[Any]:
    """The actions of every status change: the status, its message (removed when None) and times."""
    now = utcnow()
    return [
        DeploymentRecord.status.set(status.value),
        DeploymentRecord.status_message.set(message) if message else DeploymentRecord.status_message.remove(),
        DeploymentRecord.status_changed_at.set(now),
        DeploymentRecord.updated_at.set(now),
    ]


def _held(version_id: int, rollout: Rollout | None, shadow: Shadow | None) -> set[int]:
    """The versions a deployment holds (counts in ``Version.deployments``): its own, a progressing
    canary's candidate and a running shadow's."""
    return ({version_id} | ({rollout.candidate_version_id} if rollout and rollout.progressing else set())
            | ({shadow.version_id} if shadow and shadow.running else set()))


class DeploymentRepository(VersionRepository):
    @staticmethod
    def _deployment(record: DeploymentRecord) -> Deployment:
        return to_entity(record, Deployment, follow_latest=bool(record.follow_latest))

    def _deployment_record(self, owner: str | None, deployment_id: int) -> DeploymentRecord:
        return owned(self.records.Deployment, "deployment", deployment_id, owner)

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

    def _take_version(self, tx: Transaction, version_id: int) -> None:
        """One more deployment holds the version; the item is named ``version`` in ``tx``."""
        tx.update(
            self.records.Version(*keys.version(version_id)),
            actions=[VersionRecord.deployments.add(1)],
            condition=(VersionRecord.status == VersionStatus.READY.value) & VersionRecord.s3_path.exists(),
            name="version",
        )

    def _release_version(self, tx: Transaction, version_id: int) -> None:
        tx.update(
            self.records.Version(*keys.version(version_id)),
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
        record = self.records.Deployment(
            *keys.deployment(deployment_id), type="DEPLOYMENT", id=deployment_id,
            owner=owner, namespace=namespace_for(owner), model_id=version.model_id, version_id=version_id,
            replicas=replicas, k8s_service_name=release_name(deployment_id, now),
            url=url_for(deployment_id), status=DeploymentStatus.PENDING.value,
            generation=1, observed_generation=0, follow_latest=int(follow_latest), status_changed_at=now,
            created_at=now, updated_at=now,
            GSI1PK=keys.owner_listing(owner), GSI1SK=keys.listed("deployment", deployment_id),
            GSI2PK=keys.model_children(version.model_id), GSI2SK=keys.listed("deployment", deployment_id),
        )
        try:
            with self._transact() as tx:
                tx.save(record, condition=DeploymentRecord.PK.does_not_exist())
                self._take_version(tx, version_id)
                tx.update(
                    self.records.Model(*keys.model(version.model_id)),
                    actions=[ModelRecord.deployments.add(1)],
                    condition=ModelRecord.PK.exists(),
                )
                if follow_latest:
                    tx.save(self._follower_guard(version.model_id, deployment_id),
                            condition=GuardRecord.PK.does_not_exist(), name="follower")
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
        record = found(self.records.Deployment, "deployment", deployment_id)
        return self._deployment(record) if record else None

    def list_deployments(self, owner: str, limit: int, cursor: str | None) -> Page:
        return self._page(
            self.records.Deployment.owner_index, keys.owner_listing(owner), keys.listed_prefix("deployment"),
            DeploymentRecord.GSI1SK, schema.GSI1PK, limit, cursor, self._deployment,
        )

    def model_deployments(self, model_id: int) -> list[Deployment]:
        records = self.records.Deployment.model_index.query(
            keys.model_children(model_id), DeploymentRecord.GSI2SK.startswith(keys.listed_prefix("deployment"))
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

    def write_rollout(
        self, current: Deployment, rollout: Rollout, *, version_id: int | None = None
    ) -> Deployment | None:
        """A new rollout state over ``current`` (as read); see ``_write_trial``."""
        return self._write_trial(current, rollout, current.shadow, version_id)

    def write_shadow(self, current: Deployment, shadow: Shadow, *, rollout: Rollout | None = None
                     ) -> Deployment | None:
        """A new shadow state over ``current`` (as read), with a new rollout too when given (a
        shadow promoted to a canary, in one write); see ``_write_trial``."""
        return self._write_trial(current, rollout or current.rollout, shadow, None)

    def _write_trial(self, current: Deployment, rollout: Rollout | None, shadow: Shadow | None,
                     version_id: int | None) -> Deployment | None:
        """New rollout and shadow states over ``current`` (as read) as a new desired state: a new
        generation, and the version counts moved in the same transaction (a deployment holds its
        version, a progressing canary's candidate and a running shadow's). None when the record
        changed since it was read (someone decided first); Conflict ``version_not_ready`` when a
        version taken stopped being deployable."""
        record = self._deployment_record(current.owner, current.id)
        actions: list[Any] = [DeploymentRecord.generation.add(1), DeploymentRecord.updated_at.set(utcnow())]
        for attribute, value in ((DeploymentRecord.rollout, rollout), (DeploymentRecord.shadow, shadow)):
            actions.append(attribute.set(value.model_dump(mode="json")) if value is not None else attribute.remove())
        if version_id is not None:
            actions.append(DeploymentRecord.version_id.set(version_id))
        before = _held(current.version_id, current.rollout, current.shadow)
        after = _held(version_id or current.version_id, rollout, shadow)
        try:
            with self._transact() as tx:
                tx.update(record, actions=actions, condition=(
                    (DeploymentRecord.generation == current.generation)
                    & (DeploymentRecord.status != DeploymentStatus.DELETING.value)
                    & (DeploymentRecord.released != 1)
                ))
                for taken in sorted(after - before):
                    self._take_version(tx, taken)
                for given in sorted(before - after):
                    self._release_version(tx, given)
        except TransactWriteError as exc:
            if "version" in tx.failed(exc):
                taken_ids = sorted(after - before) or [current.version_id]
                raise self._not_ready(self.get_version(current.owner, taken_ids[0])) from exc
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
            if conditional_failed(exc):
                raise Conflict(f"deployment {deployment_id} changed meanwhile; try again", code="concurrent_update") \
                    from exc
            raise
        return self._deployment(record)

    def request_delete(self, owner: str, deployment_id: int) -> Deployment:
        record = self._deployment_record(owner, deployment_id)
        if record.status == DeploymentStatus.DELETING.value:
            return self._deployment(record)
        try:
            record.update(
                actions=[
                    *_status_actions(DeploymentStatus.DELETING, "deletion requested"),
                    DeploymentRecord.generation.add(1),
                    DeploymentRecord.ttl.remove(),
                ],
                condition=DeploymentRecord.owner == owner,
            )
        except UpdateError as exc:
            if conditional_failed(exc):
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
        record = self.records.Deployment(*keys.deployment(deployment_id))
        actions: list[Any] = _status_actions(status, message)
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
                            self.records.Version(*keys.version(restore[0])),
                            actions=[VersionRecord.deployments.add(1)],
                            condition=VersionRecord.PK.exists(),
                        )
        except UpdateError as exc:
            if conditional_failed(exc):
                return None
            raise
        except (TransactWriteError, NotFound):
            return None
        return self.find_deployment(deployment_id)

    def request_reinstall(self, deployment_id: int, *, generation: int) -> bool:
        """A READY deployment whose release is gone: install it again, as a first install."""
        try:
            self.records.Deployment(*keys.deployment(deployment_id)).update(
                actions=[
                    *_status_actions(DeploymentStatus.PENDING, "the release is missing from the cluster; reinstalling"),
                    DeploymentRecord.observed_generation.set(0),
                    DeploymentRecord.deployed_version_id.remove(),
                    DeploymentRecord.deployed_replicas.remove(),
                ],
                condition=(DeploymentRecord.generation == generation)
                & (DeploymentRecord.status == DeploymentStatus.READY.value),
            )
        except UpdateError as exc:
            if conditional_failed(exc):
                return False
            raise
        return True

    def _give_back_counts(self, tx: Transaction, record: DeploymentRecord) -> None:
        """The version's and model's counts, and the model's follower slot if this one held it."""
        if record.follow_latest:
            tx.delete(self._follower_guard(int(record.model_id), int(record.id)))
        current = self._deployment(record)
        for held in sorted(_held(current.version_id, current.rollout, current.shadow)):
            self._release_version(tx, held)
        tx.update(
            self.records.Model(*keys.model(int(record.model_id))),
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
        try:
            with self._transact() as tx:
                tx.update(
                    record,
                    actions=[
                        *_status_actions(DeploymentStatus.FAILED, message),
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
        return [self._deployment(r) for r in self.records.Deployment.scan(DeploymentRecord.type == "DEPLOYMENT")]

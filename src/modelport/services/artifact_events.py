"""What an S3 ObjectCreated notification does: check the artifact, mark the version READY or
REJECTED, and auto-deploy where the user asked for it.

The use case of ``functions/artifacts`` (and of the local platform's S3-event poller): the handler
parses the SQS batch and calls :meth:`ArtifactEvents.handle` for each object record. S3 is reached
through ``artifacts.storage.ObjectStore``; the auto-deploy decision is ``services.auto_deploy``.

Rules:
- keys are URL-decoded as AWS documents for S3 event keys (``unquote_plus``);
- unknown keys, deleted versions and objects gone meanwhile are *permanent* conditions: logged and
  skipped (the message is consumed, never retried); a model that fails a check is REJECTED with
  the reason. Only transient trouble (S3 or DynamoDB unreachable, throttled) raises, so SQS
  redelivers the message and finally moves it to the dead-letter queue;
- the same object processed again changes nothing: its ETag (and then its sha256) match what the
  version holds, ``register_version`` is a no-op for identical artifacts, and the auto-deploy
  writes a guard item in the deployment's own transaction;
- ``model.joblib`` and ``requirements.txt`` belong together. A presigned upload that announced a
  requirements file carries ``x-amz-meta-requirements: true`` on the model; its event waits (is
  skipped) until the requirements object exists, and the requirements event then processes the
  pair. A requirements event without a model object does nothing: the model's event will.
- an event that never came (a queue that lost it: the local platform's in-memory queue at a stop)
  is made up for by :meth:`ArtifactEvents.recover`: every version still PENDING_UPLOAD whose model
  object is in the bucket is handled as if its event had arrived, by the same code, so it is
  idempotent with the event should that come after all.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote_plus

from aws_lambda_powertools import Logger

from modelport.artifacts.checks import inspect_model, inspect_requirements
from modelport.artifacts.storage import ObjectStore, object_etag, object_version
from modelport.artifacts.uploads import AUTO_DEPLOY_META, REQUIREMENTS_META
from modelport.domain.entities import Artifact, Version, VersionStatus
from modelport.domain.errors import Conflict, ModelportError
from modelport.domain.paths import MODEL_FILE, REQUIREMENTS_FILE, artifact_key, parse_artifact_key
from modelport.services.auto_deploy import auto_deploy
from modelport.services.versions import register_version, version_policy
from modelport.settings import Settings
from modelport.store.repository import Store

logger = Logger(service="modelport", child=True)



@dataclass(frozen=True)
class ObjectCreated:
    """One S3 ObjectCreated record, key already decoded."""

    bucket: str
    key: str
    size: int | None = None
    etag: str | None = None
    event_name: str = "ObjectCreated:Put"


@dataclass
class Outcome:
    """What one record did: ``ready``, ``rejected``, ``unchanged``, ``waiting`` or ``skipped``."""

    action: str
    reason: str = ""
    version_id: int | None = None
    deployments_created: list[int] = field(default_factory=list)
    deployments_moved: list[int] = field(default_factory=list)


def decode_key(raw: str) -> str:
    """An S3 event's object key as the object is named (``+`` is a space, ``%2F`` a slash)."""
    return unquote_plus(raw)


def object_records(notification: dict[str, Any]) -> list[ObjectCreated]:
    """The ObjectCreated records of one S3 notification (an ``s3:TestEvent`` has none)."""
    if notification.get("Event") == "s3:TestEvent":
        return []
    found: list[ObjectCreated] = []
    for record in notification.get("Records") or []:
        if not str(record.get("eventName", "")).startswith("ObjectCreated"):
            continue
        s3 = record.get("s3") or {}
        obj = s3.get("object") or {}
        if "key" not in obj:
            continue
        found.append(
            ObjectCreated(
                bucket=str((s3.get("bucket") or {}).get("name", "")),
                key=decode_key(str(obj["key"])),
                size=int(obj["size"]) if obj.get("size") is not None else None,
                etag=str(obj["eTag"]).strip('"') if obj.get("eTag") else None,
                event_name=str(record.get("eventName")),
            )
        )
    return found


class ArtifactEvents:
    def __init__(self, store: Store, objects: ObjectStore, settings: Settings) -> None:
        self.store = store
        self.objects = objects
        self.settings = settings

    def recover(self) -> list[Outcome]:
        """Handle, as their event would, the uploads of versions still waiting for one."""
        outcomes = []
        for version in self.store.versions_waiting_for_upload():
            key = artifact_key(version.model_id, version.id, MODEL_FILE)
            if self.objects.head(key) is not None:
                outcomes.append(self.handle(ObjectCreated(bucket=self.objects.bucket, key=key,
                                                          event_name="ObjectCreated:Recovered")))
        return outcomes

    # ------------------------------------------------------------------ one record
    def handle(self, event: ObjectCreated) -> Outcome:
        parsed = parse_artifact_key(event.key)
        if parsed is None or parsed[2] not in (MODEL_FILE, REQUIREMENTS_FILE):
            return self._skip(f"not an artifact key: {event.key!r}", event)
        if event.bucket and event.bucket != self.objects.bucket:
            return self._skip(f"bucket {event.bucket!r} is not the models bucket {self.objects.bucket!r}", event)
        model_id, version_id, filename = parsed
        version = self.store.find_version(version_id)
        if version is None or version.model_id != model_id:
            return self._skip(f"version {version_id} of model {model_id} does not exist (deleted?)", event)

        model_key = artifact_key(model_id, version_id, MODEL_FILE)
        req_key = artifact_key(model_id, version_id, REQUIREMENTS_FILE)
        model_head = self.objects.head(model_key)
        if model_head is None:
            if filename == REQUIREMENTS_FILE:
                return self._outcome("waiting", "requirements.txt stored; the model's own event will register both",
                                     version)
            return self._skip(f"{event.key} is gone", event)
        req_head = self.objects.head(req_key)
        meta = {k.lower(): v for k, v in (model_head.get("Metadata") or {}).items()}
        if req_head is None and meta.get(REQUIREMENTS_META) == "true":
            return self._outcome("waiting", "waiting for requirements.txt (its event will register both)", version)

        model_etag = object_etag(model_head)
        req_etag = object_etag(req_head) if req_head else None
        auto = meta.get(AUTO_DEPLOY_META, "").lower() == "true"

        if self._holds(version, model_etag, req_etag):
            outcome = self._outcome("unchanged", "the version already holds these artifacts", version)
        else:
            outcome = self._check_and_register(version, model_key, model_head, req_key, req_head)
        if outcome.action in ("ready", "unchanged") and outcome.version_id is not None:
            current = self.store.find_version(version.id)
            if current is not None and current.status == VersionStatus.READY:
                created, moved = auto_deploy(self.store, self.settings, current, asked_by_upload=auto)
                outcome.deployments_created += created
                outcome.deployments_moved += moved
        logger.info("artifact event handled", extra={"key": event.key, "outcome": outcome.action,
                                                      "reason": outcome.reason, "version_id": version.id})
        return outcome

    @staticmethod
    def _holds(version: Version, model_etag: str | None, req_etag: str | None) -> bool:
        if version.status != VersionStatus.READY or version.model_artifact is None or model_etag is None:
            return False
        have_req = version.requirements_artifact.etag if version.requirements_artifact else None
        return version.model_artifact.etag == model_etag and have_req == req_etag

    def _check_and_register(
        self, version: Version, model_key: str, model_head: dict[str, Any], req_key: str,
        req_head: dict[str, Any] | None,
    ) -> Outcome:
        settings = self.settings
        size = int(model_head.get("ContentLength", 0))
        if size > settings.max_upload_bytes:
            return self._reject(version, f"the model file is {size} bytes; the limit is {settings.max_upload_bytes}")
        model_etag = object_etag(model_head)
        model_version = object_version(model_head)
        with tempfile.TemporaryFile() as model_file, tempfile.TemporaryFile() as req_file:
            if not self.objects.download(model_key, model_etag, model_file, model_version):
                return self._outcome("skipped", "the model object changed or went meanwhile; its own event follows",
                                     version)
            requirements: Artifact | None = None
            try:
                if req_head is not None:
                    req_etag = object_etag(req_head)
                    req_version = object_version(req_head)
                    if not self.objects.download(req_key, req_etag, req_file, req_version):
                        return self._outcome("skipped", "requirements.txt changed or went meanwhile", version)
                    req_found = inspect_requirements(req_file, settings)
                    requirements = Artifact(key=req_key, size=req_found.size, sha256=req_found.sha256, etag=req_etag,
                                            version_id=req_version)
                policy = version_policy(version, req_file if requirements is not None else None)
                found = inspect_model(model_file, settings, policy)
                model = Artifact(key=model_key, size=found.size, sha256=found.sha256, etag=model_etag,
                                 version_id=model_version)
            except ModelportError as exc:
                return self._reject(version, exc.message)
        try:
            registered = register_version(self.store, self.objects, version, model, requirements)
        except Conflict as exc:
            return self._outcome("skipped", exc.message, version)
        return self._outcome("ready", f"sha256 {registered.model_artifact.sha256 if registered.model_artifact else ''}",
                             registered)

    def _reject(self, version: Version, reason: str) -> Outcome:
        try:
            self.store.reject_version(version.id, reason)
        except Conflict as exc:  # a deployment uses the version: it keeps what it serves
            return self._outcome("skipped", f"{reason}; not rejected: {exc.message}", version)
        logger.warning("artifact rejected", extra={"version_id": version.id, "reason": reason})
        return self._outcome("rejected", reason, version)

    # ------------------------------------------------------------------ outcomes
    @staticmethod
    def _outcome(action: str, reason: str, version: Version) -> Outcome:
        return Outcome(action=action, reason=reason, version_id=version.id)

    @staticmethod
    def _skip(reason: str, event: ObjectCreated) -> Outcome:
        logger.info("artifact event skipped", extra={"key": event.key, "reason": reason})
        return Outcome(action="skipped", reason=reason)

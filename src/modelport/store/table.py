"""The base of every repository: the connection, transactions, counters, paging and the
owner-checked lookups that several record types share. Repositories (one module per entity)
build on it; ``store.repository.Store`` puts them together on one connection.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

from pydantic import BaseModel
from pynamodb.connection import Connection
from pynamodb.exceptions import DeleteError, DoesNotExist, PutError, UpdateError

from modelport.domain.entities import (
    AutoDeploy,
    Model,
    Version,
)
from modelport.domain.errors import BadRequest, NotFound
from modelport.settings import Settings
from modelport.store import keys
from modelport.store.records import (
    CounterRecord,
    GuardRecord,
    ModelRecord,
    Record,
    VersionRecord,
    bind,
)
from modelport.store.transactions import Transaction

E = TypeVar("E", bound=BaseModel)
MAX_TRANSACT_ITEMS = 100


def to_entity(record: Record, entity: type[E], **overrides: Any) -> E:
    data = {name: getattr(record, name, None) for name in entity.model_fields}
    data = {k: v for k, v in data.items() if v is not None}
    data.update(overrides)
    return entity.model_validate(data)


def conditional_failed(exc: PutError | UpdateError | DeleteError) -> bool:
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


def found(cls: type[R], kind: str, record_id: int) -> R | None:
    """The ``kind`` record with this id, whoever owns it; None if there is none."""
    try:
        return cls.get(*keys.record(kind, record_id))
    except DoesNotExist:
        return None


def owned(cls: type[R], kind: str, record_id: int, owner: str | None) -> R:
    """The ``kind`` record with this id, if ``owner`` owns it (None: whoever does). Another
    owner's record is NotFound, exactly like a missing one: ids reveal nothing."""
    record = found(cls, kind, record_id)
    if record is None or (owner is not None and getattr(record, "owner", None) != owner):
        raise NotFound(f"{kind} {record_id} not found", code=f"{kind}_not_found")
    return record


class Page(BaseModel):
    items: list[Any]
    next_cursor: str | None = None




class Table:
    """The table, reached through pynamodb."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.records = bind(settings)
        self._connection = Connection(region=settings.aws_region, host=settings.dynamodb_endpoint)

    def _transact(self) -> Transaction:
        return Transaction(connection=self._connection)

    def _follower_guard(self, model_id: int, deployment_id: int) -> GuardRecord:
        return self.records.Guard(*keys.follower_guard(model_id), ref=deployment_id, type="GUARD")

    # ------------------------------------------------------------------ counters
    def next_id(self, kind: str) -> int:
        counter = self.records.Counter(*keys.counter(kind))
        counter.update(actions=[CounterRecord.value.add(1)])
        return int(counter.value)

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

    @staticmethod
    def _model(record: ModelRecord) -> Model:
        return to_entity(record, Model, auto_deploy=AutoDeploy.model_validate(record.auto_deploy or {}))

    def _model_record(self, owner: str, model_id: int) -> ModelRecord:
        return owned(self.records.Model, "model", model_id, owner)

    @staticmethod
    def _version(record: VersionRecord) -> Version:
        return to_entity(record, Version)

    def _version_records(self, model_id: int) -> Iterable[VersionRecord]:
        return self.records.Version.model_index.query(
            keys.model_children(model_id), VersionRecord.GSI2SK.startswith(keys.listed_prefix("version"))
        )


"""pynamodb models of the single table. Only ``modelport.store`` imports this module.

Every record type shares the table; the partition key's prefix names the type (see schema.py).
Guard items (``SK = NAME#...`` / ``LABEL#...``) make names unique inside one transaction.

The classes below are shapes: they name the attributes, and code may build conditions and update
actions from them (``DeploymentRecord.status == ...``), which are the same on every table. They
are never pointed at a table. ``bind(settings)`` gives one table's classes -- subclasses with their
own ``Meta`` (table, region, endpoint) and, as pynamodb does for every subclass, their own copies of
the indexes and their own connection -- and everything that talks to DynamoDB (construct and
save, get, query, scan, transactions) goes through those. So two stores on two tables in one
process never see each other's settings.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from typing import Any

from pynamodb.attributes import (
    JSONAttribute,
    ListAttribute,
    NumberAttribute,
    TTLAttribute,
    UnicodeAttribute,
    UTCDateTimeAttribute,
)
from pynamodb.indexes import AllProjection, GlobalSecondaryIndex
from pynamodb.models import Model

from modelport.settings import Settings
from modelport.store import schema


class _Meta:
    table_name = "modelport"
    region = "us-east-1"
    host: str | None = None
    billing_mode = "PAY_PER_REQUEST"
    stream_view_type = "NEW_AND_OLD_IMAGES"


class OwnerIndex(GlobalSecondaryIndex[Any]):
    class Meta:
        index_name = schema.GSI1
        projection = AllProjection()

    GSI1PK = UnicodeAttribute(hash_key=True)
    GSI1SK = UnicodeAttribute(range_key=True)


class ModelChildrenIndex(GlobalSecondaryIndex[Any]):
    class Meta:
        index_name = schema.GSI2
        projection = AllProjection()

    GSI2PK = UnicodeAttribute(hash_key=True)
    GSI2SK = UnicodeAttribute(range_key=True)


class Record(Model):
    """The base of every record: keys and the two indexes."""

    Meta = _Meta  # type: ignore[assignment]

    PK = UnicodeAttribute(hash_key=True)
    SK = UnicodeAttribute(range_key=True)
    GSI1PK = UnicodeAttribute(null=True)
    GSI1SK = UnicodeAttribute(null=True)
    GSI2PK = UnicodeAttribute(null=True)
    GSI2SK = UnicodeAttribute(null=True)
    type = UnicodeAttribute(null=True)
    owner_index = OwnerIndex()
    model_index = ModelChildrenIndex()


# pynamodb binds an index instance to one model class: each record type that queries an index
# declares its own instance, so queries return that type.


class GuardRecord(Record):
    """A name taken: exists only to make a name unique (condition attribute_not_exists)."""

    Meta = _Meta  # type: ignore[assignment]
    ref = NumberAttribute(null=True)


class CounterRecord(Record):
    Meta = _Meta  # type: ignore[assignment]
    value = NumberAttribute(default=0)


class UserRecord(Record):
    Meta = _Meta  # type: ignore[assignment]
    owner = UnicodeAttribute()
    name = UnicodeAttribute()
    created_at = UTCDateTimeAttribute()


class ApiKeyRecord(Record):
    Meta = _Meta  # type: ignore[assignment]
    owner = UnicodeAttribute()
    created_at = UTCDateTimeAttribute()


class ModelRecord(Record):
    Meta = _Meta  # type: ignore[assignment]
    id = NumberAttribute()
    owner = UnicodeAttribute()
    name = UnicodeAttribute()
    description = UnicodeAttribute(null=True)
    auto_deploy = JSONAttribute(null=True)
    deployments = NumberAttribute(default=0)
    version_counter = NumberAttribute(default=0)
    owner_index = OwnerIndex()
    created_at = UTCDateTimeAttribute()
    updated_at = UTCDateTimeAttribute()


class VersionRecord(Record):
    Meta = _Meta  # type: ignore[assignment]
    id = NumberAttribute()
    model_id = NumberAttribute()
    owner = UnicodeAttribute()
    version = UnicodeAttribute()
    status = UnicodeAttribute()
    status_message = UnicodeAttribute(null=True)
    s3_path = UnicodeAttribute(null=True)
    model_artifact = JSONAttribute(null=True)
    requirements_artifact = JSONAttribute(null=True)
    trusted_globals = ListAttribute(of=UnicodeAttribute, null=True)
    deployments = NumberAttribute(default=0)
    model_index = ModelChildrenIndex()
    created_at = UTCDateTimeAttribute()
    updated_at = UTCDateTimeAttribute()


class DeploymentRecord(Record):
    Meta = _Meta  # type: ignore[assignment]
    id = NumberAttribute()
    owner = UnicodeAttribute()
    namespace = UnicodeAttribute()
    model_id = NumberAttribute()
    version_id = NumberAttribute()
    replicas = NumberAttribute()
    k8s_service_name = UnicodeAttribute()
    url = UnicodeAttribute()
    status = UnicodeAttribute()
    status_message = UnicodeAttribute(null=True)
    generation = NumberAttribute(default=1)
    observed_generation = NumberAttribute(default=0)
    deployed_version_id = NumberAttribute(null=True)
    deployed_replicas = NumberAttribute(null=True)
    follow_latest = NumberAttribute(default=0)
    predict_token_sha256 = UnicodeAttribute(null=True)
    rollout = JSONAttribute(null=True)  # domain.rollouts.Rollout
    shadow = JSONAttribute(null=True)  # domain.rollouts.Shadow
    released = NumberAttribute(default=0)  # 1: a FAILED record that gave back its version's count
    status_changed_at = UTCDateTimeAttribute(null=True)
    created_at = UTCDateTimeAttribute()
    updated_at = UTCDateTimeAttribute()
    ttl = TTLAttribute(null=True)
    owner_index = OwnerIndex()
    model_index = ModelChildrenIndex()


class MetricsBaselineRecord(Record):
    """The last scrape of one release's model servers: cumulative counters by pod (Counters JSON)."""

    Meta = _Meta  # type: ignore[assignment]
    deployment_id = NumberAttribute()
    release = UnicodeAttribute()
    sampled_at = NumberAttribute()  # epoch seconds
    pods = JSONAttribute()
    ttl = TTLAttribute(null=True)


class MetricsSampleRecord(Record):
    """What one release's model servers did between two scrapes (Counters JSON, summed over pods)."""

    Meta = _Meta  # type: ignore[assignment]
    deployment_id = NumberAttribute()
    release = UnicodeAttribute()
    sampled_at = NumberAttribute()
    counters = JSONAttribute()
    replicas_ready = NumberAttribute(default=0)
    ttl = TTLAttribute(null=True)


ALL_RECORDS: tuple[type[Record], ...] = (
    Record, GuardRecord, CounterRecord, UserRecord, ApiKeyRecord, ModelRecord, VersionRecord, DeploymentRecord,
    MetricsBaselineRecord, MetricsSampleRecord,
)


@dataclass(frozen=True)
class TableRecords:
    """One table's record classes (see the module's docstring)."""

    Record: type[Record]
    Guard: type[GuardRecord]
    Counter: type[CounterRecord]
    User: type[UserRecord]
    ApiKey: type[ApiKeyRecord]
    Model: type[ModelRecord]
    Version: type[VersionRecord]
    Deployment: type[DeploymentRecord]
    MetricsBaseline: type[MetricsBaselineRecord]
    MetricsSample: type[MetricsSampleRecord]


def bind(settings: Settings) -> TableRecords:
    """The record classes of the table ``settings`` names (the same classes for the same table)."""
    return _bound(settings.table_name, settings.aws_region, settings.dynamodb_endpoint)


@cache
def _bound(table_name: str, region: str, host: str | None) -> TableRecords:
    def subclass(shape: type[Any]) -> Any:
        meta = type("Meta", (_Meta,), {"table_name": table_name, "region": region, "host": host})
        return type(shape.__name__, (shape,), {"Meta": meta, "__module__": __name__})

    return TableRecords(*(subclass(shape) for shape in ALL_RECORDS))


def ensure_table(settings: Settings, *, wait: bool = True) -> bool:
    """Create the table (with stream, indexes and TTL) if it does not exist. True if created.

    Used by the local platform and the tests; in AWS, template.yaml creates the table.
    """
    table = bind(settings).Record
    if table.exists():
        return False
    table.create_table(wait=wait)
    client: Any = table._get_connection().connection.client
    client.update_time_to_live(
        TableName=settings.table_name,
        TimeToLiveSpecification={"Enabled": True, "AttributeName": schema.TTL_ATTRIBUTE},
    )
    return True

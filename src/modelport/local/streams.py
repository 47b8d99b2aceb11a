"""The DynamoDB Streams event source, emulated as Lambda runs it: poll the table's stream, drop
what the FilterCriteria do not match, hand Lambda-shaped batches to the same handler, and honour
what template.yaml declares (batch size, ReportBatchItemFailures, retries, bisect on error, the
on-failure queue). Used by the local platform and the integration tests, on DynamoDB Local or
moto: only the stream API is needed.

Where it reads from: each shard is read from the last record it returned, through a fresh
``AT_SEQUENCE_NUMBER`` iterator on every poll (that record, seen again, is dropped by its
``eventID``), not by following ``NextShardIterator``. Followed iterators go deaf on moto: a
cancelled TransactWriteItems makes moto put the table back from a copy taken before the
transaction, stream included, so an iterator opened earlier reads a shard that no longer
receives records (and has seen a phantom record of the cancelled write: harmless, the deployer
reads the record itself, which does not exist). A fresh iterator reads the table's current shard;
when the record at the remembered position is another one (moto reuses the phantom's sequence
number), it and everything after it are new. On DynamoDB Local the same reading gives exactly
the records a followed iterator would. ``LATEST`` is read as "from the end as it is at the first
look", so that position is a record too; a remembered record trimmed away (24 hours) restarts at
``TRIM_HORIZON``.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import boto3
from aws_lambda_powertools import Logger

from modelport.local.template import TemplateConfig, load_template

logger = Logger(service="modelport")

Handler = Callable[[dict[str, Any], Any], Any]


class LocalLambdaContext:
    """What a handler reads from Lambda's context object."""

    def __init__(self, function_name: str, timeout_seconds: float, memory_mb: int = 512) -> None:
        self.function_name = function_name
        self.function_version = "$LATEST"
        self.memory_limit_in_mb = memory_mb
        self.invoked_function_arn = f"arn:aws:lambda:local:000000000000:function:{function_name}"
        self.aws_request_id = str(uuid.uuid4())
        self.log_group_name = f"/aws/lambda/{function_name}"
        self.log_stream_name = "local"
        self._deadline = time.monotonic() + timeout_seconds

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self._deadline - time.monotonic()) * 1000))


# ------------------------------------------------------------------------- filter patterns
def _matches_value(rules: list[Any], value: Any, present: bool) -> bool:
    for rule in rules:
        if isinstance(rule, dict):
            if "exists" in rule and rule["exists"] == present:
                return True
            if not present:
                continue
            if "prefix" in rule and isinstance(value, str) and value.startswith(rule["prefix"]):
                return True
            if "anything-but" in rule:
                excluded = rule["anything-but"]
                excluded = excluded if isinstance(excluded, list) else [excluded]
                if value not in excluded:
                    return True
        elif present and value == rule:
            return True
    return False


def matches_pattern(pattern: Mapping[str, Any], event: Mapping[str, Any]) -> bool:
    """EventBridge-style pattern matching, the subset Lambda's FilterCriteria use here."""
    for key, rule in pattern.items():
        present = key in event
        value = event.get(key)
        if isinstance(rule, Mapping):
            if not present or not isinstance(value, Mapping) or not matches_pattern(rule, value):
                return False
        elif not _matches_value(list(rule), value, present):
            return False
    return True


def passes_filters(patterns: list[Mapping[str, Any]], record: Mapping[str, Any]) -> bool:
    return not patterns or any(matches_pattern(p, record) for p in patterns)


# ------------------------------------------------------------------------- the poller
@dataclass
class StreamSourceConfig:
    """The event-source mapping's settings (from template.yaml through modelport.local.template)."""

    batch_size: int = 100
    filter_patterns: tuple[Mapping[str, Any], ...] = ()
    report_batch_item_failures: bool = True
    bisect_batch_on_function_error: bool = False
    maximum_retry_attempts: int = -1  # -1: until the record expires
    function_timeout_seconds: float = 900
    function_name: str = "deployer"
    starting_position: str = "TRIM_HORIZON"

    @classmethod
    def from_template(
        cls, function: str = "deployer", template: TemplateConfig | None = None, **overrides: Any
    ) -> StreamSourceConfig:
        """The settings template.yaml (``template``, else the source tree's) declares for the
        function's stream event source."""
        fn = (template or load_template()).function(function)
        source = fn.event_source
        if source is None or source.type != "DynamoDB":
            raise ValueError(f"{function} has no DynamoDB stream event source in template.yaml")
        values: dict[str, Any] = {
            "batch_size": source.batch_size or 100,
            "filter_patterns": tuple(source.filter_patterns),
            "report_batch_item_failures": source.report_batch_item_failures,
            "bisect_batch_on_function_error": source.bisect_batch_on_function_error,
            "maximum_retry_attempts": -1 if source.maximum_retry_attempts is None else source.maximum_retry_attempts,
            "function_timeout_seconds": fn.timeout_seconds,
            "function_name": function,
            "starting_position": source.starting_position or "TRIM_HORIZON",
        }
        values.update(overrides)
        return cls(**values)


class StreamPoller:
    def __init__(
        self, *, table_name: str, handler: Handler, config: StreamSourceConfig,
        endpoint_url: str | None = None, region: str = "us-east-1", dlq_url: str | None = None,
        sqs_endpoint_url: str | None = None, poll_interval: float = 0.1, retry_delay: float = 0.2,
    ) -> None:
        self.table_name = table_name
        self.handler = handler
        self.config = config
        kwargs: dict[str, Any] = {"region_name": region}
        if endpoint_url:
            kwargs["endpoint_url"] = endpoint_url
        self._dynamodb = boto3.client("dynamodb", **kwargs)
        self._streams = boto3.client("dynamodbstreams", **kwargs)
        self._sqs = boto3.client("sqs", region_name=region, endpoint_url=sqs_endpoint_url) if dlq_url else None
        self.dlq_url = dlq_url
        self.poll_interval = poll_interval
        self.retry_delay = retry_delay
        self._iterators: dict[str, str | None] = {}
        self._last: dict[str, tuple[str, str]] = {}  # shard -> (sequence number, eventID) last read
        self._done: set[str] = set()
        self._stream_arn: str | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.delivered = 0
        self.dead_lettered = 0

    # -- shards
    def _arn(self) -> str:
        if self._stream_arn is None:
            table = self._dynamodb.describe_table(TableName=self.table_name)["Table"]
            self._stream_arn = table["LatestStreamArn"]
        return self._stream_arn

    def _refresh_shards(self) -> None:
        arn = self._arn()
        shards: list[dict[str, Any]] = []
        start: str | None = None
        while True:
            kwargs = {"StreamArn": arn, **({"ExclusiveStartShardId": start} if start else {})}
            description = self._streams.describe_stream(**kwargs)["StreamDescription"]
            shards += description.get("Shards", [])
            start = description.get("LastEvaluatedShardId")
            if not start:
                break
        first_look = not self._iterators and not self._done
        for shard in shards:
            shard_id = shard["ShardId"]
            if shard_id in self._iterators or shard_id in self._done:
                continue
            self._iterators[shard_id] = self._streams.get_shard_iterator(
                StreamArn=arn, ShardId=shard_id, ShardIteratorType="TRIM_HORIZON"
            )["ShardIterator"]
            if first_look and self.config.starting_position == "LATEST":
                self._skip_to_end(shard_id)

    def _skip_to_end(self, shard_id: str) -> None:
        """Remember the shard's last record as it is now, delivering nothing (``LATEST``)."""
        while (iterator := self._iterators.get(shard_id)) is not None:
            records, next_iterator = self._read(shard_id, iterator)
            self._iterators[shard_id] = next_iterator
            if not records:
                return

    def _position(self, shard_id: str) -> str | None:
        """A fresh iterator at the last record read from the shard, else the one kept."""
        last = self._last.get(shard_id)
        if last is None:
            return self._iterators[shard_id]
        try:
            return str(self._streams.get_shard_iterator(
                StreamArn=self._arn(), ShardId=shard_id, ShardIteratorType="AT_SEQUENCE_NUMBER",
                SequenceNumber=last[0],
            )["ShardIterator"])
        except self._streams.exceptions.TrimmedDataAccessException:
            logger.warning("stream records were trimmed before they were read; reading from the oldest kept")
            del self._last[shard_id]
            return str(self._streams.get_shard_iterator(
                StreamArn=self._arn(), ShardId=shard_id, ShardIteratorType="TRIM_HORIZON",
            )["ShardIterator"])

    def _read(self, shard_id: str, iterator: str) -> tuple[list[dict[str, Any]], str | None]:
        """The shard's records after the last one read (that one dropped if seen again)."""
        answer = self._streams.get_records(ShardIterator=iterator, Limit=1000)
        records = answer.get("Records", [])
        last = self._last.get(shard_id)
        if last is not None and records and records[0].get("eventID") == last[1]:
            records = records[1:]
        if records:
            self._last[shard_id] = (records[-1]["dynamodb"]["SequenceNumber"], records[-1].get("eventID", ""))
        return records, answer.get("NextShardIterator")

    # -- polling
    def run_once(self) -> int:
        """Read every shard once, deliver what passes the filters; returns records delivered."""
        self._refresh_shards()
        delivered = 0
        for shard_id in list(self._iterators):
            iterator = self._position(shard_id)
            if iterator is None:
                continue
            read, next_iterator = self._read(shard_id, iterator)
            records = [self._lambda_shape(r) for r in read]
            records = [r for r in records if passes_filters(list(self.config.filter_patterns), r)]
            for start in range(0, len(records), self.config.batch_size):
                batch = records[start : start + self.config.batch_size]
                self._deliver(batch)
                delivered += len(batch)
            if next_iterator is None:
                self._done.add(shard_id)
                del self._iterators[shard_id]
            else:
                self._iterators[shard_id] = next_iterator
        self.delivered += delivered
        return delivered

    def _lambda_shape(self, record: dict[str, Any]) -> dict[str, Any]:
        shaped = dict(record)
        shaped["eventSourceARN"] = self._arn()
        shaped.setdefault("eventSource", "aws:dynamodb")
        shaped.setdefault("awsRegion", "us-east-1")
        dynamodb = dict(shaped.get("dynamodb", {}))
        created = dynamodb.get("ApproximateCreationDateTime")
        if created is not None and not isinstance(created, int | float):
            dynamodb["ApproximateCreationDateTime"] = int(created.timestamp())
        shaped["dynamodb"] = dynamodb
        return shaped

    def _invoke(self, batch: list[dict[str, Any]]) -> tuple[list[str], bool]:
        """(failed sequence numbers, whether the function itself raised)."""
        context = LocalLambdaContext(self.config.function_name, self.config.function_timeout_seconds)
        try:
            response = self.handler({"Records": batch}, context)
        except Exception:  # noqa: BLE001 - a function error fails the whole batch, as in Lambda
            logger.exception("stream handler raised; the batch will be retried")
            return [batch[0]["dynamodb"]["SequenceNumber"]], True
        if not self.config.report_batch_item_failures:
            return [], False
        failures = [str(f.get("itemIdentifier")) for f in (response or {}).get("batchItemFailures", [])]
        return failures, False

    def _deliver(self, batch: list[dict[str, Any]], attempts: int = 0) -> None:
        pending = batch
        while pending and not self._stop.is_set():
            failed, raised = self._invoke(pending)
            if not failed:
                return
            sequences = [r["dynamodb"]["SequenceNumber"] for r in pending]
            positions = [sequences.index(s) for s in failed if s in sequences]
            pending = pending[min(positions):] if positions else pending  # retry from the first failure
            attempts += 1
            limit = self.config.maximum_retry_attempts
            if raised and self.config.bisect_batch_on_function_error and len(pending) > 1:
                half = len(pending) // 2
                self._deliver(pending[:half], attempts)
                self._deliver(pending[half:], attempts)
                return
            if 0 <= limit < attempts:
                self._dead_letter(pending, attempts)
                return
            self._stop.wait(min(self.retry_delay * 2 ** min(attempts, 5), 5.0))

    def _dead_letter(self, records: list[dict[str, Any]], attempts: int) -> None:
        self.dead_lettered += len(records)
        logger.error("stream records failed past the retries; sent to the on-failure destination",
                     extra={"count": len(records), "attempts": attempts})
        if self._sqs is None or self.dlq_url is None:
            return
        sequences = [r["dynamodb"]["SequenceNumber"] for r in records]
        body = {
            "requestContext": {"condition": "RetryAttemptsExhausted", "approximateInvokeCount": attempts},
            "DDBStreamBatchInfo": {
                "streamArn": self._arn(), "batchSize": len(records),
                "startSequenceNumber": sequences[0], "endSequenceNumber": sequences[-1],
            },
            "records": records,
        }
        self._sqs.send_message(QueueUrl=self.dlq_url, MessageBody=json.dumps(body, default=str))

    # -- background loop
    def start(self) -> StreamPoller:
        self._thread = threading.Thread(target=self._loop, name=f"stream-{self.table_name}", daemon=True)
        self._thread.start()
        return self

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                if self.run_once() == 0:
                    self._stop.wait(self.poll_interval)
            except Exception:  # noqa: BLE001 - keep polling through a hiccup of the stand-in
                logger.exception("stream poll failed; polling again")
                self._stop.wait(1.0)

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)

"""Lambda's SQS event source, emulated: poll a queue, call a handler with Lambda-shaped batches.

Used by the tests and by the local platform (``modelport up``) to run ``functions/artifacts``
exactly as Lambda would run it behind the uploads queue:

    source = SqsEventSource(sqs, queue_url, handler, batch_size=10, function_name="artifacts")
    source.run_once()          # one receive -> one handler call -> delete what succeeded
    source.start(); ...; source.stop()   # or a background thread, stopped cleanly

- records carry Lambda's fields: ``messageId``, ``receiptHandle``, ``body``, ``attributes`` (with
  ``ApproximateReceiveCount``), ``messageAttributes`` (Lambda's camelCase shape), ``md5OfBody``,
  ``eventSource`` ``aws:sqs``, ``eventSourceARN``, ``awsRegion``;
- partial batch responses (``ReportBatchItemFailures``): the records named in
  ``batchItemFailures`` stay on the queue, the others are deleted; a handler that raises fails the
  whole batch; failed messages come back when their visibility timeout ends (``retry_after``
  shortens it, as tests want);
- the queue's redrive policy: when ``max_receive_count`` and ``dead_letter_url`` are given, a
  message received more often than that is moved to the dead-letter queue by the poller itself
  (whether or not the stand-in does it).

:func:`setup_upload_events` creates the uploads queue with its dead-letter queue and redrive
policy and points the bucket's ``s3:ObjectCreated:*`` notifications (prefix ``models/``) at it,
as template.yaml does in AWS.
"""

from __future__ import annotations

import json
import logging
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger("modelport.local.sqs")

Handler = Callable[[dict[str, Any], Any], Any]


@dataclass
class UploadQueues:
    queue_url: str
    queue_arn: str
    dead_letter_url: str
    dead_letter_arn: str
    max_receive_count: int


def _arn(sqs: Any, url: str) -> str:
    return str(sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"])


def ensure_queues(
    sqs: Any, name: str, *, max_receive_count: int = 5, visibility_timeout: int = 720,
) -> UploadQueues:
    """The queue and its dead-letter queue ``{name}-dlq``, with the redrive policy (idempotent)."""
    dlq_url = sqs.create_queue(QueueName=f"{name}-dlq")["QueueUrl"]
    dlq_arn = _arn(sqs, dlq_url)
    redrive = json.dumps({"deadLetterTargetArn": dlq_arn, "maxReceiveCount": str(max_receive_count)})
    url = sqs.create_queue(
        QueueName=name,
        Attributes={"VisibilityTimeout": str(visibility_timeout), "RedrivePolicy": redrive},
    )["QueueUrl"]
    return UploadQueues(url, _arn(sqs, url), dlq_url, dlq_arn, max_receive_count)


def connect_bucket(s3: Any, bucket: str, queue_arn: str, *, prefix: str = "models/") -> None:
    """The bucket's ObjectCreated notifications under ``prefix`` go to the queue."""
    s3.put_bucket_notification_configuration(
        Bucket=bucket,
        NotificationConfiguration={
            "QueueConfigurations": [
                {
                    "Id": "modelport-uploads",
                    "QueueArn": queue_arn,
                    "Events": ["s3:ObjectCreated:*"],
                    "Filter": {"Key": {"FilterRules": [{"Name": "prefix", "Value": prefix}]}},
                }
            ]
        },
    )


def setup_upload_events(
    s3: Any, sqs: Any, bucket: str, queue_name: str, *, max_receive_count: int = 5, visibility_timeout: int = 720,
    prefix: str = "models/",
) -> UploadQueues:
    queues = ensure_queues(sqs, queue_name, max_receive_count=max_receive_count, visibility_timeout=visibility_timeout)
    connect_bucket(s3, bucket, queues.queue_arn, prefix=prefix)
    return queues


@dataclass
class LambdaContext:
    """The parts of Lambda's context object that handlers and Powertools read."""

    function_name: str = "local"
    memory_limit_in_mb: int = 1024
    timeout_ms: int = 120_000
    aws_request_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    invoked_function_arn: str = ""
    function_version: str = "$LATEST"
    log_group_name: str = ""
    log_stream_name: str = ""

    def get_remaining_time_in_millis(self) -> int:
        return self.timeout_ms


@dataclass
class BatchResult:
    received: int = 0
    succeeded: int = 0
    failed: int = 0
    dead_lettered: int = 0
    handler_error: str | None = None


def _message_attributes(raw: dict[str, Any]) -> dict[str, Any]:
    shaped: dict[str, Any] = {}
    for name, value in (raw or {}).items():
        shaped[name] = {
            "stringValue": value.get("StringValue"),
            "binaryValue": value.get("BinaryValue"),
            "stringListValues": value.get("StringListValues", []),
            "binaryListValues": value.get("BinaryListValues", []),
            "dataType": value.get("DataType", "String"),
        }
        shaped[name] = {k: v for k, v in shaped[name].items() if v is not None}
    return shaped


class SqsEventSource:
    """One event source mapping: queue -> handler(event, context)."""

    def __init__(
        self, sqs: Any, queue_url: str, handler: Handler, *, batch_size: int = 10, wait_seconds: int = 1,
        function_name: str = "local", region: str | None = None, max_receive_count: int | None = None,
        dead_letter_url: str | None = None, retry_after: int | None = None,
    ) -> None:
        if not 1 <= batch_size <= 10:
            raise ValueError("batch_size must be between 1 and 10 (one ReceiveMessage call)")
        self.sqs = sqs
        self.queue_url = queue_url
        self.handler = handler
        self.batch_size = batch_size
        self.wait_seconds = wait_seconds
        self.function_name = function_name
        self.region = region or sqs.meta.region_name
        self.max_receive_count = max_receive_count
        self.dead_letter_url = dead_letter_url
        self.retry_after = retry_after
        self.queue_arn = _arn(sqs, queue_url)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.batches = 0

    # ------------------------------------------------------------------ one poll
    def _record(self, message: dict[str, Any]) -> dict[str, Any]:
        return {
            "messageId": message["MessageId"],
            "receiptHandle": message["ReceiptHandle"],
            "body": message["Body"],
            "attributes": dict(message.get("Attributes") or {}),
            "messageAttributes": _message_attributes(message.get("MessageAttributes") or {}),
            "md5OfBody": message.get("MD5OfBody", ""),
            "eventSource": "aws:sqs",
            "eventSourceARN": self.queue_arn,
            "awsRegion": self.region,
        }

    def _dead_letter(self, message: dict[str, Any]) -> bool:
        if self.max_receive_count is None or self.dead_letter_url is None:
            return False
        count = int((message.get("Attributes") or {}).get("ApproximateReceiveCount", "1"))
        if count <= self.max_receive_count:
            return False
        attrs = message.get("MessageAttributes") or {}
        kwargs: dict[str, Any] = {"QueueUrl": self.dead_letter_url, "MessageBody": message["Body"]}
        if attrs:
            kwargs["MessageAttributes"] = attrs
        self.sqs.send_message(**kwargs)
        self.sqs.delete_message(QueueUrl=self.queue_url, ReceiptHandle=message["ReceiptHandle"])
        log.warning("message %s moved to the dead-letter queue after %d receives", message["MessageId"], count)
        return True

    def run_once(self, wait_seconds: int | None = None) -> BatchResult:
        """Receive one batch, call the handler once, delete what succeeded."""
        response = self.sqs.receive_message(
            QueueUrl=self.queue_url, MaxNumberOfMessages=self.batch_size,
            WaitTimeSeconds=self.wait_seconds if wait_seconds is None else wait_seconds,
            AttributeNames=["All"], MessageAttributeNames=["All"],
        )
        result = BatchResult()
        messages = [m for m in response.get("Messages", []) if not self._dead_letter(m)]
        result.dead_lettered = len(response.get("Messages", [])) - len(messages)
        result.received = len(messages)
        if not messages:
            return result
        event = {"Records": [self._record(m) for m in messages]}
        context = LambdaContext(
            function_name=self.function_name,
            invoked_function_arn=f"arn:aws:lambda:{self.region}:000000000000:function:{self.function_name}",
        )
        failed_ids: set[str]
        try:
            answer = self.handler(event, context)
            failures = (answer or {}).get("batchItemFailures", []) if isinstance(answer, dict) else []
            failed_ids = {str(f.get("itemIdentifier")) for f in failures}
        except Exception as exc:  # a handler that raises fails the whole batch, as in Lambda
            log.exception("handler %s failed the whole batch", self.function_name)
            result.handler_error = f"{type(exc).__name__}: {exc}"
            failed_ids = {m["MessageId"] for m in messages}
        done = [m for m in messages if m["MessageId"] not in failed_ids]
        for start in range(0, len(done), 10):
            chunk = done[start : start + 10]
            self.sqs.delete_message_batch(
                QueueUrl=self.queue_url,
                Entries=[{"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(chunk)],
            )
        if self.retry_after is not None:
            for message in messages:
                if message["MessageId"] in failed_ids:
                    self.sqs.change_message_visibility(
                        QueueUrl=self.queue_url, ReceiptHandle=message["ReceiptHandle"],
                        VisibilityTimeout=self.retry_after,
                    )
        result.succeeded = len(done)
        result.failed = len(messages) - len(done)
        self.batches += 1
        return result

    # ------------------------------------------------------------------ background loop
    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.run_once()
            except Exception:  # the queue stand-in unreachable: keep polling until stopped
                log.exception("polling %s failed", self.queue_url)
                self._stop.wait(1.0)

    def start(self) -> SqsEventSource:
        if self._thread is not None and self._thread.is_alive():
            return self
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, name=f"sqs-{self.function_name}", daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout: float = 10.0) -> None:
        """Ask the loop to stop and wait for the batch in hand to finish (at most one long poll)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

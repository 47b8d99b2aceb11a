"""How events reach the functions on one machine, as the event sources of template.yaml do in AWS.

- the table's stream -> ``functions/deployer`` (``streams.StreamPoller``);
- the uploads queue (with its dead-letter queue and redrive policy) -> ``functions/artifacts``
  (``sqs.SqsEventSource``), fed by the bucket's ObjectCreated notifications (``models/``), or,
  for an S3 server that sends none (SeaweedFS), by ``BucketWatcher``, which lists the bucket and
  sends the same events;
- batch sizes, filters, retries and timeouts come from template.yaml (``TemplateConfig``).

``EventSources.start(deployer, artifacts)`` creates the bucket and the queues (idempotent) and
starts the pollers; ``stop()`` stops them in reverse order.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote_plus

import boto3

from modelport.artifacts.storage import ObjectStore
from modelport.local.sqs import Handler, SqsEventSource, ensure_queues, setup_upload_events
from modelport.local.stand_ins import Endpoints
from modelport.local.streams import StreamPoller, StreamSourceConfig
from modelport.local.template import TemplateConfig
from modelport.settings import Settings

logger = logging.getLogger("modelport.local.events")

UPLOADS_QUEUE = "modelport-uploads"


class BucketWatcher:
    """For an S3 server that sends no notifications (SeaweedFS): list ``prefix`` and send the queue
    an S3 ObjectCreated event for each new or changed object, as S3 would."""

    def __init__(self, s3: Any, sqs: Any, bucket: str, queue_url: str, *, prefix: str = "models/",
                 interval: float = 0.3) -> None:
        self.s3, self.sqs, self.bucket, self.queue_url = s3, sqs, bucket, queue_url
        self.prefix, self.interval = prefix, interval
        self.seen: dict[str, str] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="bucket-watcher", daemon=True)

    def prime(self) -> None:
        """Objects already there were announced before (the artifacts handler is idempotent anyway)."""
        self.seen = self._listing()

    def _listing(self) -> dict[str, str]:
        found: dict[str, str] = {}
        for page in self.s3.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=self.prefix):
            for obj in page.get("Contents", []):
                found[obj["Key"]] = f"{obj.get('ETag', '')}|{obj.get('Size', 0)}"
        return found

    def run_once(self) -> int:
        current = self._listing()
        sent = 0
        for key, tag in current.items():
            if self.seen.get(key) == tag:
                continue
            etag, size = tag.split("|")
            record = {
                "eventVersion": "2.1", "eventSource": "aws:s3", "awsRegion": "us-east-1",
                "eventTime": datetime.now(UTC).isoformat(), "eventName": "ObjectCreated:Put",
                "s3": {"s3SchemaVersion": "1.0", "bucket": {"name": self.bucket, "arn": f"arn:aws:s3:::{self.bucket}"},
                       "object": {"key": quote_plus(key, safe="/"), "size": int(size), "eTag": etag.strip('"')}},
            }
            self.sqs.send_message(QueueUrl=self.queue_url, MessageBody=json.dumps({"Records": [record]}))
            sent += 1
        self.seen = current
        return sent

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.run_once()
            except Exception:  # noqa: BLE001 - the store briefly unreachable: try again
                logger.debug("bucket listing failed", exc_info=True)

    def start(self) -> BucketWatcher:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)


class EventSources:
    def __init__(self, settings: Settings, endpoints: Endpoints, template: TemplateConfig, *,
                 from_stream_end: bool = False) -> None:
        """``from_stream_end``: a persisted table's stream still holds the last run's records; start
        at its end (what happened before is converged by the restore and the sweep at start)."""
        self.settings, self.endpoints, self.template = settings, endpoints, template
        self.from_stream_end = from_stream_end
        self.s3 = boto3.client("s3", endpoint_url=settings.s3_endpoint_url, region_name=settings.aws_region)
        self.sqs = boto3.client("sqs", endpoint_url=endpoints.sqs, region_name=settings.aws_region)
        self._stops: list[Callable[[], None]] = []

    def start(self, *, deployer: Handler, artifacts: Handler) -> None:
        settings, bucket = self.settings, self.settings.minio_bucket_name
        ObjectStore(settings, self.s3).ensure_bucket()
        source = self.template.function("artifacts").event_source
        queue = source.queue if source is not None else None
        max_receive = (queue.max_receive_count if queue else None) or 5
        visibility = queue.visibility_timeout_seconds if queue else 720
        if self.endpoints.notifies:
            queues = setup_upload_events(self.s3, self.sqs, bucket, UPLOADS_QUEUE,
                                         max_receive_count=max_receive, visibility_timeout=visibility)
        else:
            queues = ensure_queues(self.sqs, UPLOADS_QUEUE, max_receive_count=max_receive,
                                   visibility_timeout=visibility)
        position = {"starting_position": "LATEST"} if self.from_stream_end else {}
        stream = StreamPoller(table_name=settings.table_name, handler=deployer,
                              config=StreamSourceConfig.from_template("deployer", self.template, **position),
                              endpoint_url=self.endpoints.dynamodb)
        stream.start()
        self._stops.append(stream.stop)
        uploads = SqsEventSource(
            self.sqs, queues.queue_url, artifacts, batch_size=min(10, (source.batch_size if source else None) or 10),
            wait_seconds=1, function_name="artifacts", max_receive_count=queues.max_receive_count,
            dead_letter_url=queues.dead_letter_url, retry_after=5,
        ).start()
        self._stops.append(uploads.stop)
        if not self.endpoints.notifies:
            watcher = BucketWatcher(self.s3, self.sqs, bucket, queues.queue_url)
            watcher.prime()
            self._stops.append(watcher.start().stop)

    def stop(self) -> None:
        while self._stops:
            self._stops.pop()()

"""ArtifactsFunction: SQS batches of S3 ObjectCreated notifications -> artifact checks, READY or
REJECTED, auto-deploy.

Thin by design: the logic is :class:`modelport.services.artifact_events.ArtifactEvents`. Each SQS record
is one S3 notification (or S3's ``s3:TestEvent``). Permanent conditions (unknown key, deleted
version, rejected model) are handled and the record succeeds; anything raised (S3 or DynamoDB
unreachable) fails only that record (``ReportBatchItemFailures``), so SQS redelivers it and its
redrive policy finally moves it to the dead-letter queue.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType, process_partial_response
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord
from aws_lambda_powertools.utilities.typing import LambdaContext

from modelport.artifacts.storage import ObjectStore
from modelport.services.artifact_events import ArtifactEvents, object_records
from modelport.settings import Settings
from modelport.store.repository import Store

logger = Logger()
metrics = Metrics()
Handler = Callable[[dict[str, Any], LambdaContext], dict[str, Any]]


def build(settings: Settings, *, store: Store | None = None, objects: ObjectStore | None = None) -> Handler:
    """The handler, from explicit dependencies (the local platform passes its own)."""
    logic = ArtifactEvents(store or Store(settings), objects or ObjectStore(settings), settings)
    processor = BatchProcessor(event_type=EventType.SQS)

    def record_handler(record: SQSRecord) -> None:
        logger.set_correlation_id(record.message_id)
        try:
            notification = json.loads(record.body)
        except ValueError:
            notification = None
        if not isinstance(notification, dict):
            logger.warning("not an S3 notification; dropped", extra={"message_id": record.message_id})
            metrics.add_metric(name="MalformedMessages", unit=MetricUnit.Count, value=1)
            return
        for created in object_records(notification):
            outcome = logic.handle(created)
            metrics.add_metric(name=f"Artifacts{outcome.action.capitalize()}", unit=MetricUnit.Count, value=1)
            if outcome.deployments_created or outcome.deployments_moved:
                metrics.add_metric(
                    name="AutoDeploys", unit=MetricUnit.Count,
                    value=len(outcome.deployments_created) + len(outcome.deployments_moved),
                )

    @logger.inject_lambda_context
    @metrics.log_metrics
    def handle(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
        return dict(
            process_partial_response(event=event, record_handler=record_handler, processor=processor, context=context)
        )

    return handle


_handler: Handler | None = None


def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    """Lambda's entry point: settings from the environment, built on the first invocation."""
    global _handler
    if _handler is None:
        _handler = build(Settings())
    return _handler(event, context)

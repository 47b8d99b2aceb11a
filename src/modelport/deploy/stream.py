"""The deployer's handling of one DynamoDB stream batch (Lambda and the local poller alike).

Records of one batch are reconciled concurrently, at most ``DEPLOYER_CONCURRENCY`` at a time,
and the records of one deployment one after another (the second finds the first's result and
has nothing left to do). Powertools' batch utility reports the records that failed, so Lambda
retries from there; a record whose install could outlive the function is one of them.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from typing import Any

from aws_lambda_powertools import Logger
from aws_lambda_powertools.utilities.batch import AsyncBatchProcessor, EventType, async_process_partial_response
from aws_lambda_powertools.utilities.data_classes.dynamo_db_stream_event import (
    DynamoDBRecord,
    DynamoDBRecordEventName,
)

from modelport.deploy.reconcile import Outcome, Reconciler
from modelport.store.schema import DEPLOYMENT_PREFIX, PK

logger = Logger(service="modelport")


def deployment_id_of(record: DynamoDBRecord) -> int | None:
    """The deployment a stream record is about; None for any other record type."""
    key = str((record.dynamodb.keys if record.dynamodb else {}).get(PK, ""))
    if not key.startswith(DEPLOYMENT_PREFIX):
        return None
    suffix = key[len(DEPLOYMENT_PREFIX):]
    return int(suffix) if suffix.isdigit() else None


def handle_batch(event: dict[str, Any], context: Any, reconciler: Reconciler, concurrency: int) -> dict[str, Any]:
    semaphore = asyncio.Semaphore(max(1, concurrency))
    locks: defaultdict[int, asyncio.Lock] = defaultdict(asyncio.Lock)

    def seconds_left() -> float | None:
        getter = getattr(context, "get_remaining_time_in_millis", None)
        return getter() / 1000 if getter else None

    async def record_handler(record: DynamoDBRecord) -> str:
        deployment_id = deployment_id_of(record)
        if deployment_id is None:
            return "ignored"  # the FilterCriteria should have kept it away
        async with locks[deployment_id], semaphore:
            outcome: Outcome | None
            if record.event_name == DynamoDBRecordEventName.REMOVE:
                old = record.dynamodb.old_image if record.dynamodb else {}
                if not old.get("namespace") or not old.get("k8s_service_name"):
                    return "nothing"
                outcome = await asyncio.to_thread(
                    reconciler.remove_leftover, str(old["namespace"]), str(old["k8s_service_name"])
                )
            else:
                outcome = await asyncio.to_thread(reconciler.reconcile, deployment_id, seconds_left=seconds_left())
            if outcome is not None:
                detail = f": {outcome.message}" if outcome.message else ""
                logger.info(f"deployment {deployment_id} {outcome.action.value}{detail}",
                            extra={"deployment_id": deployment_id, "action": outcome.action.value})
            return outcome.action.value if outcome else "nothing"

    # every record failing is still a partial-failure answer (retry from the first), not an exception
    processor = AsyncBatchProcessor(event_type=EventType.DynamoDBStreams, raise_on_entire_batch_failure=False)
    response: dict[str, Any] = async_process_partial_response(  # type: ignore[assignment]
        event=event, record_handler=record_handler, processor=processor, context=context
    )
    return response

"""DeployerFunction: DynamoDB stream batches of deployment records -> reconcile with the cluster.

Thin: parsing, concurrency and partial batch failures are in ``modelport.deploy.stream``, the
decisions in ``modelport.deploy.reconcile``. The table is the only meeting point with the API.
"""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.utilities.typing import LambdaContext

from modelport.deploy.reconcile import Reconciler
from modelport.deploy.runtime import get_driver
from modelport.deploy.stream import handle_batch
from modelport.settings import get_settings
from modelport.store.repository import Store

logger = Logger()
metrics = Metrics()
settings = get_settings()
store = Store(settings)


@logger.inject_lambda_context
@metrics.log_metrics
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    reconciler = Reconciler(store, get_driver(settings), settings)
    response = handle_batch(event, context, reconciler, settings.deployer_concurrency)
    metrics.add_metric(name="RecordsFailed", unit="Count", value=len(response.get("batchItemFailures", [])))
    return response

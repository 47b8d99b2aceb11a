"""DeployerFunction: DynamoDB stream batches of deployment records -> reconcile with the cluster.

Thin: parsing, concurrency and partial batch failures are in ``modelport.deploy.stream``, the
decisions in ``modelport.deploy.reconcile``. The table is the only meeting point with the API.

``build(settings, ...)`` makes the handler from explicit dependencies (the local platform passes
its own store and driver); ``handler`` is Lambda's entry point: settings from the environment,
built on the first invocation and kept for the container's life.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.utilities.typing import LambdaContext

from modelport.deploy.driver import ClusterDriver
from modelport.deploy.reconcile import Reconciler
from modelport.deploy.runtime import build_driver
from modelport.deploy.stream import handle_batch
from modelport.settings import Settings
from modelport.store.repository import Store

logger = Logger()
metrics = Metrics()
Handler = Callable[[dict[str, Any], LambdaContext], dict[str, Any]]


def build(settings: Settings, *, store: Store | None = None, driver: ClusterDriver | None = None) -> Handler:
    reconciler = Reconciler(store or Store(settings), driver or build_driver(settings), settings)

    @logger.inject_lambda_context
    @metrics.log_metrics
    def handle(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
        response = handle_batch(event, context, reconciler, settings.deployer_concurrency)
        metrics.add_metric(name="RecordsFailed", unit="Count", value=len(response.get("batchItemFailures", [])))
        return response

    return handle


_handler: Handler | None = None


def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    global _handler
    if _handler is None:
        _handler = build(Settings())
    return _handler(event, context)

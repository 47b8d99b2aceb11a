"""ReconcileFunction (scheduled): the sweep. Uninstalls modelport releases that have no record,
re-drives records stuck in a transient status, reinstalls READY records whose release is gone."""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.utilities.typing import LambdaContext

from modelport.deploy.reconcile import sweep
from modelport.deploy.runtime import get_driver
from modelport.settings import get_settings
from modelport.store.repository import Store

logger = Logger()
metrics = Metrics()
settings = get_settings()
store = Store(settings)


@logger.inject_lambda_context
@metrics.log_metrics
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    report = sweep(store, get_driver(settings), settings)
    for line in report.lines():
        logger.info(line)
    metrics.add_metric(name="SweepActions", unit="Count", value=len(report.outcomes))
    return {"actions": report.lines()}

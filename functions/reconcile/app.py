"""ReconcileFunction (scheduled, every minute): samples every live deployment's model-server
metrics (``deploy.metrics``: the dashboard's series, the rollout decisions' figures), takes the
canary decisions (``services.rollouts.evaluate``), then the sweep. Uninstalls modelport releases that have no record,
re-drives records stuck in a transient status, reinstalls READY records whose release is gone.

``build(settings, ...)`` makes the handler from explicit dependencies; ``handler`` is Lambda's
entry point: settings from the environment, built on the first invocation.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.utilities.typing import LambdaContext

from modelport.deploy.driver import ClusterDriver
from modelport.deploy.metrics import sample_all
from modelport.deploy.reconcile import sweep
from modelport.deploy.runtime import build_driver
from modelport.services import rollouts
from modelport.settings import Settings
from modelport.store.repository import Store

logger = Logger()
metrics = Metrics()
Handler = Callable[[dict[str, Any], LambdaContext], dict[str, Any]]


def build(settings: Settings, *, store: Store | None = None, driver: ClusterDriver | None = None) -> Handler:
    table = store or Store(settings)
    cluster = driver or build_driver(settings)

    @logger.inject_lambda_context
    @metrics.log_metrics
    def handle(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
        sampled = sample_all(table, cluster, settings)
        for line in sampled.lines():
            logger.info(line)
        for deployment_id, decision in rollouts.evaluate(table):
            logger.info("canary decision", extra={"deployment_id": deployment_id, "verdict": decision.verdict,
                                                  "reason": decision.reason})
        report = sweep(table, cluster, settings)
        for line in report.lines():
            logger.info(line)
        metrics.add_metric(name="SweepActions", unit="Count", value=len(report.outcomes))
        metrics.add_metric(name="DeploymentsSampled", unit="Count", value=len(sampled.sampled))
        return {"actions": report.lines(), "sampled": sampled.lines()}

    return handle


_handler: Handler | None = None


def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    global _handler
    if _handler is None:
        _handler = build(Settings())
    return _handler(event, context)

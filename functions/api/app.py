"""ApiFunction: API Gateway HTTP API (payload 2.0) -> the FastAPI app through Mangum.

Thin by design: the app, its logic and its settings live in the modelport package (a layer).
Created at import time so that Lambda's init phase pays for it once per container.
"""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.logging import correlation_paths
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.typing import LambdaContext
from mangum import Mangum

from modelport.api.app import create_app

logger = Logger()
metrics = Metrics()
asgi = Mangum(create_app(), lifespan="off", api_gateway_base_path="/")


@logger.inject_lambda_context(correlation_id_path=correlation_paths.API_GATEWAY_HTTP)
@metrics.log_metrics
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    response: dict[str, Any] = asgi(event, context)
    status = int(response.get("statusCode", 500))
    metrics.add_metric(name="Requests", unit=MetricUnit.Count, value=1)
    if status >= 500:
        metrics.add_metric(name="ServerErrors", unit=MetricUnit.Count, value=1)
    elif status >= 400:
        metrics.add_metric(name="ClientErrors", unit=MetricUnit.Count, value=1)
    return response

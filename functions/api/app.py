"""ApiFunction: API Gateway HTTP API (payload 2.0) -> the FastAPI app through Mangum.

Thin by design: the app and its logic live in the modelport package (a layer); the settings are
read from the environment here, the entry point, and passed down. Created at import time so that
Lambda's init phase pays for it once per container (building it does no I/O).
"""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.logging import correlation_paths
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.typing import LambdaContext
from mangum import Mangum

from modelport.api.app import create_app
from modelport.settings import Settings

logger = Logger()
metrics = Metrics()
asgi = Mangum(create_app(Settings()), lifespan="off", api_gateway_base_path="/")


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

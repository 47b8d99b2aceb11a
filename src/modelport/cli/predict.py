"""``modelport predict DEPLOYMENT_ID --data JSON|@file``: one request to the deployment's URL."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

import modelport.cli.output as o
from modelport.cli.app import app
from modelport.cli.client import ApiClient, CliError, ExitCode, handle_errors


def read_data(data: str) -> Any:
    """``--data``: JSON inline, ``@file`` or ``@-`` (stdin). A bare list of rows becomes
    ``{"instances": rows}``; an object with ``instances`` or ``inputs`` is sent as it is."""
    source = "--data"
    text = data
    if data.startswith("@"):
        source = data[1:] or "-"
        try:
            text = sys.stdin.read() if source == "-" else Path(source).read_text(encoding="utf-8")
        except OSError as exc:
            raise CliError(f"cannot read {source}: {exc.strerror or exc}", ExitCode.USAGE) from None
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise CliError(f"{source} is not valid JSON: {exc}", ExitCode.USAGE) from None
    if isinstance(value, dict) and ("instances" in value or "inputs" in value):
        return value
    if isinstance(value, list):
        return {"instances": value}
    raise CliError(f'{source} must be a list of rows, e.g. [[5.1, 3.5, 1.4, 0.2]], or {{"instances": [...]}}',
                   ExitCode.USAGE)


@app.command("predict", epilog=o.EPILOG)
@handle_errors
def predict(
    deployment_id: Annotated[int, typer.Argument(min=1, show_default=False)],
    data: Annotated[str, typer.Option("--data", "-d", help="JSON rows, or @file, or @- for stdin",
                                      show_default=False)],
    proba: Annotated[bool, typer.Option("--proba", help="class probabilities (predict_proba)")] = False,
    token: Annotated[str | None, typer.Option(
        "--token", envvar="MODELPORT_PREDICT_TOKEN", help="the deployment's token, if its URL is protected",
    )] = None,
) -> None:
    """Send rows to a deployment's /predict and print the JSON answer."""
    body = read_data(data)
    with ApiClient.from_config() as api:
        deployment = api.get_deployment(deployment_id)
        try:
            answer = api.predict(deployment["url"], body, proba, token)
        except CliError as exc:
            if deployment.get("status") != "READY":
                exc.message += (f" (deployment {deployment_id} is {deployment.get('status')}; "
                                "it serves once READY: `modelport deploy --wait` or `deployments show`)")
            raise
    o.print_json(answer)

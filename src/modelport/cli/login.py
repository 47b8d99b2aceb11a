"""``modelport login`` (store endpoint and key after checking them) and ``modelport status``."""

from __future__ import annotations

from typing import Annotated, Any

import typer
from rich.markup import escape

import modelport.cli.output as o
from modelport.cli.app import app
from modelport.cli.client import (
    DEFAULT_ENDPOINT,
    ApiClient,
    ApiError,
    CliError,
    ExitCode,
    handle_errors,
    load_config,
    save_config,
    validate_endpoint,
)


def _masked(key: str | None) -> str | None:
    if not key:
        return None
    return key[:7] + "…" if len(key) > 10 else "…"


@app.command("login", epilog=o.EPILOG)
@handle_errors
def login(
    endpoint: Annotated[str | None, typer.Option("--endpoint", "-e", help=f"the API, e.g. {DEFAULT_ENDPOINT}")] = None,
    api_key: Annotated[str | None, typer.Option(
        "--api-key", "-k", help="an API key (from `modelport users create`); asked for when missing",
    )] = None,
) -> None:
    """Check an API key against the endpoint, then store both in the config file (path printed)."""
    current = load_config()
    endpoint = validate_endpoint(endpoint or current.endpoint or DEFAULT_ENDPOINT)
    if not api_key:
        api_key = typer.prompt("API key", hide_input=True).strip()
    if not api_key:
        raise CliError("an API key is needed", ExitCode.USAGE)
    with ApiClient(endpoint, api_key) as api:
        try:
            api.verify_key()
        except ApiError as exc:
            if exc.status == 401:
                raise CliError(f"{endpoint} refused the API key: {exc.message}") from None
            raise
    path = save_config(endpoint, api_key, current.path)
    o.done(f"logged in to {escape(endpoint)}")
    o.out.print(f"config written to {escape(str(path))}", soft_wrap=True)


@app.command("status", epilog=o.EPILOG)
@handle_errors
def status(json_: o.JsonOption = False) -> None:
    """The endpoint, whether it answers, and whether your API key is accepted."""
    config = load_config()
    report: dict[str, Any] = {
        "config": str(config.path), "endpoint": config.endpoint, "api_key": _masked(config.api_key),
        "reachable": False, "server_version": None, "authenticated": False, "owner": None, "error": None,
    }
    exit_code = ExitCode.OK
    if not config.endpoint:
        report["error"] = "no endpoint configured: run `modelport login --endpoint URL --api-key KEY`"
        exit_code = ExitCode.USAGE
    else:
        with ApiClient(config.endpoint, config.api_key) as api:
            try:
                report["server_version"] = api.health().get("version")
                report["reachable"] = True
                if config.api_key:
                    report["owner"] = api.verify_key().get("owner")
                    report["authenticated"] = True
                else:
                    report["error"] = "no API key configured: run `modelport login`"
                    exit_code = ExitCode.USAGE
            except CliError as exc:
                report["error"] = exc.message
                exit_code = exc.exit_code
    if json_:
        o.print_json(report)
    else:
        yes, no = "[green]yes[/green]", "[red]no[/red]"
        o.details("modelport", [
            ("config", escape(report["config"])),
            ("endpoint", o.cell(report["endpoint"])),
            ("reachable", (yes + f" (server {escape(str(report['server_version']))})") if report["reachable"] else no),
            ("api key", o.cell(report["api_key"])),
            ("authenticated", (yes + f" as {escape(str(report['owner']))}") if report["authenticated"] else no),
        ])
        if report["error"]:
            typer.echo(f"error: {report['error']}", err=True)
    raise typer.Exit(int(exit_code))

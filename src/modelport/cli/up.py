"""``modelport up``: the whole platform on this machine, in the foreground (see modelport.local.platform)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from modelport.cli.app import app
from modelport.cli.client import config_path, read_config_file, save_config, update_config


class ConfigKeyBook:
    """The CLI's config file as the platform's key book: the default user's key is reused while
    the file names this endpoint, and written there for commands in other terminals."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def known_key(self, endpoint: str) -> str | None:
        found = read_config_file(self.path)
        same = found.get("endpoint", "").rstrip("/") == endpoint.rstrip("/")
        return found.get("api_key") if same else None

    def save(self, endpoint: str, key: str) -> Path:
        return save_config(endpoint, key, self.path)

    def where(self) -> Path:
        return self.path

    def note_table(self, endpoint: str, table_endpoint: str, table_name: str) -> None:
        update_config(self.path, table_for=endpoint.rstrip("/"), table_endpoint=table_endpoint, table_name=table_name)


@app.command("up")
def up_command(
    port: Annotated[int, typer.Option("--port", help="the API's port")] = 8000,
    gateway_port: Annotated[int, typer.Option(
        "--gateway-port", help="the predict gateway's port (with --kubeconfig: the cluster ingress's, for the URLs)",
    )] = 30080,
    host: Annotated[str, typer.Option("--host", help="interface for the API and the gateway")] = "127.0.0.1",
    state_dir: Annotated[Path, typer.Option("--state-dir", help="state: data, logs, caches")] = Path(".modelport"),
    persist: Annotated[bool, typer.Option(
        "--persist/--in-memory",
        help="keep records, artifacts and deployments in the state directory (DynamoDB Local, SeaweedFS)",
    )] = False,
    ephemeral: Annotated[bool, typer.Option("--ephemeral", help="a throw-away state directory")] = False,
    dynamodb_endpoint: Annotated[str | None, typer.Option("--dynamodb-endpoint", help="use this DynamoDB")] = None,
    s3_endpoint: Annotated[str | None, typer.Option("--s3-endpoint", help="use this S3 / MinIO")] = None,
    driver: Annotated[str | None, typer.Option(
        "--driver", help="local (model servers as processes) or helm; default local, helm with --kubeconfig",
    )] = None,
    kubeconfig: Annotated[str | None, typer.Option("--kubeconfig", help="deploy with Helm to this cluster")] = None,
    demo: Annotated[bool, typer.Option("--demo", help="then train, upload and deploy the iris sample")] = False,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="debug logs")] = False,
) -> None:
    """Run modelport on this machine: API, stand-ins, pollers, model servers, gateway. Ctrl-C stops it all."""
    from modelport.local.foreground import run
    from modelport.local.platform import Options

    chosen = driver or ("helm" if kubeconfig else "local")
    if chosen not in ("local", "helm"):
        typer.echo("error: --driver is local or helm", err=True)
        raise typer.Exit(2)
    if persist and ephemeral:
        typer.echo("error: --persist and --ephemeral exclude each other", err=True)
        raise typer.Exit(2)
    options = Options(
        port=port, gateway_port=gateway_port, host=host, state_dir=state_dir, persist=persist, ephemeral=ephemeral,
        dynamodb_endpoint=dynamodb_endpoint, s3_endpoint=s3_endpoint, driver=chosen, kubeconfig=kubeconfig,
        demo=demo, verbose=verbose, keys=ConfigKeyBook(config_path()),
    )
    raise typer.Exit(run(options))

"""``modelport serve MODEL``: run the model server in the foreground (what each pod runs)."""

from __future__ import annotations

from typing import Annotated

import typer

from modelport.cli.app import app


@app.command("serve")
def serve_command(
    model: Annotated[str, typer.Argument(help="model file: a local path, s3://bucket/key or bucket/key")],
    name: Annotated[str, typer.Option("--name", help="model name in the V1/V2 paths")] = "model",
    port: Annotated[int, typer.Option("--port", help="port to listen on")] = 8080,
    host: Annotated[str, typer.Option("--host", help="interface to listen on")] = "0.0.0.0",  # noqa: S104
    root_path: Annotated[str, typer.Option("--root-path", help="also serve under this prefix")] = "",
    sha256: Annotated[str | None, typer.Option("--sha256", help="refuse a model file with another sha256")] = None,
    requirements: Annotated[
        str | None, typer.Option("--requirements", help="requirements.txt: a path or an S3 URI")
    ] = None,
    cache_dir: Annotated[str | None, typer.Option("--cache-dir", help="downloads and environments")] = None,
    no_batching: Annotated[bool, typer.Option("--no-batching", help="switch micro-batching off")] = False,
) -> None:
    """Serve one model over HTTP (seed /predict, KServe V1, Open Inference Protocol V2)."""
    from modelport.serving.config import ServeConfig
    from modelport.serving.server import run

    try:
        config = ServeConfig.from_settings(
            model_uri=model, model_name=name, port=port, host=host, root_path=root_path, model_sha256=sha256,
            requirements_uri=requirements, model_cache_dir=cache_dir,
            microbatch_enabled=False if no_batching else None,
        )
    except ValueError as exc:
        typer.echo(f"modelport serve: {exc}", err=True)
        raise typer.Exit(2) from None
    raise typer.Exit(run(config))

"""``modelport serve MODEL``: run the model server in the foreground (what each pod runs)."""

from __future__ import annotations

import os
from typing import Annotated

import typer

from modelport.cli.app import app
from modelport.domain.model_server import ServerConfig


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
    # imported here: the serving extra (uvicorn, numpy) is needed by this command only
    from modelport.serving.server import run

    # the options over the environment's settings (what the server's main would read)
    options = {"MODEL_URI": model, "MODEL_NAME": name, "PORT": str(port), "SERVER_HOST": host, "ROOT_PATH": root_path,
               "MODEL_SHA256": sha256, "REQUIREMENTS_URI": requirements, "MODEL_CACHE_DIR": cache_dir,
               "MICROBATCH_ENABLED": "false" if no_batching else None}
    try:
        config = ServerConfig.from_env({**os.environ, **{k: v for k, v in options.items() if v is not None}})
    except ValueError as exc:
        typer.echo(f"modelport serve: {exc}", err=True)
        raise typer.Exit(2) from None
    raise typer.Exit(run(config))

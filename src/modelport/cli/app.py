"""The ``modelport`` Typer app that every command module registers its commands on."""

from __future__ import annotations

import typer

app = typer.Typer(no_args_is_help=True, add_completion=False, help="modelport: models to HTTPS endpoints.")


@app.callback()
def _root() -> None:
    """modelport: models to HTTPS endpoints."""

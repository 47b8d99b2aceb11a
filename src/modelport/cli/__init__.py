"""The ``modelport`` command. Each area registers its commands from its own module."""

from __future__ import annotations

import typer

app = typer.Typer(no_args_is_help=True, add_completion=False, help="modelport: models to HTTPS endpoints.")


@app.callback()
def _root() -> None:
    """modelport: models to HTTPS endpoints."""


def _register() -> None:
    # Imported here so that `modelport --help` stays fast and a missing optional extra
    # (serving, local) only fails the command that needs it.
    from modelport.cli import commands  # noqa: F401


def main() -> None:
    _register()
    app()

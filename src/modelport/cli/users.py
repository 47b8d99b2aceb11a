"""``modelport users create NAME``: a user and an API key, printed once (the table keeps a hash)."""

from __future__ import annotations

import re

import typer

from modelport.cli import app
from modelport.domain.errors import ModelportError
from modelport.settings import get_settings

users = typer.Typer(no_args_is_help=True, help="Users and their API keys (talks to the table directly).")
app.add_typer(users, name="users")

_NAME = re.compile(r"^[a-z0-9][a-z0-9._-]{0,62}$")


@users.command("create")
def create(name: str, create_table: bool = typer.Option(True, help="create the table if missing")) -> None:
    """Create a user; prints its API key once."""
    from modelport.store.records import ensure_table
    from modelport.store.repository import Store

    if not _NAME.match(name):
        typer.echo("error: a user name is 1-63 of a-z, 0-9, '.', '_', '-', starting with a letter or digit", err=True)
        raise typer.Exit(2)
    settings = get_settings()
    if create_table:
        ensure_table(settings)
    try:
        owner, key = Store(settings).create_user(name)
    except ModelportError as exc:
        typer.echo(f"error: {exc.message}", err=True)
        raise typer.Exit(1) from exc
    typer.echo(f"user {owner} created; its API key (shown once, keep it):", err=True)
    typer.echo(key)

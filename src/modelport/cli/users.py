"""``modelport users create NAME``: a user and an API key, printed once (the table keeps a hash)."""

from __future__ import annotations

import typer

from modelport.cli.app import app
from modelport.domain.errors import ModelportError
from modelport.services.users import create_user
from modelport.settings import Settings
from modelport.store.records import ensure_table
from modelport.store.repository import Store

users = typer.Typer(no_args_is_help=True, help="Users and their API keys (talks to the table directly).")
app.add_typer(users, name="users")


@users.command("create")
def create(name: str, create_table: bool = typer.Option(True, help="create the table if missing")) -> None:
    """Create a user; prints its API key once."""
    settings = Settings()  # the table's settings, from this process's environment
    try:
        if create_table:
            ensure_table(settings)
        owner, key = create_user(Store(settings), name)
    except ModelportError as exc:
        typer.echo(f"error: {exc.message}", err=True)
        raise typer.Exit(2 if exc.status == 422 else 1) from exc
    typer.echo(f"user {owner} created; its API key (shown once, keep it):", err=True)
    typer.echo(key)

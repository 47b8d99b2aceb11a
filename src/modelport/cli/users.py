"""``modelport users create NAME``: a user and an API key, printed once (the table keeps a hash).

It talks to the table directly, so it needs to know which one:
- the environment, when it names one (``DYNAMODB_ENDPOINT`` or ``TABLE_NAME``: an AWS account with
  its credentials, or any DynamoDB);
- else the table of the running ``modelport up`` whose API the CLI config names (``modelport up``
  writes ``table_endpoint``/``table_name``/``table_for`` there at every start). Its stand-ins take any
  credentials, so none are needed in this terminal;
- else the settings' defaults (the AWS table ``modelport`` in ``AWS_REGION``).

Every failure is one line and an exit code (``client.ExitCode``): a name already taken or invalid
is 1, a platform that is not running or a table that cannot be reached is 3, missing credentials 2.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import typer
from botocore.exceptions import BotoCoreError, EndpointConnectionError, NoCredentialsError
from pynamodb.exceptions import PynamoDBException

from modelport.cli.app import app
from modelport.cli.client import CliError, ExitCode, handle_errors, load_config, read_config_file
from modelport.domain.errors import ModelportError
from modelport.local.processes import port_open
from modelport.local.stand_ins import CREDENTIALS
from modelport.services.users import create_user
from modelport.settings import Settings
from modelport.store.records import ensure_table
from modelport.store.repository import Store

users = typer.Typer(no_args_is_help=True, help="Users and their API keys (talks to the table directly).")
app.add_typer(users, name="users")

TABLE_ENV = ("DYNAMODB_ENDPOINT", "TABLE_NAME")


def table_settings() -> Settings:
    """The settings of the table this command works on (see the module's docstring)."""
    if any(os.environ.get(name) for name in TABLE_ENV):
        return Settings()
    config = load_config()
    found = read_config_file(config.path)
    platform_table = found.get("table_endpoint")
    if not platform_table or found.get("table_for") != config.endpoint:
        return Settings()
    port = int(platform_table.rsplit(":", 1)[-1].strip("/"))
    if not port_open(port):
        raise CliError(f"the platform at {config.endpoint} is not running (its table at {platform_table} does not "
                       "answer): start it with `modelport up`, or set DYNAMODB_ENDPOINT", ExitCode.UNREACHABLE)
    # the stand-ins of `modelport up` accept any credentials; boto3 reads them from the environment
    for name, value in CREDENTIALS.items():
        os.environ.setdefault(name, value)
    return Settings(dynamodb_endpoint=platform_table, table_name=found.get("table_name", "modelport"))


def causes(exc: BaseException) -> Iterator[BaseException]:
    current: BaseException | None = exc
    while current is not None:
        yield current
        current = current.__cause__ or current.__context__


@users.command("create")
@handle_errors
def create(name: str, create_table: bool = typer.Option(True, help="create the table if missing")) -> None:
    """Create a user; prints its API key once."""
    settings = table_settings()
    where = settings.dynamodb_endpoint or f"DynamoDB in {settings.aws_region}"
    try:
        if create_table:
            ensure_table(settings)
        owner, key = create_user(Store(settings), name)
    except ModelportError as exc:
        raise CliError(exc.message, ExitCode.USAGE if exc.status == 422 else ExitCode.ERROR) from None
    except (BotoCoreError, PynamoDBException) as exc:  # pynamodb wraps botocore's errors in its own
        if any(isinstance(e, NoCredentialsError) for e in causes(exc)):
            raise CliError(f"no AWS credentials to reach the table {settings.table_name} ({where}): configure "
                           "them (aws configure), or run against `modelport up`", ExitCode.USAGE) from None
        unreachable = any(isinstance(e, EndpointConnectionError) for e in causes(exc))
        raise CliError(f"cannot {'reach' if unreachable else 'write to'} the table {settings.table_name} at "
                       f"{where}: {exc}", ExitCode.UNREACHABLE if unreachable else ExitCode.ERROR) from None
    typer.echo(f"user {owner} created; its API key (shown once, keep it):", err=True)
    typer.echo(key)

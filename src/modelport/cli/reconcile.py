"""``modelport reconcile``: the deployer's sweep, run once from here (orphan releases removed,
stuck records re-driven), printing what it did."""

from __future__ import annotations

import inspect
from typing import Any

import typer

from modelport.cli import app
from modelport.cli import output as o
from modelport.cli.client import CliError, handle_errors


def _load_sweep() -> Any:
    try:
        from modelport.deploy.reconcile import sweep  # lazily: it needs the deployer's dependencies
    except ImportError as exc:
        raise CliError(
            f"this installation has no reconcile sweep (modelport.deploy.reconcile: {exc}); "
            "update modelport or run the deployer"
        ) from None
    return sweep


@app.command("reconcile", epilog=o.EPILOG)
@handle_errors
def reconcile() -> None:
    """Sweep the cluster against the table once (as the deployer's scheduled sweep does).

    Uninstalls releases without a record and re-drives records stuck in a transient status. Talks
    to the table and the cluster directly, with settings from the environment, as the deployer.
    """
    from modelport.settings import get_settings

    sweep = _load_sweep()
    params = inspect.signature(sweep).parameters
    result = sweep(get_settings()) if "settings" in params else sweep()
    actions = result if isinstance(result, list | tuple) else getattr(result, "actions", None)
    if actions is None:
        typer.echo(str(result) if result is not None else "reconcile: done")
        return
    for action in actions:
        typer.echo(str(action))
    o.done(f"reconcile: {len(actions)} action(s)")

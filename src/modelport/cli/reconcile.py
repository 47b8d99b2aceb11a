"""``modelport reconcile``: the deployer's sweep, run once from here (orphan releases removed,
stuck records re-driven), printing what it did."""

from __future__ import annotations

import typer

import modelport.cli.output as o
from modelport.cli.app import app
from modelport.cli.client import CliError, ExitCode, handle_errors
from modelport.domain.errors import ModelportError
from modelport.settings import Settings


@app.command("reconcile", epilog=o.EPILOG)
@handle_errors
def reconcile() -> None:
    """Sweep the cluster against the table once (as the deployer's scheduled sweep does).

    Uninstalls modelport releases that have no record and re-drives records stuck in a transient
    status. Talks to the table and the cluster directly, with the deployer's settings from the
    environment (TABLE_NAME, DYNAMODB_ENDPOINT, KUBECONFIG, CLUSTER_DRIVER=helm ...).
    """
    settings = Settings()  # the deployer's settings, from this process's environment
    if settings.cluster_driver == "local":
        # The local driver's model servers belong to the `modelport up` process; a second process
        # would see none of them and start duplicates. That process runs the sweep itself.
        raise CliError(
            "with CLUSTER_DRIVER=local the sweep runs inside `modelport up`; `modelport reconcile` "
            "drives a Kubernetes cluster (CLUSTER_DRIVER=helm with KUBECONFIG)",
            ExitCode.USAGE,
        )
    try:
        # imported here: the deployer's code (helm driver) is needed by this command only
        from pynamodb.exceptions import PynamoDBException

        from modelport.deploy.driver import ClusterError
        from modelport.deploy.reconcile import sweep
        from modelport.deploy.runtime import build_driver
        from modelport.local.tools import with_tools
        from modelport.store.repository import Store
    except ImportError as exc:
        raise CliError(f"this installation has no reconcile sweep ({exc})") from None
    try:
        report = sweep(Store(settings), build_driver(with_tools(settings)), settings)
    except ValueError as exc:  # a bad CLUSTER_DRIVER
        raise CliError(str(exc), ExitCode.USAGE) from None
    except ClusterError as exc:
        raise CliError(exc.message, ExitCode.UNREACHABLE if exc.retryable else ExitCode.ERROR) from None
    except ModelportError as exc:
        raise CliError(exc.message) from None
    except PynamoDBException as exc:
        raise CliError(f"cannot read the table {settings.table_name}: {exc.msg}", ExitCode.UNREACHABLE) from None
    for line in report.lines():
        typer.echo(line)
    o.done(f"reconcile: {len(report.outcomes)} action(s)" if report.outcomes else "reconcile: nothing to do")

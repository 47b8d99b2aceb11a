"""``modelport upload MODEL_ID PATH``: a new version, its files sent straight to the object store
through presigned POSTs (progress bar), then a wait until the platform has checked them."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn, TransferSpeedColumn

import modelport.cli.output as o
from modelport.cli.app import app
from modelport.cli.client import ApiClient, CliError, ExitCode, WaitTimedOut, handle_errors, wait_until

FINAL_VERSION = frozenset({"READY", "REJECTED"})

def _progress() -> Progress:
    return Progress(
        TextColumn("{task.description}"), BarColumn(), DownloadColumn(), TransferSpeedColumn(), TimeRemainingColumn(),
        console=o.err, disable=not o.err.is_terminal, transient=False,
    )


def _send(
    api: ApiClient, version_id: int, model: Path, requirements: Path | None, auto_deploy: bool
) -> tuple[dict[str, Any] | None, str]:
    """Upload through the presigned flow, or the direct API upload on an older server.
    Returns (the version if the server answered with it, the flow used)."""
    targets = api.upload_targets(version_id, requirements is not None, auto_deploy)
    files = [p for p in (requirements, model) if p is not None]  # requirements first: the model completes it
    total = sum(p.stat().st_size for p in files)
    if targets is not None:
        limit = targets.get("max_bytes")
        if isinstance(limit, int) and model.stat().st_size > limit:
            raise CliError(f"{model.name} is {model.stat().st_size} bytes; the limit is {limit} bytes")
        if requirements is not None and not targets.get("requirements"):
            raise CliError("the server gave no upload target for the requirements file")
    with _progress() as progress:
        task = progress.add_task(f"uploading {escape(model.name)}", total=total)

        def advance(n: int) -> None:
            progress.advance(task, n)

        if targets is None:
            return api.upload_direct(version_id, model, requirements, advance), "direct"
        if requirements is not None:
            api.post_presigned(targets["requirements"], requirements, advance)
        api.post_presigned(targets["model"], model, advance)
    return None, "presigned"


def _wait_for_version(api: ApiClient, version_id: int, timeout: float) -> dict[str, Any]:
    with o.err.status(f"version {version_id}: checking the upload", spinner="dots") as status:
        try:
            return wait_until(
                lambda: api.get_version(version_id), lambda v: v.get("status") in FINAL_VERSION, timeout,
                on_poll=lambda v: status.update(f"version {version_id}: {o.status_text(v.get('status'))}"),
            )
        except WaitTimedOut as exc:
            raise CliError(
                f"timed out after {timeout:g}s waiting for version {version_id} to be checked; it is "
                f"{exc.last.get('status')}. It may still finish: `modelport versions show {version_id}`",
                ExitCode.TIMEOUT,
            ) from None


def _auto_deployment(api: ApiClient, version_id: int, flow: str, timeout: float) -> dict[str, Any] | None:
    """The deployment an auto-deploy upload got: made by the platform (presigned flow), or by us
    (the direct upload of an older server does not auto-deploy)."""
    if flow == "direct":
        return api.create_deployment(version_id, 1)

    def find() -> dict[str, Any] | None:
        return next((d for d in api.list_deployments() if d.get("version_id") == version_id), None)

    try:  # the artifacts function creates it right after marking the version READY
        return wait_until(find, lambda d: d is not None, min(timeout, 30.0))
    except WaitTimedOut:
        return None


@app.command("upload", epilog=o.EPILOG)
@handle_errors
def upload(
    model_id: Annotated[int, typer.Argument(min=1, show_default=False, help="the model to add a version to")],
    path: Annotated[Path, typer.Argument(
        exists=True, dir_okay=False, readable=True, resolve_path=True, help="the model file, e.g. model.joblib",
        show_default=False,
    )],
    requirements: Annotated[Path | None, typer.Option(
        "--requirements", "-r", exists=True, dir_okay=False, readable=True, resolve_path=True,
        help="requirements.txt for the model server",
    )] = None,
    auto_deploy: Annotated[bool, typer.Option("--auto-deploy", help="deploy the version once it is READY")] = False,
    version: Annotated[str | None, typer.Option("--version", "-v", help="version label; default: next number")] = None,
    no_wait: Annotated[bool, typer.Option("--no-wait", help="return after the upload, before the checks")] = False,
    timeout: Annotated[float, typer.Option("--timeout", min=0, help="seconds to wait for READY/REJECTED")] = 300.0,
    json_: o.JsonOption = False,
) -> None:
    """Create a version of MODEL_ID and upload PATH (and requirements.txt) to it.

    Waits until the version is READY or REJECTED unless --no-wait. --json prints the version, or
    with --auto-deploy {"version": ..., "deployment": ...}.
    """
    with ApiClient.from_config() as api:
        created = api.create_version(model_id, version)
        version_id = created["id"]
        if not json_:
            o.done(f"version {version_id} ({escape(created['version'])}) of model {model_id} created")
        try:
            answered, flow = _send(api, version_id, path, requirements, auto_deploy)
        except CliError as exc:
            exc.message += f" (version {version_id} stays PENDING_UPLOAD)"
            raise
        if not json_:
            o.done(f"uploaded {escape(path.name)}" + (f" and {escape(requirements.name)}" if requirements else ""))
        final = answered or created
        if not no_wait and final.get("status") not in FINAL_VERSION:
            final = _wait_for_version(api, version_id, timeout)
        if final.get("status") == "REJECTED":
            raise CliError(
                f"version {version_id} REJECTED: {final.get('status_message') or 'no reason recorded'}", ExitCode.FAILED
            )
        deployment = None
        if auto_deploy and final.get("status") == "READY":
            deployment = _auto_deployment(api, version_id, flow, timeout)
    if json_:
        o.print_json({"version": final, "deployment": deployment} if auto_deploy else final)
        return
    o.version_details(final)
    if deployment:
        o.done(f"deployment {deployment['id']} ({deployment['status']}): {escape(deployment['url'])}")
    elif auto_deploy and final.get("status") == "READY":
        o.err.print("[yellow]no deployment for this version appeared yet[/yellow]: `modelport deployments list`")

"""``modelport models|versions|deployments ...`` and ``modelport deploy``: thin commands over the API."""

from __future__ import annotations

import time
from typing import Annotated, Any

import typer
from rich.markup import escape

import modelport.cli.output as o
from modelport.cli.app import app
from modelport.cli.client import ApiClient, CliError, ExitCode, WaitTimedOut, handle_errors, wait_until

models = typer.Typer(no_args_is_help=True, help="Models: named collections of versions.", epilog=o.EPILOG)
versions = typer.Typer(no_args_is_help=True, help="Versions of a model and their artifacts.", epilog=o.EPILOG)
deployments = typer.Typer(no_args_is_help=True, help="Deployments: versions served at a URL.", epilog=o.EPILOG)
app.add_typer(models, name="models")
app.add_typer(versions, name="versions")
app.add_typer(deployments, name="deployments")

Id = Annotated[int, typer.Argument(min=1, show_default=False)]

# ------------------------------------------------------------------------------------------ models


@models.command("create", epilog=o.EPILOG)
@handle_errors
def models_create(
    name: Annotated[str, typer.Argument(help="letters, digits, '.', '_', '-'")],
    description: Annotated[str | None, typer.Option("--description", "-d", help="a line about the model")] = None,
    json_: o.JsonOption = False,
) -> None:
    """Create a model."""
    with ApiClient.from_config() as api:
        model = api.create_model(name, description)
    if json_:
        o.print_json(model)
    else:
        o.done(f"model [bold]{escape(model['name'])}[/bold] created with id {model['id']}")
        o.model_details(model)


@models.command("list", epilog=o.EPILOG)
@handle_errors
def models_list(json_: o.JsonOption = False) -> None:
    """List your models (every page; --json prints a JSON array)."""
    with ApiClient.from_config() as api:
        items = api.list_models()
    o.emit(json_, items, o.models_table)


@models.command("show", epilog=o.EPILOG)
@handle_errors
def models_show(model_id: Id, json_: o.JsonOption = False) -> None:
    """Show one model."""
    with ApiClient.from_config() as api:
        model = api.get_model(model_id)
    o.emit(json_, model, o.model_details)


@models.command("delete", epilog=o.EPILOG)
@handle_errors
def models_delete(model_id: Id) -> None:
    """Delete a model, its versions and their artifacts (refused while a version is deployed)."""
    with ApiClient.from_config() as api:
        api.delete_model(model_id)
    o.done(f"model {model_id} deleted")


# ---------------------------------------------------------------------------------------- versions


@versions.command("create", epilog=o.EPILOG)
@handle_errors
def versions_create(
    model_id: Id,
    version: Annotated[str | None, typer.Option("--version", "-v", help="a label; default: the next number")] = None,
    trust: Annotated[list[str] | None, typer.Option(
        "--trust", help="your own class (package.module.Name) this version's file may use beyond modelport's "
                        "allow-list; repeat for more")] = None,
    json_: o.JsonOption = False,
) -> None:
    """Create a version (PENDING_UPLOAD) of a model; `modelport upload` creates and uploads in one go."""
    with ApiClient.from_config() as api:
        created = api.create_version(model_id, version, trust)
    if json_:
        o.print_json(created)
    else:
        o.done(f"version {created['id']} ({escape(created['version'])}) of model {model_id} created")
        o.version_details(created)


@versions.command("list", epilog=o.EPILOG)
@handle_errors
def versions_list(model_id: Id, json_: o.JsonOption = False) -> None:
    """List a model's versions."""
    with ApiClient.from_config() as api:
        items = api.list_versions(model_id)
    o.emit(json_, items, o.versions_table)


@versions.command("show", epilog=o.EPILOG)
@handle_errors
def versions_show(version_id: Id, json_: o.JsonOption = False) -> None:
    """Show one version: status, S3 path, sizes and checksums."""
    with ApiClient.from_config() as api:
        version = api.get_version(version_id)
    o.emit(json_, version, o.version_details)


# ------------------------------------------------------------------------------------- deployments

FINAL_DEPLOYMENT = frozenset({"READY", "FAILED"})


def wait_for_deployment(api: ApiClient, deployment: dict[str, Any], timeout: float) -> dict[str, Any]:
    """A live status line until READY or FAILED; CliError 4 on FAILED, 5 on timeout."""
    deployment_id = deployment["id"]
    seen: list[str] = []

    def show(d: dict[str, Any]) -> None:
        text = f"deployment {deployment_id}: {o.status_text(d.get('status'))}"
        if d.get("status_message"):
            text += f" [dim]{escape(str(d['status_message']))}[/dim]"
        status.update(text)
        if not o.err.is_terminal and d.get("status") not in seen[-1:]:
            o.err.print(text)  # no live line off a terminal: one line per change instead
        seen.append(str(d.get("status")))

    with o.err.status(f"deployment {deployment_id}: waiting", spinner="dots") as status:
        try:
            final = wait_until(
                lambda: api.get_deployment(deployment_id), lambda d: d.get("status") in FINAL_DEPLOYMENT,
                timeout, on_poll=show,
            )
        except WaitTimedOut as exc:
            last = exc.last.get("status", "?")
            raise CliError(
                f"timed out after {timeout:g}s waiting for deployment {deployment_id} to be READY; it is {last}. "
                f"It may still finish: `modelport deployments show {deployment_id}`",
                ExitCode.TIMEOUT,
            ) from None
    if final["status"] == "FAILED":
        reason = final.get("status_message") or "no reason recorded"
        raise CliError(f"deployment {deployment_id} FAILED: {reason}", ExitCode.FAILED)
    return final


FINAL_ROLLOUT = frozenset({"promoted", "rolled_back", "aborted"})
ENDED_MESSAGES = ("canary promoted", "canary rolled back", "canary aborted")


def wait_for_rollout(api: ApiClient, deployment_id: int, timeout: float) -> dict[str, Any]:
    """A live line of the canary's weight, step and state until it ends and the deployer has
    converged; CliError 4 when it was rolled back, 5 on timeout."""

    def done(d: dict[str, Any]) -> bool:
        rollout = d.get("rollout") or {}
        # the deployer's message once the cluster serves the outcome (deploy.reconcile.rollout_message)
        converged = d.get("status") == "READY" and str(d.get("status_message") or "").startswith(ENDED_MESSAGES)
        return rollout.get("state") in FINAL_ROLLOUT and converged

    last: list[str] = []

    def show(d: dict[str, Any]) -> None:
        text = f"deployment {deployment_id}: {o.rollout_text(d.get('rollout'))}"
        status.update(text)
        if not o.err.is_terminal and text not in last[-1:]:
            o.err.print(text)
        last.append(text)

    with o.err.status(f"deployment {deployment_id}: canary starting", spinner="dots") as status:
        try:
            final = wait_until(lambda: api.get_deployment(deployment_id), done, timeout, on_poll=show)
        except WaitTimedOut:
            raise CliError(f"timed out after {timeout:g}s; the canary goes on: `modelport deployments show "
                           f"{deployment_id}`", ExitCode.TIMEOUT) from None
    if final["rollout"]["state"] == "rolled_back":
        raise CliError(f"deployment {deployment_id}: canary rolled back: {final['rollout'].get('reason')}",
                       ExitCode.FAILED)
    return final


def parse_steps(text: str) -> list[int]:
    try:
        return [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise typer.BadParameter("give percentages separated by commas, e.g. 10,50") from None


# a canary's options: `deploy --to --canary` and `deployments shadow-promote`
StepSeconds = Annotated[int, typer.Option("--step-seconds", min=1, help="least time per canary step")]
MinRequests = Annotated[int, typer.Option("--min-requests", min=1, help="least requests per step")]
MaxErrorRate = Annotated[float, typer.Option("--max-error-rate", min=0, max=1, help="5xx share that rolls back")]
MaxP99Ms = Annotated[float | None, typer.Option("--max-p99-ms", min=0, help="p99 that rolls back")]
MaxP99Ratio = Annotated[float, typer.Option("--max-p99-ratio", min=1,
                                            help="rolls back above this times the stable p99")]
LatencyCheck = Annotated[bool, typer.Option("--latency-check/--no-latency-check",
                                            help="compare the candidate's p99 with the stable one's")]


def canary_body(steps: str, step_seconds: int, min_requests: int, max_error_rate: float, max_p99_ms: float | None,
                max_p99_ratio: float, latency_check: bool) -> dict[str, Any]:
    return {"strategy": "canary", "steps": parse_steps(steps), "step_seconds": step_seconds,
            "min_requests": min_requests, "max_error_rate": max_error_rate, "max_p99_ms": max_p99_ms,
            "max_p99_ratio": max_p99_ratio if latency_check else None}


@app.command("deploy", epilog=o.EPILOG)
@handle_errors
def deploy(
    version_id: Id,
    replicas: Annotated[int, typer.Option("--replicas", "-r", min=1, help="model server replicas")] = 1,
    to: Annotated[int | None, typer.Option(
        "--to", min=1, help="move this existing deployment to VERSION_ID instead of creating one")] = None,
    canary: Annotated[str | None, typer.Option(
        "--canary", help="with --to: canary steps in percent, e.g. 10,50; promoted or rolled back by the "
        "model servers' error rate and p99")] = None,
    step_seconds: StepSeconds = 60,
    min_requests: MinRequests = 50,
    max_error_rate: MaxErrorRate = 0.01,
    max_p99_ms: MaxP99Ms = None,
    max_p99_ratio: MaxP99Ratio = 2.0,
    latency_check: LatencyCheck = True,
    wait: Annotated[bool, typer.Option("--wait", "-w", help="wait until READY or FAILED, then print the URL")] = False,
    timeout: Annotated[float, typer.Option("--timeout", min=0, help="seconds --wait waits")] = 600.0,
    json_: o.JsonOption = False,
) -> None:
    """Deploy a READY version; prints the deployment (and, with --wait, its URL once it serves).
    With --to, move an existing deployment to the version: at once, or step by step with --canary."""
    if canary is not None and to is None:
        raise typer.BadParameter("--canary moves an existing deployment: give it with --to", param_hint="--canary")
    if to is not None:
        rollout = None if canary is None else canary_body(canary, step_seconds, min_requests, max_error_rate,
                                                          max_p99_ms, max_p99_ratio, latency_check)
        with ApiClient.from_config() as api:
            moved = api.move_deployment(to, version_id, rollout)
            if not json_:
                o.done(f"deployment {to} moving to version {version_id}"
                       + (f" by canary steps {canary}" if canary else f" ({moved['status']})"))
            if wait:
                moved = wait_for_rollout(api, to, timeout) if canary else wait_for_deployment(api, moved, timeout)
        o.emit(json_, moved, o.deployment_details)
        return
    with ApiClient.from_config() as api:
        created = api.create_deployment(version_id, replicas)
        if not json_:
            o.done(f"deployment {created['id']} of version {version_id} created ({created['status']})")
        final = wait_for_deployment(api, created, timeout) if wait else created
    if json_:
        o.print_json(final)
    elif wait:
        o.done(f"deployment {final['id']} is [green]READY[/green]")
        o.out.print(escape(final["url"]), soft_wrap=True)
    else:
        o.deployment_details(final)


@deployments.command("list", epilog=o.EPILOG)
@handle_errors
def deployments_list(json_: o.JsonOption = False) -> None:
    """List your deployments."""
    with ApiClient.from_config() as api:
        items = api.list_deployments()
    o.emit(json_, items, o.deployments_table)


@deployments.command("show", epilog=o.EPILOG)
@handle_errors
def deployments_show(deployment_id: Id, json_: o.JsonOption = False) -> None:
    """Show one deployment: status, URL, version, replicas."""
    with ApiClient.from_config() as api:
        deployment = api.get_deployment(deployment_id)
    o.emit(json_, deployment, o.deployment_details)


@deployments.command("scale", epilog=o.EPILOG)
@handle_errors
def deployments_scale(
    deployment_id: Id,
    replicas: Annotated[int, typer.Argument(min=1, help="the new number of replicas", show_default=False)],
    json_: o.JsonOption = False,
) -> None:
    """Change a deployment's replicas (the deployer rolls it out)."""
    with ApiClient.from_config() as api:
        deployment = api.scale_deployment(deployment_id, replicas)
    if json_:
        o.print_json(deployment)
    else:
        o.done(f"deployment {deployment_id} scaled to {deployment['replicas']} replicas ({deployment['status']})")


@deployments.command("promote", epilog=o.EPILOG)
@handle_errors
def deployments_promote(deployment_id: Id, json_: o.JsonOption = False) -> None:
    """End a canary early: all requests to the candidate version."""
    with ApiClient.from_config() as api:
        deployment = api.end_rollout(deployment_id, "promote")
    o.emit(json_, deployment, o.deployment_details)


@deployments.command("abort", epilog=o.EPILOG)
@handle_errors
def deployments_abort(deployment_id: Id, json_: o.JsonOption = False) -> None:
    """End a canary early: all requests back to the stable version, the candidate removed."""
    with ApiClient.from_config() as api:
        deployment = api.end_rollout(deployment_id, "abort")
    o.emit(json_, deployment, o.deployment_details)


def shadow_converged(d: dict[str, Any]) -> bool:
    """The deployer runs the shadow (deploy.reconcile.shadow_message) or ended it."""
    shadow = d.get("shadow") or {}
    message = str(d.get("status_message") or "")
    return d.get("status") in FINAL_DEPLOYMENT and (shadow.get("state") != "running" or message.startswith("shadow:")
                                                    or "; shadow:" in message)


@deployments.command("shadow", epilog=o.EPILOG)
@handle_errors
def deployments_shadow(
    deployment_id: Id,
    version_id: Annotated[int, typer.Argument(min=1, help="the version to run beside the live one",
                                              show_default=False)],
    percent: Annotated[int, typer.Option("--percent", min=1, max=100, help="share of answered requests copied")] = 100,
    tolerance: Annotated[float, typer.Option("--tolerance", min=0, help="a regressor's answers agree within this "
                                             "(relative; absolute below 1)")] = 1e-6,
    watch: Annotated[bool, typer.Option("--watch", help="once it runs, show its report live until Ctrl-C")] = False,
    timeout: Annotated[float, typer.Option("--timeout", min=0, help="seconds to wait for it to run")] = 600.0,
    json_: o.JsonOption = False,
) -> None:
    """Run VERSION_ID beside the live version on a copy of the requests; callers always get the live
    answer. Waits until it runs; `shadow-report` shows how the two agree."""
    with ApiClient.from_config() as api:
        api.start_shadow(deployment_id, version_id, percent, tolerance)
        with o.err.status(f"deployment {deployment_id}: starting the shadow", spinner="dots"):
            try:
                final = wait_until(lambda: api.get_deployment(deployment_id), shadow_converged, timeout)
            except WaitTimedOut:
                raise CliError(f"timed out after {timeout:g}s; the shadow may still start: `modelport deployments "
                               f"show {deployment_id}`", ExitCode.TIMEOUT) from None
        shadow = final.get("shadow") or {}
        if shadow.get("state") != "running" or final.get("status") == "FAILED":
            raise CliError(f"deployment {deployment_id}: the shadow did not start: "
                           f"{shadow.get('reason') or final.get('status_message')}", ExitCode.FAILED)
        if watch:
            watch_shadow(api, deployment_id)
            return
    o.emit(json_, final, o.deployment_details)


def watch_shadow(api: ApiClient, deployment_id: int, every: float = 2.0) -> None:
    """The report, refreshed in place, until Ctrl-C or the shadow ends."""
    from rich.live import Live

    with Live(console=o.out, auto_refresh=False) as live:
        try:
            while True:
                report = api.shadow_report(deployment_id)
                with o.out.capture() as captured:
                    o.shadow_report(report)
                live.update(captured.get(), refresh=True)
                if report["shadow"]["state"] != "running":
                    return
                time.sleep(every)
        except KeyboardInterrupt:
            return


@deployments.command("shadow-report", epilog=o.EPILOG)
@handle_errors
def deployments_shadow_report(
    deployment_id: Id,
    watch: Annotated[bool, typer.Option("--watch", help="refresh live until Ctrl-C")] = False,
    json_: o.JsonOption = False,
) -> None:
    """How the shadow's answers compare with the live ones: mirrored, dropped, agreement, latency."""
    with ApiClient.from_config() as api:
        if watch and not json_:
            watch_shadow(api, deployment_id)
            return
        report = api.shadow_report(deployment_id)
    o.emit(json_, report, o.shadow_report)


@deployments.command("shadow-stop", epilog=o.EPILOG)
@handle_errors
def deployments_shadow_stop(deployment_id: Id, json_: o.JsonOption = False) -> None:
    """Stop the shadow: its servers are removed, the live ones stop copying. Its report stays."""
    with ApiClient.from_config() as api:
        deployment = api.stop_shadow(deployment_id)
    o.emit(json_, deployment, o.deployment_details)


@deployments.command("shadow-promote", epilog=o.EPILOG)
@handle_errors
def deployments_shadow_promote(
    deployment_id: Id,
    canary: Annotated[str, typer.Option("--canary", help="canary steps in percent")] = "10,50",
    step_seconds: StepSeconds = 60,
    min_requests: MinRequests = 50,
    max_error_rate: MaxErrorRate = 0.01,
    max_p99_ms: MaxP99Ms = None,
    max_p99_ratio: MaxP99Ratio = 2.0,
    latency_check: LatencyCheck = True,
    wait: Annotated[bool, typer.Option("--wait", "-w", help="follow the canary until it ends")] = False,
    timeout: Annotated[float, typer.Option("--timeout", min=0, help="seconds --wait waits")] = 600.0,
    json_: o.JsonOption = False,
) -> None:
    """Turn the shadow into a canary of its version (the canary's rules from then on)."""
    body = canary_body(canary, step_seconds, min_requests, max_error_rate, max_p99_ms, max_p99_ratio, latency_check)
    with ApiClient.from_config() as api:
        deployment = api.promote_shadow(deployment_id, body)
        if wait:
            deployment = wait_for_rollout(api, deployment_id, timeout)
    o.emit(json_, deployment, o.deployment_details)


@deployments.command("token", epilog=o.EPILOG)
@handle_errors
def deployments_token(
    deployment_id: Id,
    remove: Annotated[bool, typer.Option("--remove", help="open the prediction URL to anyone again")] = False,
    json_: o.JsonOption = False,
) -> None:
    """Protect a deployment's prediction URL with a new token (printed once; replaces the old one)."""
    with ApiClient.from_config() as api:
        answer = api.remove_token(deployment_id) if remove else api.issue_token(deployment_id)
    if json_:
        o.print_json(answer)
    elif remove:
        o.done(f"deployment {deployment_id}: its prediction URL is open to anyone again")
    else:
        o.done(f"deployment {deployment_id}: its prediction URL needs this token from the next rollout on")
        o.out.print(answer["token"], soft_wrap=True)
        o.err.print("send it as 'Authorization: Bearer <token>' (or `modelport predict --token`)")


@deployments.command("delete", epilog=o.EPILOG)
@handle_errors
def deployments_delete(
    deployment_id: Id,
    wait: Annotated[bool, typer.Option("--wait", "-w", help="wait until the deployment is gone")] = False,
    timeout: Annotated[float, typer.Option("--timeout", min=0, help="seconds --wait waits")] = 300.0,
    json_: o.JsonOption = False,
) -> None:
    """Delete a deployment (it goes DELETING; the deployer removes it)."""
    with ApiClient.from_config() as api:
        deployment = api.delete_deployment(deployment_id)
        if wait:
            with o.err.status(f"deployment {deployment_id}: deleting", spinner="dots"):
                try:
                    wait_until(lambda: api.deployment_gone(deployment_id), bool, timeout)
                except WaitTimedOut:
                    raise CliError(
                        f"timed out after {timeout:g}s waiting for deployment {deployment_id} to be removed; "
                        f"it is still DELETING: `modelport deployments show {deployment_id}`",
                        ExitCode.TIMEOUT,
                    ) from None
    if json_:
        o.print_json(deployment)
    else:
        o.done(f"deployment {deployment_id} {'deleted' if wait else 'is being deleted (DELETING)'}")

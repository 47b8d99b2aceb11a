"""Presentation shared by the CLI's commands: rich tables and colours on stdout, progress and
status lines on stderr, plain JSON for ``--json``."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Sequence
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from modelport.cli.app import app
from modelport.cli.client import EXIT_CODES_HELP

out = Console(highlight=False)
err = Console(stderr=True, highlight=False)

JsonOption = Annotated[bool, typer.Option("--json", help="print the API's JSON (for scripts)")]

EPILOG = EXIT_CODES_HELP

# `modelport --help` shows the exit codes too (the root callback lives in cli/__init__.py).
if app.registered_callback is not None and not app.registered_callback.epilog:
    app.registered_callback.epilog = EPILOG

_STATUS_STYLE = {
    "READY": "green",
    "FAILED": "red",
    "REJECTED": "red",
    "PENDING": "yellow",
    "PENDING_UPLOAD": "yellow",
    "DEPLOYING": "cyan",
    "UPDATING": "cyan",
    "DELETING": "magenta",
}


def print_json(data: Any) -> None:
    """JSON on stdout exactly as the API sent it (no rich markup or wrapping)."""
    print(json.dumps(data, indent=2, ensure_ascii=False))


def status_text(status: str | None) -> str:
    if not status:
        return ""
    style = _STATUS_STYLE.get(status, "white")
    return f"[{style}]{escape(status)}[/{style}]"


def cell(value: Any) -> str:
    if value is None:
        return "[dim]-[/dim]"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, dict):
        return escape(json.dumps(value))
    return escape(str(value))


def when(value: str | None) -> str:
    """ISO timestamps shortened to the second."""
    if not value:
        return cell(None)
    return escape(value.replace("T", " ")[:19])


def human_size(size: int | None) -> str:
    if size is None:
        return cell(None)
    amount = float(size)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if amount < 1024 or unit == "GiB":
            return f"{amount:.0f} {unit}" if unit == "B" else f"{amount:.1f} {unit}"
        amount /= 1024
    return str(size)


def table(columns: Sequence[str], rows: Iterable[Sequence[str]], empty: str) -> None:
    rows = list(rows)
    if not rows:
        err.print(f"[dim]{escape(empty)}[/dim]")
        return
    t = Table(*columns, header_style="bold", box=None, pad_edge=False)
    for row in rows:
        t.add_row(*row)
    out.print(t)


def details(title: str, pairs: Sequence[tuple[str, str]]) -> None:
    t = Table(show_header=False, box=None, pad_edge=False, title=title, title_justify="left", title_style="bold")
    t.add_column(style="bold")
    t.add_column(overflow="fold")
    for key, value in pairs:
        t.add_row(key, value)
    out.print(t)


def done(message: str) -> None:
    """A confirmation for humans, on stderr (stdout stays for data)."""
    err.print(f"[green]✓[/green] {message}")


# ------------------------------------------------------------------------------ record renderers


def model_details(model: dict[str, Any]) -> None:
    auto = model.get("auto_deploy") or {}
    details(f"model {model['id']}", [
        ("name", cell(model.get("name"))),
        ("description", cell(model.get("description"))),
        ("auto-deploy", f"{'on' if auto.get('enabled') else 'off'} (replicas {auto.get('replicas', 1)})"),
        ("created", when(model.get("created_at"))),
        ("updated", when(model.get("updated_at"))),
    ])


def models_table(models: list[dict[str, Any]]) -> None:
    table(
        ["ID", "NAME", "DESCRIPTION", "AUTO-DEPLOY", "CREATED"],
        [
            [
                str(m["id"]), cell(m.get("name")), cell(m.get("description")),
                "on" if (m.get("auto_deploy") or {}).get("enabled") else "off", when(m.get("created_at")),
            ]
            for m in models
        ],
        "no models yet: `modelport models create NAME`",
    )


def version_details(version: dict[str, Any]) -> None:
    model_art = version.get("model_artifact") or {}
    req_art = version.get("requirements_artifact") or {}
    details(f"version {version['id']}", [
        ("model", str(version.get("model_id"))),
        ("version", cell(version.get("version"))),
        ("status", status_text(version.get("status"))),
        ("message", cell(version.get("status_message"))),
        ("s3 path", cell(version.get("s3_path"))),
        ("model file", f"{human_size(model_art.get('size'))}  sha256 {model_art.get('sha256')}" if model_art
         else cell(None)),
        ("requirements", f"{human_size(req_art.get('size'))}  sha256 {req_art.get('sha256')}" if req_art
         else cell(None)),
        ("created", when(version.get("created_at"))),
        ("updated", when(version.get("updated_at"))),
    ])


def versions_table(versions: list[dict[str, Any]]) -> None:
    table(
        ["ID", "VERSION", "STATUS", "SIZE", "CREATED"],
        [
            [
                str(v["id"]), cell(v.get("version")), status_text(v.get("status")),
                human_size((v.get("model_artifact") or {}).get("size")), when(v.get("created_at")),
            ]
            for v in versions
        ],
        "no versions yet: `modelport upload MODEL_ID model.joblib`",
    )


def deployment_details(deployment: dict[str, Any]) -> None:
    details(f"deployment {deployment['id']}", [
        ("status", status_text(deployment.get("status"))),
        ("message", cell(deployment.get("status_message"))),
        ("url", cell(deployment.get("url"))),
        ("version", str(deployment.get("version_id"))),
        ("replicas", str(deployment.get("replicas"))),
        ("rollout", rollout_text(deployment.get("rollout"))),
        ("shadow", shadow_text(deployment.get("shadow"))),
        ("service", cell(deployment.get("k8s_service_name"))),
        ("created", when(deployment.get("created_at"))),
        ("updated", when(deployment.get("updated_at"))),
    ])


def rollout_text(rollout: dict[str, Any] | None) -> str:
    """A canary in one line: candidate, weight and step, state, reason."""
    if not rollout:
        return cell(None)
    steps = rollout.get("steps") or []
    text = f"canary of version {rollout.get('candidate_version_id')}: {rollout.get('state')}"
    if rollout.get("state") == "progressing":
        text += f", {rollout.get('weight')}% (step {int(rollout.get('step', 0)) + 1} of {len(steps)})"
    if rollout.get("reason"):
        text += f" - {rollout['reason']}"
    return escape(text)


def shadow_text(shadow: dict[str, Any] | None) -> str:
    """A shadow in one line: version, share, state, reason."""
    if not shadow:
        return cell(None)
    text = f"version {shadow.get('version_id')} on {shadow.get('percent')}% of requests: {shadow.get('state')}"
    if shadow.get("reason"):
        text += f" - {shadow['reason']}"
    return escape(text)


def _share(value: float | None) -> str:
    return "-" if value is None else f"{value:.1%}"


def _ms(p50: float | None, p99: float | None) -> str:
    return "-" if p50 is None else f"p50 {p50:.1f} ms, p99 {p99:.1f} ms"


def shadow_report(report: dict[str, Any]) -> None:
    live, candidate = report.get("live") or {}, report.get("candidate") or {}
    diff = report.get("proba_mean_abs_diff")
    details(f"shadow of deployment {report['deployment_id']}", [
        ("shadow", shadow_text(report.get("shadow"))),
        ("mirrored", f"{report['mirrored']} requests ({report['dropped']} dropped: queue full)"),
        ("candidate errors", str(report["candidate_errors"])),
        ("agreement", f"{_share(report.get('agreement'))} of {report['rows_compared']} rows"),
        ("proba mean |diff|", "-" if diff is None else f"{diff:.4f}"),
        ("live", f"{live.get('requests', 0)} requests, {_ms(live.get('p50_ms'), live.get('p99_ms'))}"),
        ("candidate", f"{candidate.get('requests', 0)} requests, "
                      f"{_ms(candidate.get('p50_ms'), candidate.get('p99_ms'))}"),
        ("copies", _ms(report.get("copy_p50_ms"), report.get("copy_p99_ms"))),
        ("sampled", when(report.get("sampled_at"))),
    ])


def deployments_table(deployments: list[dict[str, Any]]) -> None:
    table(
        ["ID", "VERSION", "REPLICAS", "STATUS", "URL"],
        [
            [
                str(d["id"]), str(d.get("version_id")), str(d.get("replicas")), status_text(d.get("status")),
                cell(d.get("url")),
            ]
            for d in deployments
        ],
        "no deployments yet: `modelport deploy VERSION_ID`",
    )


def emit(as_json: bool, data: Any, render: Callable[[Any], None]) -> None:
    """``--json``: the API's JSON; otherwise the human rendering."""
    if as_json:
        print_json(data)
    else:
        render(data)

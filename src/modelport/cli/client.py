"""The CLI's side of the HTTP API: its config file, an httpx wrapper whose failures become one
line and an exit code, the streaming multipart body of the uploads, and polling with a deadline.

Commands keep to presentation; every HTTP call of the CLI is made here.

Config file (``$MODELPORT_CONFIG``, else ``~/.config/modelport/config.toml``; written by
``modelport login`` with mode 0600)::

    endpoint = "http://localhost:8000"
    api_key = "mp_..."
    # written by `modelport up` at every start: where its table is, for `modelport users create`
    table_for = "http://localhost:8000"
    table_endpoint = "http://127.0.0.1:41234"
    table_name = "modelport"

``MODELPORT_ENDPOINT`` and ``MODELPORT_API_KEY`` override what the file says.
"""

from __future__ import annotations

import functools
import json
import os
import re
import secrets
import time
import tomllib
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from enum import IntEnum
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

import httpx
import typer

P = ParamSpec("P")
R = TypeVar("R")
T = TypeVar("T")

API = "/api/v1"
DEFAULT_ENDPOINT = "http://localhost:8000"
CONFIG_ENV = "MODELPORT_CONFIG"
ENDPOINT_ENV = "MODELPORT_ENDPOINT"
API_KEY_ENV = "MODELPORT_API_KEY"


class ExitCode(IntEnum):
    OK = 0
    ERROR = 1  # the API refused (4xx/5xx) or the input was wrong in a way only the server could tell
    USAGE = 2  # bad options or arguments, no endpoint or key configured
    UNREACHABLE = 3  # no connection to the endpoint (or no answer in time)
    FAILED = 4  # a wait ended in FAILED (deployment) or REJECTED (version)
    TIMEOUT = 5  # a wait ran out of time; the operation may still finish


EXIT_CODES_HELP = (
    "Exit codes: 0 ok; 1 the API refused (error shown as one line); 2 usage or missing config; "
    "3 cannot connect to the endpoint; 4 a wait ended in FAILED/REJECTED; 5 a wait timed out."
)


class CliError(Exception):
    """Anything that ends a command: one line on stderr, then ``exit_code``."""

    def __init__(self, message: str, exit_code: ExitCode = ExitCode.ERROR) -> None:
        super().__init__(message)
        self.message = " ".join(message.split())  # always one line
        self.exit_code = exit_code


class ApiError(CliError):
    """The API answered with an error ``{"code", "message"}``."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message, ExitCode.ERROR)
        self.status = status
        self.code = code


class WaitTimedOut(Exception):
    def __init__(self, last: Any) -> None:
        super().__init__("timed out")
        self.last = last


def handle_errors(fn: Callable[P, R]) -> Callable[P, R]:
    """Turn CliError into ``error: <message>`` on stderr and its exit code."""

    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return fn(*args, **kwargs)
        except CliError as exc:
            typer.echo(f"error: {exc.message}", err=True)
            raise typer.Exit(int(exc.exit_code)) from None
        except KeyboardInterrupt:
            typer.echo("interrupted", err=True)
            raise typer.Exit(130) from None

    return wrapper


# ----------------------------------------------------------------------------------------- config


def config_path() -> Path:
    override = os.environ.get(CONFIG_ENV)
    if override:
        return Path(override).expanduser()
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "modelport" / "config.toml"


@dataclass
class Config:
    endpoint: str | None
    api_key: str | None
    path: Path


def read_config_file(path: Path | None = None) -> dict[str, str]:
    path = path or config_path()
    try:
        with path.open("rb") as f:
            data = tomllib.load(f)
    except FileNotFoundError:
        return {}
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise CliError(f"cannot read the config file {path}: {exc}", ExitCode.USAGE) from None
    return {k: v for k, v in data.items() if isinstance(v, str)}


def load_config() -> Config:
    path = config_path()
    data = read_config_file(path)
    endpoint = os.environ.get(ENDPOINT_ENV) or data.get("endpoint")
    api_key = os.environ.get(API_KEY_ENV) or data.get("api_key")
    return Config(endpoint=endpoint.rstrip("/") if endpoint else None, api_key=api_key, path=path)


def _toml_string(value: str) -> str:
    # A JSON string (ASCII-escaped) is a valid TOML basic string; two keys do not need a TOML writer.
    return json.dumps(value, ensure_ascii=True)


def save_config(endpoint: str, api_key: str, path: Path | None = None) -> Path:
    """Write endpoint and key (mode 0600); other keys already in the file are kept."""
    return update_config(path or config_path(), endpoint=endpoint.rstrip("/"), api_key=api_key)


def update_config(path: Path, **values: str) -> Path:
    """Set these keys in the config file (mode 0600), keeping the others."""
    data = read_config_file(path)
    data.update(values)
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    lines = ["# modelport CLI configuration, written by `modelport login`"]
    lines += [f"{key} = {_toml_string(value)}" for key, value in data.items()]
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")
    os.replace(tmp, path)
    return path


def validate_endpoint(endpoint: str) -> str:
    endpoint = endpoint.strip().rstrip("/")
    if not re.match(r"^https?://[^/\s]+", endpoint):
        raise CliError(
            f"the endpoint must be an http(s) URL, e.g. {DEFAULT_ENDPOINT}; got {endpoint!r}", ExitCode.USAGE
        )
    return endpoint


# -------------------------------------------------------------------------------- multipart body


class MultipartBody:
    """multipart/form-data that streams its files from disk, with a known length (S3's presigned
    POST refuses chunked bodies). Fields come first, files last (S3 wants the file last)."""

    chunk_size = 256 * 1024

    def __init__(
        self, fields: Mapping[str, str], files: Sequence[tuple[str, Path]],
        progress: Callable[[int], None] | None = None,
    ) -> None:
        self.boundary = secrets.token_hex(16)
        self.progress = progress
        self._parts: list[bytes | Path] = []
        for name, value in fields.items():
            self._parts.append(
                self._head(f'Content-Disposition: form-data; name="{_quote(name)}"') + value.encode() + b"\r\n"
            )
        for name, path in files:
            self._parts.append(self._head(
                f'Content-Disposition: form-data; name="{_quote(name)}"; filename="{_quote(path.name)}"',
                "Content-Type: application/octet-stream",
            ))
            self._parts.append(path)
            self._parts.append(b"\r\n")
        self._parts.append(f"--{self.boundary}--\r\n".encode())

    def _head(self, *headers: str) -> bytes:
        return (f"--{self.boundary}\r\n" + "".join(h + "\r\n" for h in headers) + "\r\n").encode()

    @property
    def content_type(self) -> str:
        return f"multipart/form-data; boundary={self.boundary}"

    @property
    def length(self) -> int:
        return sum(p.stat().st_size if isinstance(p, Path) else len(p) for p in self._parts)

    @property
    def headers(self) -> dict[str, str]:
        return {"Content-Type": self.content_type, "Content-Length": str(self.length)}

    def __iter__(self) -> Iterator[bytes]:
        for part in self._parts:
            if isinstance(part, bytes):
                yield part
                continue
            with part.open("rb") as f:
                while chunk := f.read(self.chunk_size):
                    yield chunk
                    if self.progress:
                        self.progress(len(chunk))


def _quote(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', "%22").replace("\r", "%0D").replace("\n", "%0A")


# ------------------------------------------------------------------------------------ the client


def _error_from(response: httpx.Response) -> ApiError:
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict) and isinstance(body.get("message"), str):
        return ApiError(response.status_code, str(body.get("code", "error")), body["message"])
    text = response.text
    s3_message = re.search(r"<Message>(.*?)</Message>", text, re.S)  # S3's XML errors (presigned POST)
    if s3_message:
        s3_code = re.search(r"<Code>(.*?)</Code>", text, re.S)
        code = s3_code.group(1) if s3_code else "s3_error"
        return ApiError(response.status_code, code, f"the object store refused the upload: {s3_message.group(1)}")
    reason = response.reason_phrase or "error"
    return ApiError(response.status_code, "http_error", f"HTTP {response.status_code} {reason} from {response.url}")


def _not_reachable(endpoint: str, exc: httpx.TransportError) -> CliError:
    if isinstance(exc, httpx.TimeoutException):
        what = f"no answer from {endpoint} in time ({type(exc).__name__})"
    else:
        detail = str(exc) or type(exc).__name__
        what = f"cannot connect to {endpoint} ({detail})"
    return CliError(
        f"{what}; is the API running? (`modelport up`, or `modelport login --endpoint URL`)", ExitCode.UNREACHABLE
    )


class ApiClient:
    """The HTTP API under ``{endpoint}/api/v1``, authenticated with ``Bearer <api key>``."""

    def __init__(self, endpoint: str, api_key: str | None, timeout: float = 30.0) -> None:
        self.endpoint = endpoint.rstrip("/")
        self.api_key = api_key
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.http = httpx.Client(base_url=self.endpoint, headers=headers, timeout=timeout)

    @classmethod
    def from_config(cls, config: Config | None = None) -> ApiClient:
        config = config or load_config()
        if not config.endpoint or not config.api_key:
            missing = "endpoint" if not config.endpoint else "API key"
            raise CliError(
                f"no {missing} configured: run `modelport login "
                f"--endpoint URL --api-key KEY` (config: {config.path}) or set {ENDPOINT_ENV}/{API_KEY_ENV}",
                ExitCode.USAGE,
            )
        return cls(config.endpoint, config.api_key)

    def close(self) -> None:
        self.http.close()

    def __enter__(self) -> ApiClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- plumbing
    def send(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        """One request; transport failures become exit 3, error answers ApiError."""
        try:
            response = self.http.request(method, url, **kwargs)
        except httpx.TransportError as exc:
            target = url if url.startswith("http") else self.endpoint
            raise _not_reachable(target, exc) from None
        if response.is_error:
            raise _error_from(response)
        return response

    def create(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        """A creating POST with an Idempotency-Key, so a request whose answer was lost (timeout,
        dropped connection) is sent again safely: the server answers the first result, once."""
        headers = {"Idempotency-Key": f"cli-{uuid.uuid4()}"}
        for attempt in range(3):
            try:
                response = self.http.request("POST", API + path, json=body, headers=headers)
                break
            except httpx.TransportError as exc:
                if attempt == 2:
                    raise _not_reachable(self.endpoint, exc) from None
        if response.is_error:
            raise _error_from(response)
        return dict(response.json())

    def call(self, method: str, path: str, **kwargs: Any) -> Any:
        response = self.send(method, API + path, **kwargs)
        if response.status_code == 204 or not response.content:
            return None
        return response.json()

    def all_pages(self, path: str, page_size: int = 200) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = []
        cursor: str | None = None
        while True:
            params: dict[str, Any] = {"limit": page_size}
            if cursor:
                params["cursor"] = cursor
            page = self.call("GET", path, params=params)
            items.extend(page["items"])
            cursor = page.get("next_cursor")
            if not cursor:
                return items

    # --- health and identity
    def health(self) -> dict[str, Any]:
        response = self.send("GET", "/healthz")
        return dict(response.json())

    def verify_key(self) -> dict[str, Any]:
        """Who the key belongs to (``{"owner", "namespace"}``); ApiError 401 if the key is bad."""
        answer: dict[str, Any] = self.call("GET", "/me")
        return answer

    # --- models
    def create_model(self, name: str, description: str | None) -> dict[str, Any]:
        body: dict[str, Any] = {"name": name}
        if description is not None:
            body["description"] = description
        return self.create("/models", body)

    def list_models(self) -> list[dict[str, Any]]:
        return self.all_pages("/models")

    def get_model(self, model_id: int) -> dict[str, Any]:
        return dict(self.call("GET", f"/models/{model_id}"))

    def delete_model(self, model_id: int) -> None:
        self.call("DELETE", f"/models/{model_id}")

    # --- versions
    def create_version(self, model_id: int, label: str | None, trusted_globals: list[str] | None = None,
                       ) -> dict[str, Any]:
        body: dict[str, Any] = {"version": label} if label else {}
        if trusted_globals:
            body["trusted_globals"] = trusted_globals
        return self.create(f"/models/{model_id}/versions", body)

    def list_versions(self, model_id: int) -> list[dict[str, Any]]:
        return self.all_pages(f"/models/{model_id}/versions")

    def get_version(self, version_id: int) -> dict[str, Any]:
        return dict(self.call("GET", f"/versions/{version_id}"))

    def upload_targets(self, version_id: int, requirements: bool, auto_deploy: bool) -> dict[str, Any] | None:
        """The presigned POST targets, or None when the server has no upload-url route (older server)."""
        try:
            return dict(self.call(
                "POST", f"/versions/{version_id}/upload-url",
                json={"requirements": requirements, "auto_deploy": auto_deploy},
            ))
        except ApiError as exc:
            # A missing route answers the framework's generic 404/405; a missing version has its own code.
            if exc.status in (404, 405) and exc.code in ("not_found", "method_not_allowed", "http_error"):
                return None
            raise

    def post_presigned(self, target: Mapping[str, Any], path: Path, progress: Callable[[int], None]) -> None:
        """S3 presigned POST: the form fields, then the file; no API key goes to the object store."""
        fields = {str(k): str(v) for k, v in dict(target.get("fields") or {}).items()}
        body = MultipartBody(fields, [("file", path)], progress)
        try:
            response = httpx.post(str(target["url"]), content=iter(body), headers=body.headers, timeout=None)
        except httpx.TransportError as exc:
            raise _not_reachable(str(target["url"]), exc) from None
        if response.is_error:
            raise _error_from(response)

    def upload_direct(
        self, version_id: int, model: Path, requirements: Path | None, progress: Callable[[int], None]
    ) -> dict[str, Any]:
        """The older direct multipart upload through the API."""
        files = [("model_file", model)] + ([("requirements_file", requirements)] if requirements else [])
        body = MultipartBody({}, files, progress)
        return dict(self.call(
            "POST", f"/versions/{version_id}/upload", content=iter(body), headers=body.headers,
            timeout=httpx.Timeout(30.0, write=None, read=300.0),
        ))

    # --- deployments
    def create_deployment(self, version_id: int, replicas: int) -> dict[str, Any]:
        return self.create(f"/versions/{version_id}/deployments", {"replicas": replicas})

    def list_deployments(self) -> list[dict[str, Any]]:
        return self.all_pages("/deployments")

    def get_deployment(self, deployment_id: int) -> dict[str, Any]:
        return dict(self.call("GET", f"/deployments/{deployment_id}"))

    def scale_deployment(self, deployment_id: int, replicas: int) -> dict[str, Any]:
        return dict(self.call("PATCH", f"/deployments/{deployment_id}", json={"replicas": replicas}))

    def move_deployment(self, deployment_id: int, version_id: int, rollout: dict[str, Any] | None) -> dict[str, Any]:
        body: dict[str, Any] = {"version_id": version_id}
        if rollout is not None:
            body["rollout"] = rollout
        return dict(self.call("PATCH", f"/deployments/{deployment_id}", json=body))

    def end_rollout(self, deployment_id: int, how: str) -> dict[str, Any]:
        """``how``: promote or abort."""
        return dict(self.call("POST", f"/deployments/{deployment_id}/rollout/{how}"))

    def start_shadow(self, deployment_id: int, version_id: int, percent: int, tolerance: float) -> dict[str, Any]:
        body = {"version_id": version_id, "percent": percent, "tolerance": tolerance}
        return dict(self.call("PUT", f"/deployments/{deployment_id}/shadow", json=body))

    def shadow_report(self, deployment_id: int) -> dict[str, Any]:
        return dict(self.call("GET", f"/deployments/{deployment_id}/shadow"))

    def stop_shadow(self, deployment_id: int) -> dict[str, Any]:
        return dict(self.call("DELETE", f"/deployments/{deployment_id}/shadow"))

    def promote_shadow(self, deployment_id: int, rollout: dict[str, Any]) -> dict[str, Any]:
        return dict(self.call("POST", f"/deployments/{deployment_id}/shadow/promote", json=rollout))

    def delete_deployment(self, deployment_id: int) -> dict[str, Any]:
        return dict(self.call("DELETE", f"/deployments/{deployment_id}"))

    def deployment_gone(self, deployment_id: int) -> bool:
        try:
            self.get_deployment(deployment_id)
        except ApiError as exc:
            if exc.status == 404:
                return True
            raise
        return False

    # --- predictions (the deployment's own URL, not the API)
    def predict(self, url: str, body: Any, proba: bool, token: str | None = None) -> Any:
        """POST {url}/predict. The API key never goes to a prediction URL (another service, maybe
        another host); the deployment's own token does, when it has one."""
        params = {"proba": "true"} if proba else None
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        target = url.rstrip("/") + "/predict"
        try:
            response = httpx.post(target, json=body, params=params, headers=headers, timeout=self.http.timeout)
        except httpx.TransportError as exc:
            raise _not_reachable(target, exc) from None
        if response.is_error:
            raise _error_from(response)
        return response.json()

    def issue_token(self, deployment_id: int) -> dict[str, Any]:
        return dict(self.call("POST", f"/deployments/{deployment_id}/token"))

    def remove_token(self, deployment_id: int) -> dict[str, Any]:
        return dict(self.call("DELETE", f"/deployments/{deployment_id}/token"))


# ---------------------------------------------------------------------------------------- waiting


def wait_until(
    fetch: Callable[[], T], done: Callable[[T], bool], timeout: float,
    on_poll: Callable[[T], None] | None = None, first_interval: float = 0.25, max_interval: float = 2.0,
) -> T:
    """Poll ``fetch`` until ``done`` or the deadline; raises WaitTimedOut with the last value.

    Polling is the only way here: the API has no push channel. The interval grows from
    ``first_interval`` to ``max_interval`` and never sleeps past the deadline."""
    deadline = time.monotonic() + timeout
    interval = first_interval
    while True:
        value = fetch()
        if on_poll:
            on_poll(value)
        if done(value):
            return value
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise WaitTimedOut(value)
        time.sleep(min(interval, remaining))
        interval = min(interval * 1.5, max_interval)

"""The model server's process contract: what whoever starts a server (the Helm chart, the local
driver, the tests, ``modelport serve``) and the server itself agree on. Nothing else spells these
names.

- ``ServerConfig``: every setting of one server, typed. ``to_env()`` writes the environment
  variables a server process reads; ``from_env(mapping)`` reads them back (the server's ``main``
  does, once, and hands the config down). The chart sets the same names (a test renders the chart
  and compares them with ``ENV_NAMES``).
- ``server_argv()``: the command that starts one with a given interpreter.
- ``READY_PATH`` / ``LIVE_PATH``: the probes; ``METRICS_PATH``: the Prometheus exposition.
- A server that cannot serve its model exits with status 1 after printing one *failure line* on
  stderr: ``failure_line(reason)`` writes it, ``parse_failure(line)`` reads it back (None for any
  other line), so the starter shows the server's stated reason without matching free text.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from modelport.domain.pickle_policy import parse_trusted_globals

READY_PATH = "/readyz"
LIVE_PATH = "/healthz"
METRICS_PATH = "/metrics"
MODULE = "modelport.serving"
FAILURE_KEY = "modelport_failure"


def server_argv(python: str) -> list[str]:
    """The command that starts a model server with the interpreter ``python``."""
    return [python, "-m", MODULE]


def _sha256(value: str | None) -> str | None:
    if not value:
        return None
    value = value.strip().lower()
    if len(value) != 64 or any(c not in "0123456789abcdef" for c in value):
        raise ValueError("a sha256 is 64 hex digits")
    return value


class ServerConfig(BaseModel):
    """One model server's settings; each field's alias is its environment variable."""

    model_config = ConfigDict(frozen=True, populate_by_name=True, protected_namespaces=(), extra="ignore")

    model_uri: str = Field(alias="MODEL_URI", min_length=1,
                           description="s3://bucket/key, bucket/key or a local path to a joblib/pickle file")
    model_sha256: str | None = Field(default=None, alias="MODEL_SHA256", description="refuse a file with another")
    model_version_id: str | None = Field(default=None, alias="MODEL_VERSION_ID",
                                         description="the S3 object version to fetch (the one that was checked)")
    requirements_uri: str | None = Field(default=None, alias="REQUIREMENTS_URI")
    requirements_sha256: str | None = Field(default=None, alias="REQUIREMENTS_SHA256")
    requirements_version_id: str | None = Field(default=None, alias="REQUIREMENTS_VERSION_ID")
    model_name: str = Field(default="model", alias="MODEL_NAME", description="the name in V1/V2 paths")
    trusted_globals: str | None = Field(
        default=None, alias="MODEL_TRUSTED_GLOBALS",
        description="comma-separated module.Name the version's owner trusts beyond the allow-list",
    )
    host: str = Field(default="0.0.0.0", alias="SERVER_HOST", description="a pod serves on all interfaces")  # noqa: S104
    port: int = Field(default=8080, ge=0, le=65535, alias="PORT")
    root_path: str = Field(default="", alias="ROOT_PATH", description="also serve every path under this prefix")
    model_cache_dir: str = Field(default="/tmp/modelport", alias="MODEL_CACHE_DIR")  # noqa: S108
    max_request_bytes: int = Field(default=16 * 1024 * 1024, gt=0, alias="MAX_REQUEST_BYTES")
    predict_token_sha256: str | None = Field(
        default=None, alias="PREDICT_TOKEN_SHA256", description="set: every route but health needs the token"
    )
    microbatch_enabled: bool = Field(default=True, alias="MICROBATCH_ENABLED")
    microbatch_max_batch: int = Field(default=64, ge=1, alias="MICROBATCH_MAX_BATCH")
    microbatch_max_wait_ms: float = Field(default=2.0, ge=0, alias="MICROBATCH_MAX_WAIT_MS")
    # shadow traffic: copies of a share of the answered predictions go to a candidate server
    # (serving/mirror.py), which callers never wait for; its answers are compared with the live ones
    mirror_url: str | None = Field(default=None, alias="MIRROR_URL",
                                   description="set: the candidate's base URL, e.g. http://release-shadow:80")
    mirror_percent: int = Field(default=100, ge=1, le=100, alias="MIRROR_PERCENT",
                                description="the share of answered prediction requests copied")
    mirror_tolerance: float = Field(default=1e-6, ge=0, alias="MIRROR_TOLERANCE",
                                    description="a regressor's answers agree within this (relative, at least absolute)")
    mirror_queue_size: int = Field(default=1024, ge=1, alias="MIRROR_QUEUE_SIZE",
                                   description="copies waiting to be sent; one more is dropped and counted")
    mirror_timeout_seconds: float = Field(default=2.0, gt=0, alias="MIRROR_TIMEOUT_SECONDS")
    log_level: str = Field(default="INFO", alias="LOG_LEVEL")
    sandbox: Literal["auto", "required", "off"] = Field(
        default="auto", alias="MODEL_SANDBOX",
        description="confine the server with Landlock and drop capabilities (serving/sandbox.py): auto where the "
                    "kernel allows, required or refuse to serve, off",
    )
    # the object store, as the server reaches it (the seed's names)
    s3_endpoint: str | None = Field(default=None, alias="MINIO_ENDPOINT", description="unset: AWS S3")
    s3_access_key: str | None = Field(default=None, alias="MINIO_ACCESS_KEY", repr=False)
    s3_secret_key: str | None = Field(default=None, alias="MINIO_SECRET_KEY", repr=False)
    s3_use_ssl: bool = Field(default=False, alias="MINIO_USE_SSL")
    s3_region: str = Field(default="us-east-1", alias="AWS_REGION")

    @field_validator("root_path")
    @classmethod
    def _clean_root(cls, value: str) -> str:
        value = value.strip().rstrip("/")
        if value and not value.startswith("/"):
            value = "/" + value
        return value

    @field_validator("trusted_globals")
    @classmethod
    def _clean_trusted(cls, value: str | None) -> str | None:
        entries = parse_trusted_globals(v for v in (value or "").split(",") if v.strip())
        return ",".join(entries) or None

    def trusted(self) -> tuple[str, ...]:
        """The owner's trust list, as entries."""
        return tuple(v for v in (self.trusted_globals or "").split(",") if v)

    @field_validator("model_sha256", "requirements_sha256", "predict_token_sha256")
    @classmethod
    def _clean_sha(cls, value: str | None) -> str | None:
        return _sha256(value)

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> ServerConfig:
        """The config a process environment describes (unknown names ignored, empty ones unset).
        Raises ValueError with a readable message, naming the variable, when it is not valid."""
        values = {name: env[name] for name in ENV_NAMES if env.get(name, "") != ""}
        if "MODEL_URI" not in values:
            raise ValueError("MODEL_URI is not set: give the model as s3://bucket/key, bucket/key or a path")
        try:
            return cls.model_validate(values)
        except ValidationError as exc:
            problems = "; ".join(f"{_alias(err['loc'])}: {err['msg']}" for err in exc.errors())
            raise ValueError(problems) from None

    def to_env(self) -> dict[str, str]:
        """The environment variables that describe this config (unset fields left out)."""
        env: dict[str, str] = {}
        for name, value in self.model_dump(by_alias=True).items():
            if value is None:
                continue
            env[name] = ("true" if value else "false") if isinstance(value, bool) else str(value)
        return env


#: every environment variable a model server reads
ENV_NAMES: tuple[str, ...] = tuple(str(f.alias) for f in ServerConfig.model_fields.values())


def _alias(loc: tuple[Any, ...]) -> str:
    field = str(loc[0]) if loc else ""
    info = ServerConfig.model_fields.get(field)
    return str(info.alias) if info is not None and info.alias else field


def failure_line(reason: str) -> str:
    """The one stderr line of a server that cannot serve its model."""
    return json.dumps({FAILURE_KEY: {"reason": reason}})


def parse_failure(line: str) -> str | None:
    """The reason in a failure line; None for any other line."""
    line = line.strip()
    if not line.startswith("{") or FAILURE_KEY not in line:
        return None
    try:
        found = json.loads(line)
    except ValueError:
        return None
    if not isinstance(found, dict) or not isinstance(found.get(FAILURE_KEY), dict):
        return None
    reason = found[FAILURE_KEY].get("reason")
    return reason if isinstance(reason, str) else None

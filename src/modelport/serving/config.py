"""The model server's own configuration: a frozen view of the settings it reads."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, field_validator

from modelport.settings import Settings, get_settings


class ServeConfig(BaseModel):
    model_config = ConfigDict(frozen=True, protected_namespaces=())

    model_uri: str
    model_sha256: str | None = None
    requirements_uri: str | None = None
    requirements_sha256: str | None = None
    model_name: str = "model"
    host: str = "0.0.0.0"  # noqa: S104 - a pod serves on all interfaces
    port: int = Field(default=8080, ge=0, le=65535)
    root_path: str = ""
    model_cache_dir: str = "/tmp/modelport"  # noqa: S108
    max_request_bytes: int = Field(default=16 * 1024 * 1024, gt=0)
    predict_token_sha256: str | None = None  # set: every route but health needs the deployment's token
    microbatch_enabled: bool = True
    microbatch_max_batch: int = Field(default=64, ge=1)
    microbatch_max_wait_ms: float = Field(default=2.0, ge=0)
    log_level: str = "INFO"

    @field_validator("root_path")
    @classmethod
    def _clean_root(cls, value: str) -> str:
        value = value.strip().rstrip("/")
        if value and not value.startswith("/"):
            value = "/" + value
        return value

    @field_validator("model_sha256", "requirements_sha256", "predict_token_sha256")
    @classmethod
    def _clean_sha(cls, value: str | None) -> str | None:
        if not value:
            return None
        value = value.strip().lower()
        if len(value) != 64 or any(c not in "0123456789abcdef" for c in value):
            raise ValueError("a sha256 is 64 hex digits")
        return value

    @classmethod
    def from_settings(cls, settings: Settings | None = None, **overrides: object) -> ServeConfig:
        settings = settings or get_settings()
        if not (overrides.get("model_uri") or settings.model_uri):
            raise ValueError("MODEL_URI is not set: give the model as s3://bucket/key, bucket/key or a path")
        values: dict[str, object] = {
            "model_uri": settings.model_uri,
            "model_sha256": settings.model_sha256,
            "requirements_uri": settings.requirements_uri,
            "requirements_sha256": settings.requirements_sha256,
            "model_name": settings.model_name,
            "host": settings.server_host,
            "port": settings.port,
            "root_path": settings.root_path,
            "model_cache_dir": settings.model_cache_dir,
            "max_request_bytes": settings.max_request_bytes,
            "predict_token_sha256": settings.predict_token_sha256,
            "microbatch_enabled": settings.microbatch_enabled,
            "microbatch_max_batch": settings.microbatch_max_batch,
            "microbatch_max_wait_ms": settings.microbatch_max_wait_ms,
            "log_level": settings.log_level,
        }
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls.model_validate(values)

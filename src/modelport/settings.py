"""All configuration, read from the environment through one pydantic-settings class.

The seed's names (MINIO_*, INGRESS_*) keep working; everything else is upper-case of the field
name (``TABLE_NAME``, ``HELM_TIMEOUT_SECONDS`` ...). Every part of modelport (API, deployer,
artifacts, local platform, CLI) builds one ``Settings`` at its entry point (a Lambda module,
``modelport up``, a CLI command) and passes it down; nothing reads a global one. The model server
has its own config, ``modelport.domain.model_server.ServerConfig``.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from modelport.domain.paths import endpoint_url


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="", case_sensitive=False, extra="ignore")

    # --- object store (the seed's names) ---
    minio_endpoint: str | None = Field(
        default=None, description="S3 endpoint host:port (or URL); unset means AWS S3 itself"
    )
    minio_access_key: str | None = None
    minio_secret_key: str | None = None
    minio_bucket_name: str = "models"
    minio_use_ssl: bool = False
    aws_region: str = Field(default="us-east-1", validation_alias="AWS_REGION")

    # --- public URLs (the seed's names) ---
    ingress_host: str = "localhost"
    ingress_port: int = 30080
    ingress_base_path: str = "/api/v1/predict"
    public_base_url: str | None = Field(
        default=None, description="overrides http://{INGRESS_HOST}:{INGRESS_PORT} in deployment URLs"
    )

    # --- table ---
    table_name: str = "modelport"
    dynamodb_endpoint: str | None = None

    # --- limits ---
    max_upload_bytes: int = 512 * 1024 * 1024
    max_requirements_bytes: int = 64 * 1024
    replicas_min: int = 1
    replicas_max: int = 20
    page_size_default: int = 50
    page_size_max: int = 200

    # --- deployer / cluster ---
    cluster_driver: str = Field(
        default="helm", description="helm (a Kubernetes cluster) or local (model servers as local processes)"
    )
    state_dir: str = Field(default=".modelport", description="the local platform's state directory")
    helm_timeout_seconds: int = 300
    cluster_s3_endpoint: str = Field(
        default="minio:9000", description="the S3 endpoint as pods inside the cluster reach it"
    )
    cluster_s3_use_ssl: bool = False
    failed_record_ttl_seconds: int = 86400
    kubeconfig: str | None = Field(default=None, validation_alias="KUBECONFIG")
    kubeconfig_secret_arn: str | None = None
    secrets_manager_endpoint: str | None = Field(
        default=None, description="Secrets Manager endpoint URL (a stand-in's, for `sam local`); unset means AWS"
    )
    helm_bin: str | None = None
    kubectl_bin: str | None = None
    chart_path: str | None = None
    model_server_image: str = "ghcr.io/modelport/model-server:0.1.0"
    helm_server_side: Literal["auto", "true", "false"] = Field(
        default="auto", description="helm's --server-side: false for an API server without server-side apply"
    )
    helm_openapi_validation: bool = Field(
        default=True, description="false for an API server without OpenAPI documents (--disable-openapi-validation)"
    )
    ingress_class_name: str = "nginx"
    deployer_concurrency: int = 4
    cluster_retries: int = 3
    cluster_retry_backoff_seconds: float = 2.0

    # --- model-server metrics (the dashboard's charts, the rollout decisions) ---
    metrics_sample_seconds: float = Field(
        default=60.0, gt=0, description="how often the local platform samples (AWS: the reconcile schedule)"
    )
    metrics_retention_seconds: int = Field(default=25 * 3600, ge=3600, description="how long samples are kept")

    # --- logging ---
    log_level: str = "INFO"

    @field_validator(
        "minio_endpoint", "dynamodb_endpoint", "secrets_manager_endpoint", "kubeconfig", "kubeconfig_secret_arn",
        "public_base_url", mode="before",
    )
    @classmethod
    def _empty_is_unset(cls, value: object) -> object:
        # template.yaml declares these with "" in AWS (so that `sam local`'s env-vars file may set
        # them: SAM overrides only variables the template declares); "" means "not set"
        return None if value == "" else value

    @property
    def s3_endpoint_url(self) -> str | None:
        """The boto3 endpoint_url for the control plane's S3 client (None: AWS)."""
        return endpoint_url(self.minio_endpoint, self.minio_use_ssl)

    @property
    def public_base(self) -> str:
        if self.public_base_url:
            return self.public_base_url.rstrip("/")
        return f"http://{self.ingress_host}:{self.ingress_port}"

    def deployment_url(self, deployment_id: int) -> str:
        base_path = "/" + self.ingress_base_path.strip("/")
        return f"{self.public_base}{base_path}/{deployment_id}"

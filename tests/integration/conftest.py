"""The control plane as it runs for real here: the API in its own uvicorn process, over HTTP,
against DynamoDB Local (Amazon's jar) and moto's S3 server."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import boto3
import httpx
import pytest

from modelport.local.processes import ServerProcess, free_port, start
from modelport.settings import Settings
from modelport.store.records import ensure_table


@dataclass
class ControlPlane:
    url: str
    env: dict[str, str]
    settings: Settings

    def client(self, key: str | None) -> httpx.Client:
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=30)

    def create_user(self, name: str | None = None) -> str:
        """A user through the real CLI; returns the API key it printed."""
        name = name or f"u-{uuid.uuid4().hex[:8]}"
        done = subprocess.run(
            [sys.executable, "-m", "modelport.cli", "users", "create", name],
            env={**os.environ, **self.env}, capture_output=True, text=True, check=True,
        )
        return done.stdout.strip().splitlines()[-1]


def control_plane_env(dynamodb: ServerProcess, s3: ServerProcess, **extra: str) -> dict[str, str]:
    return {
        "TABLE_NAME": f"modelport-{uuid.uuid4().hex[:8]}",
        "DYNAMODB_ENDPOINT": dynamodb.url,
        "MINIO_ENDPOINT": s3.url,
        "MINIO_BUCKET_NAME": f"models-{uuid.uuid4().hex[:8]}",
        "MINIO_ACCESS_KEY": "testing",
        "MINIO_SECRET_KEY": "testing",
        "AWS_REGION": "us-east-1",
        **extra,
    }


def prepare(env: dict[str, str]) -> Settings:
    settings = Settings(**{k.lower(): v for k, v in env.items() if k != "AWS_REGION"})
    ensure_table(settings)
    boto3.client(
        "s3", endpoint_url=settings.s3_endpoint_url, region_name="us-east-1",
        aws_access_key_id="testing", aws_secret_access_key="testing",
    ).create_bucket(Bucket=settings.minio_bucket_name)
    return settings


def start_api(env: dict[str, str], log_dir: Path) -> ServerProcess:
    port = free_port()
    argv = [
        sys.executable, "-m", "uvicorn", "modelport.api.app:from_environment", "--factory",
        "--host", "127.0.0.1", "--port", str(port), "--no-access-log",
    ]
    return start("api", argv, port, log_dir=log_dir, env=env).wait_ready(60)


@pytest.fixture(scope="module")
def control_plane_factory(
    dynamodb_local: ServerProcess, moto_server: ServerProcess, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Callable[..., ControlPlane]]:
    started: list[ServerProcess] = []

    def make(**extra: str) -> ControlPlane:
        env = control_plane_env(dynamodb_local, moto_server, **extra)
        settings = prepare(env)
        api = start_api(env, tmp_path_factory.mktemp("api"))
        started.append(api)
        return ControlPlane(api.url, env, settings)

    yield make
    for proc in started:
        proc.stop()


@pytest.fixture(scope="module")
def control_plane(control_plane_factory: Callable[..., ControlPlane]) -> ControlPlane:
    return control_plane_factory(MAX_UPLOAD_BYTES="200000")

"""Presigned direct uploads: the client POSTs its files straight to S3/MinIO (no API Gateway
payload limit), and the store itself enforces the key, the size range and the metadata."""

from __future__ import annotations

from typing import Any

from modelport.artifacts.storage import ObjectStore
from modelport.domain.entities import Version
from modelport.domain.paths import MODEL_FILE, REQUIREMENTS_FILE, artifact_key

UPLOAD_URL_EXPIRES_SECONDS = 900
AUTO_DEPLOY_META = "auto-deploy"  # x-amz-meta-auto-deploy: deploy the version once it is READY
REQUIREMENTS_META = "requirements"  # x-amz-meta-requirements: a requirements.txt comes with this model


def presigned_post(
    objects: ObjectStore, key: str, max_bytes: int, metadata: dict[str, str], expires_in: int
) -> dict[str, Any]:
    """A presigned POST for exactly ``key``, 1..max_bytes long, with fixed ``x-amz-meta-*`` fields."""
    fields = {f"x-amz-meta-{name}": value for name, value in metadata.items()}
    conditions: list[Any] = [["content-length-range", 1, max_bytes]]
    conditions += [{name: value} for name, value in fields.items()]
    post = objects.client.generate_presigned_post(
        Bucket=objects.bucket, Key=key, Fields=fields, Conditions=conditions, ExpiresIn=expires_in
    )
    return {"url": post["url"], "fields": post["fields"], "key": key}


def upload_targets(
    objects: ObjectStore, version: Version, *, requirements: bool, auto_deploy: bool,
    expires_in: int = UPLOAD_URL_EXPIRES_SECONDS,
) -> dict[str, Any]:
    settings = objects.settings
    meta: dict[str, str] = {}
    if auto_deploy:
        meta[AUTO_DEPLOY_META] = "true"
    if requirements:
        meta[REQUIREMENTS_META] = "true"  # the model's event waits for requirements.txt
    model_key = artifact_key(version.model_id, version.id, MODEL_FILE)
    answer: dict[str, Any] = {
        "model": presigned_post(objects, model_key, settings.max_upload_bytes, meta, expires_in),
        "requirements": None,
        "expires_in": expires_in,
        "max_bytes": settings.max_upload_bytes,
    }
    if requirements:
        req_key = artifact_key(version.model_id, version.id, REQUIREMENTS_FILE)
        answer["requirements"] = presigned_post(objects, req_key, settings.max_requirements_bytes, {}, expires_in)
    return answer

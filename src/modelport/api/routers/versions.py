"""/api/v1/versions/{version_id} and its upload."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, File, Request, UploadFile

from modelport.api.deps import ObjectsDep, Owner, SettingsDep, StoreDep
from modelport.api.routers.models import version_out
from modelport.api.schemas import UploadUrlOut, UploadUrlRequest, VersionOut
from modelport.artifacts.uploads import upload_targets
from modelport.domain.errors import TooLarge
from modelport.services.versions import upload_version

router = APIRouter(tags=["versions"])

_FORM_OVERHEAD = 64 * 1024


@router.get("/versions/{version_id}", response_model=VersionOut)
def get_version(version_id: int, owner: Owner, store: StoreDep) -> VersionOut:
    return version_out(store.get_version(owner, version_id))


@router.post("/versions/{version_id}/upload", response_model=VersionOut)
def upload(
    version_id: int, owner: Owner, store: StoreDep, objects: ObjectsDep, settings: SettingsDep,
    model_file: Annotated[UploadFile, File(description="the model, e.g. model.joblib")],
    requirements_file: Annotated[UploadFile | None, File(description="requirements.txt (optional)")] = None,
) -> VersionOut:
    version = upload_version(
        store, objects, settings, owner, version_id, model_file.file,
        requirements_file.file if requirements_file else None,
    )
    return version_out(version)


@router.post("/versions/{version_id}/upload-url", response_model=UploadUrlOut)
def upload_url(
    version_id: int, owner: Owner, store: StoreDep, objects: ObjectsDep, body: UploadUrlRequest | None = None
) -> UploadUrlOut:
    """Presigned POST targets for model.joblib (and requirements.txt) under the version's prefix.

    The store enforces the key, the size range and the metadata; the upload's S3 event then checks
    the files and marks the version READY or REJECTED (and auto-deploys when asked).
    """
    version = store.ensure_version_unused(owner, version_id)  # 404 for another user's id, 409 in use
    request = body or UploadUrlRequest()
    return UploadUrlOut.model_validate(
        upload_targets(objects, version, requirements=request.requirements, auto_deploy=request.auto_deploy)
    )


async def refuse_oversized_upload(request: Request, settings: SettingsDep) -> None:
    """413 from Content-Length alone, before a byte of an oversized body is parsed."""
    length = request.headers.get("content-length")
    limit = settings.max_upload_bytes + settings.max_requirements_bytes + _FORM_OVERHEAD
    if length and length.isdigit() and int(length) > limit:
        raise TooLarge(
            f"the upload is {length} bytes; the limit is {settings.max_upload_bytes} bytes for the model",
            code="file_too_large",
        )

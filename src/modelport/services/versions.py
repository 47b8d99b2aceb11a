"""Versions and their artifacts: the upload through the API, and marking a version READY (the one
code path of the API upload and the S3-event upload).

Rules:
- a version a deployment uses is never changed (409 ``version_in_use`` before a byte is stored);
- both files are checked before anything is stored; requirements.txt is stored first, so the
  model's S3 event finds the pair complete;
- registering the same artifacts again changes nothing.
"""

from __future__ import annotations

from typing import IO

from modelport.artifacts.checks import inspect_model, inspect_requirements
from modelport.artifacts.storage import ObjectStore
from modelport.domain.entities import Artifact, Version
from modelport.domain.errors import Conflict
from modelport.domain.paths import MODEL_FILE, REQUIREMENTS_FILE, artifact_key
from modelport.domain.pickle_policy import PicklePolicy
from modelport.settings import Settings
from modelport.store.repository import Store


def register_version(
    store: Store, objects: ObjectStore, version: Version, model: Artifact, requirements: Artifact | None
) -> Version:
    """READY with s3_path, size and sha256; a repeat of the same artifacts changes nothing."""
    same = (
        version.model_artifact is not None
        and version.model_artifact.sha256 == model.sha256
        and (version.requirements_artifact.sha256 if version.requirements_artifact else None)
        == (requirements.sha256 if requirements else None)
        and version.s3_path == objects.s3_path(model.key)
    )
    if same and version.status.value == "READY":
        return version
    try:
        return store.set_version_artifacts(
            version.id, s3_path=objects.s3_path(model.key), model_artifact=model, requirements_artifact=requirements
        )
    except Conflict:
        # in use now: fine if what it holds is exactly this (the S3 event of this very upload got
        # there first and auto-deployed it)
        current = store.find_version(version.id)
        if current is not None and current.id == version.id and _holds(current, objects, model, requirements):
            return current
        raise


def _holds(version: Version, objects: ObjectStore, model: Artifact, requirements: Artifact | None) -> bool:
    return (
        version.status.value == "READY"
        and version.model_artifact is not None
        and version.model_artifact.sha256 == model.sha256
        and (version.requirements_artifact.sha256 if version.requirements_artifact else None)
        == (requirements.sha256 if requirements else None)
        and version.s3_path == objects.s3_path(model.key)
    )


def version_policy(version: Version, requirements_file: IO[bytes] | None) -> PicklePolicy:
    """The allow-list this version's model file is checked against, as the model server will load it:
    the list, the known packages its (already checked) requirements.txt names, its owner's trust list."""
    text = None
    if requirements_file is not None:
        requirements_file.seek(0)
        text = requirements_file.read().decode("utf-8")
        requirements_file.seek(0)
    return PicklePolicy.for_requirements(text, version.trusted_globals)


def upload_version(
    store: Store, objects: ObjectStore, settings: Settings, owner: str, version_id: int,
    model_file: IO[bytes], requirements_file: IO[bytes] | None,
) -> Version:
    """The API upload: check both files, store them under the version's prefix, mark READY."""
    version = store.ensure_version_unused(owner, version_id)  # 404 / 409 before any byte is stored
    req_found = inspect_requirements(requirements_file, settings) if requirements_file is not None else None
    model_found = inspect_model(model_file, settings, version_policy(version, requirements_file))

    # requirements first: the model's S3 event (which may auto-deploy) then finds the pair complete
    requirements = None
    req_key = artifact_key(version.model_id, version.id, REQUIREMENTS_FILE)
    if requirements_file is not None and req_found is not None:
        req_etag, req_version = objects.put(req_key, requirements_file, {"sha256": req_found.sha256})
        requirements = Artifact(key=req_key, size=req_found.size, sha256=req_found.sha256, etag=req_etag,
                                version_id=req_version)
    elif version.requirements_artifact is not None:
        objects.delete(req_key)  # a re-upload without requirements drops the old file
    model_key = artifact_key(version.model_id, version.id, MODEL_FILE)
    etag, model_version = objects.put(model_key, model_file, {"sha256": model_found.sha256})
    model = Artifact(key=model_key, size=model_found.size, sha256=model_found.sha256, etag=etag,
                     version_id=model_version)
    return register_version(store, objects, version, model, requirements)

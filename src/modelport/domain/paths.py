"""Pure helpers for names that cross boundaries: S3 paths, namespaces, release names, keys."""

from __future__ import annotations

import hashlib
import re

from modelport.domain.errors import BadRequest

MODEL_FILE = "model.joblib"
REQUIREMENTS_FILE = "requirements.txt"

_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_ARTIFACT_KEY = re.compile(r"^models/(\d+)/versions/(\d+)/([^/]+)$")


def parse_s3_path(path: str) -> tuple[str, str]:
    """``s3://bucket/key`` or ``bucket/key`` -> ``(bucket, key)``; anything else is a BadRequest."""
    rest = path.strip()
    if rest.startswith("s3://"):
        rest = rest[len("s3://") :]
    elif "://" in rest:
        raise BadRequest(f"not an S3 path: {path!r} (want s3://bucket/key or bucket/key)", code="bad_s3_path")
    bucket, sep, key = rest.partition("/")
    if not bucket or not sep or not key or key.endswith("/"):
        raise BadRequest(f"not an S3 path: {path!r} (want s3://bucket/key or bucket/key)", code="bad_s3_path")
    return bucket, key


def namespace_for(owner: str) -> str:
    """The Kubernetes namespace ``user-{owner}``, made a valid DNS-1123 label for any owner id.

    Owners that are already clean lowercase labels keep their name; any other owner (a JWT ``sub``
    such as ``auth0|5f...`` or an e-mail address) is lowered, stripped of invalid characters and
    suffixed with a short hash of the original, so two owners never share a namespace.
    """
    candidate = f"user-{owner}"
    if _DNS_LABEL.match(candidate) and len(candidate) <= 63:
        return candidate
    digest = hashlib.sha256(owner.encode()).hexdigest()[:10]
    cleaned = re.sub(r"[^a-z0-9-]+", "-", owner.lower()).strip("-")
    cleaned = cleaned[: 63 - len("user-") - len(digest) - 1].strip("-")
    return f"user-{cleaned}-{digest}" if cleaned else f"user-{digest}"


def artifact_prefix(model_id: int, version_id: int) -> str:
    return f"models/{model_id}/versions/{version_id}/"


def artifact_key(model_id: int, version_id: int, filename: str) -> str:
    return f"{artifact_prefix(model_id, version_id)}{filename}"


def parse_artifact_key(key: str) -> tuple[int, int, str] | None:
    """``models/{m}/versions/{v}/{file}`` -> ``(m, v, file)``; None for any other key."""
    match = _ARTIFACT_KEY.match(key)
    if not match:
        return None
    return int(match.group(1)), int(match.group(2)), match.group(3)


def endpoint_url(endpoint: str | None, use_ssl: bool) -> str | None:
    """``minio:9000`` + ssl flag -> ``http://minio:9000`` (the seed's MINIO_ENDPOINT and
    MINIO_USE_SSL); a full URL is kept as it is; None: AWS S3 itself."""
    if not endpoint:
        return None
    if "://" in endpoint:
        return endpoint
    return f"{'https' if use_ssl else 'http'}://{endpoint}"

"""The object store (S3 or MinIO): the only code that talks to it for the control plane."""

from __future__ import annotations

import hashlib
from typing import IO, Any

from botocore.config import Config

from modelport.settings import Settings

CHUNK = 1024 * 1024
#: what lets the dashboard (a page on the API's origin) POST a presigned upload with progress
#: events and read the answer; the presigned policy, not the origin, is what authorizes an upload.
#: template.yaml gives the AWS bucket the same rule.
BROWSER_UPLOAD_CORS = {"CORSRules": [{
    "AllowedMethods": ["POST"], "AllowedOrigins": ["*"], "AllowedHeaders": ["*"], "ExposeHeaders": ["ETag"],
    "MaxAgeSeconds": 3000,
}]}
_MISSING = {"404", "NoSuchKey", "NotFound"}
_SUPERSEDED = {"412", "PreconditionFailed"}


def _error_code(exc: Exception) -> str:
    return str(getattr(exc, "response", {}).get("Error", {}).get("Code"))


def s3_client(settings: Settings) -> Any:
    # boto3 (with s3transfer) is imported here, not at module level: most API requests never touch
    # S3, and Lambda bills the import of the handler module as init (bench/api_cold_start.py)
    import boto3

    kwargs: dict[str, Any] = {
        "region_name": settings.aws_region,
        "config": Config(signature_version="s3v4", s3={"addressing_style": "path"}, retries={"mode": "standard"}),
    }
    if settings.s3_endpoint_url:
        kwargs["endpoint_url"] = settings.s3_endpoint_url
    if settings.minio_access_key and settings.minio_secret_key:
        kwargs["aws_access_key_id"] = settings.minio_access_key
        kwargs["aws_secret_access_key"] = settings.minio_secret_key
    return boto3.client("s3", **kwargs)


def object_etag(head: dict[str, Any]) -> str | None:
    """The object's ETag as a HEAD or GET answered it, without its quotes."""
    return str(head.get("ETag", "")).strip('"') or None


def object_version(head: dict[str, Any]) -> str | None:
    """The object version a HEAD or GET answered with; None in a bucket that keeps none."""
    version = head.get("VersionId")
    return str(version) if version and version != "null" else None


def sha256_of(stream: IO[bytes]) -> tuple[str, int]:
    """(hex sha256, size) of a stream read to its end in chunks."""
    digest = hashlib.sha256()
    size = 0
    while chunk := stream.read(CHUNK):
        digest.update(chunk)
        size += len(chunk)
    return digest.hexdigest(), size


class ObjectStore:
    def __init__(self, settings: Settings, client: Any | None = None) -> None:
        self.settings = settings
        self.bucket = settings.minio_bucket_name
        self.client = client or s3_client(settings)

    def s3_path(self, key: str) -> str:
        return f"s3://{self.bucket}/{key}"

    def ensure_bucket(self) -> None:
        """The bucket, versioned (as template.yaml makes it in AWS): a version pins the object
        version its checks read, whatever is written to the key later."""
        try:
            self.client.head_bucket(Bucket=self.bucket)
        except self.client.exceptions.ClientError:
            self.client.create_bucket(Bucket=self.bucket)
        self.client.put_bucket_versioning(Bucket=self.bucket, VersioningConfiguration={"Status": "Enabled"})
        try:
            self.client.put_bucket_cors(Bucket=self.bucket, CORSConfiguration=BROWSER_UPLOAD_CORS)
        except self.client.exceptions.ClientError as exc:
            # MinIO has no bucket CORS (it answers every origin itself); anything else is an error
            if _error_code(exc) not in {"NotImplemented", "501"}:
                raise

    def put(self, key: str, stream: IO[bytes], metadata: dict[str, str] | None = None) -> tuple[str | None, str | None]:
        """Upload a stream (multipart for large ones); returns its (ETag, object version)."""
        self.client.upload_fileobj(stream, self.bucket, key, ExtraArgs={"Metadata": metadata or {}})
        head = self.client.head_object(Bucket=self.bucket, Key=key)
        return object_etag(head), object_version(head)

    def head(self, key: str) -> dict[str, Any] | None:
        """The object's HEAD (ETag, size, metadata); None if there is no such object."""
        try:
            head: dict[str, Any] = self.client.head_object(Bucket=self.bucket, Key=key)
        except self.client.exceptions.ClientError as exc:
            if _error_code(exc) in _MISSING:
                return None
            raise
        return head

    def download(self, key: str, etag: str | None, into: IO[bytes], version_id: str | None = None) -> bool:
        """The object's bytes as they were when headed (``etag``, and its ``version_id`` where the
        bucket keeps versions) into ``into``, rewound; False when it changed or went meanwhile."""
        kwargs: dict[str, Any] = {"Bucket": self.bucket, "Key": key}
        if etag:
            kwargs["IfMatch"] = f'"{etag}"'
        if version_id:
            kwargs["VersionId"] = version_id
        try:
            body = self.client.get_object(**kwargs)["Body"]
        except self.client.exceptions.ClientError as exc:
            if _error_code(exc) in _MISSING | _SUPERSEDED:
                return False
            raise
        while chunk := body.read(CHUNK):
            into.write(chunk)
        into.seek(0)
        return True

    def delete(self, key: str) -> None:
        self.client.delete_object(Bucket=self.bucket, Key=key)

    def delete_prefix(self, prefix: str) -> int:
        """Every object under ``prefix``, each of its versions and delete markers included."""
        deleted = 0
        paginator = self.client.get_paginator("list_object_versions")
        for page in paginator.paginate(Bucket=self.bucket, Prefix=prefix):
            keys = [{"Key": obj["Key"], "VersionId": obj["VersionId"]}
                    for obj in [*page.get("Versions", []), *page.get("DeleteMarkers", [])]]
            if keys:
                self.client.delete_objects(Bucket=self.bucket, Delete={"Objects": keys, "Quiet": True})
                deleted += len(keys)
        return deleted

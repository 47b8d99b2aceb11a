"""Fetch an artifact (model or requirements) from S3/MinIO or a local path, and check its sha256.

``s3://bucket/key`` is always S3; a path that exists on disk (or ``file://...``) is local; any other
``bucket/key`` is S3. Endpoint, credentials and TLS come from the server's config (``s3_*``: the
environment's MINIO_ENDPOINT, MINIO_ACCESS_KEY, MINIO_SECRET_KEY, MINIO_USE_SSL); without keys boto3's own chain (IRSA,
instance roles, AWS_* variables) is used. A downloaded file is cached under MODEL_CACHE_DIR by its
sha256 when one is given, so a restart does not download it again.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import tempfile
from pathlib import Path

from modelport.domain.errors import BadRequest
from modelport.domain.model_server import ServerConfig
from modelport.domain.paths import endpoint_url, parse_s3_path
from modelport.serving.errors import ModelLoadError

log = logging.getLogger("modelport.serving")


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def is_local(uri: str) -> bool:
    if uri.startswith("file://"):
        return True
    if uri.startswith("s3://"):
        return False
    return Path(uri).expanduser().exists() or uri.startswith(("/", "./", "../", "~"))



def fetch(uri: str, *, what: str, cache_dir: Path, config: ServerConfig, sha256: str | None = None,
          version_id: str | None = None) -> Path:
    """Return a local path holding the artifact at ``uri`` (that S3 object version, if given),
    verified against ``sha256`` if given."""
    if is_local(uri):
        path = Path(uri.removeprefix("file://")).expanduser()
        if not path.is_file():
            raise ModelLoadError(f"The {what} file {path} does not exist (or is not a file).")
    else:
        path = _download(uri, what=what, cache_dir=cache_dir, sha256=sha256, config=config, version_id=version_id)
    if sha256:
        actual = file_sha256(path)
        if actual != sha256:
            raise ModelLoadError(
                f"The {what} at {uri} has sha256 {actual}, but {sha256} was expected: the file changed "
                "after it was registered, or the wrong file was uploaded. Refusing to load it."
            )
    return path


def _download(uri: str, *, what: str, cache_dir: Path, sha256: str | None, config: ServerConfig,
              version_id: str | None = None) -> Path:
    try:
        bucket, key = parse_s3_path(uri)
    except BadRequest as exc:
        raise ModelLoadError(f"The {what} location is not usable: {exc.message}") from None
    name = Path(key).name or what
    target_dir = cache_dir / "artifacts" / (sha256 or hashlib.sha256(uri.encode()).hexdigest()[:32])
    target = target_dir / name
    if sha256 and target.is_file() and file_sha256(target) == sha256:
        log.info("using cached %s %s", what, target)
        return target

    import boto3  # imported here: a local model needs no boto3 at all
    from botocore.config import Config
    from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError

    endpoint = endpoint_url(config.s3_endpoint, config.s3_use_ssl)
    where = f"s3://{bucket}/{key}" + (f" (version {version_id})" if version_id else "") + (
        f" at {endpoint}" if endpoint else "")
    client = boto3.client(
        "s3",
        endpoint_url=endpoint,
        aws_access_key_id=config.s3_access_key or None,
        aws_secret_access_key=config.s3_secret_key or None,
        region_name=config.s3_region,
        config=Config(retries={"max_attempts": 5, "mode": "standard"}, connect_timeout=5, read_timeout=60,
                      s3={"addressing_style": "path"} if endpoint else None),
    )
    target_dir.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=target_dir, prefix=".part-")
    os.close(fd)
    try:
        client.download_file(bucket, key, tmp_name, ExtraArgs={"VersionId": version_id} if version_id else None)
        shutil.move(tmp_name, target)
    except NoCredentialsError:
        raise ModelLoadError(
            f"Cannot download the {what} from {where}: no S3 credentials. Set MINIO_ACCESS_KEY and "
            "MINIO_SECRET_KEY (or give the pod an IAM role)."
        ) from None
    except ClientError as exc:
        code = str(exc.response.get("Error", {}).get("Code", ""))
        if code in ("404", "NoSuchKey", "NoSuchBucket", "NotFound", "NoSuchVersion"):
            reason = "the object does not exist"
        elif code in ("403", "AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch"):
            reason = f"access denied ({code}): check MINIO_ACCESS_KEY and MINIO_SECRET_KEY"
        else:
            reason = f"S3 answered {code or exc}"
        raise ModelLoadError(f"Cannot download the {what} from {where}: {reason}.") from None
    except (BotoCoreError, OSError) as exc:
        raise ModelLoadError(
            f"Cannot download the {what} from {where}: {exc}. Check MINIO_ENDPOINT and MINIO_USE_SSL."
        ) from None
    finally:
        if os.path.exists(tmp_name):
            os.unlink(tmp_name)
    log.info("downloaded %s %s (%d bytes)", what, where, target.stat().st_size)
    return target

"""Every key shape of the single table, in one place. Repositories build keys only through these.

Records: ``PK = {TYPE}#{id}``, ``SK = {TYPE}`` (users by name, API keys by their sha256).
Guards (exist only to make something unique, written in the record's own transaction):
``(USER#{owner}, MODELNAME#{name})``, ``(MODEL#{id}, LABEL#{label})``, ``(MODEL#{id}, FOLLOWER)``.
Metrics (never on the deployer's stream filter, which selects ``DEPLOYMENT#``):
``(METRICS#{deployment}, BASELINE#{release})``, ``(METRICS#{deployment}, SAMPLE#{epoch:012d}#{release})``.
Listings: GSI1 ``OWNER#{owner}`` / ``{TYPE}#{id:012d}`` (a user's models and deployments),
GSI2 ``MODEL#{id}`` / ``{TYPE}#{id:012d}`` (a model's versions and deployments).
"""

from __future__ import annotations

from modelport.store import schema

Key = tuple[str, str]


def record(kind: str, record_id: int) -> Key:
    """The key of a model, version or deployment record (``kind`` in lower case)."""
    return f"{kind.upper()}#{record_id}", kind.upper()


def model(model_id: int) -> Key:
    return record("model", model_id)


def version(version_id: int) -> Key:
    return record("version", version_id)


def deployment(deployment_id: int) -> Key:
    return record("deployment", deployment_id)


def user(name: str) -> Key:
    return f"{schema.USER_PREFIX}{name}", "USER"


def api_key(key_sha256: str) -> Key:
    return f"{schema.APIKEY_PREFIX}{key_sha256}", "APIKEY"


def counter(kind: str) -> Key:
    return f"{schema.COUNTER_PREFIX}{kind}", "COUNTER"


def model_name_guard(owner: str, name: str) -> Key:
    return f"{schema.USER_PREFIX}{owner}", f"MODELNAME#{name}"


def label_guard(model_id: int, label: str) -> Key:
    return f"{schema.MODEL_PREFIX}{model_id}", f"LABEL#{label}"


def follower_guard(model_id: int) -> Key:
    return f"{schema.MODEL_PREFIX}{model_id}", "FOLLOWER"


def owner_listing(owner: str) -> str:
    """GSI1's partition: everything an owner has."""
    return f"OWNER#{owner}"


def model_children(model_id: int) -> str:
    """GSI2's partition: a model's versions and deployments."""
    return f"{schema.MODEL_PREFIX}{model_id}"


def listed(kind: str, record_id: int) -> str:
    """The sort key of a record in either listing (zero-padded, so ids sort as numbers)."""
    return f"{listed_prefix(kind)}{record_id:012d}"


def listed_prefix(kind: str) -> str:
    return f"{kind.upper()}#"


def metrics_baseline(deployment_id: int, release: str) -> Key:
    return f"{schema.METRICS_PREFIX}{deployment_id}", f"BASELINE#{release}"


def metrics_sample(deployment_id: int, release: str, epoch_seconds: int) -> Key:
    return f"{schema.METRICS_PREFIX}{deployment_id}", f"{metrics_samples_prefix()}{epoch_seconds:012d}#{release}"


def metrics_partition(deployment_id: int) -> str:
    return f"{schema.METRICS_PREFIX}{deployment_id}"


def metrics_samples_prefix() -> str:
    return "SAMPLE#"

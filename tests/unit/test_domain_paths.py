"""Names that cross boundaries: S3 paths as users write them, namespaces for any owner id."""

from __future__ import annotations

import re

import pytest

from modelport.domain.errors import BadRequest
from modelport.domain.paths import namespace_for, parse_artifact_key, parse_s3_path
from modelport.settings import Settings

DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("s3://models/models/1/versions/2/model.joblib", ("models", "models/1/versions/2/model.joblib")),
        ("models/models/1/versions/2/model.joblib", ("models", "models/1/versions/2/model.joblib")),
        ("  s3://b/k  ", ("b", "k")),
    ],
)
def test_both_s3_path_forms_parse(path: str, expected: tuple[str, str]):
    assert parse_s3_path(path) == expected


@pytest.mark.parametrize("path", ["", "s3://", "s3://bucket", "bucket/", "http://host/bucket/key", "s3://b/dir/"])
def test_bad_s3_paths_are_refused_clearly(path: str):
    with pytest.raises(BadRequest) as error:
        parse_s3_path(path)
    assert error.value.code == "bad_s3_path"


@pytest.mark.parametrize(
    "owner", ["alice", "auth0|5f3c9a", "Alice.Smith@example.com", "x" * 200, "---", "UPPER", "a_b", "ü"]
)
def test_every_owner_gets_a_valid_distinct_namespace(owner: str):
    namespace = namespace_for(owner)
    assert DNS_LABEL.match(namespace) and len(namespace) <= 63
    assert namespace.startswith("user-")


def test_owners_that_clean_up_alike_still_get_different_namespaces():
    assert namespace_for("alice") == "user-alice"
    assert len({namespace_for(o) for o in ["a.b", "a_b", "a-b", "A-B"]}) == 4


def test_artifact_keys_round_trip():
    assert parse_artifact_key("models/3/versions/5/model.joblib") == (3, 5, "model.joblib")
    assert parse_artifact_key("models/3/versions/5/nested/x") is None
    assert parse_artifact_key("other/3/versions/5/model.joblib") is None


def test_deployment_urls_follow_the_seed_and_the_override():
    assert Settings().deployment_url(1) == "http://localhost:30080/api/v1/predict/1"
    custom = Settings(ingress_host="models.local", ingress_base_path="predict/", ingress_port=8080)
    assert custom.deployment_url(7) == "http://models.local:8080/predict/7"
    assert Settings(public_base_url="https://api.example.com/").deployment_url(2) == \
        "https://api.example.com/api/v1/predict/2"

"""The model server's process contract (``modelport.domain.model_server``): the environment a
starter writes is the config the server reads back, bad values are named, failure lines round-trip."""

from __future__ import annotations

import pytest

from modelport.domain.model_server import ENV_NAMES, ServerConfig, failure_line, parse_failure

SHA = "ab" * 32


def test_env_round_trips_every_setting() -> None:
    config = ServerConfig(
        model_uri="s3://models/models/1/versions/2/model.joblib", model_sha256=SHA.upper(), port=9001,
        root_path="api/v1/predict/7/", predict_token_sha256=SHA, microbatch_enabled=False, s3_endpoint="minio:9000",
        s3_access_key="k", s3_secret_key="s", s3_use_ssl=True,
    )
    env = config.to_env()
    assert set(env) <= set(ENV_NAMES)
    assert env["MICROBATCH_ENABLED"] == "false" and env["MINIO_USE_SSL"] == "true"
    assert env["ROOT_PATH"] == "/api/v1/predict/7" and env["MODEL_SHA256"] == SHA
    assert ServerConfig.from_env(env) == config


def test_unknown_and_empty_names_are_ignored() -> None:
    config = ServerConfig.from_env({"MODEL_URI": "/m.joblib", "MODEL_SHA256": "", "HOME": "/root"})
    assert config.model_sha256 is None and config.port == 8080


@pytest.mark.parametrize(
    ("env", "named"),
    [({}, "MODEL_URI"), ({"MODEL_URI": "m", "PORT": "eighty"}, "PORT"),
     ({"MODEL_URI": "m", "MODEL_SHA256": "abc"}, "MODEL_SHA256")],
)
def test_a_bad_environment_names_the_variable(env: dict[str, str], named: str) -> None:
    with pytest.raises(ValueError, match=named):
        ServerConfig.from_env(env)


def test_failure_lines_round_trip_and_other_lines_are_not_failures() -> None:
    reason = "the file has no predict(): 'dict'"
    assert parse_failure(failure_line(reason) + "\n") == reason
    for line in ("cannot serve model 'x': y", '{"level": "INFO"}', '{"modelport_failure": 3}', "{not json"):
        assert parse_failure(line) is None

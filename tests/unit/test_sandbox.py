"""The model server's confinement rules (serving/sandbox.py); what a confined server can and cannot
do is tested on real processes in tests/integration/test_serving_http.py."""

from __future__ import annotations

import os
import sys

import pytest

from modelport.domain.model_server import ServerConfig
from modelport.serving import sandbox


def config(**values: object) -> ServerConfig:
    return ServerConfig.model_validate({"model_uri": "s3://bucket/model.joblib", **values})


def test_connect_ports_are_those_the_config_names() -> None:
    local = config(s3_endpoint="http://127.0.0.1:5123", s3_access_key="k", s3_secret_key="s")
    assert sandbox.connect_ports(local, {}) == (5123,)
    mirrored = config(s3_endpoint="https://minio.example", s3_access_key="k", mirror_url="http://shadow:8081")
    assert sandbox.connect_ports(mirrored, {}) == (443, 8081)
    # boto3's own credential chain (IMDS on 80, STS on 443) when no keys are given
    assert sandbox.connect_ports(config(), {}) == (80, 443)
    # a requirements.txt to install: the package index too, wherever the environment points it
    installing = config(s3_endpoint="http://127.0.0.1:5123", s3_access_key="k",
                        requirements_uri="s3://bucket/requirements.txt")
    assert sandbox.connect_ports(installing, {"UV_INDEX_URL": "http://pypi.internal:3141/simple"}) == (
        80, 443, 3141, 5123)


def test_the_working_directory_is_not_readable_unless_on_the_path(monkeypatch: pytest.MonkeyPatch,
                                                                  tmp_path: os.PathLike[str]) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", [str(tmp_path), "/opt/site-packages"])
    assert str(tmp_path) not in sandbox.read_paths(config())
    monkeypatch.setattr(sys, "path", [str(tmp_path), "/opt/site-packages", str(tmp_path)])  # asked for: PYTHONPATH
    assert str(tmp_path) in sandbox.read_paths(config())
    model = os.path.join(tmp_path, "model.joblib")
    assert model in sandbox.read_paths(config(model_uri=model))


def test_without_landlock_auto_serves_unconfined_and_required_refuses(monkeypatch: pytest.MonkeyPatch,
                                                                      tmp_path: os.PathLike[str]) -> None:
    monkeypatch.setattr(sandbox.landlockpy, "abi_version", lambda: 0)
    cache = str(tmp_path)
    found = sandbox.confine_process(config(model_cache_dir=cache), {})
    assert found.enforced is False and "no Landlock" in found.reason
    assert found.describe()["reason"] == found.reason
    with pytest.raises(sandbox.SandboxUnavailable, match="MODEL_SANDBOX=required, but the server cannot be confined"):
        sandbox.confine_process(config(model_cache_dir=cache, sandbox="required"), {})
    assert sandbox.confine_process(config(sandbox="off"), {}).enforced is False


def test_the_setting_takes_three_values() -> None:
    assert ServerConfig.from_env({"MODEL_URI": "m.joblib"}).sandbox == "auto"
    with pytest.raises(ValueError, match="MODEL_SANDBOX"):
        ServerConfig.from_env({"MODEL_URI": "m.joblib", "MODEL_SANDBOX": "sometimes"})

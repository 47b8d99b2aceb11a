"""The gateway alone, over real HTTP, in front of small upstream servers that say who they are."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator

import httpx
import pytest

from modelport.local.gateway import Gateway, UvicornThread
from modelport.local.processes import free_port

pytestmark = pytest.mark.integration


def upstream_app(name: str):  # type: ignore[no-untyped-def]
    """Answers with its name, the path it saw, and the size and sha256 of the body it received."""

    async def app(scope, receive, send):  # type: ignore[no-untyped-def]
        if scope["type"] != "http":
            return
        digest, size = hashlib.sha256(), 0
        while True:
            message = await receive()
            chunk = message.get("body", b"")
            digest.update(chunk)
            size += len(chunk)
            if not message.get("more_body"):
                break
        if scope["path"].endswith("/big"):
            await send({"type": "http.response.start", "status": 200, "headers": [(b"x-upstream", name.encode())]})
            for _ in range(64):
                await send({"type": "http.response.body", "body": b"x" * 65536, "more_body": True})
            await send({"type": "http.response.body", "body": b""})
            return
        body = json.dumps({"upstream": name, "path": scope["path"], "query": scope["query_string"].decode(),
                           "size": size, "sha256": digest.hexdigest(),
                           "forwarded": dict(scope["headers"]).get(b"x-forwarded-for", b"").decode()}).encode()
        await send({"type": "http.response.start", "status": 201,
                    "headers": [(b"content-type", b"application/json"), (b"x-upstream", name.encode())]})
        await send({"type": "http.response.body", "body": body})

    return app


@pytest.fixture(scope="module")
def upstreams() -> Iterator[list[UvicornThread]]:
    servers = [UvicornThread(upstream_app(f"u{i}"), port=free_port(), name=f"u{i}").start() for i in range(2)]
    yield servers
    for server in servers:
        server.stop()


@pytest.fixture(scope="module")
def routes() -> dict[int, list[str]]:
    return {}


@pytest.fixture(scope="module")
def gateway(routes: dict[int, list[str]]) -> Iterator[str]:
    server = UvicornThread(Gateway(lambda i: routes.get(i)), port=free_port(), name="gateway").start()
    yield server.url
    server.stop()


def test_routes_by_id_keeping_path_and_query(gateway: str, upstreams: list[UvicornThread], routes: dict) -> None:
    routes[1] = [upstreams[0].url]
    answer = httpx.post(f"{gateway}/api/v1/predict/1/v2/models/m/infer?x=1", json={"a": 1})
    assert answer.status_code == 201
    body = answer.json()
    assert body["upstream"] == "u0"
    assert body["path"] == "/api/v1/predict/1/v2/models/m/infer" and body["query"] == "x=1"
    assert body["forwarded"] == "127.0.0.1"


def test_round_robin_over_ready_replicas(gateway: str, upstreams: list[UvicornThread], routes: dict) -> None:
    routes[2] = [u.url for u in upstreams]
    with httpx.Client() as client:
        seen = [client.get(f"{gateway}/api/v1/predict/2/predict").headers["x-upstream"] for _ in range(10)]
    assert seen.count("u0") == 5 and seen.count("u1") == 5


def test_unknown_deployment_is_a_json_404(gateway: str) -> None:
    for path in ("/api/v1/predict/999/predict", "/api/v1/predict/abc/predict"):
        answer = httpx.get(gateway + path)
        assert answer.status_code == 404
        assert answer.json()["code"] == "deployment_not_found"
    assert httpx.get(gateway + "/elsewhere").json()["code"] == "not_found"


def test_no_ready_replica_is_a_503_with_retry_after(gateway: str, routes: dict) -> None:
    routes[3] = []
    answer = httpx.get(f"{gateway}/api/v1/predict/3/predict")
    assert answer.status_code == 503
    assert answer.json()["code"] == "no_ready_replica" and answer.headers["retry-after"] == "1"


def test_a_dead_replica_is_skipped(gateway: str, upstreams: list[UvicornThread], routes: dict) -> None:
    routes[4] = [f"http://127.0.0.1:{free_port()}", upstreams[1].url]  # nothing listens on the first
    with httpx.Client() as client:
        answers = [client.post(f"{gateway}/api/v1/predict/4/predict", json={}) for _ in range(4)]
    assert [a.headers["x-upstream"] for a in answers] == ["u1"] * 4
    routes[5] = [f"http://127.0.0.1:{free_port()}"]
    answer = httpx.post(f"{gateway}/api/v1/predict/5/predict", json={})
    assert answer.status_code == 502 and answer.json()["code"] == "upstream_unavailable"


def test_bodies_stream_both_ways(gateway: str, upstreams: list[UvicornThread], routes: dict) -> None:
    routes[6] = [upstreams[0].url]
    payload = bytes(range(256)) * 40_000  # 10 MB, sent in chunks

    def chunks() -> Iterator[bytes]:
        for i in range(0, len(payload), 1 << 20):
            yield payload[i:i + (1 << 20)]

    answer = httpx.post(f"{gateway}/api/v1/predict/6/predict", content=chunks(), timeout=30)
    assert answer.json()["size"] == len(payload)
    assert answer.json()["sha256"] == hashlib.sha256(payload).hexdigest()
    with httpx.stream("GET", f"{gateway}/api/v1/predict/6/big") as response:
        assert response.status_code == 200
        assert sum(len(c) for c in response.iter_raw()) == 64 * 65536


def test_cors_lets_a_page_on_another_origin_predict(gateway: str, upstreams: list[UvicornThread], routes: dict) -> None:
    """The dashboard (on the API's origin) predicts through the gateway: a preflight is answered
    here, and answers, proxied or the gateway's own, carry Access-Control-Allow-Origin."""
    routes[7] = [upstreams[0].url]
    origin = {"Origin": "http://localhost:8000"}
    preflight = httpx.options(f"{gateway}/api/v1/predict/7/predict", headers={
        **origin, "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "authorization,content-type",
    })
    assert preflight.status_code == 204
    assert preflight.headers["access-control-allow-origin"] == "*"
    assert "POST" in preflight.headers["access-control-allow-methods"]
    assert {"authorization", "content-type"} <= set(preflight.headers["access-control-allow-headers"].split(", "))
    answer = httpx.post(f"{gateway}/api/v1/predict/7/predict", json={"a": 1}, headers=origin)
    assert answer.status_code == 201 and answer.headers["access-control-allow-origin"] == "*"
    missing = httpx.post(f"{gateway}/api/v1/predict/999/predict", json={}, headers=origin)
    assert missing.status_code == 404 and missing.headers["access-control-allow-origin"] == "*"

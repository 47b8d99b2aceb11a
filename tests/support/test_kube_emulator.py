"""Self-tests of the Kubernetes API emulator's own pieces (the helm driver tests cover the rest)."""

from __future__ import annotations

import base64
import json
import subprocess
import urllib.request
from typing import Any

from modelport.local.tools import Tools
from tests.support import patching, protobuf_k8s
from tests.support.kube_emulator import KubeEmulator, PodProblem


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _field(number: int, value: bytes | int) -> bytes:
    if isinstance(value, int):
        return _varint(number << 3) + _varint(value)
    return _varint(number << 3 | 2) + _varint(len(value)) + value


def _entry(key: str, value: bytes) -> bytes:
    return _field(1, key.encode()) + _field(2, value)


def test_protobuf_secret_is_decoded() -> None:
    meta = (
        _field(1, b"sh.helm.release.v1.r.v1")
        + _field(3, b"user-a")
        + _field(11, _entry("owner", b"helm"))
        + _field(11, _entry("status", b"deployed"))
    )
    secret = _field(1, meta) + _field(2, _entry("release", b"\x00\x01binary")) + _field(3, b"helm.sh/release.v1")
    body = protobuf_k8s.MAGIC + _field(1, _field(1, b"v1") + _field(2, b"Secret")) + _field(2, secret)

    obj = protobuf_k8s.decode(body)

    assert obj == {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {
            "name": "sh.helm.release.v1.r.v1",
            "namespace": "user-a",
            "labels": {"owner": "helm", "status": "deployed"},
        },
        "data": {"release": base64.b64encode(b"\x00\x01binary").decode()},
        "type": "helm.sh/release.v1",
    }


def test_strategic_merge_patch_merges_containers_by_name() -> None:
    live = {
        "spec": {
            "replicas": 1,
            "containers": [
                {"name": "a", "image": "a:1", "env": [{"name": "X", "value": "1"}, {"name": "Y", "value": "2"}]},
                {"name": "b", "image": "b:1"},
            ],
        }
    }
    patch: dict[str, Any] = {
        "spec": {
            "replicas": 3,
            "$setElementOrder/containers": [{"name": "b"}, {"name": "a"}],
            "containers": [
                {"name": "a", "env": [{"name": "Y", "$patch": "delete"}, {"name": "Z", "value": "3"}]},
            ],
        }
    }
    merged = patching.strategic_merge_patch(live, patch)
    assert merged["spec"]["replicas"] == 3
    assert [c["name"] for c in merged["spec"]["containers"]] == ["b", "a"]
    assert merged["spec"]["containers"][1] == {
        "name": "a",
        "image": "a:1",
        "env": [{"name": "X", "value": "1"}, {"name": "Z", "value": "3"}],
    }
    assert patching.merge_patch({"a": {"b": 1, "c": 2}}, {"a": {"b": None}, "d": [1]}) == {"a": {"c": 2}, "d": [1]}
    assert patching.json_patch({"a": [1, 2]}, [{"op": "add", "path": "/a/-", "value": 3}]) == {"a": [1, 2, 3]}


def _get(emulator: KubeEmulator, path: str) -> Any:
    with urllib.request.urlopen(emulator.url + path, timeout=10) as response:
        return json.loads(response.read())


def test_discovery_and_lists(kube_cluster: KubeEmulator) -> None:
    assert _get(kube_cluster, "/api/v1")["groupVersion"] == "v1"
    namespaces = _get(kube_cluster, "/api/v1/namespaces")
    assert namespaces["kind"] == "NamespaceList" and namespaces["apiVersion"] == "v1"
    assert {"default", "kube-system"} <= {n["metadata"]["name"] for n in namespaces["items"]}
    assert _get(kube_cluster, "/api/v1/namespaces/default")["status"]["phase"] == "Active"


def test_kubectl_works_against_it(kube_cluster: KubeEmulator, tools: Tools) -> None:
    kube_cluster.readiness = lambda d: (
        PodProblem("ErrImagePull", "no such image") if d["spec"]["replicas"] > 1 else True
    )

    def kubectl(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(tools.kubectl), "--kubeconfig", str(kube_cluster.kubeconfig), *args],
            input=stdin, capture_output=True, text=True, timeout=60,
        )  # fmt: skip

    assert kubectl("create", "namespace", "user-x").returncode == 0
    manifest = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "web", "namespace": "user-x", "labels": {"app": "web"}},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"app": "web"}},
            "template": {
                "metadata": {"labels": {"app": "web"}},
                "spec": {"containers": [{"name": "web", "image": "nginx:1"}]},
            },
        },
    }
    applied = kubectl("apply", "--validate=false", "-f", "-", stdin=json.dumps(manifest))
    assert applied.returncode == 0, applied.stderr
    rollout = kubectl("rollout", "status", "deployment/web", "-n", "user-x", "--timeout=20s")
    assert rollout.returncode == 0, rollout.stderr
    scaled = kubectl("scale", "deployment/web", "-n", "user-x", "--replicas=2")
    assert scaled.returncode == 0, scaled.stderr
    pods = json.loads(kubectl("get", "pods", "-n", "user-x", "-l", "app=web", "-o", "json").stdout)
    assert len(pods["items"]) == 2
    waiting = pods["items"][0]["status"]["containerStatuses"][0]["state"]["waiting"]
    assert waiting == {"reason": "ErrImagePull", "message": "no such image"}
    deleted = kubectl("delete", "namespace", "user-x", "--wait=true", "--timeout=20s")
    assert deleted.returncode == 0, deleted.stderr
    assert kube_cluster.objects("Deployment", "user-x") == []


# --- the container stand-ins' rules (their behaviour with real containers: test_containers.py) ----


def test_ingress_prefix_paths_match_whole_elements_only() -> None:
    from tests.support.ingress import path_matches

    assert path_matches("/api/v1/predict/1", "Prefix", "/api/v1/predict/1")
    assert path_matches("/api/v1/predict/1", "Prefix", "/api/v1/predict/1/v2/models/model/infer")
    assert not path_matches("/api/v1/predict/1", "Prefix", "/api/v1/predict/12")
    assert not path_matches("/api/v1/predict/1", "Exact", "/api/v1/predict/1/predict")
    assert path_matches("/", "Prefix", "/anything")


def test_rolling_update_bounds_round_as_the_controller_does() -> None:
    from tests.support.rollouts import strategy_bounds

    chart = {"strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}}}
    assert strategy_bounds(chart, 3) == (1, 0)
    assert strategy_bounds({}, 10) == (3, 2)  # 25 %: surge rounded up, unavailability down
    assert strategy_bounds({"strategy": {"rollingUpdate": {"maxSurge": 0, "maxUnavailable": 0}}}, 2) == (0, 1)


def test_quantities_are_read_as_kubernetes_writes_them() -> None:
    from tests.support.kubelet import quantity

    assert quantity("2Gi") == 2 * 2**30
    assert quantity("512Mi") == 512 * 2**20
    assert quantity("250m") == 0.25
    assert quantity("1.5") == 1.5
    assert quantity("1G") == 10**9

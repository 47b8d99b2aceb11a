"""A Deployment controller stand-in driven by real pod readiness (the emulator with a kubelet).

Used by ``kube_emulator.ApiServer`` when a kubelet stand-in (``kubelet.DockerKubelet``) runs its
pods; without one, the emulator's readiness policy decides instead (fast tests of the deployer's
logic that need no containers). It does what the Deployment and ReplicaSet controllers do,
folded into one (no ReplicaSet objects: the pods are owned by the Deployment and grouped by
``pod-template-hash``):

- ``RollingUpdate`` honours ``maxSurge`` and ``maxUnavailable`` (integers or percentages, surge
  rounded up and unavailability down, defaults 25 %): new pods are created while the total stays
  within replicas + maxSurge; old pods are removed while the ready ones stay at or above
  replicas - maxUnavailable, unready old pods first. ``Recreate`` removes every old pod first.
- scaling removes unready pods first, then the newest;
- a pod deleted by anyone (``kubectl delete pod``) is replaced;
- the Deployment's status is computed from the pods as the controller does: ``replicas``,
  ``updatedReplicas``, ``readyReplicas``, ``availableReplicas`` (minReadySeconds 0),
  ``unavailableReplicas``, ``observedGeneration``, and the ``Available`` / ``Progressing``
  conditions (``NewReplicaSetAvailable`` once every pod is new and ready), which Helm's
  ``--wait=watcher`` (kstatus) reads. ``progressDeadlineSeconds`` is not modelled: Helm's own
  timeout ends a rollout that does not finish.

It runs on the emulator's event loop; every change of a Deployment or of one of its pods
schedules one sync of that Deployment.
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
import secrets
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tests.support.kube_emulator import ApiServer

JsonObj = dict[str, Any]
Key = tuple[str, str, str, str | None, str]


def template_hash(template: JsonObj) -> str:
    return hashlib.sha256(json.dumps(template, sort_keys=True).encode()).hexdigest()[:10]


def pod_ready(pod: JsonObj) -> bool:
    conditions = (pod.get("status") or {}).get("conditions") or []
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)


def _bound(value: Any, replicas: int, *, round_up: bool) -> int:
    if isinstance(value, str) and value.endswith("%"):
        share = replicas * float(value[:-1]) / 100
        return math.ceil(share) if round_up else math.floor(share)
    return int(value)


def strategy_bounds(spec: JsonObj, replicas: int) -> tuple[int, int]:
    """(maxSurge, maxUnavailable) of a RollingUpdate, as the controller resolves them."""
    rolling = (spec.get("strategy") or {}).get("rollingUpdate") or {}
    surge = _bound(rolling.get("maxSurge", "25%"), replicas, round_up=True)
    unavailable = _bound(rolling.get("maxUnavailable", "25%"), replicas, round_up=False)
    if surge == 0 and unavailable == 0:
        unavailable = 1  # what the API server's validation would insist on
    return surge, unavailable


def _condition(kind: str, status: str, reason: str, message: str, old: list[JsonObj], now: str) -> JsonObj:
    previous = next((c for c in old if c.get("type") == kind), None)
    same = previous is not None and (previous.get("status"), previous.get("reason")) == (status, reason)
    return {
        "type": kind, "status": status, "reason": reason, "message": message,
        "lastUpdateTime": previous.get("lastUpdateTime", now) if same and previous else now,
        "lastTransitionTime": previous.get("lastTransitionTime", now) if same and previous else now,
    }  # fmt: skip


class DeploymentController:
    def __init__(self, api: ApiServer) -> None:
        self.api = api
        self._pending: set[Key] = set()

    # ---- scheduling -----------------------------------------------------------------------------

    def schedule(self, key: Key) -> None:
        if key in self._pending:
            return
        self._pending.add(key)
        self.api.loop.call_soon(self._run, key)

    def _run(self, key: Key) -> None:
        self._pending.discard(key)
        self.sync(key)

    def owner_of(self, pod: JsonObj) -> Key | None:
        meta = pod.get("metadata") or {}
        for ref in meta.get("ownerReferences") or []:
            if ref.get("kind") == "Deployment":
                return ("apps", "v1", "deployments", meta.get("namespace"), ref.get("name", ""))
        return None

    # ---- the sync -------------------------------------------------------------------------------

    def pods_of(self, namespace: str | None, uid: str | None) -> list[tuple[Key, JsonObj]]:
        return [
            (k, pod)
            for k, pod in self.api._store.items()
            if k[:4] == ("", "v1", "pods", namespace)
            and any(ref.get("uid") == uid for ref in pod["metadata"].get("ownerReferences") or [])
        ]

    def _delete_pod(self, key: Key) -> None:
        pod = self.api._store.pop(key, None)
        if pod is not None:
            pod = copy.deepcopy(pod)
            pod["metadata"]["resourceVersion"] = self.api._next_rv()
            self.api._emit(key, "DELETED", pod)

    def _create_pod(self, key: Key, deployment: JsonObj, pod_hash: str) -> None:
        _, _, _, namespace, name = key
        template = deployment["spec"].get("template") or {}
        pod_name = f"{name}-{pod_hash}-{secrets.token_hex(3)[:5]}"
        pod: JsonObj = {
            "metadata": {
                "name": pod_name,
                "labels": dict((template.get("metadata") or {}).get("labels") or {}, **{"pod-template-hash": pod_hash}),
                "annotations": dict((template.get("metadata") or {}).get("annotations") or {}),
                "ownerReferences": [{
                    "apiVersion": "apps/v1", "kind": "Deployment", "name": name,
                    "uid": deployment["metadata"]["uid"], "controller": True, "blockOwnerDeletion": True,
                }],
            },
            "spec": copy.deepcopy(template.get("spec") or {}),
            "status": {"phase": "Pending", "conditions": [{"type": "PodScheduled", "status": "True"}]},
        }  # fmt: skip
        self.api._put(("", "v1", "pods", namespace, pod_name), self.api._new_meta(pod, "", "v1", "pods", namespace))

    def sync(self, key: Key) -> None:
        deployment = self.api._store.get(key)
        if deployment is None:
            return
        namespace = key[3]
        spec = deployment.get("spec") or {}
        desired = int(spec.get("replicas", 1))
        pod_hash = template_hash(spec.get("template") or {})
        pods = self.pods_of(namespace, deployment["metadata"]["uid"])
        new = [(k, p) for k, p in pods if p["metadata"]["labels"].get("pod-template-hash") == pod_hash]
        old = [(k, p) for k, p in pods if (k, p) not in new]
        recreate = (spec.get("strategy") or {}).get("type") == "Recreate"
        surge, unavailable = (0, desired) if recreate else strategy_bounds(spec, desired)

        # scale the new pods: down to the replicas (unready first, then newest), or up within the surge
        if len(new) > desired:
            ranked = sorted(new, key=lambda item: (pod_ready(item[1]), item[1]["metadata"]["creationTimestamp"]))
            for pod_key, _ in ranked[: len(new) - desired]:
                self._delete_pod(pod_key)
            new = [item for item in new if item[0] in self.api._store]
        elif len(new) < desired and not (recreate and old):
            room = desired + surge - (len(new) + len(old))
            for _ in range(max(0, min(desired - len(new), room))):
                self._create_pod(key, deployment, pod_hash)

        # remove old pods while enough of the rest are ready
        if old:
            min_available = max(0, desired - unavailable)
            ready_now = sum(pod_ready(p) for _, p in self.pods_of(namespace, deployment["metadata"]["uid"]))
            for pod_key, pod in sorted(old, key=lambda item: pod_ready(item[1])):
                if recreate or not pod_ready(pod):
                    self._delete_pod(pod_key)
                elif ready_now - 1 >= min_available:
                    self._delete_pod(pod_key)
                    ready_now -= 1
        self._write_status(key)

    def _write_status(self, key: Key) -> None:
        deployment = self.api._store.get(key)
        if deployment is None:
            return
        spec = deployment.get("spec") or {}
        desired = int(spec.get("replicas", 1))
        pod_hash = template_hash(spec.get("template") or {})
        pods = [p for _, p in self.pods_of(key[3], deployment["metadata"]["uid"])]
        new = [p for p in pods if p["metadata"]["labels"].get("pod-template-hash") == pod_hash]
        ready = sum(pod_ready(p) for p in pods)
        new_ready = sum(pod_ready(p) for p in new)
        recreate = (spec.get("strategy") or {}).get("type") == "Recreate"
        _, unavailable = (0, desired) if recreate else strategy_bounds(spec, desired)
        old_status = deployment.get("status") or {}
        old_conditions = old_status.get("conditions") or []
        now = self.api.now()
        available = ready >= desired - unavailable
        complete = len(new) == desired == new_ready and len(pods) == desired
        counts = {
            "replicas": len(pods), "updatedReplicas": len(new), "readyReplicas": ready,
            "availableReplicas": ready, "unavailableReplicas": max(0, desired - ready),
        }  # fmt: skip
        status: JsonObj = {"observedGeneration": deployment["metadata"].get("generation", 1)}
        status.update({name: value for name, value in counts.items() if value})  # the API omits zeros
        status["conditions"] = [
            _condition("Available", "True", "MinimumReplicasAvailable", "Deployment has minimum availability.",
                       old_conditions, now)
            if available else
            _condition("Available", "False", "MinimumReplicasUnavailable",
                       "Deployment does not have minimum availability.", old_conditions, now),
            _condition("Progressing", "True", "NewReplicaSetAvailable",
                       f'ReplicaSet "{key[4]}-{pod_hash}" has successfully progressed.', old_conditions, now)
            if complete else
            _condition("Progressing", "True", "ReplicaSetUpdated",
                       f'ReplicaSet "{key[4]}-{pod_hash}" is progressing.', old_conditions, now),
        ]  # fmt: skip
        if status == old_status:
            return
        updated = copy.deepcopy(deployment)
        updated["status"] = status
        updated["metadata"]["resourceVersion"] = self.api._next_rv()
        self.api._put(key, updated, "MODIFIED")

"""An in-memory stand-in for the deployer's view of the table (``deploy.reconcile.DeploymentRecords``),
so the reconciler's decisions are unit-tested without any DynamoDB.

It keeps the contract the protocol states, the way ``store.repository.Store`` keeps it with
conditional writes: a write given a ``generation`` lands only while the record still asks for that
generation (else None/False); a user's change adds one to the generation; a failed first install
or a removed record no longer holds its version. The Store's own conditions and counters are
tested on moto in ``tests/unit/test_store_rules.py``; this fake is only for the deployer.

Test-side helpers (``add_version``, ``add_deployment``, ``change``, ``request_delete``,
``set_token``; ``write_rollout`` and ``write_shadow`` too, for a canary or shadow a test starts) play
what a user's API calls would do.
"""

from __future__ import annotations

from datetime import UTC, datetime

from modelport.domain.entities import Artifact, Deployment, DeploymentStatus, Version, VersionStatus, release_name
from modelport.domain.rollouts import Rollout, Shadow

OWNER = "alice"


class InMemoryDeploymentRecords:
    def __init__(self) -> None:
        self.deployments: dict[int, Deployment] = {}
        self.versions: dict[int, Version] = {}
        self.released: set[int] = set()  # FAILED first installs: they gave their version back
        self.expires_in: dict[int, int] = {}  # FAILED records' time to live, as asked
        self._ids = 0

    def _next_id(self) -> int:
        self._ids += 1
        return self._ids

    # ------------------------------------------------------------------ what a user's calls do
    def add_version(self, key: str = "v", model_id: int = 1) -> Version:
        now = datetime.now(UTC)
        version = Version(
            id=self._next_id(), model_id=model_id, owner=OWNER, version=key, status=VersionStatus.READY,
            s3_path=f"s3://models/{key}/model.joblib",
            model_artifact=Artifact(key=f"{key}/model.joblib", size=10, sha256="ab" * 32),
            created_at=now, updated_at=now,
        )
        self.versions[version.id] = version
        return version

    def add_deployment(self, version_id: int, replicas: int) -> Deployment:
        now = datetime.now(UTC)
        deployment_id = self._next_id()
        deployment = Deployment(
            id=deployment_id, owner=OWNER, namespace=f"user-{OWNER}", model_id=self.versions[version_id].model_id,
            version_id=version_id, replicas=replicas, k8s_service_name=release_name(deployment_id, now),
            url=f"http://localhost/api/v1/predict/{deployment_id}", created_at=now, updated_at=now,
        )
        self.deployments[deployment_id] = deployment
        return deployment

    def _new_desired_state(self, deployment_id: int, **changes: object) -> Deployment:
        current = self.deployments[deployment_id]
        changed = current.model_copy(update={**changes, "generation": current.generation + 1})
        self.deployments[deployment_id] = changed
        return changed

    def change(self, deployment_id: int, *, replicas: int | None = None, version_id: int | None = None) -> Deployment:
        changes = {"replicas": replicas, "version_id": version_id}
        return self._new_desired_state(deployment_id, **{k: v for k, v in changes.items() if v is not None})

    def request_delete(self, deployment_id: int) -> Deployment:
        return self._new_desired_state(deployment_id, status=DeploymentStatus.DELETING,
                                       status_message="deletion requested")

    def set_token(self, deployment_id: int, token_sha256: str | None) -> Deployment:
        return self._new_desired_state(deployment_id, predict_token_sha256=token_sha256)

    def held(self, version_id: int) -> int:
        """How many deployments hold the version (what ``Version.deployments`` counts in the table)."""
        return sum(1 for d in self.deployments.values() if d.version_id == version_id and d.id not in self.released)

    # ------------------------------------------------------------------ DeploymentRecords
    def find_deployment(self, deployment_id: int) -> Deployment | None:
        return self.deployments.get(deployment_id)

    def find_version(self, version_id: int) -> Version | None:
        return self.versions.get(version_id)

    def all_deployments(self) -> list[Deployment]:
        return list(self.deployments.values())

    def _current(self, deployment_id: int, generation: int | None) -> Deployment | None:
        current = self.deployments.get(deployment_id)
        if current is None or (generation is not None and current.generation != generation):
            return None
        return current

    def set_deployment_status(
        self, deployment_id: int, status: DeploymentStatus, message: str | None, *,
        generation: int | None = None, observed_generation: int | None = None,
        deployed: tuple[int, int] | None = None, restore: tuple[int, int] | None = None,
    ) -> Deployment | None:
        current = self._current(deployment_id, generation)
        if current is None:
            return None
        update: dict[str, object] = {
            "status": status, "status_message": message, "status_changed_at": datetime.now(UTC),
        }
        if observed_generation is not None:
            update["observed_generation"] = observed_generation
        if deployed is not None:
            update["deployed_version_id"], update["deployed_replicas"] = deployed
        if restore is not None:
            update["version_id"], update["replicas"] = restore
            update["generation"] = current.generation + 1
            update["observed_generation"] = current.generation + 1
        self.deployments[deployment_id] = current.model_copy(update=update)
        return self.deployments[deployment_id]

    def fail_deployment(
        self, deployment_id: int, message: str, *, generation: int, expires_in: int
    ) -> Deployment | None:
        current = self._current(deployment_id, generation)
        if current is None or current.status == DeploymentStatus.DELETING or deployment_id in self.released:
            return None
        self.deployments[deployment_id] = current.model_copy(update={
            "status": DeploymentStatus.FAILED, "status_message": message, "observed_generation": generation,
        })
        self.released.add(deployment_id)
        self.expires_in[deployment_id] = expires_in
        return self.deployments[deployment_id]

    def delete_deployment_record(self, deployment_id: int, *, generation: int | None = None) -> bool:
        if self._current(deployment_id, generation) is None:
            return False
        del self.deployments[deployment_id]
        self.released.discard(deployment_id)
        return True

    def write_rollout(self, current: Deployment, rollout: Rollout, *, version_id: int | None = None
                      ) -> Deployment | None:
        if self._current(current.id, current.generation) is None:
            return None
        changes: dict[str, object] = {"rollout": rollout}
        if version_id is not None:
            changes["version_id"] = version_id
        return self._new_desired_state(current.id, **changes)

    def write_shadow(self, current: Deployment, shadow: Shadow, *, rollout: Rollout | None = None
                     ) -> Deployment | None:
        if self._current(current.id, current.generation) is None:
            return None
        return self._new_desired_state(current.id, shadow=shadow, rollout=rollout or current.rollout)

    def request_reinstall(self, deployment_id: int, *, generation: int) -> bool:
        current = self._current(deployment_id, generation)
        if current is None or current.status != DeploymentStatus.READY:
            return False
        self.deployments[deployment_id] = current.model_copy(update={
            "status": DeploymentStatus.PENDING,
            "status_message": "the release is missing from the cluster; reinstalling",
            "observed_generation": 0, "deployed_version_id": None, "deployed_replicas": None,
        })
        return True

"""Auto-deploy: a model's READY versions roll out by themselves to the one deployment that follows
its latest version.

Rules:
- it happens when the model asks for it (``auto_deploy.enabled``) or the upload did
  (``x-amz-meta-auto-deploy``);
- a model has at most one following deployment (the store's guard item makes that hold for events
  delivered twice or for two versions at once); a FAILED or DELETING one frees the slot;
- it only moves forward: a late event for an older version never rolls the follower back;
- the version or the follower changing meanwhile is not an error: nothing is done.
"""

from __future__ import annotations

from aws_lambda_powertools import Logger

from modelport.domain.entities import DeploymentStatus, Version
from modelport.domain.errors import Conflict, ModelportError
from modelport.services import deployments
from modelport.settings import Settings
from modelport.store.repository import Store

logger = Logger(service="modelport", child=True)


def auto_deploy(
    store: Store, settings: Settings, version: Version, *, asked_by_upload: bool
) -> tuple[list[int], list[int]]:
    """Deploy a READY version where the rules say so: (deployments created, deployments moved)."""
    created: list[int] = []
    moved: list[int] = []
    try:
        model = store.get_model(version.owner, version.model_id)
    except ModelportError:
        return created, moved
    if not (model.auto_deploy.enabled or asked_by_upload):
        return created, moved
    try:
        for attempt in range(2):
            following = [
                d for d in store.model_deployments(model.id)
                if d.follow_latest and d.status not in (DeploymentStatus.DELETING, DeploymentStatus.FAILED)
            ]
            if following:
                for deployment in following:
                    if deployment.version_id < version.id:  # only forward: a late event never rolls back
                        deployments.update_deployment(store, settings, version.owner, deployment.id,
                                                      version_id=version.id)
                        moved.append(deployment.id)
                return created, moved
            try:
                deployment = deployments.create_deployment(
                    store, settings, version.owner, version.id, model.auto_deploy.replicas, follow_latest=True
                )
            except Conflict as exc:
                if exc.code == "follower_exists" and attempt == 0:
                    continue  # created meanwhile (this event again, or another version's): move it
                raise
            created.append(deployment.id)
            return created, moved
    except ModelportError as exc:  # the version or the follower changed meanwhile: nothing to do
        logger.info("auto-deploy skipped", extra={"version_id": version.id, "code": exc.code, "reason": exc.message})
    return created, moved

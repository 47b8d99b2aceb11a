"""``modelport up --demo``: the sample model end to end, through the platform's public API only."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import uuid
from typing import TYPE_CHECKING

import httpx

from modelport.local.functions import find_root

if TYPE_CHECKING:
    from modelport.local.platform import Platform


def run_demo(platform: Platform) -> None:
    """Train iris, upload it, deploy it, wait for READY, print a curl that predicts."""
    root = find_root()
    work = platform.state_dir / "demo"
    work.mkdir(parents=True, exist_ok=True)
    model_path = work / "model.joblib"
    trained = subprocess.run(  # noqa: S603
        [sys.executable, str(root / "examples" / "train_iris.py"), "--out", str(model_path)],
        capture_output=True, text=True, check=True,
    )
    sample = json.loads(trained.stdout.strip().splitlines()[-1])
    headers = {"Authorization": f"Bearer {platform.api_key}"}
    with httpx.Client(base_url=platform.api_url + "/api/v1", headers=headers, timeout=60) as api:
        name = f"iris-{uuid.uuid4().hex[:6]}"
        model = api.post("/models", json={"name": name, "description": "the iris sample"}).raise_for_status().json()
        version = api.post(f"/models/{model['id']}/versions", json={}).raise_for_status().json()
        with model_path.open("rb") as handle:
            api.post(f"/versions/{version['id']}/upload",
                     files={"model_file": ("model.joblib", handle)}).raise_for_status()
        platform.say(f"demo: trained iris, uploaded it as model {model['id']} ({name}) version {version['id']}")
        deployment = api.post(f"/versions/{version['id']}/deployments", json={"replicas": 1}).raise_for_status().json()
        started = time.monotonic()
        while not platform.stopped.is_set():
            deployment = api.get(f"/deployments/{deployment['id']}").raise_for_status().json()
            if deployment["status"] in ("READY", "FAILED"):
                break
            platform.stopped.wait(0.25)
    if deployment.get("status") != "READY":
        platform.say(f"[red]demo: deployment {deployment['id']} {deployment.get('status')}: "
                     f"{deployment.get('status_message')}[/]")
        return
    body = json.dumps({"instances": sample["rows"]})
    platform.say(f"demo: deployment {deployment['id']} READY in {time.monotonic() - started:.1f} s at "
                 f"{deployment['url']}; predict with:")
    platform.say(f"curl -s -X POST {deployment['url']}/predict -H 'Content-Type: application/json' -d '{body}'",)
    platform.say(f"(the model itself predicts {sample['predictions']})")

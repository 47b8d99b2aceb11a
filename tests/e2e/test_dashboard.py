"""The dashboard in a real browser: headless Chromium (Debian's ``chromium``) driven by Playwright
against ``modelport up``. Sign in, create a model, upload by drag and drop and by the file input
(the presigned POST to the object store, with progress) and see READY, deploy and see READY, try
a prediction, run the curls it offers, scale, move to the other version, protect with a token,
see the traffic charts fill, delete; a second user sees none of it. Screenshots of the main pages
go to ``.modelport/screenshots/`` (printed at the end)."""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import Browser, Locator, Page, expect, sync_playwright  # the dev extra pins it
from playwright.sync_api import TimeoutError as PlaywrightTimeout

from tests.support.models import IRIS_ROWS, train_iris
from tests.support.up import Up, start_up, wait_status

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(900)]

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = os.environ.get("MODELPORT_CHROMIUM", "/usr/bin/chromium")  # Debian's package: make browser
SCREENSHOTS = ROOT / ".modelport" / "screenshots"
SLOW = 120_000  # ms: a deployment going READY on a loaded 2-core machine


@pytest.fixture(scope="module")
def iris(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[int]]:
    path, model = train_iris(tmp_path_factory.mktemp("iris") / "model.joblib")
    return path, [int(v) for v in model.predict(IRIS_ROWS)]


@pytest.fixture(scope="module")
def platform(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Up]:
    # the code under test, also when pytest runs from a worktree beside an editable install
    src = str(ROOT / "src")
    path = os.pathsep.join(p for p in (src, str(ROOT), os.environ.get("PYTHONPATH", "")) if p)
    up = start_up(tmp_path_factory.mktemp("up"), "--ephemeral",
                  env_extra={"METRICS_SAMPLE_SECONDS": "2", "PYTHONPATH": path})
    try:
        yield up
    finally:
        assert up.stop() == 0, "\n".join(up.lines[-30:])


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: `make browser` installs Debian's chromium (as root)")
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    expect.set_options(timeout=30_000)
    with sync_playwright() as p:
        launched = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox"])
        yield launched
        launched.close()
    print(f"\nscreenshots: {SCREENSHOTS}")


def shot(page: Page, name: str) -> None:
    page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=True)


def traffic_shot(page: Page, name: str) -> None:
    page.locator('section[aria-labelledby="traffic-h"]').screenshot(path=str(SCREENSHOTS / f"{name}.png"))


def new_user(up: Up) -> str:
    """A second user through the CLI, as from another terminal; returns its API key."""
    done = subprocess.run(  # noqa: S603
        [sys.executable, "-m", "modelport.cli", "users", "create", f"carol{time.monotonic_ns()}"],
        env={**os.environ, "MODELPORT_CONFIG": str(up.config)}, capture_output=True, text=True, timeout=120,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip().splitlines()[-1]


def sign_in(page: Page, up: Up, key: str) -> None:
    page.goto(up.api + "/ui")  # redirects to /ui/
    expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
    page.get_by_label("API key").fill(key)
    page.get_by_label("API key").press("Enter")  # the keyboard path
    expect(page.get_by_text(re.compile(r"^Signed in as "))).to_be_visible()
    assert "key" not in page.url and key not in page.url


def drop_file(page: Page, selector: str, name: str, content: bytes) -> None:
    """A real drop event with a DataTransfer holding the file, as a drag from the desktop makes."""
    transfer = page.evaluate_handle(
        """([name, bytes]) => { const t = new DataTransfer();
             t.items.add(new File([new Uint8Array(bytes)], name)); return t; }""", [name, list(content)])
    page.dispatch_event(selector, "dragover", {"dataTransfer": transfer})
    page.dispatch_event(selector, "drop", {"dataTransfer": transfer})


def nav(page: Page, name: str) -> Locator:
    return page.get_by_role("navigation", name="Main").get_by_role("link", name=name, exact=True)


def compact(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"))


def run_curl(text: str, token: str | None = None) -> Any:
    env = {**os.environ, "MODELPORT_TOKEN": token or ""}
    done = subprocess.run(["sh", "-c", text], env=env, capture_output=True, text=True, timeout=60)  # noqa: S603,S607
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_sign_in_refuses_a_wrong_key_with_the_api_message(platform: Up, browser: Browser) -> None:
    page = browser.new_page()
    page.goto(platform.api + "/ui/")
    shot(page, "sign-in")
    page.get_by_label("API key").fill("not-a-key")
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("alert")).to_have_text("the API key is not valid")
    assert page.evaluate("sessionStorage.length") == 0
    page.close()


def test_the_dashboard_drives_a_model_from_upload_to_delete(
    platform: Up, browser: Browser, iris: tuple[Path, list[int]], tmp_path: Path,
) -> None:
    model_path, expected = iris
    content = model_path.read_bytes()
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    sign_in(page, platform, platform.key)
    # focus moves to the new page's heading
    expect(page.get_by_role("heading", name="Models", exact=True)).to_be_focused()
    assert page.evaluate("sessionStorage.getItem('modelport.key')") == platform.key

    # create a model
    name = f"iris-ui-{time.monotonic_ns() % 100000}"
    page.get_by_label("Name").fill(name)
    page.get_by_label("Description (optional)").fill("iris from the dashboard")
    page.get_by_role("button", name="Create model").click()
    expect(page.get_by_role("heading", name=f"Model {name}")).to_be_visible()
    model_id = int(page.url.rsplit("/", 1)[-1])

    # version 1 by drag and drop: presigned POST with progress, then READY
    drop_file(page, "#dropzone", "model.joblib", content)
    expect(page.locator("#chosen-file")).to_contain_text("model.joblib")
    page.get_by_role("button", name="Upload").click()
    expect(page.get_by_label("Upload progress")).to_have_attribute("value", "100")
    expect(page.get_by_text("Version 1 is READY.")).to_be_visible(timeout=SLOW)
    versions = page.locator("#versions")
    expect(versions).to_contain_text(f"sha256 {hashlib.sha256(content).hexdigest()}")
    expect(versions.get_by_role("row").filter(has_text="id ")).to_have_count(1)

    # a file that is no model: REJECTED, with the checks' reason, live
    drop_file(page, "#dropzone", "model.joblib", b"this is not a pickle")
    page.get_by_role("button", name="Upload").click()
    expect(page.get_by_text(re.compile(r"^Version 2 was REJECTED: .+"))).to_be_visible(timeout=SLOW)
    expect(versions.locator(".status-REJECTED")).to_have_count(1)

    # version "second" through the file input, with a requirements.txt
    from importlib.metadata import version as installed

    requirements = tmp_path / "requirements.txt"
    requirements.write_text(f"scikit-learn=={installed('scikit-learn')}\n")
    page.get_by_label("Model file").set_input_files(str(model_path))
    page.get_by_label("requirements.txt (optional)").set_input_files(str(requirements))
    page.get_by_label("Version label (optional)").fill("second")
    page.get_by_role("button", name="Upload").click()
    expect(page.get_by_text("Version second is READY.")).to_be_visible(timeout=SLOW)
    expect(versions).to_contain_text("requirements.txt")
    expect(versions.locator(".status-READY")).to_have_count(2)
    shot(page, "model")

    # deploy version 1: READY live, no reload
    page.get_by_role("button", name="Deploy version 1").click()
    expect(page.get_by_role("heading", name=re.compile(r"^Deployment \d+$"))).to_be_visible()
    deployment_id = int(page.url.rsplit("/", 1)[-1])
    status = page.locator("#deployment-status")
    expect(status).to_contain_text("READY", timeout=SLOW)
    url = f"{platform.gateway}/api/v1/predict/{deployment_id}"
    expect(page.locator("#deployment-url")).to_have_text(url)
    expect(page.locator("#charts")).to_contain_text("No traffic yet.")  # before any request

    # try it: sample rows from the model's metadata, then the iris rows, through two protocols
    expect(page.locator("#model-facts")).to_contain_text("4 features per row, classes [0,1,2]")
    assert len(json.loads(page.get_by_label(re.compile("^Rows")).input_value())[0]) == 4
    page.get_by_label(re.compile("^Rows")).fill(json.dumps(IRIS_ROWS))
    page.get_by_role("button", name="Predict").click()
    expect(page.locator("#predictions")).to_have_text(f"Predictions: {compact(expected)}")
    page.get_by_label("Protocol").select_option("v2")
    page.get_by_role("button", name="Predict").click()
    expect(page.locator("#predict-answer")).to_contain_text('"name": "output-0"')
    expect(page.locator("#predictions")).to_have_text(f"Predictions: {compact(expected)}")

    # every curl it offers works as shown
    for protocol in ("seed", "v1", "v2"):
        text = page.locator(f'code[data-protocol="{protocol}"]').inner_text()
        assert url in text
        answer = run_curl(text)
        assert "predictions" in answer or "outputs" in answer, answer
    shot(page, "deployment")

    # scale to 2: the record says so, READY again
    page.get_by_label("Replicas").fill("2")
    page.get_by_role("button", name="Scale").click()
    expect(page.locator("#deployment-replicas")).to_have_text("2")
    expect(status).to_contain_text("READY", timeout=SLOW)
    with platform.client() as client:
        assert wait_status(client, deployment_id, replicas=2)["replicas"] == 2

    # move to version "second"
    move = page.get_by_label("Version", exact=True)
    move.select_option(move.locator("option", has_text=re.compile(r"^second ")).get_attribute("value"))
    page.get_by_role("button", name="Move to version").click()
    expect(page.locator("#deployment-version")).to_contain_text("second", timeout=SLOW)
    with platform.client() as client:
        moved = wait_status(client, deployment_id)
    expect(status).to_contain_text("READY", timeout=SLOW)

    # protect with a token: shown once, the URL then needs it; try it sends it
    page.get_by_role("button", name="Protect with a token").click()
    token = page.locator("#token-value").inner_text()
    assert len(token) > 20
    expect(page.locator("#token-state")).to_contain_text("needs its token")
    deadline = time.monotonic() + SLOW / 1000
    while httpx.post(url + "/predict", json={"instances": IRIS_ROWS}).status_code != 401:
        assert time.monotonic() < deadline, "the token was not rolled out"
        time.sleep(0.3)
    with platform.client() as client:
        wait_status(client, deployment_id)
    expect(status).to_contain_text("READY", timeout=SLOW)
    page.get_by_label("Protocol").select_option("seed")
    page.get_by_role("button", name="Predict").click()
    expect(page.locator("#predictions")).to_have_text(f"Predictions: {compact(expected)}")
    seed_curl = page.locator('code[data-protocol="seed"]').inner_text()
    assert "MODELPORT_TOKEN" in seed_curl
    assert len(run_curl(seed_curl, token)["predictions"]) == 1  # the curl's one sample row, with the token

    # the deployments list, live
    nav(page, "Deployments").click()
    row = page.locator("#deployments").get_by_role("row").filter(has_text=f"Deployment {deployment_id}")
    expect(row).to_contain_text("READY")
    expect(row).to_contain_text(str(moved["replicas"]))
    shot(page, "deployments")
    nav(page, "Models").click()
    expect(page.get_by_role("link", name=name)).to_be_visible()
    shot(page, "models")
    # an error is the API's own message
    page.get_by_label("Name").fill(name)
    page.get_by_role("button", name="Create model").click()
    expect(page.get_by_role("alert").filter(has_text="already")).to_have_text(
        f"you already have a model named '{name}'")

    # a second user sees none of it: empty lists, and the first user's ids look missing
    other = browser.new_context()
    second = other.new_page()
    sign_in(second, platform, new_user(platform))
    expect(second.locator("tbody")).to_contain_text("No models yet")
    expect(second.get_by_role("link", name=name)).to_have_count(0)
    nav(second, "Deployments").click()
    expect(second.locator("#deployments")).to_contain_text("No deployments yet.")
    for hidden, what in ((f"#/deployments/{deployment_id}", f"Deployment {deployment_id}"),
                         (f"#/models/{model_id}", f"Model {model_id}")):
        second.goto(f"{platform.api}/ui/{hidden}")
        expect(second.get_by_role("heading", name="Not found")).to_be_visible()
        expect(second.get_by_text(f"{what} does not exist, or is not yours.")).to_be_visible()
    # sign out clears the key
    second.get_by_role("button", name="Sign out").click()
    expect(second.get_by_role("heading", name="Sign in")).to_be_visible()
    assert second.evaluate("sessionStorage.length") == 0
    other.close()

    # at phone width the deployment page still reads (cards, one column)
    phone = browser.new_context(viewport={"width": 390, "height": 844})
    small = phone.new_page()
    sign_in(small, platform, platform.key)
    small.goto(f"{platform.api}/ui/#/deployments/{deployment_id}")
    expect(small.locator("#deployment-status")).to_contain_text("READY")
    expect(small.get_by_label("Version", exact=True).locator("option")).to_have_count(2)  # the READY ones
    expect(small.locator("#model-facts")).to_contain_text("enter its token")  # protected: metadata needs it
    small.get_by_label("Token (only if the URL is protected)").fill(token)
    small.get_by_label("Token (only if the URL is protected)").press("Tab")
    expect(small.locator("#model-facts")).to_contain_text("4 features per row")
    assert small.evaluate("document.documentElement.scrollWidth <= window.innerWidth + 1"), "no sideways scroll"
    shot(small, "deployment-phone")
    phone.close()

    # delete: confirmed in place, the page says it is gone, the list is empty again
    page.goto(f"{platform.api}/ui/#/deployments/{deployment_id}")
    page.get_by_role("button", name="Delete deployment").click()
    page.get_by_role("button", name="Yes, delete").click()
    expect(page.get_by_text(f"Deployment {deployment_id} was deleted.")).to_be_visible(timeout=SLOW)
    nav(page, "Deployments").click()
    expect(page.locator("#deployments")).to_contain_text("No deployments yet.")
    assert httpx.post(url + "/predict", json={"instances": IRIS_ROWS}).status_code == 404
    context.close()


def ready_deployment(up: Up, model_path: Path, name: str) -> dict[str, Any]:
    with up.client() as client:
        model = client.post("/models", json={"name": f"{name}-{time.monotonic_ns()}"}).raise_for_status().json()
        version = client.post(f"/models/{model['id']}/versions", json={}).raise_for_status().json()
        uploaded = client.post(f"/versions/{version['id']}/upload",
                               files={"model_file": ("model.joblib", model_path.read_bytes())})
        assert uploaded.status_code == 200 and uploaded.json()["status"] == "READY", uploaded.text
        created = client.post(f"/versions/{version['id']}/deployments", json={"replicas": 1}).raise_for_status()
        return wait_status(client, created.json()["id"])


def test_the_charts_draw_the_metrics_contract(platform: Up, browser: Browser, iris: tuple[Path, list[int]]) -> None:
    """The chart side of GET /deployments/{id}/metrics as agreed, answered here by the browser's
    routing: four charts, a gap where a minute had no requests (nulls), the window it asks for;
    an empty series is the empty state."""
    deployment = ready_deployment(platform, iris[0], "contract")
    now = time.time()
    minute = int(now // 60 * 60)

    def at(seconds: int) -> str:
        return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(seconds))

    points = [
        {"at": at(minute - 180), "requests": 30, "errors": 3, "error_rate": 0.1, "p50_ms": 1.5, "p99_ms": 9.0,
         "mean_batch_rows": 2.0, "replicas_ready": 1},
        {"at": at(minute - 120), "requests": 0, "errors": 0, "error_rate": 0.0, "p50_ms": None, "p99_ms": None,
         "mean_batch_rows": None, "replicas_ready": 1},
        {"at": at(minute - 60), "requests": 12, "errors": 0, "error_rate": 0.0, "p50_ms": 1.2, "p99_ms": 4.8,
         "mean_batch_rows": 1.0, "replicas_ready": 1},
    ]
    asked: list[str] = []
    answer = {"points": points}

    def fulfil(route: Any) -> None:
        asked.append(route.request.url)
        route.fulfill(status=200, content_type="application/json", body=json.dumps({
            "deployment_id": deployment["id"], "window_seconds": 3600, "interval_seconds": 60,
            "sampled_at": at(int(now)), **answer}))

    def with_rollout(route: Any) -> None:  # the rollouts issue's record field, read out in its place
        record = route.fetch().json()
        record["rollout"] = {
            "strategy": "canary", "steps": [10, 50], "step_seconds": 60, "max_error_rate": 0.01, "min_requests": 50,
            "candidate_version_id": 99, "stable_version_id": record["version_id"], "step": 1, "state": "progressing",
            "started_at": at(minute), "step_started_at": at(minute), "reason": None, "weight": 50}
        record["shadow"] = shadow
        route.fulfill(status=200, content_type="application/json", body=json.dumps(record))

    shadow: dict[str, Any] = {"version_id": 98, "percent": 50, "tolerance": 1e-6, "state": "running",
                              "started_at": at(minute), "stopped_at": None, "reason": None}

    def shadow_route(route: Any) -> None:  # the shadow's report, and its stop (the record says so after)
        if route.request.method == "DELETE":
            shadow.update(state="stopped", reason="stopped by the owner")
            record = route.fetch(method="GET").json()
            route.fulfill(status=200, content_type="application/json", body=json.dumps({**record, "shadow": shadow}))
            return
        route.fulfill(status=200, content_type="application/json", body=json.dumps({
            "deployment_id": deployment["id"], "shadow": shadow, "sampled_at": at(minute), "mirrored": 120,
            "dropped": 2, "candidate_errors": 1, "rows_compared": 200, "agreement": 0.7, "proba_mean_abs_diff": None,
            "live": {}, "candidate": {}, "copy_p50_ms": 1.0, "copy_p99_ms": 2.0}))

    page = browser.new_page(viewport={"width": 1280, "height": 900})
    page.route(re.compile(rf".*/api/v1/deployments/{deployment['id']}/metrics\?.*"), fulfil)
    page.route(re.compile(rf".*/api/v1/deployments/{deployment['id']}$"), with_rollout)
    page.route(re.compile(rf".*/api/v1/deployments/{deployment['id']}/shadow$"), shadow_route)
    sign_in(page, platform, platform.key)
    page.goto(f"{platform.api}/ui/#/deployments/{deployment['id']}")
    expect(page.locator("#traffic-summary")).to_have_text(re.compile(r"^42 requests, 3 errors in the last 1h"))
    expect(page.locator("#charts figure")).to_have_count(4)
    latency = page.locator("#charts figure", has_text="Latency")
    expect(latency.locator("circle")).to_have_count(4)  # p50 and p99 of the two minutes with requests
    expect(latency.locator("svg")).to_have_attribute("aria-label", re.compile(r"latest p50 1\.2 ms, p99 4\.8 ms"))
    expect(page.locator("#charts figure", has_text="Request rate").locator("circle")).to_have_count(3)
    assert "window=1h" in asked[0]
    expect(page.locator("#rollout-state")).to_have_text(re.compile(
        r"^Canary: version id 99 gets 50% of requests \(step 2 of 2: 10 → 50 %\)"))
    expect(page.locator("#shadow-state")).to_have_text(
        "Shadow: version id 98 gets a copy of 50% of requests. 120 mirrored, 2 dropped, 1 candidate errors; "
        "agreement 70.0% of 200 rows.")
    page.get_by_role("button", name="Stop shadow").click()
    expect(page.locator("#shadow-state")).to_have_text("Last shadow of version id 98: stopped. stopped by the owner")
    expect(page.get_by_role("button", name="Stop shadow")).to_be_hidden()
    traffic_shot(page, "charts-contract")
    page.get_by_label("Window").select_option("6h")
    answer["points"] = []
    expect(page.locator("#charts")).to_contain_text("No traffic yet.", timeout=SLOW)
    assert any("window=6h" in url for url in asked)
    page.close()
    with platform.client() as client:
        assert client.delete(f"/deployments/{deployment['id']}").status_code == 202


def test_the_traffic_charts_show_the_requests_sent(
    platform: Up, browser: Browser, iris: tuple[Path, list[int]],
) -> None:
    """Needs GET /api/v1/deployments/{id}/metrics (the sweep's per-minute samples; every 2 s here)."""
    deployment = ready_deployment(platform, iris[0], "charts")
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    sign_in(page, platform, platform.key)
    page.goto(f"{platform.api}/ui/#/deployments/{deployment['id']}")
    expect(page.locator("#deployment-status")).to_contain_text("READY")
    sent = 40
    with httpx.Client(timeout=30) as predict:
        for i in range(sent):
            rows = IRIS_ROWS[: 1 + i % 3]
            assert predict.post(deployment["url"] + "/predict", json={"instances": rows}).status_code == 200
        assert predict.post(deployment["url"] + "/predict", json={"instances": [[1, 2]]}).status_code == 400
    # the chart fills while the page is open (polled, no reload): at least what was sent here
    try:
        page.wait_for_function(
            "sent => parseInt(document.querySelector('#traffic-summary').textContent, 10) >= sent", arg=sent + 1,
            timeout=SLOW,
        )
    except PlaywrightTimeout:
        with platform.client() as client:
            last = client.get(f"/deployments/{deployment['id']}/metrics", params={"window": "1h"})
        raise AssertionError(f"the charts never showed {sent + 1} requests; the metrics endpoint answered "
                             f"{last.status_code}: {last.text[:500]}") from None
    expect(page.locator("#traffic-summary")).to_contain_text(re.compile(r"requests, \d+ errors in the last 1h"))
    charts = page.locator("#charts figure")
    expect(charts).to_have_count(4)
    for title in ("Request rate", "Error rate", "Latency", "Batch size"):
        expect(page.locator("#charts figcaption", has_text=title)).to_be_visible()
    expect(page.locator("#charts circle").first).to_be_visible()
    traffic_shot(page, "charts")
    page.close()
    with platform.client() as client:
        assert client.delete(f"/deployments/{deployment['id']}").status_code == 202

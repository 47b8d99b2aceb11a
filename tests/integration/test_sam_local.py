"""Issue 13: every function in a Lambda container through SAM local, and the API through
`sam local start-api`, against real local stand-ins (tests/support/sam_local.py, `make sam-local`).

One build per module (the Lambda image on the shared debootstrap base, then `sam build`), then:
every sample in events/ through `sam local start-lambda` (SAM's Lambda containers and emulator,
kept warm) and in-process with the same answers; one sample per function through
`sam local invoke` (a fresh container each); the seed's API calls through `sam local start-api`.
Measurements (sam build time, REPORT durations, unzipped sizes) are printed (`pytest -s`) and the
unzipped size of each function is held under Lambda's 250 MB. Fails, never skips, without Docker.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.support import sam_local
from tests.support.sam_local import LAMBDA_UNZIPPED_LIMIT, Prepared, Run

pytestmark = [pytest.mark.integration, pytest.mark.containers]


@pytest.fixture(scope="module")
def prepared(docker_engine: Any, tools: Any) -> Prepared:
    built = sam_local.prepare()
    print(f"\nsam build: {built.sam_build_seconds:.1f} s; image {built.lambda_image}")
    return built


@pytest.fixture(scope="module")
def app() -> Any:
    return sam_local.load_template(sam_local.ROOT / "template.yaml")


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("sam-local")


@pytest.fixture(scope="module")
def through_sam(prepared: Prepared, app: Any, work: Path) -> Run:
    return sam_local.run_samples("start-lambda", app, prepared.build_dir, work)


@pytest.fixture(scope="module")
def in_process(prepared: Prepared, app: Any, work: Path) -> Run:
    return sam_local.run_samples("in-process", app, prepared.build_dir, work)


def test_every_sample_is_accepted_in_a_lambda_container(through_sam: Run) -> None:
    assert len(through_sam.invocations) == len(list((sam_local.ROOT / "events").glob("*.json")))
    failed = {i.event: (i.error or i.problems, i.log[-1500:]) for i in through_sam.failed}
    assert not failed, failed
    for inv in through_sam.invocations:
        assert inv.duration_ms is not None, f"no REPORT line for {inv.event}"


def test_every_sample_gets_the_same_answer_in_process(through_sam: Run, in_process: Run) -> None:
    assert not in_process.failed, {i.event: i.error or i.problems for i in in_process.failed}
    sam = {i.event: i.normalized() for i in through_sam.invocations}
    local = {i.event: i.normalized() for i in in_process.invocations}
    assert sam == local


def test_each_function_answers_through_sam_local_invoke(prepared: Prepared, app: Any, work: Path) -> None:
    invocations = sam_local.invoke_each_function(app, prepared.build_dir, work)
    failed = {i.event: (i.error or i.problems, i.log[-1500:]) for i in invocations if not i.passed}
    assert not failed, failed
    invoked = {i.function for i in invocations if i.mode == "invoke"}
    assert invoked == {f.logical_id for f in app.functions.values()}
    for inv in invocations:
        if inv.mode == "invoke":
            print(f"first invoke {inv.function}: REPORT init {inv.init_ms} ms, duration {inv.duration_ms} ms, "
                  f"wall {inv.seconds:.1f} s")


def test_the_seed_api_calls_work_through_start_api(prepared: Prepared, app: Any, work: Path) -> None:
    steps = sam_local.drive_api(app, prepared.build_dir, work)
    failed = [step.line() for step in steps if not step.passed]
    assert not failed, failed
    assert [s.name for s in steps][-3:] == ["get deployment", "delete deployment", "get model"]


def test_each_function_fits_lambdas_unzipped_limit(prepared: Prepared, app: Any) -> None:
    sizes = sam_local.layer_sizes(prepared.build_dir, app)
    print("unzipped MiB: " + ", ".join(f"{k} {v / 2**20:.1f}" for k, v in sizes.items()))
    for function in app.functions.values():
        assert sizes[function.logical_id] < LAMBDA_UNZIPPED_LIMIT, (function.logical_id, sizes[function.logical_id])

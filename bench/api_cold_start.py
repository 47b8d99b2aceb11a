"""Cold start and warm latency of the API Lambda handler (functions/api/app.py).

What Lambda bills as init is the import of the handler module; the first request pays the rest
of the warm-up. Each cold sample is a fresh interpreter; the table is moto's server on loopback
(real HTTP, as DynamoDB would be). The named competitor is the same route written with
Powertools' own APIGatewayHttpResolver (the lightweight router many Lambda services use instead
of FastAPI + Mangum), calling the same store, so the ratio is the price of the framework.

Bytecode: by default each sample imports as this environment does (where PYTHONDONTWRITEBYTECODE
is set, every import compiles its source). ``--compiled`` measures as Lambda runs the layer, whose
build compiles the bytecode ahead of time (layers/modelport/Makefile): one unmeasured run of each
handler writes bytecode into a private cache (PYTHONPYCACHEPREFIX), which every sample of both
handlers then reads.

``--floor`` adds a third handler to the alternation: the same route alone on FastAPI + Mangum,
written as the Powertools one is (no auth dependency, no logging, no metrics), the least a
FastAPI + Mangum handler of this route costs; it is a reference, not the competitor.

    .venv/bin/python bench/api_cold_start.py [--samples 5] [--warm 300] [--compiled] [--floor]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

PROBE = r"""
import json, os, sys, time
t0 = time.perf_counter()
kind = sys.argv[1]
event = json.load(open(os.path.join(sys.argv[2], "events", "api-list-models.json")))
if kind == "modelport":
    import importlib.util
    spec = importlib.util.spec_from_file_location("api_app", os.path.join(sys.argv[2], "functions/api/app.py"))
    module = importlib.util.module_from_spec(spec); spec.loader.exec_module(module)
    handler = module.handler
elif kind == "powertools":
    from aws_lambda_powertools.event_handler import APIGatewayHttpResolver
    from modelport.settings import Settings
    from modelport.store.repository import Store
    store = Store(Settings())
    app = APIGatewayHttpResolver()

    @app.get("/api/v1/models")
    def list_models():
        owner = app.current_event.request_context.authorizer.jwt_claim["sub"]
        page = store.list_models(owner, 50, None)
        return {"items": [m.model_dump(mode="json") for m in page.items], "next_cursor": page.next_cursor}

    def handler(event, context):
        return app.resolve(event, context)
elif kind == "fastapi-floor":
    from fastapi import FastAPI, Request
    from mangum import Mangum
    from modelport.settings import Settings
    from modelport.store.repository import Store
    store = Store(Settings())
    app = FastAPI()

    @app.get("/api/v1/models")
    def list_models(request: Request):
        owner = request.scope["aws.event"]["requestContext"]["authorizer"]["jwt"]["claims"]["sub"]
        page = store.list_models(owner, 50, None)
        return {"items": [m.model_dump(mode="json") for m in page.items], "next_cursor": page.next_cursor}

    handler = Mangum(app, lifespan="off", api_gateway_base_path="/")
from modelport.local.streams import LocalLambdaContext
ctx = LocalLambdaContext("api", 30)
t1 = time.perf_counter()
first = handler(event, ctx)
t2 = time.perf_counter()
assert first["statusCode"] == 200, first
warm = []
for _ in range(int(sys.argv[3])):
    s = time.perf_counter(); handler(event, ctx); warm.append(time.perf_counter() - s)
warm.sort()
print(json.dumps({"init": t1 - t0, "first": t2 - t1, "warm": warm[len(warm) // 2]}))
"""


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--samples", type=int, default=5)
    parser.add_argument("--warm", type=int, default=300)
    parser.add_argument("--compiled", action="store_true", help="both handlers read bytecode compiled ahead of time")
    parser.add_argument("--floor", action="store_true", help="also the same route alone on FastAPI + Mangum")
    args = parser.parse_args()

    from modelport.local.processes import start_moto_server
    from modelport.settings import Settings
    from modelport.store.records import ensure_table
    from modelport.store.repository import Store

    moto = start_moto_server()
    env = {
        **os.environ, "TABLE_NAME": "bench", "DYNAMODB_ENDPOINT": moto.url, "AWS_ACCESS_KEY_ID": "bench",
        "AWS_SECRET_ACCESS_KEY": "bench", "AWS_DEFAULT_REGION": "us-east-1", "POWERTOOLS_METRICS_NAMESPACE": "bench",
        "POWERTOOLS_SERVICE_NAME": "modelport", "POWERTOOLS_LOG_LEVEL": "WARNING", "PYTHONPATH": str(ROOT),
    }
    os.environ.update({k: env[k] for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION")})
    pycache = tempfile.TemporaryDirectory(prefix="api-cold-start-pyc-") if args.compiled else None
    if pycache is not None:
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        env["PYTHONPYCACHEPREFIX"] = pycache.name
    try:
        settings = Settings(table_name="bench", dynamodb_endpoint=moto.url)
        ensure_table(settings)
        store = Store(settings)
        for i in range(10):
            store.create_model("user-alice", f"model-{i}", None)
        results: dict[str, list[dict[str, float]]] = {"modelport": [], "powertools": []}
        if args.floor:
            results["fastapi-floor"] = []

        def probe(kind: str) -> dict[str, float]:
            out = subprocess.run(
                [sys.executable, "-c", PROBE, kind, str(ROOT), str(args.warm)],
                env=env, capture_output=True, text=True, check=True,
            )
            return json.loads(out.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]

        if pycache is not None:
            for kind in results:  # unmeasured: writes each handler's bytecode, as the layer's build does
                probe(kind)
        for _ in range(args.samples):
            for kind in results:  # interleaved, so machine noise hits both alike
                results[kind].append(probe(kind))
    finally:
        moto.stop()
        if pycache is not None:
            pycache.cleanup()

    def med(kind: str, key: str) -> float:
        return statistics.median(r[key] for r in results[kind])

    bytecode = "bytecode compiled ahead of time" if args.compiled else "bytecode as this environment has it"
    table = Table(title=f"API Lambda handler: GET /api/v1/models, 10 models, median of {args.samples} cold starts "
                        f"({bytecode})")
    for column in ("handler", "init (import) ms", "first request ms", "init + first ms", "warm request ms"):
        table.add_column(column, justify="right")
    labels = {"modelport": "modelport (FastAPI + Mangum)", "powertools": "Powertools HttpResolver",
              "fastapi-floor": "this route alone on FastAPI + Mangum (reference)"}
    for kind in results:
        label = labels[kind]
        table.add_row(label, f"{med(kind, 'init') * 1e3:.0f}", f"{med(kind, 'first') * 1e3:.0f}",
                      f"{(med(kind, 'init') + med(kind, 'first')) * 1e3:.0f}", f"{med(kind, 'warm') * 1e3:.2f}")
    cold_ratio = (med("modelport", "init") + med("modelport", "first")) / (
        med("powertools", "init") + med("powertools", "first"))
    warm_ratio = med("modelport", "warm") / med("powertools", "warm")
    table.add_row("ratio modelport / Powertools", "", "", f"{cold_ratio:.2f}x", f"{warm_ratio:.2f}x")
    if args.floor:
        floor_ratio = (med("fastapi-floor", "init") + med("fastapi-floor", "first")) / (
            med("powertools", "init") + med("powertools", "first"))
        table.add_row("ratio reference / Powertools", "", "", f"{floor_ratio:.2f}x",
                      f"{med('fastapi-floor', 'warm') / med('powertools', 'warm'):.2f}x")
    Console(width=120).print(table)


if __name__ == "__main__":
    main()

"""A shadow that costs the machine next to nothing: bench/rollout.py's stand-in for a candidate
running on another node, as it would in a cluster.

    python bench/shadow_stand_in.py PORT ANSWER_FILE

On a machine of two CPUs every process shares a CPU with the live server or with the load
generator, and on these machines that alone moves the result: a busy loop at the idle priority
(`chrt --idle 0`) on the load generator's CPU, with no shadow anywhere, cut an unshadowed server's
req/s to 0.62x and raised its p99 from 0.2 to 2.2 ms (iris, 100 rows, one connection, 2026-12-06).
A real candidate predicts as many rows as the live server, so where it runs here decides the
figure more than the copying does. This stand-in answers every ``POST /mirror`` call (serving/
protocols/mirror.py: ``{"bodies": [b1, b2, ...]}``, every body the one the benchmark sends) with
what the model answers to that body, once per body: it counts the bodies (``"instances"``
occurrences) and repeats the answer read from ANSWER_FILE (the live server's own ``/predict``
answer), without parsing the call. The live server does all it does for a real shadow: queues,
splices, sends, reads the answer and compares every row (all agree).
"""

from __future__ import annotations

import sys
from typing import Any

import orjson
import uvicorn


def app_for(answer: bytes) -> Any:
    predictions = orjson.loads(answer)["predictions"]
    one = orjson.dumps(predictions)[1:-1]  # the rows' predictions, without the list's brackets

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        body = b""
        more = True
        while more:
            message = await receive()
            body += message.get("body", b"")
            more = message.get("more_body", False)
        out = b"{}"
        if scope["path"].endswith("/mirror"):
            out = b'{"predictions":[' + b",".join([one] * body.count(b'"instances"')) + b"]}"
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"application/json")]})
        await send({"type": "http.response.body", "body": out})

    return app


if __name__ == "__main__":
    port, answer_file = int(sys.argv[1]), sys.argv[2]
    with open(answer_file, "rb") as handle:
        application = app_for(handle.read())
    uvicorn.run(application, host="127.0.0.1", port=port, log_level="warning", http="httptools", loop="uvloop",
                lifespan="off")

"""A shadow that costs the machine next to nothing: bench/rollout.py's stand-in for a candidate
running on another node, as it would in a cluster.

    python bench/shadow_stand_in.py PORT ANSWER_FILE

On a machine of two CPUs every process shares a CPU with the live server or with the load
generator, and on these machines that alone moves the result: a busy loop at the idle priority
(`chrt --idle 0`) on the load generator's CPU, with no shadow anywhere, cut an unshadowed server's
req/s to 0.62x and raised its p99 from 0.2 to 2.2 ms (iris, 100 rows, one connection, 2026-12-06).
A real candidate predicts as many rows as the live server, so where it runs here decides the
figure more than the copying does. This stand-in answers every ``POST /mirror`` call (serving/
protocols/mirror.py: ``{"bodies": [b1, b2, ...], "answers": [...]}``, every body the one the
benchmark sends) with the comparison a candidate of the same model makes (every row agrees),
without parsing the call: it counts the bodies (``"instances"`` occurrences) and knows their rows
from ANSWER_FILE (the live server's own ``/predict`` answer to that body). The live server does
all it does for a real shadow: queues, splices, sends, reads the comparison and counts it.
"""

from __future__ import annotations

import sys
from typing import Any

import orjson
import uvicorn


def app_for(answer: bytes) -> Any:
    rows = len(orjson.loads(answer)["predictions"])  # the rows of the one body the benchmark sends
    marker = b'"instances"'

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        bodies, tail, more = 0, b"", True
        while more:  # counted piece by piece, as it arrives: no long burst of work on a shared CPU
            message = await receive()
            chunk = tail + message.get("body", b"")
            bodies += chunk.count(marker)
            tail = chunk[-(len(marker) - 1):]
            more = message.get("more_body", False)
        out = b"{}"
        if scope["path"].endswith("/mirror"):  # every row agrees: it is the live model's own answer
            out = orjson.dumps({"rows": bodies * rows, "agreed": bodies * rows, "proba_rows": 0,
                                "proba_abs_diff": 0.0})
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

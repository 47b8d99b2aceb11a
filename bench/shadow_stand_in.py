"""A shadow that costs the machine next to nothing: bench/rollout.py's stand-in for a candidate
running on another node, as it would in a cluster.

    python bench/shadow_stand_in.py PORT ANSWER_FILE

On a machine of two CPUs every process shares a CPU with the live server or with the load
generator, and on these machines that alone moves the result: a busy loop at the idle priority
(`chrt --idle 0`) on the load generator's CPU, with no shadow anywhere, cut an unshadowed server's
req/s to 0.62x and raised its p99 from 0.2 to 2.2 ms (iris, 100 rows, one connection, 2026-12-06);
one that spins 400 µs every 20 ms, a 2 % share of that CPU, tripled the p99 (0.13 -> 0.44 ms, iris,
one row). A real candidate predicts as many rows as the live server, so where it runs here decides
the figure more than the copying does. This stand-in answers every ``POST /mirror`` call (serving/
protocols/mirror.py: ``{"bodies": [b1, b2, ...], "answers": [...]}``, every body the one the
benchmark sends) with the comparison a candidate of the same model makes (every row agrees),
without parsing the call: it counts the bodies (``"instances"`` occurrences) and knows their rows
from ANSWER_FILE (the live server's own ``/predict`` answer to that body). The live server does
all it does for a real shadow: queues, splices, sends, reads the comparison and counts it.

It is an asyncio protocol on uvloop, not an ASGI app under uvicorn: the uvicorn stand-in ran
every 64 KiB it read through uvicorn's HTTP layer and an ASGI message on the load generator's CPU,
and that alone moved the live server's figures (iris, one row, one connection, 2026-12-06: 0.90-
0.92x req/s and p99 1.9-2.1x with it, 0.93-0.95x and 1.5-1.7x with this one).
"""

from __future__ import annotations

import asyncio
import sys
from typing import cast

import httptools
import orjson
import uvloop

MARKER = b'"instances"'


class StandIn(asyncio.Protocol):
    """One connection: requests one after the other (httptools' parser, uvicorn's and the live
    server's too), each answered once its body is in."""

    def __init__(self, rows: int) -> None:
        self.rows = rows
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpRequestParser(self)
        self.mirror, self.bodies, self.tail = False, 0, b""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass of asyncio's

    def data_received(self, data: bytes) -> None:
        self.parser.feed_data(data)

    def on_url(self, url: bytes) -> None:
        self.mirror, self.bodies, self.tail = url.endswith(b"/mirror"), 0, b""

    def on_body(self, body: bytes) -> None:
        chunk = self.tail + body  # counted as it arrives: no long burst of work on a shared CPU
        self.bodies += chunk.count(MARKER)
        self.tail = chunk[-(len(MARKER) - 1):]

    def on_message_complete(self) -> None:
        out = b"{}"
        if self.mirror:  # every row agrees: it is the live model's own answer
            rows = self.bodies * self.rows
            out = orjson.dumps({"rows": rows, "agreed": rows, "proba_rows": 0, "proba_abs_diff": 0.0})
        assert self.transport is not None
        self.transport.write(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n%s"
                             % (len(out), out))


async def serve(port: int, rows: int) -> None:
    server = await asyncio.get_running_loop().create_server(lambda: StandIn(rows), "127.0.0.1", port)
    await server.serve_forever()


if __name__ == "__main__":
    port, answer_file = int(sys.argv[1]), sys.argv[2]
    with open(answer_file, "rb") as handle:
        rows = len(orjson.loads(handle.read())["predictions"])  # the rows of the one body the benchmark sends
    uvloop.run(serve(port, rows))

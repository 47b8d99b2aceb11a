"""The mirror codec: how a live server's copies (``serving/mirror.py``) reach its shadow.

``POST /mirror`` ``{"bodies": [<a seed or KServe V1 request body>, ...]}`` -> ``{"predictions":
[...]}``: the rows of every body, in order, answered by one model call. The live server splices
its callers' own request bodies into the list byte for byte (each is a JSON object, so the list is
JSON), so copying a request costs it no JSON encoding; a copy it cannot forward as it was sent (a
V2 body, a flag in the query string) it encodes as a seed body. Every body must ask for the same
call (``predict`` or ``predict_proba``) and have the same number of features. Errors as the seed
protocol's. Not a route for callers: the ingress routes only under the deployment's root path.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from modelport.serving.errors import InputError
from modelport.serving.protocols import seed
from modelport.serving.protocols.seed import decode_rows

if TYPE_CHECKING:
    from modelport.serving.runtime import Runner


def splice(bodies: list[bytes]) -> bytes:
    """The request body for these seed/V1 bodies, as they were sent (no parsing, no encoding)."""
    return b'{"bodies":[' + b",".join(bodies) + b"]}"


def decode(payload: dict[str, Any], runner: Runner, query: bytes) -> tuple[Any, tuple[bool, ...], Any]:
    bodies = payload.get("bodies")
    if not isinstance(bodies, list) or not bodies:
        raise InputError("the body needs 'bodies': a non-empty list of seed request bodies")
    matrices, flags = [], set()
    for body in bodies:
        if not isinstance(body, dict):
            raise InputError("every entry of 'bodies' must be a seed request body (a JSON object)")
        matrix, probas, _ = decode_rows(body, runner, b"")
        matrices.append(matrix)
        flags.add(probas)
    if len(flags) != 1:
        raise InputError("the bodies ask for different model calls (predict and predict_proba)")
    # imported here, not at the top: numpy comes after the model's requirements environment (the
    # transport imports the codecs before loading); by the time a body arrives it is loaded
    import numpy as np

    return (matrices[0] if len(matrices) == 1 else np.concatenate(matrices)), flags.pop(), None


class Codec(seed.Codec):
    """The seed protocol's answers and errors; ``bodies`` in."""

    endpoint = "mirror"
    forwardable = False  # its bodies are lists of seed bodies, not one
    decode = staticmethod(decode)

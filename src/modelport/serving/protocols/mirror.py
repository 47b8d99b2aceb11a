"""The mirror protocol, both ends: how a live server's copies (``serving/mirror.py``) reach its
shadow, and how the shadow compares its predictions with the live ones.

``POST /mirror`` ``{"classifier": bool, "tolerance": float, "bodies": [<a seed or KServe V1
request body>, ...], "answers": [<the live server's seed/V1 answer to that body>, ...]}`` ->
``{"rows": n, "agreed": a, "proba_rows": p, "proba_abs_diff": d}``: the shadow predicts the rows
of every body in one model call and compares them, row by row, with the ``predictions`` of the
answers; the live server only adds the figures to its counters. The comparison is done here, by
the shadow, so that copying costs the live server no parsing and no arithmetic (a 2048-row call
answered with its predictions cost it a parse and a conversion of every prediction, bursts that
callers saw in the p99; bench/rollout.py). The live server splices its callers' own bodies and
its own encoded answers into the lists byte for byte (each is a JSON object), ``splice``; a copy
it cannot forward as it was sent (a V2 body, a flag in the query string) it encodes as a seed body
and answer. Every body must ask for the same call (``predict`` or ``predict_proba``) and have the
same number of features; every answer must have one prediction per row of its body. Errors as
the seed protocol's. Not a route for callers: the ingress routes only under the deployment's root
path.

The comparison (``compare``): the same label for a classifier (``classifier``: the live model's
kind; a ``predict_proba`` call: the same most likely class, the classes in the same order), for a
regressor every output within ``tolerance`` relative to the live value (absolute below 1); a
different number of outputs per row, or labels of another type, disagrees on every row.
``predict_proba`` rows also add up the mean absolute difference of each row's probabilities.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import orjson

from modelport.serving.errors import InputError
from modelport.serving.protocols import seed
from modelport.serving.protocols.seed import decode_rows

if TYPE_CHECKING:
    from modelport.serving.runtime import Runner

#: the size the live server writes a call in (``splice``'s pieces): the event loop answers callers
#: between pieces, so a big call is never one long burst of copying
PIECE_BYTES = 64 * 1024
_MIDDLE, _END = b'],"answers":[', b"]}"  # what a call has between its two lists and after them


class Call:
    """The request body of one call: its ``length`` and ``pieces(before)``, as many times as it is
    sent (a call may be sent again on a fresh connection when the kept-alive one turns out closed).

    A piece is a list of buffers of about ``PIECE_BYTES`` in all, for one vectored write (asyncio's
    ``writelines``): the bodies and answers are joined only as they are written, and the request's
    head, the call's own few bytes and the lists' ends go with their neighbours, so a call of a
    few copies is one system call, not six (2026-12-06: a 15 KB call took six writes of 4 µs each
    on the live server's event loop; less work, though too little for bench/rollout.py to see)."""

    def __init__(self, head: bytes, bodies: list[bytes], answers: list[bytes]) -> None:
        self._head, self._bodies, self._answers = head, bodies, answers
        self.length = (len(head) + len(_MIDDLE) + len(_END) + sum(map(len, bodies)) + sum(map(len, answers))
                       + len(bodies) + len(answers) - 2)  # the commas

    def pieces(self, before: bytes) -> Iterator[list[bytes]]:
        """``before`` (the request's head) and the body, in pieces of about ``PIECE_BYTES``."""
        piece, size = [before, self._head], len(before) + len(self._head)
        for part in itertools.chain(_joined(self._bodies), (_MIDDLE,), _joined(self._answers), (_END,)):
            piece.append(part)
            size += len(part)
            if size >= PIECE_BYTES:
                yield piece
                piece, size = [], 0
        if piece:
            yield piece


def splice(bodies: list[bytes], answers: list[bytes], *, classifier: bool, tolerance: float) -> Call:
    """The call for these seed/V1 bodies and answers, as they were sent (no parsing, no encoding)."""
    head = orjson.dumps({"classifier": classifier, "tolerance": tolerance})[:-1] + b',"bodies":['
    return Call(head, bodies, answers)


def _joined(parts: list[bytes]) -> Iterator[bytes]:
    """``b",".join(parts)`` in pieces of about ``PIECE_BYTES``."""
    start, size = 0, 0
    for end, part in enumerate(parts, 1):
        size += len(part) + 1
        if size >= PIECE_BYTES or end == len(parts):
            yield (b"," if start else b"") + b",".join(parts[start:end])
            start, size = end, 0


def decode(payload: dict[str, Any], runner: Runner, query: bytes) -> tuple[Any, tuple[bool, ...], Any]:
    bodies, answers = payload.get("bodies"), payload.get("answers")
    if not isinstance(bodies, list) or not bodies:
        raise InputError("the body needs 'bodies': a non-empty list of seed request bodies")
    if not isinstance(answers, list) or len(answers) != len(bodies):
        raise InputError("the body needs 'answers': the live server's answer to each of 'bodies'")
    tolerance = payload.get("tolerance", 0.0)
    if isinstance(tolerance, bool) or not isinstance(tolerance, int | float) or tolerance < 0:
        raise InputError("'tolerance' must be a number >= 0")
    matrices, flags, live = [], set(), []
    for body, answer in zip(bodies, answers, strict=True):
        if not isinstance(body, dict):
            raise InputError("every entry of 'bodies' must be a seed request body (a JSON object)")
        matrix, probas, _ = decode_rows(body, runner, b"")
        predictions = answer.get("predictions") if isinstance(answer, dict) else None
        if not isinstance(predictions, list) or len(predictions) != len(matrix):
            raise InputError("every entry of 'answers' must be {\"predictions\": [...]}, one per row of its body")
        matrices.append(matrix)
        flags.add(probas)
        live.extend(predictions)
    if len(flags) != 1:
        raise InputError("the bodies ask for different model calls (predict and predict_proba)")
    # imported here, not at the top: numpy comes after the model's requirements environment (the
    # transport imports the codecs before loading); by the time a body arrives it is loaded
    import numpy as np

    probas = flags.pop()
    matrix = matrices[0] if len(matrices) == 1 else np.concatenate(matrices)
    return matrix, probas, (live, probas[0], bool(payload.get("classifier")), float(tolerance))


def encode(result: Any, extra: Any, runner: Runner, version: str) -> Any:
    live, proba, classifier, tolerance = extra
    return compare(live, result, proba=proba, classifier=classifier, tolerance=tolerance)


def compare(live_rows: list[Any], predictions: Any, *, proba: bool, classifier: bool,
            tolerance: float) -> dict[str, Any]:
    """How the shadow's ``predictions`` compare with the live server's (module docstring)."""
    import numpy as np

    rows = len(live_rows)
    disagree = {"rows": rows, "agreed": 0, "proba_rows": 0, "proba_abs_diff": 0.0}
    try:
        candidate = np.asarray(predictions)
        numeric = np.issubdtype(candidate.dtype, np.number)
        live = np.asarray(live_rows, dtype=np.float64 if numeric else None)
        if candidate.shape != live.shape:
            return disagree  # another number of outputs per row
        diff = 0.0
        if proba:
            same = np.argmax(live, axis=1) == np.argmax(candidate, axis=1)
            diff = float(np.abs(live - candidate).mean(axis=1).sum())
        elif classifier or not numeric:
            same = np.asarray(live == candidate, dtype=bool)
        else:
            same = np.abs(live - candidate) <= tolerance * np.maximum(1.0, np.abs(live))
        if same.shape[:1] != (rows,):
            return disagree  # labels of another type
    except (TypeError, ValueError):
        return disagree
    if same.ndim > 1:
        same = same.reshape(rows, -1).all(axis=1)
    return {"rows": rows, "agreed": int(np.count_nonzero(same)), "proba_rows": rows if proba else 0,
            "proba_abs_diff": diff}


class Codec(seed.Codec):
    """The seed protocol's errors; ``bodies`` and ``answers`` in, the comparison out."""

    endpoint = "mirror"
    forwardable = False  # its bodies are lists of seed bodies, not one
    decode = staticmethod(decode)
    encode = staticmethod(encode)

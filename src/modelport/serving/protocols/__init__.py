"""The codecs: one module per protocol (``seed``, ``v1``, ``v2``, and ``mirror``: a shadow's
copies), each a ``Codec`` that turns a request body into what the data plane predicts and the
predictions into that protocol's answer.

Contract of a codec (``dataplane.DataPlane.predict`` is its only caller on the hot path):

- ``decode(payload, runner, query) -> (matrix, probas, extra)``: ``payload`` is the parsed JSON
  object, ``query`` the raw query string. ``probas`` is a tuple with one flag per model call
  (True: ``predict_proba``); ``extra`` is whatever ``encode`` needs back. Raises ``InputError``.
- ``encode(result, extra, runner, version) -> body``: ``result`` is one array when ``probas`` had
  one flag, else a list of arrays in the same order; ``version`` is the model version the path
  named ("1" when it named none).
- ``error(message, code) -> body``, ``not_ready`` (the encoded 503 body) and ``endpoint`` (the
  metrics label of its predict route).
- ``forwardable``: its request bodies are seed bodies, which a live server's copies to a shadow
  carry as they were sent (``mirror``).

Codecs do no I/O and hold no state but the model name. ``dumps`` is the JSON every protocol speaks.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import parse_qs

import orjson

if TYPE_CHECKING:
    from modelport.serving.runtime import Runner

_DUMP_OPTIONS = orjson.OPT_SERIALIZE_NUMPY

#: the ``probas`` of a request for one ``predict`` call / one ``predict_proba`` call
PREDICT: tuple[bool, ...] = (False,)
PROBA: tuple[bool, ...] = (True,)


def _default(value: Any) -> Any:
    tolist = getattr(value, "tolist", None)
    if tolist is not None:
        return tolist()
    raise TypeError(f"cannot serialise {type(value).__name__}")


def dumps(value: Any) -> bytes:
    return orjson.dumps(value, default=_default, option=_DUMP_OPTIONS)


def proba_flag(payload: dict[str, Any], query: bytes) -> bool:
    """``"parameters": {"proba": true}`` in the body or ``?proba=true`` in the query."""
    parameters = payload.get("parameters")
    if isinstance(parameters, dict) and parameters.get("proba") in (True, "true", 1):
        return True
    if query and b"proba" in query:
        values = parse_qs(query.decode("latin-1")).get("proba", [])
        return any(v.lower() in ("true", "1", "yes") for v in values)
    return False


class Codec(Protocol):
    """What the data plane needs of a protocol (see the module docstring)."""

    endpoint: str
    not_ready: bytes
    forwardable: bool

    def decode(self, payload: dict[str, Any], runner: Runner, query: bytes) -> tuple[Any, tuple[bool, ...], Any]: ...

    def encode(self, result: Any, extra: Any, runner: Runner, version: str) -> Any: ...

    def error(self, message: str, code: str) -> Any: ...

"""The seed protocol's codec: ``POST /predict`` ``{"instances": [[...]]}`` (or ``"inputs"``) ->
``{"predictions": [...]}``; ``?proba=true`` or ``"parameters": {"proba": true}`` -> ``predict_proba``.
Errors: ``{"code", "message", "error"}``. ``decode_rows`` is shared with KServe V1 (same body)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from modelport.serving.errors import InputError
from modelport.serving.protocols import PREDICT, PROBA, dumps, proba_flag

if TYPE_CHECKING:
    from modelport.serving.runtime import Runner


def decode_rows(payload: dict[str, Any], runner: Runner, query: bytes) -> tuple[Any, tuple[bool, ...], Any]:
    """``{"instances": [...]}`` or ``{"inputs": [...]}``, optional parameters -> one model call."""
    if "instances" in payload:
        data, where = payload["instances"], "instances"
    elif "inputs" in payload:
        data, where = payload["inputs"], "inputs"
    else:
        raise InputError("the body needs 'instances' (or 'inputs'): a list of rows, e.g. {\"instances\": [[1, 2]]}")
    proba = proba_flag(payload, query)
    if proba and not runner.has_proba:
        raise InputError(f"model {runner.name} ({runner.model_type}) has no predict_proba")
    return runner.to_matrix(data, where), PROBA if proba else PREDICT, None


def encode_rows(result: Any, extra: Any, runner: Runner, version: str) -> Any:
    return {"predictions": result}


class Codec:
    endpoint = "predict"
    forwardable = True
    decode = staticmethod(decode_rows)
    encode = staticmethod(encode_rows)

    def __init__(self, name: str) -> None:
        self.not_ready = dumps({"code": "not_ready", "message": f"model {name} is not loaded yet",
                                "error": f"Model {name} is not ready yet."})

    @staticmethod
    def error(message: str, code: str) -> Any:
        return {"code": code, "message": message, "error": message}

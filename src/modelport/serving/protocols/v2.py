"""Open Inference Protocol V2's codec: ``POST /v2/models/{name}[/versions/{v}]/infer`` with
``{"inputs": [tensors], "outputs": [{"name"}...]}`` -> ``{"model_name", "model_version", "id",
"parameters", "outputs": [tensors]}``; outputs ``output-0`` (predict) and ``predict_proba``.
Also the server and model metadata shapes. Errors: ``{"error"}``."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from modelport import __version__
from modelport.serving.errors import InputError
from modelport.serving.protocols import PREDICT, PROBA, dumps, proba_flag

if TYPE_CHECKING:
    from modelport.serving.runtime import Runner

_PREDICT_NAMES = ("output-0",)
_PROBA_NAMES = ("predict_proba",)


def server_metadata() -> Any:
    return {"name": "modelport", "version": __version__, "extensions": []}


def model_ready(name: str, ready: bool) -> Any:
    return {"name": name, "ready": ready}


def decode(payload: dict[str, Any], runner: Runner, query: bytes) -> tuple[Any, tuple[bool, ...], Any]:
    matrix = runner.v2_matrix(payload.get("inputs"))
    wanted = payload.get("outputs")
    names: Sequence[str]
    if isinstance(wanted, list) and wanted:
        found: list[str] = []
        for item in wanted:
            out_name = item.get("name") if isinstance(item, dict) else None
            if out_name in ("output-0", "predict"):
                found.append("output-0")
            elif out_name in ("predict_proba", "proba", "output-1"):
                found.append("predict_proba")
            else:
                raise InputError(f"unknown output {out_name!r}; this model has output-0 and predict_proba")
        names, probas = found, tuple(n == "predict_proba" for n in found)
        proba = any(probas)
    elif proba_flag(payload, query):
        names, probas, proba = _PROBA_NAMES, PROBA, True
    else:
        names, probas, proba = _PREDICT_NAMES, PREDICT, False
    if proba and not runner.has_proba:
        raise InputError(f"model {runner.name} ({runner.model_type}) has no predict_proba")
    return matrix, probas, (payload, names)


def encode(result: Any, extra: Any, runner: Runner, version: str) -> Any:
    payload, names = extra
    results = result if len(names) > 1 else (result,)
    outputs = [{"name": out_name, "shape": list(answer.shape), "datatype": runner.datatype(answer),
                "data": answer.ravel()} for out_name, answer in zip(names, results, strict=True)]
    request_id = payload.get("id")
    return {"model_name": runner.name, "model_version": version,
            "id": request_id if isinstance(request_id, str) else str(uuid.uuid4()),
            "parameters": {}, "outputs": outputs}


class Codec:
    endpoint = "v2_infer"
    forwardable = False
    decode = staticmethod(decode)
    encode = staticmethod(encode)

    def __init__(self, name: str) -> None:
        self.not_ready = dumps({"error": f"Model {name} is not ready yet."})

    @staticmethod
    def error(message: str, code: str) -> Any:
        return {"error": message}

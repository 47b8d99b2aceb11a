"""KServe V1's codec: ``GET /v1/models``, ``GET /v1/models/{name}``, ``POST /v1/models/{name}:predict``
with the seed's body (``{"instances": [...]}``) and answer (``{"predictions": [...]}``).
Errors: ``{"error"}``."""

from __future__ import annotations

from typing import Any

from modelport.serving.protocols import dumps
from modelport.serving.protocols.seed import decode_rows, encode_rows


def model_list(name: str) -> Any:
    return {"models": [name]}


def model_ready(name: str) -> Any:
    return {"name": name, "ready": True}


class Codec:
    endpoint = "v1_predict"
    forwardable = True
    decode = staticmethod(decode_rows)
    encode = staticmethod(encode_rows)

    def __init__(self, name: str) -> None:
        self.not_ready = dumps({"error": f"Model {name} is not ready yet."})

    @staticmethod
    def error(message: str, code: str) -> Any:
        return {"error": message}

"""The named limit of bench/serving.py: the plainest fast Python HTTP server for this work (issue 14).

Starlette on uvicorn (uvloop, httptools), the model loaded with joblib and ``predict`` called inline
on the event loop; no token, no limits, no metrics, no input checks. Run by bench/serving.py as
``python bench/reference_server.py MODEL_PATH PORT``.
"""

import sys

import joblib
import numpy as np
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

model = joblib.load(sys.argv[1])


async def predict(request: Request) -> Response:
    payload = await request.json()
    return JSONResponse({"predictions": model.predict(np.array(payload["instances"])).tolist()})


async def ready(request: Request) -> Response:
    return JSONResponse({"ready": True})


app = Starlette(routes=[Route("/predict", predict, methods=["POST"]), Route("/ready", ready)])

if __name__ == "__main__":
    uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[2]), loop="uvloop", http="httptools",
                access_log=False, log_level="warning")

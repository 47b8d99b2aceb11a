"""The modelport model server: one model, three protocols (seed, KServe V1, Open Inference V2).

Starting it as a process (the Helm chart, the local platform, the tests)::

    argv = server_argv()                    # [sys.executable, "-m", "modelport.serving"]
    env = server_env("s3://models/models/1/versions/2/model.joblib", port=8123,
                     root_path="/api/v1/predict/7", sha256=..., requirements_uri=...)
    subprocess.Popen(argv, env={**os.environ, **env})

The process reads only environment variables (``modelport.settings.Settings``):

==========================  ==========================================================================
MODEL_URI (required)        ``s3://bucket/key``, ``bucket/key`` or a local path to a joblib/pickle file
MODEL_SHA256                refuse to load a file with another sha256
REQUIREMENTS_URI            requirements.txt next to the model (same forms as MODEL_URI)
REQUIREMENTS_SHA256         its sha256
MODEL_NAME                  the name in V1/V2 paths (default ``model``)
PORT                        listen port (default 8080)
SERVER_HOST                 listen interface (default 0.0.0.0, as a pod needs)
ROOT_PATH                   also serve every path under this prefix (``/api/v1/predict/7``)
MODEL_CACHE_DIR             downloads and requirements environments (default ``/tmp/modelport``)
MAX_REQUEST_BYTES           larger bodies get 413 (default 16 MiB)
MICROBATCH_ENABLED          merge concurrent requests into one model call (default true)
MICROBATCH_MAX_BATCH        at most this many rows per merged call (default 64)
MICROBATCH_MAX_WAIT_MS      at most this long waiting for requests already arriving (default 2)
MINIO_ENDPOINT, MINIO_ACCESS_KEY, MINIO_SECRET_KEY, MINIO_USE_SSL, AWS_REGION: the object store
LOG_LEVEL                   JSON logs on stderr (default INFO)
==========================  ==========================================================================

Readiness: ``GET /readyz`` (or ``/v2/health/ready``) answers 200 once the model is loaded and 503
before; liveness: ``GET /healthz``. If the model (or its requirements) cannot be loaded the process
exits with status 1 and prints one paragraph saying why on stderr. ``modelport serve`` is the same
server from the command line. In-process use (tests): ``modelport.serving.app.App`` is the ASGI app
and ``modelport.serving.app.load`` the whole load step.
"""

from __future__ import annotations

import sys

READY_PATH = "/readyz"
LIVE_PATH = "/healthz"


def server_argv() -> list[str]:
    """The command that starts the model server with this interpreter."""
    return [sys.executable, "-m", "modelport.serving"]


def server_env(
    model_uri: str, *, port: int, name: str = "model", root_path: str = "", sha256: str | None = None,
    requirements_uri: str | None = None, requirements_sha256: str | None = None,
    cache_dir: str | None = None, extra: dict[str, str] | None = None,
) -> dict[str, str]:
    """The environment variables for one server process (merge them over ``os.environ``)."""
    env = {"MODEL_URI": model_uri, "PORT": str(port), "MODEL_NAME": name, "ROOT_PATH": root_path}
    if sha256:
        env["MODEL_SHA256"] = sha256
    if requirements_uri:
        env["REQUIREMENTS_URI"] = requirements_uri
    if requirements_sha256:
        env["REQUIREMENTS_SHA256"] = requirements_sha256
    if cache_dir:
        env["MODEL_CACHE_DIR"] = cache_dir
    env.update(extra or {})
    return env

"""A pre-warmed model server: ``python -m modelport.serving --standby``.

Most of a model server's start is importing numpy and scikit-learn (about 2 s of 2.6 s for the
iris sample here). The local driver keeps one standby process that has done those imports and
waits on stdin for its deployment: one JSON line ``{"env": {...}, "log": "path"}``. It then takes
that environment and log file and serves as ``python -m modelport.serving`` would, so a deploy or
a scale-up does not pay the imports. Pods in a cluster start fresh as always.

A model whose requirements.txt needs packages installed cannot use the pre-imported modules (the
installed ones must come first on sys.path): the server then replaces itself with a fresh
interpreter, same pid, same environment (``restart_fresh``), and installs as usual.
"""

from __future__ import annotations

import json
import os
import sys

PREWARMED_ENV = "MODELPORT_PREWARMED"


def warm() -> None:
    """Import what every scikit-learn model server needs, before knowing the model."""
    import joblib  # noqa: F401
    import numpy  # noqa: F401
    import sklearn.base  # noqa: F401
    import sklearn.ensemble  # noqa: F401
    import sklearn.linear_model  # noqa: F401
    import sklearn.pipeline  # noqa: F401
    import sklearn.preprocessing  # noqa: F401
    import sklearn.tree  # noqa: F401
    import uvicorn  # noqa: F401

    import modelport.serving.server  # noqa: F401


def main() -> int:
    warm()
    line = sys.stdin.readline()
    if not line.strip():
        return 0  # the driver closed us: not needed
    order = json.loads(line)
    log = os.open(order["log"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    os.dup2(log, 1)
    os.dup2(log, 2)
    os.close(log)
    os.environ.update({str(k): str(v) for k, v in order["env"].items()})
    os.environ[PREWARMED_ENV] = "1"
    from modelport.serving.server import main as serve

    return serve()


def restart_fresh() -> None:
    """Become a fresh ``python -m modelport.serving`` (same pid and environment, no imports)."""
    os.environ.pop(PREWARMED_ENV, None)
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(sys.executable, [sys.executable, "-m", "modelport.serving"])

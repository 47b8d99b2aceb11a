"""A pre-warmed model server: ``python -m modelport.serving --standby``.

Most of a model server's start is importing numpy and scikit-learn (about 2 s of 2.6 s for the
iris sample here). The local driver keeps one standby process that has done those imports and
waits on stdin for its deployment: one JSON line ``{"env": {...}, "log": "path"}``. It then takes
that environment and log file and serves as ``python -m modelport.serving`` would, so a deploy or
a scale-up does not pay the imports. Pods in a cluster start fresh as always.

A model whose requirements.txt needs packages installed cannot use the pre-imported modules (the
installed ones must come first on sys.path): the server then replaces itself with a fresh
interpreter, same pid, the order's environment (``restart_fresh``, handed to the load step as its
``restart``), and installs as usual. The order's environment is parsed with
``ServerConfig.from_env`` and given to ``server.run``; ``os.environ`` is not written.
"""

from __future__ import annotations

import functools
import json
import os
import sys
from collections.abc import Mapping
from typing import NoReturn

from modelport.domain.model_server import ServerConfig, server_argv
from modelport.serving import server


def warm() -> None:
    """Import what every scikit-learn model server needs, before knowing the model."""
    # imported here, not at the top: these imports are what a standby does ahead of time (the
    # measured ~2 s of a start); a module that imports standby should not pay them
    import joblib  # noqa: F401
    import numpy  # noqa: F401
    import sklearn.base  # noqa: F401
    import sklearn.ensemble  # noqa: F401
    import sklearn.linear_model  # noqa: F401
    import sklearn.pipeline  # noqa: F401
    import sklearn.preprocessing  # noqa: F401
    import sklearn.tree  # noqa: F401


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
    # the order's environment over our own: what `python -m modelport.serving` would have been given
    env = {**os.environ, **{str(k): str(v) for k, v in order["env"].items()}}
    try:
        config = ServerConfig.from_env(env)
    except ValueError as exc:
        print(f"modelport model server: bad configuration: {exc}", file=sys.stderr)
        return 2
    return server.run(config, restart=functools.partial(restart_fresh, env), env=env)


def restart_fresh(env: Mapping[str, str]) -> NoReturn:
    """Become a fresh ``python -m modelport.serving`` with ``env`` (same pid, no pre-imports)."""
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, server_argv(sys.executable), dict(env))

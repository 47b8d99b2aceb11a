"""The load step: fetch the model (and its requirements), prepare the environment, unpickle.

``load(config, restart)`` does it all in the calling thread and returns the ``Runner``; raises
``ModelLoadError`` with the message the server prints. ``start(config, loop, on_loaded, on_failed,
restart)`` runs it in a daemon thread and reports on ``loop`` (``on_loaded(runner)`` or
``on_failed(message)``), so the transport answers liveness at once and readiness says 503 meanwhile.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from modelport.domain.model_server import ServerConfig
from modelport.domain.pickle_policy import PicklePolicy
from modelport.serving.environment import Environment, prepare
from modelport.serving.errors import ModelLoadError
from modelport.serving.fetch import fetch
from modelport.serving.sandbox import Confinement, SandboxUnavailable, confine_loader

if TYPE_CHECKING:
    from modelport.serving.runtime import Runner

log = logging.getLogger("modelport.serving")


def load(config: ServerConfig, restart: Callable[[], object] | None = None,
         confinement: Confinement | None = None) -> Runner:
    """Fetch the model (and requirements), prepare the environment, unpickle: the whole load.
    ``restart``: see ``environment.prepare`` (a pre-warmed server's way to start afresh).
    ``confinement``: the process's (``sandbox.confine_process``); the unpickling then runs in a
    thread that can write no file and open no TCP connection (``sandbox.confine_loader``)."""
    cache = Path(config.model_cache_dir)
    model_path = fetch(config.model_uri, what="model", cache_dir=cache, config=config, sha256=config.model_sha256,
                       version_id=config.model_version_id)
    environment = Environment()
    requirements_text = None
    if config.requirements_uri:
        requirements_path = fetch(config.requirements_uri, what="requirements.txt", cache_dir=cache,
                                  config=config, sha256=config.requirements_sha256,
                                  version_id=config.requirements_version_id)
        environment = prepare(requirements_path, cache, restart)
        requirements_text = requirements_path.read_text(encoding="utf-8")
    # the allow-list, extended only by known packages the requirements name and the owner's own trust list
    policy = PicklePolicy.for_requirements(requirements_text, config.trusted())
    # imported here, not at the top: runtime imports numpy, which must come after the model's
    # requirements environment is active (environment.prepare)
    from modelport.serving.runtime import load_model

    if confinement is not None:
        try:
            confine_loader(confinement)
        except SandboxUnavailable as exc:
            raise ModelLoadError(str(exc)) from None
    return load_model(model_path, config.model_name, environment.describe(), policy)


def _load_in_thread(config: ServerConfig, loop: asyncio.AbstractEventLoop, on_loaded: Callable[[Runner], None],
                    on_failed: Callable[[str], None], restart: Callable[[], object] | None,
                    confinement: Confinement | None) -> None:
    started = time.perf_counter()
    try:
        runner = load(config, restart, confinement)
        runner.load_seconds = time.perf_counter() - started
    except ModelLoadError as exc:
        loop.call_soon_threadsafe(on_failed, exc.message)
        return
    except Exception as exc:  # noqa: BLE001 - report, never a bare traceback as the message
        log.debug("load failed:\n%s", traceback.format_exc())
        message = f"Unexpected error while loading the model: {type(exc).__name__}: {exc}"
        loop.call_soon_threadsafe(on_failed, message)
        return
    loop.call_soon_threadsafe(on_loaded, runner)


def start(config: ServerConfig, loop: asyncio.AbstractEventLoop, on_loaded: Callable[[Runner], None],
          on_failed: Callable[[str], None], restart: Callable[[], object] | None = None,
          confinement: Confinement | None = None) -> None:
    """Load in a daemon thread; report on ``loop``."""
    threading.Thread(target=_load_in_thread, args=(config, loop, on_loaded, on_failed, restart, confinement),
                     name="model-loader", daemon=True).start()

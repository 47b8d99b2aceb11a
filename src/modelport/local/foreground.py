"""``modelport up`` in the foreground: readable logs on the console, the platform started in a
thread, served until SIGINT/SIGTERM, everything stopped; a second Ctrl-C stops at once. A start
that fails prints one line (the traceback only for a bug, or with ``--verbose``) and exits 1.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import warnings
from typing import Any

from rich.console import Console

from modelport.local.demo import run_demo
from modelport.local.errors import PlatformError
from modelport.local.platform import Options, Platform, console_handler

logger = logging.getLogger("modelport.local.foreground")


def configure_logging(verbose: bool) -> None:
    root = logging.getLogger()
    root.handlers[:] = [console_handler()]
    root.setLevel(logging.DEBUG if verbose else logging.INFO)
    for name in ("botocore", "boto3", "urllib3", "httpx", "httpcore", "uvicorn.access", "pynamodb", "s3transfer"):
        logging.getLogger(name).setLevel(logging.WARNING)
    logging.getLogger("uvicorn.error").setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", message="No application metrics to publish")


def run(options: Options) -> int:
    """Start, serve until SIGINT/SIGTERM, stop everything. Returns the exit code."""
    configure_logging(options.verbose)
    platform = Platform(options)
    interrupted = threading.Event()

    def on_signal(signum: int, _frame: Any) -> None:
        if interrupted.is_set():  # a second Ctrl-C: stop now
            os._exit(130)
        interrupted.set()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    code = 0
    try:
        starter = threading.Thread(target=_start_and_demo, args=(platform, interrupted), name="start", daemon=True)
        starter.start()
        # With a timeout: a process-directed signal may land on any of the platform's threads, and
        # Python runs its handler only in the main thread, once that thread runs again; a wait
        # without timeout would then never return (seen as `modelport up` ignoring SIGTERM).
        while not interrupted.wait(0.25):
            pass
        platform.say("stopping ...")
        if platform.error:
            code = 1
    finally:
        platform.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if not platform.error:
        platform.say("stopped")
    return code


def _start_and_demo(platform: Platform, interrupted: threading.Event) -> None:
    try:
        platform.start()
    except Exception as exc:  # noqa: BLE001 - one line for the user (the trace with --verbose)
        if platform.stopped.is_set():
            return
        platform.error = str(exc)
        if isinstance(exc, PlatformError):
            logger.debug("modelport up failed", exc_info=True)
        else:  # a bug, not a setup problem: show where, so it can be reported
            logger.error("modelport up failed", exc_info=True)
        message = str(exc) if isinstance(exc, PlatformError) else f"{type(exc).__name__}: {exc}"
        Console(stderr=True).print(f"[red]error:[/] {message}")
        interrupted.set()
        return
    if platform.stopped.is_set():  # interrupted while starting: stop what started meanwhile
        platform.stop()
        return
    if platform.options.demo:
        try:
            run_demo(platform)
        except Exception as exc:  # noqa: BLE001 - the platform keeps serving
            if not platform.stopped.is_set():
                logger.debug("demo failed", exc_info=True)
                Console(stderr=True).print(f"[red]demo failed:[/] {type(exc).__name__}: {exc}")

"""The standby pool: one pre-warmed model server (``python -m modelport.serving --standby``, numpy
and scikit-learn already imported) waits for the next replica, so a deploy or a scale-up does
not pay the imports.

The protocol with the server (``modelport.serving.standby``): the driver writes one JSON line on
its stdin, ``{"env": {...}, "log": "path"}``, and closes it; the server then serves with that
environment and log. An empty line (stdin closed) ends an unused standby. Taking the standby
starts the next one in the background.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import threading
from pathlib import Path


def dismiss(process: subprocess.Popen[bytes]) -> None:
    """End a standby that will not be used (an empty line on stdin ends it; else terminate)."""
    with contextlib.suppress(OSError):
        if process.stdin is not None:
            process.stdin.close()
    try:
        process.wait(5)
    except subprocess.TimeoutExpired:
        process.terminate()
        process.wait(5)


class StandbyPool:
    def __init__(self, argv: list[str], env: dict[str, str], log_dir: Path, *, enabled: bool) -> None:
        self.argv, self.env, self.log_dir, self.enabled = argv, env, log_dir, enabled
        self._process: subprocess.Popen[bytes] | None = None
        self._lock = threading.Lock()
        self._closed = False

    def fill(self) -> None:
        """Start a standby if there is none."""
        if self._process is None:
            self._start()

    def _start(self) -> None:
        if not self.enabled or self._closed:
            return
        self.log_dir.mkdir(parents=True, exist_ok=True)
        with (self.log_dir / "standby.log").open("ab") as log:
            process = subprocess.Popen(  # noqa: S603
                [*self.argv, "--standby"], env=self.env, stdin=subprocess.PIPE,
                stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            )
        with self._lock:
            previous, self._process = self._process, process
        if previous is not None:
            dismiss(previous)
        if self._closed:  # closed while it started
            with self._lock:
                self._process = None
            dismiss(process)

    def hand_over(self, env: dict[str, str], log_path: Path) -> subprocess.Popen[bytes] | None:
        """The standby, now serving with ``env`` into ``log_path``; None if there was none alive
        (start the server the ordinary way then). The next standby starts in the background."""
        if not self.enabled:
            return None
        with self._lock:
            process, self._process = self._process, None
        if not self._closed:
            threading.Thread(target=self._start, name="standby", daemon=True).start()
        if process is None or process.poll() is not None or process.stdin is None:
            return None
        try:
            process.stdin.write((json.dumps({"env": env, "log": str(log_path)}) + "\n").encode())
            process.stdin.close()
        except OSError:  # it died meanwhile
            return None
        return process

    def close(self) -> None:
        self._closed = True
        with self._lock:
            process, self._process = self._process, None
        if process is not None:
            dismiss(process)

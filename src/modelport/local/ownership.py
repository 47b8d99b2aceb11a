"""``modelport up`` owns every process it starts: they end with it, however it ends.

- Marking: at start the platform puts ``MODELPORT_RUN={pid}:{start time}:{id}`` in its own
  environment (the start time, from ``/proc``, tells the platform from a later process that got
  its pid), which
  every child inherits (stand-ins, model servers, standby servers, and their own children such as
  a ``uv`` install). This is the one write to ``os.environ`` that is not the libraries' own: it
  labels descendants, it configures nothing. Whatever carries a run's mark belongs to that run.
- The watchdog: one small process (``python -m modelport.local.ownership``) in its own session,
  holding the read end of a pipe whose write end only the platform holds. The kernel closes it
  when the platform dies (Ctrl-C, SIGTERM, SIGKILL of the process or of its whole group, an OOM
  kill), so the watchdog wakes on EOF, ends every process that carries the run's mark (SIGTERM,
  then SIGKILL after a grace period) and exits. Children run in their own sessions too, so a
  terminal's Ctrl-C reaches only the platform, which stops them in order.
- The claim: ``{state}/run.json`` names the run using a state directory. A start refuses a state
  directory whose run is alive (one line, its pid), and before anything else ends what a killed
  run left (any process whose mark names a platform pid that is gone, whatever its state
  directory: those are orphans by definition) and says so in one line.

Linux only (``/proc``); elsewhere marking still happens, the scans find nothing.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from modelport.local.errors import PlatformError

RUN_ENV = "MODELPORT_RUN"
GRACE_SECONDS = 5.0


def _stat(pid: int) -> list[str]:
    """The fields of ``/proc/{pid}/stat`` after the command name (state first); [] if gone."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return []


def alive(pid: int) -> bool:
    fields = _stat(pid)
    return bool(fields) and fields[0] != "Z"


def started(pid: int) -> str:
    """The process's start time (clock ticks since boot), "" if it is gone."""
    fields = _stat(pid)
    return fields[19] if len(fields) > 19 else ""


def _same_process(pid: int, start_time: str) -> bool:
    return alive(pid) and started(pid) == start_time


def marked(mark_filter: str | None = None) -> dict[int, str]:
    """pid -> run mark of every live process of this user that carries one (optionally only that run)."""
    found: dict[int, str] = {}
    proc = Path("/proc")
    if not proc.is_dir():
        return found
    for entry in proc.iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            environ = (entry / "environ").read_bytes()
        except OSError:  # gone meanwhile, or another user's
            continue
        for item in environ.split(b"\0"):
            if item.startswith(RUN_ENV.encode() + b"="):
                mark = item.split(b"=", 1)[1].decode(errors="replace")
                if (mark_filter is None or mark == mark_filter) and alive(int(entry.name)):
                    found[int(entry.name)] = mark
                break
    return found


def _owneralive(mark: str) -> bool:
    pid, _, rest = mark.partition(":")
    return pid.isdigit() and _same_process(int(pid), rest.partition(":")[0])


def end(pids: Iterable[int], grace: float = GRACE_SECONDS) -> list[int]:
    """SIGTERM, then SIGKILL what is still there after ``grace`` seconds; the pids that were ended."""
    ended = []
    for pid in pids:
        try:
            os.kill(pid, signal.SIGTERM)
            ended.append(pid)
        except ProcessLookupError:
            continue
    deadline = time.monotonic() + grace
    while any(alive(pid) for pid in ended) and time.monotonic() < deadline:
        time.sleep(0.05)
    for pid in ended:
        if alive(pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
    return ended


def orphans() -> list[int]:
    """Processes of runs whose platform is gone."""
    return sorted(pid for pid, mark in marked().items() if not _owneralive(mark))


@dataclass
class Run:
    mark: str
    claim: Path
    watchdog: subprocess.Popen[bytes] | None

    def release(self) -> None:
        """An orderly stop: the children are stopped already; the watchdog ends the stragglers."""
        if self.watchdog is not None and self.watchdog.stdin is not None:
            self.watchdog.stdin.close()
            try:
                self.watchdog.wait(GRACE_SECONDS + 5)
            except subprocess.TimeoutExpired:
                self.watchdog.kill()
        try:
            if json.loads(self.claim.read_text()).get("mark") == self.mark:
                self.claim.unlink()
        except (OSError, ValueError):
            pass


def claim(state_dir: Path) -> tuple[Run, list[int]]:
    """Claim ``state_dir`` for this process, end what killed runs left, mark this run and start
    its watchdog. Returns the run and the pids of the leftovers that were ended."""
    claim_path = state_dir / "run.json"
    try:
        previous = json.loads(claim_path.read_text())
    except (OSError, ValueError):
        previous = {}
    holder = int(previous.get("pid", 0) or 0)
    if holder and holder != os.getpid() and _same_process(holder, str(previous.get("start_time", ""))):
        raise PlatformError(f"another modelport up (pid {holder}) uses the state directory {state_dir}; "
                            "stop it first, or choose another with --state-dir")
    leftovers = end(orphans())
    me, start_time = os.getpid(), started(os.getpid())
    mark = f"{me}:{start_time}:{uuid.uuid4().hex[:12]}"
    tmp = claim_path.with_name("run.json.tmp")
    tmp.write_text(json.dumps({"pid": me, "start_time": start_time, "mark": mark}))
    os.replace(tmp, claim_path)
    os.environ[RUN_ENV] = mark
    watchdog = subprocess.Popen(  # noqa: S603
        [sys.executable, "-m", "modelport.local.ownership", mark], stdin=subprocess.PIPE,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
        env={k: v for k, v in os.environ.items() if k != RUN_ENV},  # not its own target
    )
    return Run(mark, claim_path, watchdog), leftovers


def watch(mark: str) -> None:
    """The watchdog's life: wait for EOF on stdin (the platform is gone), end the run's processes."""
    while sys.stdin.buffer.read(65536):
        pass
    end(marked(mark))


if __name__ == "__main__":
    watch(sys.argv[1])

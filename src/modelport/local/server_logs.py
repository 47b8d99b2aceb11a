"""What a model server's log says about why it stopped.

The server ends a failed load with the contract's failure line (``domain.model_server``);
``stated_reason`` reads that, else its last ERROR log entry; ``failure_reason`` falls back to the
log's last lines. Only the tail of a log is read, once per failure.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from modelport.deploy.driver import ClusterError
from modelport.domain.model_server import parse_failure


def stated_reason(log_text: str) -> str | None:
    """The model server's own explanation in its log: its failure line, else its last error;
    None if it said nothing of the kind (e.g. it was killed)."""
    raw = [line for line in log_text.splitlines() if line.strip()]
    for line in reversed(raw):
        reason = parse_failure(line)
        if reason is not None:
            return reason
    for line in reversed(raw):
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if isinstance(entry, dict) and entry.get("level") in ("ERROR", "CRITICAL") and entry.get("message"):
            return str(entry["message"])
    return None


def failure_reason(log_text: str, *, lines: int = 8) -> str:
    """:func:`stated_reason`, else the log's last lines."""
    stated = stated_reason(log_text)
    if stated is not None:
        return stated
    raw = [line for line in log_text.splitlines() if line.strip()]
    return "\n".join(raw[-lines:]) or "(the log is empty)"


def read_tail(path: Path, limit: int = 64 * 1024) -> str:
    try:
        with path.open("rb") as handle:
            handle.seek(0, os.SEEK_END)
            size = handle.tell()
            handle.seek(max(0, size - limit))
            return handle.read().decode("utf-8", errors="replace")
    except OSError:
        return ""



def replica_failure(log_path: Path, what: str, state: str) -> ClusterError:
    """A replica that did not come up, with the server's own reason from its log (read once)."""
    tail = read_tail(log_path)
    reason = failure_reason(tail)
    return ClusterError(f"{what}: {reason}", retryable=False, pod_reason=f"{state}: {reason}", detail=tail[-8192:])

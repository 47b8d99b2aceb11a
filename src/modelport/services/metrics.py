"""A deployment's metrics as its owner reads them: the per-minute series the sampler wrote.

Rules:
- the deployment is reached through its owner (another user's id is a missing one);
- a window is ``{n}m`` or ``{n}h`` between one minute and the retention period
  (``METRICS_RETENTION_SECONDS``, 25 h by default, so ``24h`` always works); anything else is
  ``invalid_window``;
- no samples yet is an empty series, not an error;
- a shadow's requests are copies (``GET .../shadow`` reports them), not in the series.
"""

from __future__ import annotations

import re
import time
from datetime import UTC, datetime

from pydantic import BaseModel

from modelport.domain.errors import Invalid
from modelport.domain.rollouts import serves_callers
from modelport.domain.serving_metrics import MINUTE, Point, per_minute
from modelport.settings import Settings
from modelport.store.repository import Store

_WINDOW = re.compile(r"(\d{1,5})([mh])")


class Series(BaseModel):
    deployment_id: int
    window_seconds: int
    interval_seconds: int = MINUTE
    sampled_at: datetime | None
    points: list[Point]


def parse_window(window: str, settings: Settings) -> int:
    match = _WINDOW.fullmatch(window.strip())
    seconds = int(match.group(1)) * (60 if match.group(2) == "m" else 3600) if match else 0
    if not MINUTE <= seconds <= settings.metrics_retention_seconds:
        longest = settings.metrics_retention_seconds // 3600
        raise Invalid(
            f"window must look like 15m or 1h, between 1m and {longest}h; got {window!r}", code="invalid_window"
        )
    return seconds


def deployment_metrics(store: Store, settings: Settings, owner: str, deployment_id: int, window: str, *,
                       now: float | None = None) -> Series:
    seconds = parse_window(window, settings)
    store.get_deployment(owner, deployment_id)  # the owner check
    now = time.time() if now is None else now
    # a shadow's servers answer copies, not callers: its requests are in its report, not here
    samples = [s for s in store.metrics_samples(deployment_id, now - seconds) if serves_callers(s.release)]
    last = max((s.sampled_at for s in samples), default=None)
    return Series(
        deployment_id=deployment_id, window_seconds=seconds, points=per_minute(samples),
        sampled_at=datetime.fromtimestamp(last, UTC) if last is not None else None,
    )

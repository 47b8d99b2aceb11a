"""Canary rollouts: a candidate version beside the stable one, given a growing share of requests,
promoted or rolled back by what the model servers measured (``serving_metrics.Figures``).

Contract:
- ``CanaryRequest`` is what a user asks (``PATCH /deployments/{id}`` with ``rollout``): steps are
  strictly increasing percentages in 1..99; after the last step comes 100 % (the promotion).
- ``Rollout`` is the state kept on the deployment record: the candidate, the current step and its
  weight, the state, the reason and the figures of the last decision. Every change of it is a
  new desired state (a new generation), written with a condition on the generation read, so two
  deciders never take two decisions for one step.
- ``decide(rollout, candidate, stable, now)`` is the rule, pure: a breach rolls back at once
  (candidate 5xx rate above ``max_error_rate`` or above the stable version's by more than
  ``ERROR_RATE_MARGIN``; candidate p99 above ``max_p99_ms`` once it has ``min_requests``, or above
  the stable version's times ``max_p99_ratio`` plus ``P99_SLACK_MS`` once both have
  ``P99_MIN_REQUESTS``); otherwise a step advances
  only after ``step_seconds`` and ``min_requests`` on the candidate during the step; after the last
  step, promotion.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Literal

from pydantic import BaseModel, Field, computed_field, field_validator

from modelport.domain.serving_metrics import Figures

ERROR_RATE_MARGIN = 0.005
P99_FACTOR = 2.0
P99_SLACK_MS = 10.0
P99_MIN_REQUESTS = 100  # fewer, and a p99 is the slowest request (a cold process's first ones)
CANARY_SUFFIX = "-canary"


class CanaryRequest(BaseModel):
    strategy: Literal["canary"] = "canary"
    steps: list[int] = Field(default_factory=lambda: [10, 50], min_length=1, max_length=10)
    step_seconds: int = Field(default=60, ge=1, le=86400)
    max_error_rate: float = Field(default=0.01, ge=0.0, le=1.0)
    max_p99_ms: float | None = Field(default=None, gt=0)
    max_p99_ratio: float | None = Field(
        default=P99_FACTOR, ge=1.0,
        description="the candidate's p99 may be at most this times the stable version's (plus a few ms), once "
        f"both have {P99_MIN_REQUESTS} requests; null: not compared",
    )
    min_requests: int = Field(default=50, ge=1, le=1_000_000)

    @field_validator("steps")
    @classmethod
    def _increasing(cls, steps: list[int]) -> list[int]:
        if any(not 1 <= s <= 99 for s in steps) or any(b <= a for a, b in zip(steps, steps[1:], strict=False)):
            raise ValueError("steps are percentages between 1 and 99, each larger than the one before")
        return steps


class RolloutState(StrEnum):
    PROGRESSING = "progressing"
    PROMOTED = "promoted"
    ROLLED_BACK = "rolled_back"
    ABORTED = "aborted"


class Rollout(CanaryRequest):
    candidate_version_id: int
    stable_version_id: int
    step: int = 0  # index into steps; len(steps) once promoted
    state: RolloutState = RolloutState.PROGRESSING
    started_at: datetime
    step_started_at: datetime
    reason: str | None = None
    candidate: Figures | None = None  # the figures of the last decision
    stable: Figures | None = None

    @computed_field  # type: ignore[prop-decorator]
    @property
    def weight(self) -> int:
        """The candidate's share of requests now, in percent."""
        if self.state == RolloutState.PROMOTED:
            return 100
        return self.steps[self.step] if self.state == RolloutState.PROGRESSING else 0

    @property
    def progressing(self) -> bool:
        return self.state == RolloutState.PROGRESSING


class Verdict(StrEnum):
    HOLD = "hold"
    ADVANCE = "advance"
    PROMOTE = "promote"
    ROLL_BACK = "roll_back"


class Decision(BaseModel):
    verdict: Verdict
    reason: str


def breach(rollout: CanaryRequest, candidate: Figures, stable: Figures) -> str | None:
    """Why the candidate must be rolled back now, or None."""
    rate = candidate.error_rate
    if rate is not None and candidate.errors:
        stable_rate = stable.error_rate or 0.0
        if rate > rollout.max_error_rate:
            return (f"error rate {rate:.2%} ({candidate.errors} of {candidate.requests} requests) is above the "
                    f"limit {rollout.max_error_rate:.2%}")
        if rate > stable_rate + ERROR_RATE_MARGIN:
            return f"error rate {rate:.2%} is above the stable version's {stable_rate:.2%}"
    p99 = candidate.p99_ms
    if p99 is not None and candidate.requests >= rollout.min_requests:
        if rollout.max_p99_ms is not None and p99 > rollout.max_p99_ms:
            return f"p99 latency {p99:.1f} ms is above the limit {rollout.max_p99_ms:.1f} ms"
        enough = min(candidate.requests, stable.requests) >= max(rollout.min_requests, P99_MIN_REQUESTS)
        if rollout.max_p99_ratio is not None and stable.p99_ms is not None and enough \
                and p99 > stable.p99_ms * rollout.max_p99_ratio + P99_SLACK_MS:
            return (f"p99 latency {p99:.1f} ms is more than {rollout.max_p99_ratio:g}x the stable version's "
                    f"{stable.p99_ms:.1f} ms")
    return None


def decide(rollout: Rollout, candidate: Figures, stable: Figures, now: datetime) -> Decision:
    if not rollout.progressing:
        return Decision(verdict=Verdict.HOLD, reason=f"rollout {rollout.state.value}")
    problem = breach(rollout, candidate, stable)
    if problem:
        return Decision(verdict=Verdict.ROLL_BACK, reason=problem)
    waited = (now - rollout.step_started_at).total_seconds()
    if waited < rollout.step_seconds or candidate.requests < rollout.min_requests:
        return Decision(verdict=Verdict.HOLD, reason=(
            f"step {rollout.step + 1} at {rollout.weight}%: {int(waited)} of {rollout.step_seconds} s, "
            f"{candidate.requests} of {rollout.min_requests} requests"))
    last = rollout.step + 1 >= len(rollout.steps)
    return Decision(verdict=Verdict.PROMOTE if last else Verdict.ADVANCE, reason=(
        f"step {rollout.step + 1} at {rollout.weight}% passed: {candidate.requests} requests, "
        f"error rate {(candidate.error_rate or 0):.2%}, p99 {candidate.p99_ms or 0:.1f} ms"))


def canary_release(release: str) -> str:
    """The candidate's own release name, beside the stable one's."""
    return release + CANARY_SUFFIX


# --- shadow traffic ------------------------------------------------------------------------------
# A shadow runs a candidate version beside the live one and gets a copy of a share of the answered
# requests (the live model server sends them, serving/mirror.py); callers only ever get the live
# answer. Its release is ``{release}-shadow`` with no ingress: nothing routes callers to it. The
# report (``ShadowReport``) comes from what the live servers counted of the copies and what the
# candidate's servers measured, both from the metrics samples since the shadow started.

SHADOW_SUFFIX = "-shadow"


class ShadowRequest(BaseModel):
    """``PUT /deployments/{id}/shadow``."""

    version_id: int = Field(ge=1)
    percent: int = Field(default=100, ge=1, le=100, description="the share of answered requests copied")
    tolerance: float = Field(default=1e-6, ge=0, le=1e6,
                             description="a regressor's answers agree within this (relative, at least absolute)")


class ShadowState(StrEnum):
    RUNNING = "running"
    STOPPED = "stopped"  # by its owner, by a failed start, or by a version change
    PROMOTED = "promoted"  # to a canary of the same version


class Shadow(ShadowRequest):
    state: ShadowState = ShadowState.RUNNING
    started_at: datetime
    stopped_at: datetime | None = None
    reason: str | None = None

    @property
    def running(self) -> bool:
        return self.state == ShadowState.RUNNING


def shadow_release(release: str) -> str:
    """The shadow's own release name, beside the live one's."""
    return release + SHADOW_SUFFIX


def serves_callers(release: str) -> bool:
    """Whether a release's requests are callers' (a shadow's are copies: not in the charts)."""
    return not release.endswith(SHADOW_SUFFIX)

"""ExploreConfig: how much an exploration may run, checked once, with overrides for CI."""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field

from ._common import MAX_STEPS

#: pct's default bug depth, chosen from the bug suite (benchmarks/explore.py --suite).
PCT_DEPTH = 5

#: The environment variables that set a default (an argument given in code still wins).
ENVIRONMENT = {
    "max_schedules": "ASYNCLOCKS_MAX_SCHEDULES",
    "seed": "ASYNCLOCKS_SEED",
    "max_steps": "ASYNCLOCKS_MAX_STEPS",
    "pct_depth": "ASYNCLOCKS_PCT_DEPTH",
    "time_limit": "ASYNCLOCKS_TIME_LIMIT",
}


def _from_env(name: str, default: int) -> int:
    variable = ENVIRONMENT[name]
    text = os.environ.get(variable)
    if text is None or not text.strip():
        return default
    try:
        return int(text.strip())
    except ValueError:
        raise ValueError(f"{variable} must be an integer, got {text!r}") from None


def _time_from_env() -> float | None:
    variable = ENVIRONMENT["time_limit"]
    text = os.environ.get(variable)
    if text is None or not text.strip() or text.strip().lower() == "none":
        return None
    try:
        return float(text.strip())
    except ValueError:
        raise ValueError(
            f"{variable} must be a number of seconds or 'none', got {text!r}"
        ) from None


def _check_int(name: str, value: object, minimum: int, allow_none: bool = False) -> None:
    if value is None and allow_none:
        return
    if not isinstance(value, int) or isinstance(value, bool):
        expected = "an int or None" if allow_none else "an int"
        raise TypeError(f"{name} must be {expected}, not {type(value).__name__}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")


@dataclass(frozen=True)
class ExploreConfig:
    """How much an exploration may run; validated when it is made.

    A field left out takes its default from the environment when the variable is set, so CI can
    raise or lower every exploration's budget without editing tests:
    ``ASYNCLOCKS_MAX_SCHEDULES``, ``ASYNCLOCKS_SEED``, ``ASYNCLOCKS_MAX_STEPS``,
    ``ASYNCLOCKS_PCT_DEPTH``, ``ASYNCLOCKS_TIME_LIMIT`` (seconds, or ``none``). A value given in
    code (here or as an argument of :func:`asynclocks.explore`) wins over the environment.

    Attributes:
        max_schedules: Stop after this many schedules (default 10,000).
        seed: Seed of ``random``, ``pct``, ``portfolio`` and of trio's batch order under
            ``fifo`` (default 0).
        preemption_bound: At most this many preemptions per schedule (dfs); None for no bound.
        max_steps: Steps one schedule may take before it fails with a step-limit error (a task
            that never stops yielding); default 20,000.
        pct_depth: The bug depth pct (and the portfolio's pct) aims at: a bug needing
            ``pct_depth - 1`` ordering constraints is found with probability at least
            1/(n * k^(depth-1)) per schedule, for n tasks and k steps (default 5, chosen on the
            bug suite of ``benchmarks/explore.py --suite``).
        time_limit: Stop the search after this many seconds (checked between schedules; the
            report is then not exhaustive); None for no limit.

    Raises:
        TypeError: A field has the wrong type.
        ValueError: A field (or an environment variable) has a wrong value.
    """

    max_schedules: int = field(default_factory=lambda: _from_env("max_schedules", 10_000))
    seed: int = field(default_factory=lambda: _from_env("seed", 0))
    preemption_bound: int | None = None
    max_steps: int = field(default_factory=lambda: _from_env("max_steps", MAX_STEPS))
    pct_depth: int = field(default_factory=lambda: _from_env("pct_depth", PCT_DEPTH))
    time_limit: float | None = field(default_factory=_time_from_env)

    def __post_init__(self) -> None:
        _check_int("max_schedules", self.max_schedules, 1)
        _check_int("seed", self.seed, 0)
        _check_int("preemption_bound", self.preemption_bound, 0, allow_none=True)
        _check_int("max_steps", self.max_steps, 1)
        _check_int("pct_depth", self.pct_depth, 1)
        limit = self.time_limit
        if limit is not None:
            if not isinstance(limit, int | float) or isinstance(limit, bool):
                raise TypeError(
                    f"time_limit must be a number of seconds or None, not {type(limit).__name__}"
                )
            if not math.isfinite(limit) or limit <= 0:
                raise ValueError(f"time_limit must be a positive number of seconds, got {limit}")

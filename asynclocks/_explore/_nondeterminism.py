"""Why a schedule did not behave the same way twice: the likely cause, found by looking.

Only run after nondeterminism was seen (never during a search). One more run of the schedule is
watched for the usual causes:

* the wall clock or real randomness: ``time.time()``, ``time.monotonic()``, ``random.random()``
  and friends are wrapped for that run, and calls made directly from user code are recorded;
* state that outlived a schedule: the module-level variables of the user modules the schedule
  ran through are compared before and after the run.
"""

from __future__ import annotations

import os
import random
import re
import sys
import time
import types
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from ._common import Outcome, is_library, short_path
from ._report import unwrap_error

_CLOCKS = ("time", "time_ns", "monotonic", "monotonic_ns", "perf_counter", "perf_counter_ns")
_RANDOM = (
    "random",
    "randint",
    "randrange",
    "choice",
    "choices",
    "shuffle",
    "sample",
    "uniform",
    "getrandbits",
    "randbytes",
    "gauss",
)


def _caller() -> str | None:
    """``file:line`` of the frame calling the wrapped function, when it is user code."""
    frame = sys._getframe(2)
    filename = frame.f_code.co_filename
    if is_library(filename):
        return None
    return f"{short_path(filename)}:{frame.f_lineno}"


@contextmanager
def watch_sources(seen: list[str]) -> Iterator[None]:
    """While active, calls from user code to the clock or real randomness append to ``seen``."""
    patched: list[tuple[Any, str, Any]] = []

    def wrap(module: Any, name: str, label: str) -> None:
        original = getattr(module, name, None)
        if original is None:
            return

        def probe(*args: Any, **kwargs: Any) -> Any:
            where = _caller()
            if where is not None:
                seen.append(f"{label}() at {where}")
            return original(*args, **kwargs)

        patched.append((module, name, original))
        setattr(module, name, probe)

    for name in _CLOCKS:
        wrap(time, name, f"time.{name}")
    for name in _RANDOM:
        wrap(random, name, f"random.{name}")
    wrap(os, "urandom", "os.urandom")
    wrap(uuid, "uuid4", "uuid.uuid4")
    try:
        yield
    finally:
        for module, name, original in reversed(patched):
            setattr(module, name, original)


def user_modules(outcomes: Sequence[Outcome]) -> list[types.ModuleType]:
    """The loaded modules whose code the schedules ran (from their step sketches)."""
    files: set[str] = set()
    for outcome in outcomes:
        for _, key, _ in outcome.sketch:
            for code in key[::2]:
                if isinstance(code, types.CodeType) and not is_library(code.co_filename):
                    files.add(code.co_filename)
        for step in outcome.steps:
            for location in (step.resumed, step.suspended):
                if location is not None and not is_library(location[0][0]):
                    files.add(location[0][0])
    modules = []
    for module in list(sys.modules.values()):
        module_file = getattr(module, "__file__", None)
        if module_file and module_file in files:
            modules.append(module)
    return modules


def _fingerprint(value: object) -> str:
    # A large container is summarised by its size, so a snapshot stays cheap.
    size = len(value) if isinstance(value, (list, dict, set, tuple, str, bytes)) else None
    if size is not None and size > 100:
        return f"<{type(value).__name__} of {size}>"
    try:
        text = repr(value)
    except Exception:  # noqa: BLE001 - any repr may fail; identity is the fallback
        return f"<id {id(value)}>"
    return text if len(text) <= 2_000 else text[:2_000]


_SKIPPED = (types.ModuleType, types.FunctionType, type, types.BuiltinFunctionType)


def snapshot(modules: Sequence[types.ModuleType]) -> dict[tuple[str, str], str]:
    """A fingerprint of every module-level variable (not functions, classes or modules)."""
    state: dict[tuple[str, str], str] = {}
    for module in modules:
        for name, value in list(vars(module).items()):
            if name.startswith("__") or isinstance(value, _SKIPPED) or callable(value):
                continue
            state[(module.__name__, name)] = _fingerprint(value)
    return state


def changed_state(
    before: dict[tuple[str, str], str], after: dict[tuple[str, str], str]
) -> list[str]:
    """``module.name`` of each variable that changed (or appeared) between two snapshots."""
    keys = sorted(set(before) | set(after))
    return [
        f"{module}.{name}"
        for module, name in keys
        if before.get((module, name)) != after.get((module, name))
    ]


def likely_cause(sources: Sequence[str], state: Sequence[str]) -> str:
    """A sentence naming the likely cause and what to do about it."""
    clocks = [s for s in sources if s.startswith("time.")]
    randomness = [s for s in sources if not s.startswith("time.")]
    causes = []
    if state:
        shown = ", ".join(f"`{name}`" for name in state[:4])
        more = f" and {len(state) - 4} more" if len(state) > 4 else ""
        causes.append(
            f"state that outlived a schedule: module-level {shown}{more} changed during the "
            "schedule and is not reset between schedules (create it inside the scenario, or "
            "reset it at its start)"
        )
    if clocks:
        causes.append(
            f"the wall clock: {clocks[0]} (use the loop's virtual time: loop.time(), "
            "trio.current_time(), anyio.current_time())"
        )
    if randomness:
        causes.append(
            f"real randomness: {randomness[0]} (use a random.Random seeded inside the scenario)"
        )
    if not causes:
        return (
            "likely cause: something the explorer does not control and could not see (state "
            "kept outside the scenario's modules, threads, I/O)"
        )
    return "likely cause: " + "; ".join(causes)


def _failure_text(error: BaseException | None) -> tuple[type, str]:
    error = unwrap_error(error)
    # Object addresses differ from run to run without meaning anything.
    return type(error), re.sub(r"0x[0-9a-fA-F]+", "0x?", str(error))


def same_run(a: Outcome, b: Outcome) -> bool:
    """Whether two runs of one schedule behaved the same: same steps, same failure and message."""
    if a.kind != b.kind or a.decisions != b.decisions or a.sketch != b.sketch:
        return False
    if a.kind == "exception":
        return _failure_text(a.error) == _failure_text(b.error)
    return True

"""``GET /health``: ``ok``, or ``degraded`` with the reason, so a load balancer stops sending.

Degraded when the store does not answer a trivial query within :data:`PING_TIMEOUT` (the
database is away or stalled), or when requests were refused for lack of time or database
(503 ``deadline_exceeded``, ``retry_later``, ``outcome_unknown``) within the last
:data:`STALL_WINDOW` seconds: :class:`StallWatch` counts them as the error middleware answers.
"""

from __future__ import annotations

import time
from collections import Counter, deque
from collections.abc import Awaitable, Callable
from typing import Final

import anyio

from ..domain import RetryLater

__all__ = ["PING_TIMEOUT", "STALL_WINDOW", "StallWatch", "degraded_reason"]

#: Seconds ``/health`` waits for the store's trivial query.
PING_TIMEOUT: Final = 1.0
#: Seconds a 503 counts towards ``degraded``.
STALL_WINDOW: Final = 10.0


class StallWatch:
    """The 503 answers of the last :data:`STALL_WINDOW` seconds, by error code.

    Args:
        window: Seconds an answer counts.
    """

    def __init__(self, window: float = STALL_WINDOW) -> None:
        self._window = window
        self._seen: deque[tuple[float, str]] = deque()

    def note(self, code: str) -> None:
        """Record one 503 answer of ``code``."""
        self._seen.append((time.monotonic(), code))
        self._forget()

    def recent(self) -> Counter[str]:
        """The 503 answers of the window, by code."""
        self._forget()
        return Counter(code for _, code in self._seen)

    def _forget(self) -> None:
        horizon = time.monotonic() - self._window
        seen = self._seen
        while seen and seen[0][0] < horizon:
            seen.popleft()


async def degraded_reason(ping: Callable[[], Awaitable[None]], stalls: StallWatch) -> str | None:
    """Why the service is degraded, or ``None`` when it is ok.

    Args:
        ping: The store's ``ping`` coroutine function.
        stalls: The service's recent 503 answers.
    """
    try:
        with anyio.move_on_after(PING_TIMEOUT) as scope:
            await ping()
    except RetryLater as error:
        return f"the database is unreachable: {error.detail}"
    if scope.cancelled_caught:
        return f"the database did not answer a trivial query within {PING_TIMEOUT:g} s"
    recent = stalls.recent()
    if recent:
        codes = ", ".join(f"{count} {code}" for code, count in sorted(recent.items()))
        return f"requests were refused in the last {STALL_WINDOW:g} s ({codes})"
    return None

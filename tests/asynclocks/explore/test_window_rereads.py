"""The race window of a lost update whose writer reads the value back in the same step."""

from __future__ import annotations

import anyio
import anyio.lowlevel
import pytest

from asynclocks import Backend, explore

COUNTS: dict[str, int] = {}


async def bump(counts: dict[str, int]) -> int:
    seen = counts["home"]  # READ
    await anyio.lowlevel.checkpoint()  # AWAIT
    counts["home"] = seen + 1  # WRITE
    return counts["home"]  # the writer reads its own write back: fresh, not stale


async def two_bumps() -> None:
    counts = {"home": 0}
    async with anyio.create_task_group() as tg:
        tg.start_soon(bump, counts)
        tg.start_soon(bump, counts)
    assert counts["home"] == 2, f"lost update: {counts['home']}"


def _line(marker: str) -> int:
    with open(__file__) as source:
        return next(n for n, text in enumerate(source, 1) if f"# {marker}" in text)


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_the_window_names_the_subscript_read_and_the_other_tasks_write(backend: Backend) -> None:
    report = explore(two_bumps, backend=backend)
    assert report.failed
    name = "test_window_rereads.py"
    window = report.window
    assert (
        f'read `counts["home"]` at {name}:{_line("READ")}, awaited at {name}:{_line("AWAIT")}'
        in window
    )
    assert f'wrote `counts["home"]` at {name}:{_line("WRITE")} before' in window

"""``@asynclocks.check_interleavings``: failures become test failures with trace and token."""

from __future__ import annotations

import textwrap

import pytest

import asynclocks

from . import scenarios

pytest_plugins = ["pytester"]

RACY = """
import anyio
import asynclocks

@asynclocks.check_interleavings()
async def test_counter() -> None:
    box = [0]

    async def increment() -> None:
        value = box[0]
        await anyio.lowlevel.checkpoint()
        box[0] = value + 1

    async with anyio.create_task_group() as tg:
        tg.start_soon(increment)
        tg.start_soon(increment)
    assert box[0] == 2, f"lost update: {box[0]}"
"""


def test_a_racy_test_fails_showing_trace_and_token(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_race=RACY)
    result = pytester.runpytest("-p", "no:cacheprovider")
    result.assert_outcomes(failed=2)
    result.stdout.fnmatch_lines(
        [
            "*InterleavingFailure: FAIL on asyncio after 1 schedule(s): AssertionError: lost*",
            "*#1 increment*",
            "*token: al1:a:*",
            "*pin it: @check_interleavings(replay_token='al1:a:*",
            "*InterleavingFailure: FAIL on trio*",
        ]
    )
    result.stdout.fnmatch_lines(["*test_counter?asyncio?*", "*test_counter?trio?*"])


def test_a_pinned_token_replays_one_schedule(pytester: pytest.Pytester) -> None:
    report = asynclocks.explore(scenarios.lost_update_late, backend="trio")
    assert report.token is not None
    pytester.makepyfile(
        test_pinned=textwrap.dedent(
            f"""
            import asynclocks
            from tests.asynclocks.explore import scenarios

            test_regression = asynclocks.check_interleavings(replay_token={report.token!r})(
                scenarios.lost_update_late
            )
            test_fixed = asynclocks.check_interleavings(replay_token={report.token!r})(
                scenarios.locked_counter(2)
            )
            """
        )
    )
    result = pytester.runpytest("-p", "no:cacheprovider", "-v")
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(
        [
            "*test_fixed?trio? PASSED*",
            f"*pinned schedule {report.token}: FAIL on trio (replayed): AssertionError*",
            "*raised AssertionError: lost update*",
        ]
    )


@asynclocks.check_interleavings(preemption_bound=3)
async def test_the_locked_counter_passes_every_schedule() -> None:
    await scenarios.locked_counter(3)()


@asynclocks.check_interleavings("trio", expect="fail", strategy="random", seed=1)
async def test_expect_fail_keeps_a_race_demo_honest() -> None:
    await scenarios.lost_update()


def test_expect_fail_fails_when_no_race_exists() -> None:
    test = asynclocks.check_interleavings("asyncio", expect="fail")(scenarios.locked_counter(2))
    with pytest.raises(AssertionError, match="expected a failing schedule, found none"):
        test(asynclocks_backend="asyncio")


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"backends": "curio"}, ValueError, "unknown backend 'curio'"),
        ({"backends": ()}, ValueError, "at least one backend"),
        ({"expect": "maybe"}, ValueError, "expect must be 'pass' or 'fail'"),
        ({"replay_token": "nope"}, ValueError, "malformed token"),
        ({"strategy": "bfs"}, ValueError, "unknown strategy"),
        ({"max_schedules": 0}, ValueError, "max_schedules must be >= 1"),
    ],
)
def test_bad_decorator_arguments_are_refused(
    kwargs: dict[str, object], error: type[Exception], match: str
) -> None:
    with pytest.raises(error, match=match):
        asynclocks.check_interleavings(**kwargs)(scenarios.lost_update)  # type: ignore[arg-type]

"""The Scheduler protocol, ExploreConfig and the portfolio: a scheduler of one's own drives the
search (and is refused, with a reason, when it answers wrong); the config is checked once and
takes CI's environment variables as defaults."""

from __future__ import annotations

import random
import subprocess
import sys
import textwrap
from collections.abc import Sequence
from pathlib import Path

import pytest

import asynclocks
from asynclocks import Backend, ExploreConfig, Scheduler, explore, replay
from asynclocks._explore._schedulers import CustomChooser, TrioOrderChooser

from . import scenarios

ROOT = Path(__file__).resolve().parents[3]


class Alternate:
    """Switches task at every chance: never the task that ran last when another can run."""

    def __init__(self, schedules: int) -> None:
        self.left = schedules
        self.seen: list[tuple[int, ...]] = []
        self.last = -1

    def new_execution(self) -> bool:
        self.left -= 1
        self.last = -1
        return self.left >= 0

    def next_task(self, runnable: Sequence[int]) -> int:
        self.seen.append(tuple(runnable))
        self.last = next(task for task in runnable if task != self.last)
        return self.last


class OnePreemption:
    """Schedule n follows the stock loop's order except at decision n, where it runs the second
    task; it stops when n passes the longest schedule seen (every single preemption tried)."""

    def __init__(self) -> None:
        self.at = -1
        self.decision = 0
        self.longest = 1

    def new_execution(self) -> bool:
        self.longest = max(self.longest, self.decision)
        self.at += 1
        self.decision = 0
        return self.at < self.longest

    def next_task(self, runnable: Sequence[int]) -> int:
        choice = runnable[1] if self.decision == self.at else runnable[0]
        self.decision += 1
        return choice


def test_a_scheduler_of_ones_own_is_a_scheduler() -> None:
    assert isinstance(OnePreemption(), Scheduler)
    assert isinstance(Alternate(1), Scheduler)
    assert not isinstance(object(), Scheduler)


def test_a_custom_scheduler_finds_the_race_and_its_token_replays(backend: Backend) -> None:
    report = explore(scenarios.lost_update_late, backend=backend, strategy=OnePreemption())
    assert report.failed
    assert report.strategy == "custom"
    assert report.preemptions == 1
    assert report.token is not None
    with pytest.raises(AssertionError, match="lost update"):
        replay(scenarios.lost_update_late, report.token)


def test_the_stock_order_as_a_custom_scheduler_passes_and_ends_when_it_says(
    backend: Backend,
) -> None:
    class StockOrder(Alternate):
        def next_task(self, runnable: Sequence[int]) -> int:
            self.seen.append(tuple(runnable))
            return runnable[0]

    scheduler = StockOrder(schedules=3)
    report = explore(scenarios.lost_update_late, backend=backend, strategy=scheduler)
    assert not report.failed
    # It was asked with the runnable task ids, the stock loop's choice first, never fewer than 2.
    assert scheduler.seen
    assert all(len(runnable) >= 2 for runnable in scheduler.seen)
    assert report.schedules == 3  # then new_execution() said no more
    assert not report.exhaustive  # the search cannot know a custom scheduler covered everything
    assert "custom; not exhaustive" in report.coverage


def test_a_custom_scheduler_picking_a_task_that_cannot_run_is_refused(backend: Backend) -> None:
    class Wrong(Alternate):
        def next_task(self, runnable: Sequence[int]) -> int:
            return 99

    with pytest.raises(ValueError, match=r"Wrong.next_task\(\[.*\]\) returned 99, which is not"):
        explore(scenarios.lost_update, backend=backend, strategy=Wrong(1))


def test_a_custom_scheduler_answering_with_the_wrong_type_is_refused() -> None:
    class Index(Alternate):
        def next_task(self, runnable: Sequence[int]) -> int:
            return "0"  # type: ignore[return-value]  # the mistake under test

    class Maybe(Alternate):
        def new_execution(self) -> bool:
            return 1  # type: ignore[return-value]  # the mistake under test

    with pytest.raises(TypeError, match=r"must return a task id \(an int\), not str"):
        explore(scenarios.lost_update, strategy=Index(1))
    with pytest.raises(TypeError, match=r"Maybe.new_execution\(\) must return a bool, not int"):
        explore(scenarios.lost_update, strategy=Maybe(1))


def test_an_error_inside_a_custom_scheduler_comes_out_of_explore_as_itself(
    backend: Backend,
) -> None:
    class Broken(Alternate):
        def next_task(self, runnable: Sequence[int]) -> int:
            raise LookupError("no opinion")

    with pytest.raises(LookupError, match="no opinion"):
        explore(scenarios.lost_update, backend=backend, strategy=Broken(1))


@pytest.mark.parametrize(
    ("strategy", "error", "match"),
    [
        (Alternate, TypeError, "a str or a Scheduler instance"),
        (object(), TypeError, "a str or a Scheduler instance"),
        (3, TypeError, "a str or a Scheduler instance"),
        ("bfs", ValueError, "unknown strategy 'bfs'; choose one of dfs, fifo, pct, portfolio"),
    ],
)
def test_a_strategy_that_is_neither_a_name_nor_a_scheduler_is_refused(
    strategy: object, error: type[Exception], match: str
) -> None:
    with pytest.raises(error, match=match):
        explore(scenarios.lost_update, strategy=strategy)  # type: ignore[arg-type]


def test_portfolio_finds_what_random_and_pct_find_and_is_seeded(backend: Backend) -> None:
    first = explore(scenarios.lost_update_late, backend=backend, strategy="portfolio", seed=4)
    second = explore(scenarios.lost_update_late, backend=backend, strategy="portfolio", seed=4)
    assert first.failed
    assert first.strategy == "portfolio"
    assert (first.token, first.schedules) == (second.token, second.schedules)


# -- ExploreConfig --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("field", "value", "error", "match"),
    [
        ("max_schedules", 0, ValueError, "max_schedules must be >= 1, got 0"),
        ("max_schedules", 2.5, TypeError, "max_schedules must be an int, not float"),
        ("seed", -1, ValueError, "seed must be >= 0"),
        ("preemption_bound", -1, ValueError, "preemption_bound must be >= 0"),
        ("preemption_bound", True, TypeError, "preemption_bound must be an int or None"),
        ("max_steps", 0, ValueError, "max_steps must be >= 1"),
        ("pct_depth", 0, ValueError, "pct_depth must be >= 1"),
        ("time_limit", 0, ValueError, "time_limit must be a positive number of seconds"),
        ("time_limit", float("nan"), ValueError, "time_limit must be a positive number"),
        ("time_limit", "5", TypeError, "time_limit must be a number of seconds or None"),
    ],
)
def test_config_is_checked_when_made(
    field: str, value: object, error: type[Exception], match: str
) -> None:
    with pytest.raises(error, match=match):
        ExploreConfig(**{field: value})  # type: ignore[arg-type]


def test_config_is_frozen() -> None:
    config = ExploreConfig()
    with pytest.raises(AttributeError):
        config.max_schedules = 5  # type: ignore[misc]


def test_explore_refuses_a_config_that_is_not_one() -> None:
    with pytest.raises(TypeError, match="config must be an ExploreConfig or None, not dict"):
        explore(scenarios.lost_update, config={"max_schedules": 3})  # type: ignore[arg-type]


def test_the_environment_sets_defaults_and_code_wins(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ASYNCLOCKS_MAX_SCHEDULES", "3")
    monkeypatch.setenv("ASYNCLOCKS_SEED", "9")
    monkeypatch.setenv("ASYNCLOCKS_PCT_DEPTH", "2")
    config = ExploreConfig()
    assert (config.max_schedules, config.seed, config.pct_depth) == (3, 9, 2)
    passing = scenarios.locked_counter(2, checkpoints=2)
    assert explore(passing, strategy="random").schedules == 3
    assert explore(passing, strategy="random", max_schedules=5).schedules == 5
    assert explore(passing, strategy="random", config=ExploreConfig(max_schedules=4)).schedules == 4


def test_a_bad_environment_variable_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ASYNCLOCKS_MAX_SCHEDULES", "lots")
    with pytest.raises(ValueError, match="ASYNCLOCKS_MAX_SCHEDULES must be an integer, got 'lots'"):
        explore(scenarios.lost_update)
    monkeypatch.setenv("ASYNCLOCKS_MAX_SCHEDULES", "0")
    with pytest.raises(ValueError, match="max_schedules must be >= 1, got 0"):
        ExploreConfig()
    monkeypatch.delenv("ASYNCLOCKS_MAX_SCHEDULES")
    monkeypatch.setenv("ASYNCLOCKS_TIME_LIMIT", "soon")
    with pytest.raises(ValueError, match="ASYNCLOCKS_TIME_LIMIT must be a number of seconds"):
        ExploreConfig()
    monkeypatch.setenv("ASYNCLOCKS_TIME_LIMIT", "none")
    assert ExploreConfig().time_limit is None


def test_arguments_override_the_config(backend: Backend) -> None:
    config = ExploreConfig(preemption_bound=0, max_schedules=50)
    bounded = explore(scenarios.lost_update_late, backend=backend, config=config)
    assert not bounded.failed
    assert bounded.exhaustive
    assert bounded.preemption_bound == 0
    found = explore(scenarios.lost_update_late, backend=backend, config=config, preemption_bound=1)
    assert found.failed


def test_the_step_limit_is_the_configs(backend: Backend) -> None:
    report = explore(
        scenarios.spins_forever,
        backend=backend,
        strategy="fifo",
        config=ExploreConfig(max_steps=50),
    )
    assert report.failed
    assert "one schedule ran more than 50 steps" in str(report.error)
    assert report.token is not None  # shrunk and replayed under the same limit: it reproduced
    assert not report.nondeterministic


def test_the_time_limit_stops_the_search_between_schedules(backend: Backend) -> None:
    # Any limit shorter than one schedule stops the search after its first schedule.
    passing = scenarios.locked_counter(3, checkpoints=2)
    report = explore(passing, backend=backend, config=ExploreConfig(time_limit=1e-9))
    assert report.schedules == 1
    assert not report.exhaustive
    assert any("time limit of 1e-09 s after 1 schedule(s)" in note for note in report.notes)


def test_pct_depth_one_is_priorities_alone() -> None:
    # Depth 1: no change point, so a schedule is fixed by the priorities: a task runs until it
    # blocks or ends. The lost update needs a task preempted mid-way: never found.
    report = explore(
        scenarios.lost_update_late,
        strategy="pct",
        config=ExploreConfig(pct_depth=1, max_schedules=200),
    )
    assert not report.failed
    found = explore(
        scenarios.lost_update_late,
        strategy="pct",
        config=ExploreConfig(pct_depth=2, max_schedules=200),
    )
    assert found.failed


def test_importing_and_exploring_on_asyncio_never_imports_trio() -> None:
    program = textwrap.dedent(
        """
        import asyncio, sys
        import asynclocks

        async def scenario():
            lock = asyncio.Lock()

            async def one():
                async with lock:
                    await asyncio.sleep(0)

            async with asyncio.TaskGroup() as tg:
                tg.create_task(one())
                tg.create_task(one())

        assert "trio" not in sys.modules, "import asynclocks imported trio"
        for strategy in ("dfs", "random", "pct", "portfolio", "fifo"):
            asynclocks.explore(scenario, strategy=strategy, max_schedules=20)
        assert "trio" not in sys.modules, "exploring on asyncio imported trio"
        print("ok")
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", program],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"},
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout == "ok\n"


def test_the_public_names_are_reexported() -> None:
    assert asynclocks.Scheduler is Scheduler
    assert asynclocks.ExploreConfig is ExploreConfig


def test_choices_of_the_search_itself_are_not_offered_to_a_custom_scheduler() -> None:
    # Options with ids below 0 are the search's own (injected faults, after the tasks): a
    # user's scheduler sees only task ids, and its answer maps back to the right index.
    scheduler = Alternate(1)
    chooser = CustomChooser(scheduler, max_steps=100)
    assert chooser.pick([-1, 3, 5, -2]) == 1
    assert scheduler.seen == [(3, 5)]
    assert chooser.pick([-1, 3, 5, -2]) == 2  # Alternate switches to 5
    assert chooser.pick([4, -1]) == 0  # one task: nothing to ask
    assert scheduler.seen == [(3, 5), (3, 5)]
    assert chooser.error is None
    trio_order = TrioOrderChooser(random.Random(0))
    for _ in range(20):
        assert trio_order.pick([-1, 1, 2, -3]) in (1, 2)

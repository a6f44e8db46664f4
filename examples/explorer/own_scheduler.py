"""A scheduler of your own: every schedule with exactly one preemption, then stop."""

from collections.abc import Sequence

import asynclocks
from late_update import late_lost_update


class OnePreemption:
    """Schedule n takes the stock loop's choice everywhere except at decision n."""

    def __init__(self) -> None:
        self.at = -1  # the decision to preempt at in this schedule
        self.decision = 0
        self.longest = 1

    def new_execution(self) -> bool:  # before each schedule: False ends the search
        self.longest = max(self.longest, self.decision)
        self.at += 1
        self.decision = 0
        return self.at < self.longest

    def next_task(self, runnable: Sequence[int]) -> int:  # task ids, the stock choice first
        choice = runnable[1] if self.decision == self.at else runnable[0]
        self.decision += 1
        return choice


report = asynclocks.explore(late_lost_update, strategy=OnePreemption())
print(report.verdict)
print(report.token, report.preemptions)

# Budgets live in one checked, frozen ExploreConfig (CI may set its defaults: ASYNCLOCKS_*).
config = asynclocks.ExploreConfig(max_schedules=200, seed=1, pct_depth=5, time_limit=10.0)
print(asynclocks.explore(late_lost_update, strategy="portfolio", config=config).verdict)

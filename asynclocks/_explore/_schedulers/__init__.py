"""Schedulers: what decides, schedule after schedule, which runnable task runs next.

Modules: ``_base`` (the public :class:`Scheduler` protocol, the backends' chooser, the adapter for
a user's scheduler), one per strategy: ``_fifo``, ``_random``, ``_pct``, ``_dfs`` (systematic, with
source-set DPOR from ``_dpor`` and sleep sets), ``_portfolio`` (round-robin of random and pct),
``_replay`` (recorded decisions).
"""

from ._base import BuiltinScheduler as BuiltinScheduler
from ._base import CustomChooser as CustomChooser
from ._base import ScheduleChooser as ScheduleChooser
from ._base import Scheduler as Scheduler
from ._dfs import DepthFirst as DepthFirst
from ._dfs import DfsChooser as DfsChooser
from ._dfs import DfsScheduler as DfsScheduler
from ._fifo import FifoChooser as FifoChooser
from ._fifo import FifoScheduler as FifoScheduler
from ._fifo import TrioOrderChooser as TrioOrderChooser
from ._pct import PctChooser as PctChooser
from ._pct import PctScheduler as PctScheduler
from ._portfolio import PortfolioScheduler as PortfolioScheduler
from ._random import RandomChooser as RandomChooser
from ._random import RandomScheduler as RandomScheduler
from ._replay import ReplayChooser as ReplayChooser

__all__ = [
    "BuiltinScheduler",
    "CustomChooser",
    "DepthFirst",
    "DfsChooser",
    "DfsScheduler",
    "FifoChooser",
    "FifoScheduler",
    "PctChooser",
    "PctScheduler",
    "PortfolioScheduler",
    "RandomChooser",
    "RandomScheduler",
    "ReplayChooser",
    "ScheduleChooser",
    "Scheduler",
    "TrioOrderChooser",
]

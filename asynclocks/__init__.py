"""asynclocks: find, show and fix race conditions at await points in asyncio and trio code.

Package map (public names are re-exported here; everything else is private):

- ``_keyed/``    KeyedLock, per-key mutual exclusion for asyncio and trio
- ``_demos``     the race demos (counter, withdraw, transfer) and their runner;
                 ``_demo_cli`` is their ``demo`` command
- ``_explore/``  the interleaving explorer: controlled schedulers, strategies, reports, replay,
                 the ``explore`` command and the ``check_interleavings`` pytest decorator
- ``__main__``   the ``python -m asynclocks`` command line (demo, explore)
"""

from importlib.metadata import PackageNotFoundError as _PackageNotFoundError
from importlib.metadata import version as _version

from anyio import WouldBlock as WouldBlock

from ._explore import Backend as Backend
from ._explore import DeadlockError as DeadlockError
from ._explore import ExploreConfig as ExploreConfig
from ._explore import FailureKind as FailureKind
from ._explore import InterleavingFailure as InterleavingFailure
from ._explore import NondeterminismError as NondeterminismError
from ._explore import Report as Report
from ._explore import Scheduler as Scheduler
from ._explore import Strategy as Strategy
from ._explore import UnsupportedScenario as UnsupportedScenario
from ._explore import check_interleavings as check_interleavings
from ._explore import explore as explore
from ._explore import replay as replay
from ._keyed import KeyedLock as KeyedLock
from ._keyed import KeyedLockStatistics as KeyedLockStatistics

try:
    __version__ = _version("asynclocks")
except _PackageNotFoundError:  # imported from a source tree that was never installed
    __version__ = "0+unknown"

__all__ = [
    "Backend",
    "DeadlockError",
    "ExploreConfig",
    "FailureKind",
    "InterleavingFailure",
    "KeyedLock",
    "KeyedLockStatistics",
    "NondeterminismError",
    "Report",
    "Scheduler",
    "Strategy",
    "UnsupportedScenario",
    "WouldBlock",
    "check_interleavings",
    "explore",
    "replay",
]

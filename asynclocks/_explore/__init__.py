"""The interleaving explorer: drives asyncio or trio one task at a time to find, replay and
rule out race conditions at await points.

Modules: ``_api`` (explore, replay, the search), ``_asyncio``/``_trio`` (controlled schedulers),
``_unsupported`` (what cannot be controlled, refused by name), ``_schedulers/`` (the Scheduler
protocol, one module per strategy), ``_config`` (ExploreConfig), ``_faults`` (cancellations and
early timeouts chosen by the search), ``_footprint``
(what a step reads and writes), ``_window`` (the race window, traces from step sketches),
``_nondeterminism`` (the likely cause of a schedule that does not replay), ``_events`` (a
traced schedule's wake-ups, cancellations, timeouts and task ends), ``_waits``/``_holders``
(what a blocked task waits in, and who holds it), ``_report``, ``_html`` (the HTML report),
``_cli``, ``_pytest``.
"""

from ._api import explore as explore
from ._api import replay as replay
from ._common import Backend as Backend
from ._common import DeadlockError as DeadlockError
from ._common import FailureKind as FailureKind
from ._common import NondeterminismError as NondeterminismError
from ._common import Strategy as Strategy
from ._common import UnsupportedScenario as UnsupportedScenario
from ._config import ExploreConfig as ExploreConfig
from ._pytest import InterleavingFailure as InterleavingFailure
from ._pytest import check_interleavings as check_interleavings
from ._report import Report as Report
from ._schedulers import Scheduler as Scheduler

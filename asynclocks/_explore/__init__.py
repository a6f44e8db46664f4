"""The interleaving explorer: drives asyncio or trio one task at a time to find, replay and
rule out race conditions at await points."""

from ._api import explore as explore
from ._api import replay as replay
from ._common import Backend as Backend
from ._common import DeadlockError as DeadlockError
from ._common import FailureKind as FailureKind
from ._common import NondeterminismError as NondeterminismError
from ._common import Strategy as Strategy
from ._common import UnsupportedScenario as UnsupportedScenario
from ._pytest import InterleavingFailure as InterleavingFailure
from ._pytest import check_interleavings as check_interleavings
from ._report import Report as Report

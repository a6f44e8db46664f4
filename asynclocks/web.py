"""Races in a web API without hand-written invariants.

Whatever concurrent requests do, the outcome must be one that *some sequential order* of the same
requests gives (linearizability). :func:`check_requests` runs the requests one at a time in every
order to learn the allowed outcomes, then runs them together under the interleaving explorer and
fails on any schedule whose outcome is not allowed. aiohttp applications run over the explorer's
simulated loopback network (asyncio); ASGI apps (Starlette, FastAPI) run in-process, on asyncio and
trio.
"""

from ._web._check import Allowed as Allowed
from ._web._check import NotLinearizable as NotLinearizable
from ._web._check import RequestSet as RequestSet
from ._web._check import WebReport as WebReport
from ._web._check import check_requests as check_requests
from ._web._check import sequential_outcomes as sequential_outcomes
from ._web._model import Request as Request
from ._web._model import Response as Response
from ._web._openapi import OpenAPISummary as OpenAPISummary
from ._web._openapi import check_openapi as check_openapi
from ._web._openapi import request_sets as request_sets
from ._web._pytest import linearizable as linearizable

__all__ = [
    "Allowed",
    "NotLinearizable",
    "OpenAPISummary",
    "Request",
    "RequestSet",
    "Response",
    "WebReport",
    "check_openapi",
    "check_requests",
    "linearizable",
    "request_sets",
    "sequential_outcomes",
]

"""How many cases the suite's search-based tests run: the default run, or the deep one.

``make test`` (``pytest``) runs every test at the default depth, sized so that the whole suite
stays near five minutes on 2 cores. ``make test-deep`` (a stage of ``.ci/run``) runs the tests
marked ``depth`` again with ``ASYNCLOCKS_TEST_DEPTH=deep``: the bank's OpenAPI fuzzing (5,000
cases, 1,000 by default), its linearizability proofs (4 generated request sets per lock mode, 2),
the soak (20,000 requests per mode, 5,000) and the explorer's reduction property tests (20
generated programs each, 10).
"""

from __future__ import annotations

import os
from typing import Final, TypeVar

T = TypeVar("T")

#: The environment variable that selects the depth.
DEPTH_ENV: Final = "ASYNCLOCKS_TEST_DEPTH"
DEPTHS: Final = ("default", "deep")


def _read_depth() -> str:
    depth = os.environ.get(DEPTH_ENV) or "default"
    if depth not in DEPTHS:
        # A misspelt depth would otherwise run the default counts while looking like the deep run.
        raise ValueError(f"{DEPTH_ENV} must be one of {', '.join(DEPTHS)}, got {depth!r}")
    return depth


#: The depth of this run.
DEPTH: Final = _read_depth()


def by_depth(default: T, deep: T) -> T:
    """``default`` in the default run, ``deep`` under ``ASYNCLOCKS_TEST_DEPTH=deep``."""
    return deep if DEPTH == "deep" else default

from __future__ import annotations

import pytest

from asynclocks import Backend


@pytest.fixture(params=["asyncio", "trio"])
def backend(request: pytest.FixtureRequest) -> Backend:
    """The explorer is synchronous; each test runs it once per backend."""
    name: Backend = request.param
    return name

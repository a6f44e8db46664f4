from __future__ import annotations

import pytest


@pytest.fixture(params=["asyncio", "trio"])
def backend(request: pytest.FixtureRequest) -> str:
    """The explorer is synchronous; each test runs it once per backend."""
    name: str = request.param
    return name

"""Request sets generated from an OpenAPI document find races with no hand-written invariant."""

from __future__ import annotations

import pytest

from asynclocks import Backend
from asynclocks._web._openapi import check_openapi, operations, request_sets
from asynclocks.web import Request

from .fastapi_accounts import accounts_app, locked_accounts_app

DOCUMENT = accounts_app().openapi()


def test_operations_resolve_the_document() -> None:
    found = {(op.method, op.path) for op in operations(DOCUMENT)}
    assert ("post", "/accounts") in found
    assert ("post", "/accounts/{name}/withdraw") in found
    deposit = next(op for op in operations(DOCUMENT) if op.path.endswith("/deposit"))
    assert deposit.parameters["name"]["pattern"] == "^[a-z]{1,8}$"
    assert deposit.body is not None
    assert deposit.body["properties"]["amount"]["minimum"] == 1


def _target(request: Request) -> str:
    if request.path == "/accounts":
        return str(request.json["id"])
    return request.path.split("/")[2]


def test_sets_race_on_one_resource_created_by_the_setup_or_on_a_fresh_one() -> None:
    sets = request_sets(DOCUMENT, sets=8, seed=3, document_path="/openapi.json")
    assert len(sets) == 8
    on_fresh = 0
    for requests in sets:
        created = [r.json["id"] for r in requests.setup]
        assert [r.path for r in requests.setup] == ["/accounts", "/accounts"]
        assert len(set(created)) == 2
        targets = {_target(r) for r in requests.concurrent}
        assert len(targets) == 1, requests  # every concurrent request on one resource
        (target,) = targets
        if target not in created:
            on_fresh += 1
        else:
            # Creating an account the setup made would only be refused: never chosen.
            assert all(r.path != "/accounts" for r in requests.concurrent)
        observed = [r.path for r in requests.observe]
        assert observed[:2] == [f"/accounts/{i}" for i in created]
        assert f"/accounts/{target}" in observed
    assert 0 < on_fresh < 8


def test_the_same_seed_gives_the_same_sets_and_another_seed_others() -> None:
    first = request_sets(DOCUMENT, sets=3, seed=11)
    assert first == request_sets(DOCUMENT, sets=3, seed=11)
    assert first != request_sets(DOCUMENT, sets=3, seed=12)


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_generated_sets_find_the_race_and_pass_the_fix(backend: Backend) -> None:
    racy = check_openapi(accounts_app, sets=6, seed=0, backend=backend, stop_on_failure=True)
    assert racy.failures, racy.summary
    assert racy.failures[0].verdict.startswith(f"NOT LINEARIZABLE on {backend}")
    fixed = check_openapi(locked_accounts_app, sets=6, seed=0, backend=backend)
    assert fixed.failures == [], str(fixed.failures[0]) if fixed.failures else ""
    assert len(fixed.reports) == 6
    assert all(report.report.exhaustive for report in fixed.reports)
    assert fixed.summary.startswith("6 of 6 generated request set(s) checked, ")


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"sets": 0}, "sets must be an int >= 1"),
        ({"concurrent": 5}, "concurrent must be 2 to 4"),
    ],
)
def test_bad_generator_arguments(kwargs: dict[str, int], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        request_sets(DOCUMENT, sets=kwargs.get("sets", 5), concurrent=kwargs.get("concurrent", 2))


def test_not_a_document() -> None:
    with pytest.raises(ValueError, match="not an OpenAPI 3 document"):
        request_sets({"openapi": "3.1.0"})
    with pytest.raises(ValueError, match="GET /nope answered 404"):
        check_openapi(accounts_app, openapi="/nope")
    with pytest.raises(ValueError, match="time_limit must be a positive number"):
        check_openapi(accounts_app, time_limit=0)


def test_operations_that_need_credentials_are_left_out() -> None:
    document = {
        "openapi": "3.1.0",
        "security": [{"bearer": []}],
        "paths": {
            "/private": {"get": {}},
            "/public": {"get": {"security": []}},
            "/either": {"get": {"security": [{"bearer": []}, {}]}},
        },
    }
    assert sorted(op.path for op in operations(document)) == ["/either", "/public"]

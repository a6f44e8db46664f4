"""check_requests on ASGI apps: races found without an invariant, fixes pass, on both backends."""

from __future__ import annotations

from typing import Any

import pytest

import asynclocks.web as web
from asynclocks import Backend
from asynclocks.web import NotLinearizable, Request, Response

from .apps import clock_app, crowded_app, lifespan_app, seats_app

BACKENDS = ["asyncio", "trio"]
BOOK_TWICE = ["POST /book", "POST /book"]


@pytest.mark.parametrize("backend", BACKENDS)
def test_the_last_seat_booked_twice_is_not_linearizable(backend: Backend) -> None:
    report = web.check_requests(
        seats_app, concurrent=BOOK_TWICE, observe=["GET /seats"], backend=backend
    )
    assert report.failed
    assert isinstance(report.error, NotLinearizable)
    assert report.observed == (
        Response(200, {"booked": True}),
        Response(200, {"booked": True}),
        Response(200, {"left": -1}),
    )
    assert report.verdict.startswith(f"NOT LINEARIZABLE on {backend} after 1 schedule(s)")
    explanation = report.error.explanation
    assert "nearest sequential order, c1 then c2, would give instead:" in explanation
    assert "  c2 status: 409, not 200" in explanation
    assert "  o1 body.left: 0, not -1" in explanation
    assert "every sequential order, and where it differs from what was observed:" in explanation
    # c1 first: c2 is refused and one seat is left at 0; c2 first: c1 is refused instead.
    assert (
        '  c1 then c2: c2 status 409; c2 body.booked absent; c2 body.error "sold_out"'
        in explanation
    )
    assert (
        '  c2 then c1: c1 status 409; c1 body.booked absent; c1 body.error "sold_out"'
        in explanation
    )
    assert "race window: " in str(report)
    assert report.report.token is not None
    assert str(report).endswith(f"token: {report.report.token}")


@pytest.mark.parametrize("backend", BACKENDS)
def test_the_locked_app_passes_every_schedule(backend: Backend) -> None:
    report = web.check_requests(
        lambda: seats_app(locked=True),
        concurrent=BOOK_TWICE,
        observe=["GET /seats"],
        backend=backend,
    )
    assert not report.failed, str(report)
    assert report.report.exhaustive
    assert report.verdict.startswith(f"LINEARIZABLE on {backend}: every outcome matched one")
    assert [a.orders for a in report.allowed] == [((0, 1),), ((1, 0),)]


@pytest.mark.parametrize("backend", BACKENDS)
def test_three_concurrent_requests_on_two_seats(backend: Backend) -> None:
    locked = web.check_requests(
        lambda: seats_app(locked=True, seats=2),
        concurrent=["POST /book"] * 3,
        observe=["GET /seats"],
        backend=backend,
    )
    assert not locked.failed
    assert locked.report.exhaustive
    # Which of the three is refused depends only on who comes last: 3 outcomes for 6 orders.
    assert sorted(len(a.orders) for a in locked.allowed) == [2, 2, 2]
    racy = web.check_requests(
        lambda: seats_app(seats=2),
        concurrent=["POST /book"] * 3,
        observe=["GET /seats"],
        backend=backend,
    )
    assert isinstance(racy.error, NotLinearizable)


@pytest.mark.parametrize("backend", BACKENDS)
def test_fields_that_differ_by_design_can_be_ignored(backend: Backend) -> None:
    hits = ["POST /hit", "POST /hit"]
    strict = web.check_requests(clock_app, concurrent=hits, backend=backend)
    assert isinstance(strict.error, NotLinearizable)
    assert "body.served_at" in strict.error.explanation
    lenient = web.check_requests(clock_app, concurrent=hits, backend=backend, ignore=["served_at"])
    assert not lenient.failed, str(lenient)
    assert all(r.body == {"ok": True} for a in lenient.allowed for r in a.outcome)


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_500_only_under_concurrency_is_a_failure(backend: Backend) -> None:
    report = web.check_requests(crowded_app, concurrent=["POST /work"] * 2, backend=backend)
    assert isinstance(report.error, NotLinearizable)
    assert report.observed is not None
    assert 500 in [response.status for response in report.observed]


@pytest.mark.parametrize("backend", BACKENDS)
def test_the_lifespan_runs_around_every_run(backend: Backend) -> None:
    events: list[str] = []
    report = web.check_requests(
        lambda: lifespan_app(events), concurrent=["POST /ping"] * 2, backend=backend
    )
    assert not report.failed, str(report)
    assert all(r.body == {"pool": True} for a in report.allowed for r in a.outcome)
    assert events
    assert events.count("startup") == events.count("shutdown")
    events.clear()
    without = web.check_requests(
        lambda: lifespan_app(events), concurrent=["POST /ping"] * 2, backend=backend, lifespan=False
    )
    assert all(r.body == {"pool": False} for a in without.allowed for r in a.outcome)
    assert events == []


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("POST /a", Request("POST", "/a")),
        (("PUT", "/a", {"x": 1}), Request("PUT", "/a", {"x": 1})),
        (
            {"method": "GET", "path": "/a", "headers": {"X-K": "v"}},
            Request("GET", "/a", headers={"X-K": "v"}),
        ),
        (Request("DELETE", "/a"), Request("DELETE", "/a")),
    ],
)
def test_a_request_can_be_written_several_ways(spec: object, expected: Request) -> None:
    assert Request.of(spec) == expected


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"concurrent": ["POST /book"]}, ValueError, "concurrent takes 2 to 4 requests"),
        (
            {"concurrent": ["POST /book"] * 5},
            ValueError,
            r"concurrent takes 2 to 4 requests \(the ones that may race\), got 5",
        ),
        ({"concurrent": "POST /book"}, TypeError, "concurrent must be a list of requests"),
        ({"concurrent": ["post /book"] * 2}, ValueError, "upper-case HTTP method"),
        ({"concurrent": ["POST book"] * 2}, ValueError, "path must start with '/'"),
        ({"concurrent": [3, 4]}, TypeError, "a request is a Request"),
        (
            {"concurrent": [{"method": "GET", "url": "/x"}] * 2},
            ValueError,
            "a request has the keys method, path, json, headers",
        ),
        ({"concurrent": BOOK_TWICE, "ignore": "id"}, TypeError, "ignore must be a list"),
        ({"concurrent": BOOK_TWICE, "ignore": ["a..b"]}, ValueError, "has an empty part"),
        ({"concurrent": BOOK_TWICE, "backend": "curio"}, ValueError, "unknown backend 'curio'"),
        ({"concurrent": BOOK_TWICE, "max_schedules": 0}, ValueError, "max_schedules must be >= 1"),
        ({"concurrent": [("POST", "/x", {1, 2})] * 2}, TypeError, "is not JSON"),
    ],
)
def test_bad_arguments_are_refused_before_anything_runs(
    kwargs: dict[str, Any], error: type[Exception], message: str
) -> None:
    calls: list[int] = []

    def factory() -> Any:
        calls.append(1)
        return seats_app()

    with pytest.raises(error, match=message):
        web.check_requests(factory, **kwargs)
    assert calls == []


def test_a_factory_that_returns_no_app_is_a_clear_error() -> None:
    with pytest.raises(RuntimeError, match="the requests fail even one at a time"):
        web.check_requests(lambda: 42, concurrent=BOOK_TWICE)
    with pytest.raises(TypeError, match="app_factory must be callable"):
        web.check_requests(42, concurrent=BOOK_TWICE)  # type: ignore[arg-type]


@pytest.mark.parametrize("backend", BACKENDS)
def test_an_async_factory_is_awaited(backend: Backend) -> None:
    async def factory() -> Any:
        return seats_app(locked=True)

    report = web.check_requests(factory, concurrent=BOOK_TWICE, backend=backend)
    assert not report.failed

from __future__ import annotations

import io
import json
from pathlib import Path

import anyio
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from rich.console import Console

from services.bank.tools.hammer import (
    HammerError,
    HammerSettings,
    format_report,
    parse_mix,
    percentile,
    run_hammer,
    write_json,
)

from .conftest import ADMIN_TOKEN, Bank, BankFactory

pytestmark = pytest.mark.anyio

JSON_KEYS = {
    "requests",
    "duration_s",
    "rps",
    "latency_ms",
    "status",
    "expected_total",
    "actual_total",
    "drift",
    "negative_accounts",
}


def _quiet() -> Console:
    return Console(stderr=True, quiet=True)


def _url(bank: Bank) -> str:
    return str(bank.server.make_url("/"))


async def test_hammer_keeps_the_books_of_a_locked_bank(bank: Bank, tmp_path: Path) -> None:
    settings = HammerSettings(
        admin_token=ADMIN_TOKEN,
        url=_url(bank),
        concurrency=8,
        requests=300,
        accounts=3,
        seed=5,
        progress=False,
    )
    report = await run_hammer(settings, console=_quiet())
    assert report.requests == 300
    assert sum(report.status.values()) == 300
    assert set(report.status) <= {"200", "409"}
    assert report.drift == 0
    assert report.correct
    assert report.expected_total == report.actual_total
    assert report.latency_ms["p50"] <= report.latency_ms["p90"] <= report.latency_ms["p99"]
    assert report.latency_ms["p99"] <= report.latency_ms["max"]
    # The server agrees: its own books balance, and the hammer's accounts are all there.
    audit = await bank.audit()
    assert (audit["drift"], audit["accounts"], audit["total"]) == (0, 3, report.actual_total)
    path = tmp_path / "report.json"
    write_json(report, path)
    document = json.loads(path.read_text())
    assert set(document) == JSON_KEYS
    assert set(document["latency_ms"]) == {"p50", "p90", "p99", "max"}
    assert document["drift"] == 0
    text = format_report(report)
    assert "requests      300 in" in text
    assert "drift         +0 cents" in text
    assert "verdict       OK: every acknowledged cent is accounted for" in text


@pytest.mark.parametrize("terminal", [True, False])
async def test_the_progress_bar_is_drawn_on_a_terminal_only(bank: Bank, terminal: bool) -> None:
    settings = HammerSettings(admin_token=ADMIN_TOKEN, url=_url(bank), requests=20, accounts=2)
    assert settings.progress
    stream = io.StringIO()
    await run_hammer(settings, console=Console(file=stream, force_terminal=terminal, width=100))
    drawn = stream.getvalue()
    assert ("20 req" in drawn) is terminal, drawn


async def test_each_run_opens_fresh_accounts(bank: Bank) -> None:
    settings = HammerSettings(
        admin_token=ADMIN_TOKEN, url=_url(bank), requests=20, accounts=2, progress=False
    )
    first = await run_hammer(settings, console=_quiet())
    second = await run_hammer(settings, console=_quiet())
    assert first.prefix != second.prefix
    assert (await bank.audit())["accounts"] == 4


async def test_hammer_by_duration(bank: Bank) -> None:
    settings = HammerSettings(
        admin_token=ADMIN_TOKEN,
        url=_url(bank),
        requests=None,
        duration=0.2,
        concurrency=4,
        accounts=2,
        progress=False,
    )
    report = await run_hammer(settings, console=_quiet())
    assert report.requests > 0
    assert report.drift == 0


async def test_hammer_reports_the_lost_money_of_lock_mode_none(make_bank: BankFactory) -> None:
    # With a 20 ms window and 16 clients on 2 accounts, concurrent deposits overlap in it.
    bank = await make_bank(lock_mode="none", io_delay=0.02)
    settings = HammerSettings(
        admin_token=ADMIN_TOKEN,
        url=_url(bank),
        concurrency=16,
        requests=64,
        accounts=2,
        mix={"deposit": 1},
        seed=1,
        progress=False,
    )
    report = await run_hammer(settings, console=_quiet())
    assert report.status == {"200": 64}
    assert report.drift < 0
    assert (await bank.audit())["drift"] == report.drift
    assert "cents acknowledged to clients are missing" in format_report(report)


async def test_unreachable_server() -> None:
    settings = HammerSettings(url="http://127.0.0.1:9/", requests=1, progress=False)
    with pytest.raises(HammerError, match=r"cannot talk to http://127\.0\.0\.1:9/"):
        await run_hammer(settings, console=_quiet())


async def test_not_a_bank() -> None:
    async with TestServer(web.Application()) as server:
        settings = HammerSettings(url=str(server.make_url("/")), requests=1, progress=False)
        with pytest.raises(HammerError, match="GET /health: expected HTTP 200, got 404"):
            await run_hammer(settings, console=_quiet())


async def test_a_stalled_server_fails_the_run() -> None:
    never = anyio.Event()

    async def health(request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def open_account(request: web.Request) -> web.Response:
        return web.json_response({}, status=201)

    async def stall(request: web.Request) -> web.Response:
        await never.wait()
        raise AssertionError("unreachable")

    app = web.Application()
    app.router.add_get("/health", health)
    app.router.add_post("/accounts", open_account)
    app.router.add_post("/accounts/{id}/deposit", stall)
    async with TestServer(app) as server:
        settings = HammerSettings(
            url=str(server.make_url("/")),
            requests=4,
            concurrency=2,
            accounts=1,
            mix={"deposit": 1},
            stall_timeout=0.3,
            progress=False,
        )
        with pytest.raises(
            HammerError, match="no answer from the server for 0.3 s after 0 requests"
        ):
            await run_hammer(settings, console=_quiet())


def test_parse_mix() -> None:
    assert parse_mix("deposit:1,withdraw:1,transfer:2") == {
        "deposit": 1,
        "withdraw": 1,
        "transfer": 2,
    }
    assert parse_mix(" deposit:3 ") == {"deposit": 3}
    for text, match in [
        ("deposit", "mix entry 'deposit' is not NAME:WEIGHT"),
        ("steal:1", "unknown operation 'steal' in mix; expected deposit, withdraw, transfer"),
        ("deposit:1,deposit:2", "operation 'deposit' appears twice"),
        ("deposit:-1", "weight of 'deposit' must be a non-negative integer, got '-1'"),
        ("deposit:x", "got 'x'"),
        ("deposit:0,withdraw:0", "at least one operation with a weight above 0"),
    ]:
        with pytest.raises(ValueError, match=match):
            parse_mix(text)


def test_percentile() -> None:
    values = [float(n) for n in range(1, 101)]
    assert percentile(values, 0.5) == 50
    assert percentile(values, 0.99) == 99
    assert percentile(values, 1.0) == 100
    assert percentile([7.0], 0.99) == 7
    assert percentile([], 0.5) == 0


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"concurrency": 0}, "concurrency must be at least 1, got 0"),
        ({"requests": None}, "give exactly one of requests and duration"),
        ({"duration": 1.0}, "give exactly one of requests and duration"),
        ({"requests": 0}, "requests must be at least 1, got 0"),
        ({"requests": None, "duration": -1.0}, "duration must be a positive number"),
        ({"accounts": 1}, "transfers need at least 2 accounts"),
        ({"accounts": 0, "mix": {"deposit": 1}}, "accounts must be at least 1, got 0"),
        ({"opening_balance": -1}, "opening balance must be between 0 and 10\\*\\*12"),
        ({"stall_timeout": 0.0}, "stall_timeout must be positive seconds, got 0.0"),
    ],
)
def test_bad_settings(kwargs: dict[str, object], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        HammerSettings(url="http://127.0.0.1:1/", **kwargs)  # type: ignore[arg-type]

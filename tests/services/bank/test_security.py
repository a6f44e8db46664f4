"""Security properties of the bank: the admin token, the bind address, the body cap, and error
bodies that never leak internals (stack traces, SQL, table names)."""

from __future__ import annotations

import asyncio
import dis
import hmac
import logging
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from services.bank.__main__ import build_parser
from services.bank.http import auth as auth_module
from services.bank.run.config import BankConfig
from services.bank.run.server import serve
from services.bank.stores.memory import MemoryStore

from ._reliability import Served, ServedFactory
from ._reliability import served_bank as served_bank
from .conftest import ADMIN_TOKEN

pytestmark = pytest.mark.anyio

GENERIC_500 = {
    "error": "internal_error",
    "detail": "internal error; the server log has the details",
}
SECRET = "SELECT balance FROM bank_accounts -- secret; Traceback (most recent call last)"

# --- admin token ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "headers",
    [
        {"Authorization": ""},
        {"Authorization": "Bearer"},
        {"Authorization": "Bearer "},
        {"Authorization": f"Basic {ADMIN_TOKEN}"},
        {"Authorization": f"Token {ADMIN_TOKEN}"},
        {"Authorization": f"Bearer {ADMIN_TOKEN[:-1]}"},
        {"Authorization": f"Bearer {ADMIN_TOKEN}x"},
        {"Authorization": f"Bearer {ADMIN_TOKEN.upper()}"},
        {"Authorization": f"Bearer {ADMIN_TOKEN} {ADMIN_TOKEN}"},
        {"Authorization": f"Bearer\t{ADMIN_TOKEN}"},
        {"Authorization": f"Bearer {ADMIN_TOKEN}\u00e9".encode().decode("latin-1")},
        {"X-Admin-Token": ADMIN_TOKEN},
        {"Cookie": f"token={ADMIN_TOKEN}"},
    ],
)
@pytest.mark.parametrize(
    ("method", "body"), [("GET", None), ("PUT", {"mode": "none"})], ids=["get", "put"]
)
async def test_admin_refuses_without_the_right_token(
    served_bank: ServedFactory, headers: dict[str, str], method: str, body: object
) -> None:
    bank = await served_bank()
    # An empty Authorization sends none, unless the case names its own.
    status, answer = await bank.call(
        method, "/admin/lock", body, headers={"Authorization": "", **headers}
    )
    assert status == 401
    assert answer["error"] == "unauthenticated"
    assert ADMIN_TOKEN not in answer["detail"]
    # A refused switch switched nothing.
    assert bank.locking.mode == "account"


async def test_admin_accepts_the_token_and_says_so_in_the_challenge(
    served_bank: ServedFactory,
) -> None:
    bank = await served_bank()
    async with bank.client.get("/admin/lock") as resp:
        assert resp.status == 401
        assert resp.headers["WWW-Authenticate"] == "Bearer"
    auth = {"Authorization": f"bearer {ADMIN_TOKEN}"}
    assert await bank.call("PUT", "/admin/lock", {"mode": "global"}, headers=auth) == (
        200,
        {"mode": "global"},
    )


async def test_admin_is_closed_when_no_token_is_configured(served_bank: ServedFactory) -> None:
    bank = await served_bank(admin_token=None)
    status, answer = await bank.call("GET", "/admin/lock")
    assert (status, answer["error"]) == (401, "unauthenticated")
    assert "disabled" in answer["detail"]
    for token in ("", "None", "null", ADMIN_TOKEN):
        status, answer = await bank.call(
            "GET", "/admin/lock", headers={"Authorization": f"Bearer {token}"}
        )
        # No token is the admin's: each is an unknown bearer token.
        assert (status, answer["error"]) == (401, "unauthenticated")


async def test_token_is_compared_in_constant_time(
    served_bank: ServedFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every admin request goes through ``hmac.compare_digest``, never ``==``."""
    calls: list[tuple[bytes, bytes]] = []
    real = hmac.compare_digest

    def spy(a: Any, b: Any) -> bool:
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(hmac, "compare_digest", spy)
    bank = await served_bank()
    auth = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    assert (await bank.call("GET", "/admin/lock", headers=auth))[0] == 200
    assert (await bank.call("GET", "/admin/lock", headers={"Authorization": "Bearer x"}))[0] == 401
    # (The first call registered the test's client.)
    assert calls[1:] == [
        (ADMIN_TOKEN.encode(), ADMIN_TOKEN.encode()),
        (b"x", ADMIN_TOKEN.encode()),
    ]
    # And the code path has no ordinary comparison that could short-circuit first: read from
    # the bytecode (the source file may be newer than the loaded module).
    code = auth_module.authenticate.__code__
    assert "compare_digest" in code.co_names
    comparisons = [i.argval for i in dis.get_instructions(code) if i.opname == "COMPARE_OP"]
    assert "==" not in comparisons


def test_token_is_not_shown_in_the_config_repr() -> None:
    assert ADMIN_TOKEN not in repr(BankConfig(admin_token=ADMIN_TOKEN))


# --- bind address -----------------------------------------------------------------------------


def test_default_bind_is_loopback() -> None:
    assert BankConfig().host == "127.0.0.1"
    assert build_parser().parse_args(["serve"]).host == "127.0.0.1"


async def test_serve_listens_on_loopback_by_default() -> None:
    announced: list[str] = []
    stop = asyncio.Event()

    def announce(line: str) -> None:
        announced.append(line)
        stop.set()

    await serve(BankConfig(port=0), announce=announce, stop=stop)
    [line] = announced
    assert line.startswith("listening on http://127.0.0.1:")


# --- body cap ---------------------------------------------------------------------------------

ROUTES = [
    ("POST", "/accounts"),
    ("POST", "/accounts/alice/deposit"),
    ("POST", "/accounts/alice/withdraw"),
    ("POST", "/transfers"),
    ("PUT", "/admin/lock"),
]


@pytest.mark.parametrize(("method", "path"), ROUTES)
async def test_bodies_over_the_cap_are_413(
    served_bank: ServedFactory, method: str, path: str
) -> None:
    bank = await served_bank()
    auth = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    big = b'{"amount": 1, "pad": "' + b"x" * (64 * 1024) + b'"}'
    status, answer = await bank.call(method, path, raw=big, headers=auth)
    assert status == 413
    assert answer == {
        "error": "body_too_large",
        "detail": "request body is larger than 65536 bytes",
    }


async def test_chunked_bodies_over_the_cap_are_413(served_bank: ServedFactory) -> None:
    """No ``Content-Length`` to refuse early: the cap holds while the chunks arrive."""
    bank = await served_bank(max_body_bytes=1024)
    await bank.call("POST", "/accounts", {"id": "alice", "balance": 10})

    async def chunks() -> AsyncIterator[bytes]:
        yield b'{"amount": 1, "pad": "'
        for _ in range(200):
            yield b"x" * 100
        yield b'"}'

    async with bank.client.post(
        "/accounts/alice/deposit", data=chunks(), headers={"Content-Type": "application/json"}
    ) as resp:
        assert resp.status == 413
        assert (await resp.json())["error"] == "body_too_large"
    assert (await bank.audit())["total"] == 10


# --- error bodies -----------------------------------------------------------------------------


class ExplodingStore(MemoryStore):
    """A store whose every operation fails the way a bug or a broken database would."""

    async def balance(self, account_id: str) -> int:
        raise RuntimeError(SECRET)

    async def deposit(self, account_id: str, amount: int, *, atomic: bool = False) -> int:
        raise sqlite3.OperationalError(SECRET)

    async def withdraw(self, account_id: str, amount: int, *, atomic: bool = False) -> int:
        raise KeyError(SECRET)

    async def transfer(
        self, source: str, target: str, amount: int, *, atomic: bool = False
    ) -> tuple[int, int]:
        raise asyncpg.exceptions.UndefinedTableError(SECRET)

    async def create_account(
        self,
        account_id: str,
        balance: int,
        *,
        owner: str | None = None,
        max_accounts: int | None = None,
    ) -> int:
        raise ZeroDivisionError(SECRET)

    async def owner(self, account_id: str) -> str | None:
        raise RuntimeError(SECRET)


def _assert_generic(status: int, body: object) -> None:
    assert status == 500
    assert body == GENERIC_500


async def test_internal_errors_answer_the_generic_shape_and_log_the_details(
    served_bank: ServedFactory, caplog: pytest.LogCaptureFixture
) -> None:
    bank = await served_bank(store=ExplodingStore())
    requests: list[tuple[str, str, object]] = [
        ("GET", "/accounts/alice", None),
        ("POST", "/accounts/alice/deposit", {"amount": 1}),
        ("POST", "/accounts/alice/withdraw", {"amount": 1}),
        ("POST", "/transfers", {"from": "alice", "to": "bob", "amount": 1}),
        ("POST", "/accounts", {"id": "alice", "balance": 1}),
    ]
    with caplog.at_level(logging.ERROR, logger="services.bank"):
        for method, path, body in requests:
            async with bank.client.request(method, path, json=body, headers=bank.auth) as resp:
                raw = await resp.read()
                assert resp.content_type == "application/json"
                _assert_generic(resp.status, await resp.json())
                assert b"SELECT" not in raw
                assert b"Traceback" not in raw
    # The details went to the server log, where they belong.
    logged = [r for r in caplog.records if r.name == "services.bank"]
    assert len(logged) == len(requests)
    assert all(r.exc_info is not None and SECRET in str(r.exc_info[1]) for r in logged)


async def _break_sqlite(path: Path) -> None:
    conn = sqlite3.connect(path)
    try:
        conn.execute("DROP TABLE bank_accounts")
        conn.commit()
    finally:
        conn.close()


@pytest.mark.parametrize("kind", ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
async def test_a_broken_database_never_leaks_sql(
    served_bank: ServedFactory,
    kind: str,
    tmp_path: Path,
    request: pytest.FixtureRequest,
    caplog: pytest.LogCaptureFixture,
) -> None:
    from ._reliability import url_for

    url = url_for(kind, tmp_path, request)
    bank = await served_bank(url)
    assert (await bank.call("POST", "/accounts", {"id": "alice", "balance": 5}))[0] == 201
    if kind == "sqlite":
        await _break_sqlite(tmp_path / "bank.db")
    else:
        conn = await asyncpg.connect(url)
        try:
            await conn.execute("DROP TABLE bank_accounts")
        finally:
            await conn.close()
    with caplog.at_level(logging.ERROR, logger="services.bank"):
        for method, path, body in [
            ("GET", "/accounts/alice", None),
            ("POST", "/accounts/alice/deposit", {"amount": 1}),
            ("GET", "/audit", None),
        ]:
            headers = bank.credentials(path)
            async with bank.client.request(method, path, json=body, headers=headers) as resp:
                raw = (await resp.read()).lower()
                assert resp.status == 500, raw
                assert await resp.json() == GENERIC_500
                for leak in (b"bank_accounts", b"select", b"traceback", b"relation", b"table"):
                    assert leak not in raw
    assert caplog.records, "the real error must reach the server log"


async def test_no_route_and_bad_method_answers_are_json(served_bank: ServedFactory) -> None:
    bank: Served = await served_bank()
    assert (await bank.call("GET", "/../../etc/passwd"))[0] == 404
    assert (await bank.call("DELETE", "/audit"))[0] == 405


class UnreachableStore(MemoryStore):
    """A store whose database is away: refused connections, a server shutting down."""

    def __init__(self, error: Exception) -> None:
        super().__init__()
        self.error = error

    async def balance(self, account_id: str) -> int:
        raise self.error

    async def owner(self, account_id: str) -> str | None:
        raise self.error

    async def deposit(self, account_id: str, amount: int, *, atomic: bool = False) -> int:
        raise self.error


@pytest.mark.parametrize(
    "error",
    [
        ConnectionRefusedError(111, "Connect call failed ('127.0.0.1', 5432)"),
        ConnectionResetError(104, "Connection reset by peer"),
        asyncpg.exceptions.CannotConnectNowError("the database system is shutting down"),
        asyncpg.exceptions.AdminShutdownError("terminating connection"),
        asyncpg.exceptions.ConnectionDoesNotExistError("connection was closed"),
    ],
    ids=lambda error: type(error).__name__,
)
async def test_an_unreachable_database_is_503_not_500(
    served_bank: ServedFactory, error: Exception
) -> None:
    bank = await served_bank(store=UnreachableStore(error))
    status, answer = await bank.call("GET", "/accounts/alice")
    assert status == 503
    assert answer["error"] == "retry_later"
    assert answer["detail"].startswith(
        f"the database is unavailable right now ({type(error).__name__})"
    )
    assert "5432" not in answer["detail"]
    # A write whose failure no store mapped may have committed: the safety net does not
    # claim that nothing was applied.
    status, answer = await bank.call("POST", "/accounts/alice/deposit", {"amount": 1})
    assert status == 503
    assert answer["error"] == "outcome_unknown"
    assert "may or may not have been applied" in answer["detail"]
    assert "5432" not in answer["detail"]


async def test_a_read_answered_503_by_the_safety_net_degrades_health(
    served_bank: ServedFactory,
) -> None:
    bank = await served_bank(store=UnreachableStore(ConnectionResetError(104, "reset")))
    status, answer = await bank.call("GET", "/health")
    assert (status, answer["status"]) == (200, "ok")
    status, answer = await bank.call("GET", "/accounts/alice")
    assert (status, answer["error"]) == (503, "retry_later")
    # /health reads the 503s of the last seconds: a read refused for the database counts too.
    status, answer = await bank.call("GET", "/health")
    assert (status, answer["status"]) == (503, "degraded")
    assert "1 retry_later" in answer["reason"]


@pytest.mark.parametrize("cap", [1000, 64 * 1024])
async def test_openapi_states_the_configured_body_cap(served_bank: ServedFactory, cap: int) -> None:
    bank = await served_bank(max_body_bytes=cap)
    status, document = await bank.call("GET", "/openapi.json")
    assert status == 200
    refusals = [
        operation["responses"]["413"]["description"]
        for route in document["paths"].values()
        for operation in route.values()
        if "413" in operation["responses"]
    ]
    assert len(refusals) == 6  # every route with a body
    assert set(refusals) == {f"body_too_large: the body is over {cap} bytes"}
    # The cap the document states is the one enforced.
    status, answer = await bank.call("PUT", "/admin/lock", raw=b" " * (cap + 1))
    assert (status, answer["detail"]) == (413, f"request body is larger than {cap} bytes")

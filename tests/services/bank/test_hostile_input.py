"""Hostile input that schema-driven fuzzers do not generate, sent as raw bytes where it matters.

Decisions these tests pin down:

- Duplicate keys in a JSON object are refused (400 ``invalid_json``), never "last one wins": a
  proxy or a logger that keeps the first value would otherwise see a different request from the
  one the bank executes. Keys are compared after unescaping, so ``"\\u0061mount"`` duplicates
  ``"amount"``.
- The body must be UTF-8 (no BOM, no UTF-16, no overlong forms, no encoded surrogates): 400.
- A ``Content-Length`` over the cap is refused from the header alone (413); one larger than what
  the client sends, or a body dripped slowly, is cut off after ``body_timeout`` (408, connection
  closed). Framing the HTTP parser cannot make sense of (non-numeric or duplicate
  ``Content-Length``, ``Content-Length`` with ``Transfer-Encoding``, oversized headers, raw
  non-ASCII in the request line) is refused by aiohttp's parser with a plain-text 400 before any
  route runs.
- Ids in the path are matched against the id pattern after percent-decoding; ``..``, ``%2F``,
  NUL, look-alike letters and invisible characters name no account (404 JSON) and never reach
  another route or another account.

Every case checks that the books did not move and that nothing was logged as a server error.
"""

from __future__ import annotations

import gzip
import logging
from collections.abc import AsyncIterator, Iterator
from typing import Any

import anyio
import pytest
from aiohttp.test_utils import TestClient

from services.bank.domain import MAX_AMOUNT
from services.bank.http import create_app
from services.bank.run.config import BankConfig
from services.bank.stores.memory import MemoryStore

from ._raw_http import RawResponse, exchange, read_response, request_bytes
from .conftest import ADMIN_TOKEN, Bank, BankFactory, _Server

pytestmark = pytest.mark.anyio

OPENING = {"alice": 1_000, "bob": 500}


@pytest.fixture
def no_server_errors(caplog: pytest.LogCaptureFixture) -> Iterator[None]:
    """Fail the test if the service logged an unhandled error (what a 500 leaves behind)."""
    with caplog.at_level(logging.ERROR, logger="services.bank"):
        yield
    errors = [r for r in caplog.records if r.name.startswith("services.bank")]
    assert not errors, [r.getMessage() for r in errors]


@pytest.fixture
async def bank(make_bank: BankFactory) -> Bank:
    """A bank whose money routes also take anonymous requests (``require_keys=False``): the raw
    requests of this module are about the bytes, and reach the parsing without a key. (The
    parsing runs after the credential check, the same with one or without.)"""
    return await make_bank(require_keys=False)


@pytest.fixture
async def books(bank: Bank, no_server_errors: None) -> AsyncIterator[dict[str, Any]]:
    """Open the accounts; after the test, assert that the books are exactly as opened."""
    for account_id, balance in OPENING.items():
        await bank.open_account(account_id, balance)
    before = await bank.audit()
    yield before
    assert await bank.audit() == before
    for account_id, balance in OPENING.items():
        assert await bank.balance(account_id) == balance


def _port(bank: Bank) -> int:
    port = bank.server.port
    assert port is not None
    return port


def _assert_json_error(response: RawResponse | None, status: int, code: str) -> str:
    assert response is not None, "the server closed the connection without answering"
    body = response.json()
    assert response.status == status, body
    assert set(body) == {"error", "detail"}, body
    assert body["error"] == code, body
    detail: str = body["detail"]
    assert "Traceback" not in detail
    return detail


# --- huge and deeply nested JSON ------------------------------------------------------------


async def test_huge_string_id_is_refused_with_a_short_detail(
    bank: Bank, books: dict[str, Any]
) -> None:
    huge = "a" * 60_000
    status, body = await bank.call("POST", "/accounts", {"id": huge, "balance": 1})
    assert status == 422
    assert body["error"] == "validation_error"
    # The hostile value is shortened in the message, not echoed back whole.
    assert "(60000 characters)" in body["detail"]
    assert len(body["detail"]) < 400


async def test_huge_padding_field_is_refused(bank: Bank, books: dict[str, Any]) -> None:
    status, body = await bank.call(
        "POST", "/accounts/alice/deposit", {"amount": 5, "pad": "x" * 60_000}
    )
    assert (status, body["error"]) == (422, "validation_error")
    assert "unexpected field 'pad'" in body["detail"]


@pytest.mark.parametrize(
    ("raw", "status", "match"),
    [
        # Beyond Python's int-from-string digit limit (4300 digits).
        (b'{"amount": 1' + b"0" * 5_000 + b"}", 400, "not valid JSON"),
        # Within the limit but far out of range.
        (b'{"amount": 1' + b"0" * 4_000 + b"}", 422, "between 1 and"),
        (b'{"amount": 1e400}', 422, "must be an integer"),
        (b'{"amount": -0}', 422, "between 1 and"),
        (b'{"amount": 1.0}', 422, "must be an integer"),
        (b'{"amount": 5e0}', 422, "must be an integer"),
    ],
)
async def test_huge_and_odd_numbers(
    bank: Bank, books: dict[str, Any], raw: bytes, status: int, match: str
) -> None:
    got, body = await bank.call("POST", "/accounts/alice/deposit", raw=raw)
    assert got == status, body
    assert match in body["detail"]


@pytest.mark.parametrize(
    "raw",
    [
        b"[" * 30_000 + b"]" * 30_000,
        b'{"a":' * 10_000 + b"1" + b"}" * 10_000,
        b'{"amount": ' + b"[" * 25_000 + b"]" * 25_000 + b"}",
        # Unterminated nesting: the parser must not recurse to death before seeing the end.
        b"[" * 65_000,
    ],
    ids=["arrays", "objects", "nested-value", "unterminated"],
)
async def test_deeply_nested_json_is_refused(bank: Bank, books: dict[str, Any], raw: bytes) -> None:
    assert len(raw) <= 64 * 1024
    status, body = await bank.call("POST", "/transfers", raw=raw)
    assert status in (400, 422), body
    assert body["error"] in ("invalid_json", "validation_error")


async def test_moderately_nested_value_is_a_shape_error(bank: Bank, books: dict[str, Any]) -> None:
    raw = b'{"amount": ' + b"[" * 500 + b"1" + b"]" * 500 + b"}"
    status, body = await bank.call("POST", "/accounts/alice/deposit", raw=raw)
    assert (status, body["detail"]) == (422, "field 'amount' must be an integer, got an array")


# --- duplicate keys ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "raw"),
    [
        ("/accounts/alice/deposit", b'{"amount": 5, "amount": 6}'),
        ("/accounts/alice/withdraw", b'{"amount": 1, "\\u0061mount": 2}'),
        ("/transfers", b'{"from": "bob", "to": "alice", "amount": 1, "from": "alice"}'),
        ("/accounts", b'{"id": "carol", "balance": 1, "id": "dave"}'),
        # Duplicates anywhere in the document, even where the bank does not look.
        ("/accounts/alice/deposit", b'{"amount": 5, "x": {"k": 1, "k": 2}}'),
    ],
)
async def test_duplicate_keys_are_refused(
    bank: Bank, books: dict[str, Any], path: str, raw: bytes
) -> None:
    status, body = await bank.call("POST", path, raw=raw)
    assert (status, body["error"]) == (400, "invalid_json")
    assert "more than once" in body["detail"]
    assert (await bank.audit())["accounts"] == len(OPENING)


# --- encodings ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "raw",
    [
        b'{"amount": 5, "note": "caf\xe9"}',  # latin-1
        '{"amount": 5}'.encode("utf-16"),  # with its BOM
        '{"amount": 5}'.encode("utf-16-le"),
        b'\xef\xbb\xbf{"amount": 5}',  # UTF-8 BOM
        b'{"amount": 5, "n": "\xc0\xaf"}',  # overlong '/'
        b'{"amount": 5, "n": "\xed\xa0\x80"}',  # an encoded surrogate
        b'{"amount": 5, "n": "\xf8\x88\x80\x80\x80"}',  # 5-byte form
        b"\xff\xfe\xfd",
        b'{"amount": 5}\x00',
    ],
    ids=["latin1", "utf16", "utf16le", "utf8-bom", "overlong", "surrogate", "5byte", "junk", "nul"],
)
async def test_non_utf8_bodies_are_400(bank: Bank, books: dict[str, Any], raw: bytes) -> None:
    status, body = await bank.call("POST", "/accounts/alice/deposit", raw=raw)
    assert (status, body["error"]) == (400, "invalid_json"), body


@pytest.mark.parametrize(
    "account_id", ["\\ud800", "al\\u0000ice", "\\u0430lice", "alice\\u200b", "\\uff41lice"]
)
async def test_escaped_oddities_in_ids_are_422(
    bank: Bank, books: dict[str, Any], account_id: str
) -> None:
    raw = b'{"id": "' + account_id.encode() + b'", "balance": 1}'
    status, body = await bank.call("POST", "/accounts", raw=raw)
    assert (status, body["error"]) == (422, "validation_error")
    raw = b'{"from": "alice", "to": "' + account_id.encode() + b'", "amount": 1}'
    status, body = await bank.call("POST", "/transfers", raw=raw)
    assert (status, body["error"]) == (422, "validation_error")


async def test_declared_charset_does_not_change_decoding(bank: Bank, books: dict[str, Any]) -> None:
    status, body = await bank.call(
        "POST",
        "/accounts/alice/deposit",
        raw='{"amount": 5, "n": "é"}'.encode("latin-1"),
        headers={"Content-Type": "application/json; charset=latin-1"},
    )
    assert (status, body["error"]) == (400, "invalid_json")


# --- Content-Length lies and slow bodies (raw sockets) ----------------------------------------

DEPOSIT = b'{"amount": 7}'


async def test_content_length_over_the_cap_is_refused_before_reading(
    bank: Bank, books: dict[str, Any]
) -> None:
    # Only 13 bytes follow; the 413 must not wait for the other billion.
    data = request_bytes("POST", "/accounts/alice/deposit", DEPOSIT, content_length=10**9)
    _assert_json_error(await exchange(_port(bank), data), 413, "body_too_large")


async def test_content_length_shorter_than_the_body(bank: Bank, books: dict[str, Any]) -> None:
    # The server takes 5 bytes as the body; the rest is garbage where a request line should be.
    data = request_bytes("POST", "/accounts/alice/deposit", DEPOSIT, content_length=5)
    async with await anyio.connect_tcp("127.0.0.1", _port(bank)) as stream:
        await stream.send(data)
        buffer = bytearray()
        responses: list[RawResponse] = []
        while (response := await read_response(stream, buffer)) is not None:
            responses.append(response)
    assert responses, "no answer at all"
    assert all(400 <= r.status < 500 for r in responses), [(r.status, r.body) for r in responses]


@pytest.mark.parametrize(
    "headers",
    [
        {"Content-Length": "abc"},
        {"Content-Length": "-5"},
        {"Content-Length": "+13"},
        {"Content-Length": "0x0d"},
        {"Content-Length": "13, 13"},
        {"Content-Length": "99999999999999999999999999"},
        {"Transfer-Encoding": "chunked", "Content-Length": "13"},
        {"Transfer-Encoding": "gzip, chunked"},
        {"X-Big": "a" * 100_000},
    ],
)
async def test_malformed_framing_is_a_400_before_any_route(
    bank: Bank, books: dict[str, Any], headers: dict[str, str]
) -> None:
    data = request_bytes("POST", "/accounts/alice/deposit", DEPOSIT, content_length=None)
    head, _, body = data.partition(b"\r\n\r\n")
    extra = b"".join(f"\r\n{k}: {v}".encode() for k, v in headers.items())
    async with await anyio.connect_tcp("127.0.0.1", _port(bank)) as stream:
        await stream.send(head + extra + b"\r\n\r\n" + body)
        buffer = bytearray()
        response = await read_response(stream, buffer)
        assert response is not None
        assert 400 <= response.status < 500
        assert b"Traceback" not in response.body
        # The framing is lost, so the server hangs up rather than guess where the next request
        # starts (the smuggling a lenient parser would allow).
        assert await read_response(stream, buffer) is None


async def test_duplicate_content_length_headers_are_refused(
    bank: Bank, books: dict[str, Any]
) -> None:
    data = request_bytes(
        "POST", "/accounts/alice/deposit", DEPOSIT, headers={"Content-Length": "13"}
    )
    response = await exchange(_port(bank), data)
    assert response is not None
    assert response.status == 400


@pytest.fixture(params=[True, False], ids=["cancel", "no-cancel"])
async def slow_port(
    request: pytest.FixtureRequest, no_server_errors: None
) -> AsyncIterator[tuple[int, Bank]]:
    """A bank on a real socket whose body timeout is short (0.2 s), with aiohttp's
    ``handler_cancellation`` on and off."""
    store = MemoryStore()
    config = BankConfig(
        lock_mode="account",
        body_timeout=0.2,
        require_keys=False,
        admin_token=ADMIN_TOKEN,
        max_opening_balance=MAX_AMOUNT,
    )
    app = create_app(config, store=store)
    server = _Server(app, handler_cancellation=request.param)
    async with TestClient(server) as client:
        bank = Bank(client=client, store=store, app=app, server=server)
        for account_id, balance in OPENING.items():
            await bank.open_account(account_id, balance)
        before = await bank.audit()
        assert server.port is not None
        yield server.port, bank
        assert await bank.audit() == before


async def test_content_length_longer_than_the_body_times_out(
    slow_port: tuple[int, Bank],
) -> None:
    port, _ = slow_port
    # 13 bytes sent, 50 promised, and the connection left open: the server stops waiting.
    data = request_bytes("POST", "/accounts/alice/deposit", DEPOSIT, content_length=50)
    async with await anyio.connect_tcp("127.0.0.1", port) as stream:
        await stream.send(data)
        buffer = bytearray()
        response = await read_response(stream, buffer)
        detail = _assert_json_error(response, 408, "body_timeout")
        assert detail == "the request body did not arrive within 0.2 seconds"
        assert response is not None
        assert response.headers["connection"].lower() == "close"


async def test_slow_drip_body_times_out(slow_port: tuple[int, Bank]) -> None:
    port, _ = slow_port
    body = b'{"amount": 7' + b" " * 5_000 + b"}"
    head = request_bytes("POST", "/accounts/alice/deposit", b"", content_length=len(body))
    async with await anyio.connect_tcp("127.0.0.1", port) as stream:
        await stream.send(head)

        async def drip() -> None:
            # One byte every 10 ms would take 50 s; the server gives up after 0.2 s and the
            # drip stops when the connection breaks.
            try:
                for position in range(len(body)):
                    await stream.send(body[position : position + 1])
                    await anyio.sleep(0.01)
            except (anyio.BrokenResourceError, anyio.ClosedResourceError, OSError):
                return

        async with anyio.create_task_group() as tg:
            tg.start_soon(drip)
            response = await read_response(stream, bytearray())
            tg.cancel_scope.cancel()
    _assert_json_error(response, 408, "body_timeout")


async def test_client_hangs_up_mid_body(slow_port: tuple[int, Bank]) -> None:
    port, bank = slow_port
    data = request_bytes("POST", "/accounts/alice/deposit", DEPOSIT, content_length=50)
    # No answer can reach a client that hung up; what matters is that nothing was applied,
    # nothing was logged as a bug, and the server keeps serving.
    await exchange(port, data, half_close=True)
    assert await bank.balance("alice") == OPENING["alice"]


# --- ids with path tricks ---------------------------------------------------------------------

PATH_TRICKS = [
    "/accounts/..",
    "/accounts/.",
    "/accounts/%2E%2E",
    "/accounts/a%2Fb",
    "/accounts/alice%2F..%2Fbob",
    "/accounts/alice%2f",
    "/accounts/%00",
    "/accounts/alice%00",
    "/accounts/%ZZ",
    "/accounts/%FF",
    "/accounts/%C0%AE%C0%AE",
    "/accounts/%D0%B0lice",  # Cyrillic a
    "/accounts/%EF%BD%81lice",  # fullwidth a
    "/accounts/alice%E2%80%8B",  # zero-width space
    "/accounts/alice%0A",
    "/accounts/alice%20",
    "/accounts/ALICE",
    "/accounts/alice%3Bbob",
    "/accounts/" + "a" * 65,
    "/accounts/" + "%41" * 2_500,  # 2,500 letters once decoded; the request line stays legal
]


@pytest.mark.parametrize("path", PATH_TRICKS)
@pytest.mark.parametrize("operation", ["get", "deposit", "withdraw"])
async def test_path_tricks_name_no_account(
    bank: Bank, books: dict[str, Any], path: str, operation: str
) -> None:
    if operation == "get":
        data = request_bytes("GET", path)
    else:
        data = request_bytes("POST", f"{path}/{operation}", DEPOSIT)
    response = await exchange(_port(bank), data)
    assert response is not None
    body = response.json()
    assert response.status == 404, body
    assert body["error"] in ("account_not_found", "not_found")
    assert len(body["detail"]) < 300


@pytest.mark.parametrize(
    "path",
    [
        "/accounts/../audit",
        "/accounts/alice/../bob/deposit",
        "/accounts/alice/deposit/..",
        "//accounts/alice/deposit",
        "/accounts//alice/deposit",
        "/accounts/alice/deposit/",
        "/accounts/alice/deposit%2F",
        "/accounts/alice/deposit;x=1",
        "/admin/../accounts/alice/deposit",
    ],
)
async def test_dot_segments_do_not_reach_other_routes(
    bank: Bank, books: dict[str, Any], path: str
) -> None:
    response = await exchange(_port(bank), request_bytes("POST", path, DEPOSIT))
    assert response is not None
    body = response.json()
    assert response.status in (404, 405), body


@pytest.mark.parametrize("target", [b"/accounts/\xd0\xb0lice", b"/accounts/\xff", b"*"])
async def test_raw_non_ascii_request_targets_are_refused(
    bank: Bank, books: dict[str, Any], target: bytes
) -> None:
    response = await exchange(_port(bank), request_bytes("GET", target))
    assert response is not None
    assert response.status == 400
    assert b"Traceback" not in response.body


async def test_absolute_form_target_reaches_only_its_path(
    bank: Bank, books: dict[str, Any]
) -> None:
    # An absolute-form target names another host; the bank serves its path and nothing else.
    response = await exchange(
        _port(bank), request_bytes("GET", "http://evil.example/accounts/alice")
    )
    assert response is not None
    assert (response.status, response.json()) == (200, {"id": "alice", "balance": 1_000})


@pytest.mark.parametrize("seconds", [0, -1, float("inf"), float("nan")])
def test_body_timeout_must_be_positive_and_finite(seconds: float) -> None:
    with pytest.raises(ValueError, match="body_timeout must be a finite number of seconds > 0"):
        BankConfig(body_timeout=seconds)


async def test_serve_body_timeout_flag() -> None:
    from yarl import URL

    from services.bank.tools.showdown import start_server

    with start_server(["--body-timeout", "0.3"]) as server:
        port = URL(server.url).port
        assert port is not None
        data = request_bytes("POST", "/accounts", b'{"id": "a"', content_length=40)
        async with await anyio.connect_tcp("127.0.0.1", port) as stream:
            await stream.send(data)
            response = await read_response(stream, bytearray())
    detail = _assert_json_error(response, 408, "body_timeout")
    assert detail == "the request body did not arrive within 0.3 seconds"


@pytest.mark.parametrize("value", ["0", "-1", "inf", "soon"])
def test_serve_rejects_a_bad_body_timeout(value: str, capsys: pytest.CaptureFixture[str]) -> None:
    from services.bank.__main__ import build_parser

    with pytest.raises(SystemExit) as exit_info:
        build_parser().parse_args(["serve", "--body-timeout", value])
    assert exit_info.value.code == 2
    assert "--body-timeout" in capsys.readouterr().err


# --- content encodings and chunked framing ----------------------------------------------------


def _raw_post(body: bytes, *headers: str, path: str = "/accounts/alice/deposit") -> bytes:
    head = [f"POST {path} HTTP/1.1", "Host: 127.0.0.1", "Content-Type: application/json"]
    return ("\r\n".join([*head, *headers]) + "\r\n\r\n").encode() + body


@pytest.mark.parametrize(
    ("encoding", "body"),
    [
        ("gzip", b'{"amount": 7}'),
        ("gzip", b"\x1f\x8b\x08\x00" + b"\x00" * 20),
        ("deflate", b"\x78\x9c" + b"\x00" * 10),
        ("deflate", b"not deflate at all"),
    ],
)
async def test_undecodable_content_encoding_is_400(
    bank: Bank, books: dict[str, Any], encoding: str, body: bytes
) -> None:
    data = _raw_post(body, f"Content-Encoding: {encoding}", f"Content-Length: {len(body)}")
    detail = _assert_json_error(await exchange(_port(bank), data), 400, "invalid_json")
    assert detail == "the request body could not be read: its Content-Encoding does not decode"


async def test_gzip_body_is_accepted(bank: Bank, books: dict[str, Any]) -> None:
    body = gzip.compress(b'{"amount": 7}')
    data = _raw_post(body, "Content-Encoding: gzip", f"Content-Length: {len(body)}")
    response = await exchange(_port(bank), data)
    assert response is not None
    assert (response.status, response.json()) == (200, {"id": "alice", "balance": 1_007})
    # Undo it, so the books fixture finds them as opened.
    status, _ = await bank.call("POST", "/accounts/alice/withdraw", {"amount": 7})
    assert status == 200


async def test_gzip_bomb_is_413(bank: Bank, books: dict[str, Any]) -> None:
    # 50 MB of spaces inside a JSON document, under the 64 KiB cap once compressed: the cap
    # counts the decompressed bytes, so the server stops reading at 64 KiB.
    bomb = gzip.compress(b'{"amount": 7' + b" " * 50_000_000 + b"}", compresslevel=9)
    assert len(bomb) < 64 * 1024
    data = _raw_post(bomb, "Content-Encoding: gzip", f"Content-Length: {len(bomb)}")
    _assert_json_error(await exchange(_port(bank), data), 413, "body_too_large")


@pytest.mark.parametrize(
    "chunks",
    [
        b'5\r\n{"amo\r\nzz\r\n',  # a chunk size that is not hex
        b'5\r\n{"amount": 7}\r\n0\r\n\r\n',  # a chunk longer than it says
        b"-1\r\nx\r\n0\r\n\r\n",
    ],
    ids=["bad-size", "overlong", "negative"],
)
async def test_broken_chunked_framing_is_a_4xx(
    bank: Bank, books: dict[str, Any], chunks: bytes
) -> None:
    response = await exchange(_port(bank), _raw_post(chunks, "Transfer-Encoding: chunked"))
    assert response is not None
    assert 400 <= response.status < 500, response
    assert b"Traceback" not in response.body

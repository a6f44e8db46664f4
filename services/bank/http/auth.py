"""Who is asking: the admin credential, client API keys, account ownership and the Host check.

How a client gets in:

1. the operator starts the server with an admin token (``BANK_ADMIN_TOKEN`` or
   ``--admin-token-file``, never the command line);
2. the admin registers a client with ``POST /clients {"id": "alice"}`` and gets its API key in
   the answer, once: the store keeps only its SHA-256 digest (a key is 256 random bits, so a
   fast digest is as good as a slow one, and lookups stay one index probe);
3. the client sends ``Authorization: Bearer <key>`` with every request.

What each credential may do (``require_keys=True``, the default of a served bank):

- anyone: ``GET /health``, ``GET /openapi.json``;
- a client: open accounts (it owns them), deposit into any account, read, withdraw from and
  transfer out of the accounts it owns; an account it does not own is 403 ``forbidden``;
- the admin: ``POST /clients``, ``GET /audit``, ``/admin/lock``, and reading any account (it
  moves no money: it owns no account).

``require_keys=False`` (tests and the in-process race lessons of
``services.bank.tools.race_scenarios``; the CLI has no switch for it) lets anonymous requests do
what a client may, with no ownership checks; the admin routes still need the admin token.

The Host header of every request must name the configured host (or ``allowed_hosts``): a page
on ``evil.example`` whose name is re-pointed at 127.0.0.1 (DNS rebinding) reaches the port but
sends ``Host: evil.example``, and is refused with 421 ``misdirected_request``.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import secrets
from collections.abc import Awaitable
from dataclasses import dataclass, field
from typing import Final

from aiohttp import web

from ..domain import describe_id
from ..run.config import BankConfig
from .errors import Forbidden, MisdirectedRequest, Unauthenticated
from .keys import CONFIG, STORE

__all__ = [
    "KEY_PREFIX",
    "Principal",
    "allowed_host",
    "authenticate",
    "hash_key",
    "new_key",
    "principal",
    "require_admin",
    "require_client",
    "require_owner",
]

#: Every API key starts with this, so a leaked one is easy to recognise (and to scan for).
KEY_PREFIX: Final = "bank_"
#: Digests of keys and owners of accounts remembered per process: neither ever changes, so a
#: remembered answer is always right; the bound only caps memory.
_CACHE_SIZE: Final = 65_536

_LOOPBACK_NAMES: Final = frozenset({"localhost", "127.0.0.1", "::1"})
_ANY_ADDRESS: Final = frozenset({"", "0.0.0.0", "::"})


@dataclass(frozen=True, slots=True)
class Principal:
    """The credential a request carried.

    Attributes:
        client: The client id, for a valid API key; ``None`` otherwise.
        admin: Whether it was the admin token.
    """

    client: str | None = None
    admin: bool = False


_ANONYMOUS: Final = Principal()
_ADMIN: Final = Principal(admin=True)
_PRINCIPAL: Final = web.RequestKey("bank_principal", Principal)


@dataclass(slots=True)
class _State:
    """What the checks of one app remember, behind one app key (one lookup per request).

    Attributes:
        clients: Bearer token as sent -> its client's principal: a hit costs one dict lookup,
            where a digest and a store lookup would cost microseconds on every request.
        owners: Account id -> its owner.
        hosts: ``Host`` headers already found to name this server, as sent.
        admin_token: The admin token as the comparison takes it, encoded once; empty when none
            is configured (no offered credential, never empty, matches it).
    """

    admin_token: bytes
    clients: dict[str, Principal] = field(default_factory=dict)
    owners: dict[str, str | None] = field(default_factory=dict)
    hosts: set[str] = field(default_factory=set)


_STATE: Final = web.AppKey("bank_auth", _State)
#: How many distinct accepted ``Host`` headers are remembered (a client may vary the port or
#: the case; the cache only has to hold the few real ones).
_HOST_CACHE_SIZE: Final = 64


def new_key() -> str:
    """Return a fresh API key: the prefix and 256 random bits."""
    return KEY_PREFIX + secrets.token_urlsafe(32)


def hash_key(key: str) -> str:
    """Return the digest under which a store keeps ``key``."""
    return hashlib.sha256(key.encode("utf-8", "surrogateescape")).hexdigest()


def allowed_host(host_header: str, host: str, allowed: tuple[str, ...]) -> bool:
    """Whether a ``Host`` header names this server.

    Args:
        host_header: The header as sent (``name``, ``name:port``, ``[v6]:port``).
        host: The configured bind address. A wildcard (``0.0.0.0``, ``::``) accepts any name
            unless ``allowed`` lists some; a loopback address also accepts ``localhost``,
            ``127.0.0.1`` and ``::1``.
        allowed: Further names accepted (``BankConfig.allowed_hosts``).
    """
    name = host_header.strip().lower()
    if name.startswith("["):
        name = name[1:].partition("]")[0]
    elif name.count(":") == 1:
        name = name.partition(":")[0]
    names = {entry.lower() for entry in allowed}
    if host in _ANY_ADDRESS:
        return not names or name in names
    names.add(host.lower())
    if _is_loopback(host):
        names |= _LOOPBACK_NAMES
    return name in names


def _is_loopback(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def setup_auth(app: web.Application) -> None:
    """Prepare ``app`` for :func:`authenticate` (which the app's middleware calls)."""
    token = app[CONFIG].admin_token
    app[_STATE] = _State(b"" if token is None else token.encode("utf-8", "surrogateescape"))


def authenticate(request: web.Request) -> Awaitable[None] | None:
    """Check the Host header, then resolve the bearer credential, before anything else runs.

    A request without ``Authorization`` is anonymous (each route decides whether that is
    enough); one with a token that is neither the admin's nor a client's is 401 at once.

    Returns:
        ``None`` once the request's :func:`principal` is settled, or, for a token not seen
        before, what settles it from the store, to await.

    Raises:
        MisdirectedRequest: The Host header names another server.
        Unauthenticated: A malformed ``Authorization`` header.
    """
    state = request.app[_STATE]
    headers = request.headers
    host = headers.get("Host")
    if host is not None and host not in state.hosts:
        _check_host(request.app[CONFIG], state.hosts, host)
    header = headers.get("Authorization")
    if header is None:
        request[_PRINCIPAL] = _ANONYMOUS
        return None
    scheme, _, given = header.partition(" ")
    token = given.strip()
    if scheme.lower() != "bearer" or not token:
        raise Unauthenticated("send the credential as 'Authorization: Bearer <key>'")
    # A client's key seen before: one dict lookup. The cache holds only tokens whose digest
    # names a client, so a hit says nothing of the admin token, which every other credential
    # is compared with below, in constant time.
    who = state.clients.get(token)
    if who is not None:
        request[_PRINCIPAL] = who
        return None
    # Surrogateescape keeps any header byte comparable; compared in constant time.
    if hmac.compare_digest(token.encode("utf-8", "surrogateescape"), state.admin_token):
        request[_PRINCIPAL] = _ADMIN
        return None
    return _client_from_store(request, token)


def _check_host(config: BankConfig, hosts: set[str], host: str) -> None:
    if not allowed_host(host, config.host, config.allowed_hosts):
        raise MisdirectedRequest(
            f"this server answers to {config.host!r}, not to Host {describe_id(host)}; "
            "add the name to the server's allowed hosts if it is really this server"
        )
    if len(hosts) < _HOST_CACHE_SIZE:
        hosts.add(host)


async def _client_from_store(request: web.Request, token: str) -> None:
    app = request.app
    client = await app[STORE].client_for(hash_key(token))
    if client is None:
        # Not remembered: a stranger's guesses must not fill the cache.
        raise Unauthenticated("the bearer token is neither a client's API key nor the admin's")
    cache = app[_STATE].clients
    if len(cache) >= _CACHE_SIZE:
        cache.clear()
    who = cache[token] = Principal(client=client)
    request[_PRINCIPAL] = who


def principal(request: web.Request) -> Principal:
    """The credential of a request that passed :func:`authenticate`."""
    return request[_PRINCIPAL]


def require_admin(request: web.Request) -> None:
    """Refuse a request that did not carry the admin token.

    Raises:
        Unauthenticated: No admin token is configured, or the request sent none.
        Forbidden: The request carried a client's key.
    """
    if request.app[CONFIG].admin_token is None:
        raise Unauthenticated(
            "admin endpoints are disabled: start the server with the admin token in "
            "$BANK_ADMIN_TOKEN or a file named by --admin-token-file"
        )
    who = request[_PRINCIPAL]
    if who.admin:
        return
    if who.client is not None:
        raise Forbidden(f"client {describe_id(who.client)} is not the admin")
    raise Unauthenticated("send the admin token as 'Authorization: Bearer <token>'")


def require_client(request: web.Request) -> str | None:
    """Return the client a request acts for (``None``: anonymous, allowed only with
    ``require_keys=False``).

    Raises:
        Unauthenticated: No API key, and the server requires one.
        Forbidden: The admin token, which acts for no client.
    """
    who = request[_PRINCIPAL]
    if who.client is not None:
        return who.client
    if who.admin:
        raise Forbidden("the admin token acts for no client: send a client's API key")
    if request.app[CONFIG].require_keys:
        raise Unauthenticated(
            "send a client API key as 'Authorization: Bearer <key>' (an admin creates one "
            "with POST /clients)"
        )
    return None


async def _owner_of(request: web.Request, account_id: str) -> str | None:
    cache = request.app[_STATE].owners
    try:
        return cache[account_id]
    except KeyError:
        pass
    # Raises AccountNotFound for a missing account, which is not remembered.
    owner = await request.app[STORE].owner(account_id)
    if len(cache) >= _CACHE_SIZE:
        cache.clear()
    cache[account_id] = owner
    return owner


async def require_owner(request: web.Request, account_id: str, *, admin_reads: bool) -> None:
    """Refuse a request that may not act on ``account_id`` as its owner.

    Args:
        request: The request.
        account_id: The account debited (or read).
        admin_reads: Whether the admin token is enough (reading, not moving money).

    Raises:
        Unauthenticated: No credential, and the server requires one.
        Forbidden: A credential that does not own the account.
        AccountNotFound: No such account.
    """
    config = request.app[CONFIG]
    who = request[_PRINCIPAL]
    if not config.require_keys and who.client is None and not who.admin:
        return
    if who.admin and admin_reads:
        # Still a 404 for a missing account, as for its owner.
        await _owner_of(request, account_id)
        return
    client = require_client(request)
    owner = await _owner_of(request, account_id)
    if not config.require_keys and owner is None:
        return
    if owner != client:
        raise Forbidden(
            f"account {describe_id(account_id)} belongs to another client; only its owner "
            "may read it or move money out of it"
        )

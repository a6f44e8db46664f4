"""The PostgreSQL store (asyncpg pool): the bank shared by several worker processes.

Tables (created on :meth:`PostgresStore.open`, idempotently, under an advisory lock so that
workers starting together do not trip over each other): ``bank_accounts`` (id, balance),
``bank_journal`` (the append-only list of acknowledged operations, from which ``audit()``
computes ``expected``) and ``bank_idempotency`` (recorded responses of ``Idempotency-Key``
requests). Every acknowledged operation writes its balances and its journal row in one
statement or one transaction.

Two ways to run an operation:

- ``atomic=False`` (lock modes ``none``, ``global``, ``account``): read the balance with one
  statement, await (a real round trip, plus ``io_delay``), then write the balance computed from
  what was read with another statement. Nothing in the database stops two processes (or two
  requests of one process when the lock mode is ``none``) from reading the same balance: the lost
  update is real here, exactly as in the memory store.
- ``atomic=True`` (lock mode ``db``): the database does the isolating.
  Deposits and withdrawals are one conditional ``UPDATE ... SET balance = balance - $2 WHERE id =
  $1 AND balance >= $2`` whose journal row is inserted by the same statement (a data-modifying
  ``WITH``): the row lock the UPDATE takes and PostgreSQL's re-check of the ``WHERE`` clause on
  the latest row version make a stale read impossible. Transfers touch two rows, so they call
  ``bank_transfer()``, a PL/pgSQL function that locks both rows with ``SELECT ... ORDER BY id FOR
  UPDATE`` (always in id order, so two opposite transfers cannot deadlock), checks, writes both
  balances and the journal row. Why row locks rather than two conditional UPDATEs for transfers:
  two UPDATEs lock their rows in the order they run, so A->B and B->A would deadlock (PostgreSQL
  breaks the tie after ``deadlock_timeout``, a second of stalls); a single statement updating
  both rows locks them in scan order, which depends on the plan. Why a function: one round trip
  per transfer, and the locks are held only while PostgreSQL itself runs the five statements, not
  across network round trips to Python, which is what keeps throughput near ``pgbench``'s.

Deadlocks, serialization failures and lock timeouts are retried a bounded number of times (an
aborted statement leaves nothing behind), then answered with 503 ``retry_later``.

Every database failure becomes a domain error here, telling the truth about the money:

- ``RetryLater`` (503 ``retry_later``) when nothing was applied: no connection could be had
  (server away, ``TooManyConnectionsError``, pool exhausted past ``request_timeout``), a read
  failed, the server answered a write with an ERROR (``statement_timeout``'s
  ``QueryCanceledError``, ``lock_timeout``'s ``LockNotAvailableError`` after the retries), or a
  statement of a keyed request's transaction failed before its COMMIT was sent;
- ``OutcomeUnknown`` (503 ``outcome_unknown``) when the connection died while a write was
  committing (a keyed request's COMMIT, or an unkeyed request's single autocommit statement)
  without the server saying it rolled back: the write may have committed. A keyed request's
  key row commits in the same transaction, so a retry with the key finds it. Every write
runs under :func:`services.bank.stores._sql.shielded`: a request cancelled while its statement is in
flight waits for the statement to finish, so it either applied completely or not at all.
"""

from __future__ import annotations

import zlib
from contextlib import AbstractAsyncContextManager, nullcontext
from typing import Final, cast
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import asyncpg
import asyncpg.exceptions
from asyncpg.pool import PoolConnectionProxy
from asyncpg.transaction import Transaction

from ..domain import (
    AccountExists,
    AccountNotFound,
    Audit,
    BalanceTooLarge,
    BankError,
    ClientExists,
    DeadlineExceeded,
    InsufficientFunds,
    JournalEntry,
    OutcomeUnknown,
    RetryLater,
    SameAccount,
    TooManyAccounts,
)
from ..ports import KeyTakenMeanwhile, RaceWindow, StoredResponse
from ._sql import (
    DEFAULT_ATTEMPTS,
    MAX_BALANCE,
    DatabaseClaim,
    DatabaseStore,
    audit_from_rows,
    check_balance,
    check_seconds,
    journal_from_rows,
    money_delta_sql,
    recorded_response,
    retrying,
    shielded,
)

__all__ = ["DEFAULT_POOL_SIZE", "PostgresStore", "check_postgres_url"]

Connection = asyncpg.Connection | PoolConnectionProxy

#: Errors after which PostgreSQL has rolled the statement back and trying again is right.
TRANSIENT: Final[tuple[type[BaseException], ...]] = (
    asyncpg.exceptions.SerializationError,
    asyncpg.exceptions.DeadlockDetectedError,
    asyncpg.exceptions.LockNotAvailableError,
)


def _is_transient(exc: BaseException) -> bool:
    return isinstance(exc, TRANSIENT)


#: What the driver raises when the database fails as a running service can (a dead or refused
#: connection, a pool that gave no connection in time, a server shutting down, aborted or timed
#: out statements, exhausted resources). Anything else (a missing table, bad SQL) is a bug or
#: a broken deployment: it stays a logged 500.
DATABASE_ERRORS: Final[tuple[type[BaseException], ...]] = (
    asyncpg.exceptions.PostgresConnectionError,  # class 08
    asyncpg.exceptions.TransactionRollbackError,  # class 40: deadlock, serialization
    asyncpg.exceptions.InsufficientResourcesError,  # class 53: too many connections, disk full
    asyncpg.exceptions.OperatorInterventionError,  # class 57: statement_timeout, shutdown
    asyncpg.exceptions.LockNotAvailableError,  # 55P03: lock_timeout
    asyncpg.exceptions.InterfaceError,  # the connection closed under the driver
    asyncpg.exceptions.InternalClientError,
    OSError,
    TimeoutError,
)


def _rolled_back(exc: BaseException) -> bool:
    """Whether the server answered with an ERROR, which rolls the statement (or the
    transaction, at COMMIT) back: the write left nothing behind.

    A FATAL or PANIC (the backend terminated or crashed) or a connection lost without an
    answer says nothing about whether a COMMIT being processed went through.
    """
    if not isinstance(exc, asyncpg.exceptions.PostgresError) or isinstance(
        exc, asyncpg.exceptions.PostgresConnectionError
    ):
        return False
    severity = getattr(exc, "severity_en", None) or getattr(exc, "severity", None)
    return severity == "ERROR"


def _failure(exc: BaseException, *, committing: bool, keyed: bool) -> BankError:
    """The domain error that tells the client the truth about ``exc``.

    Args:
        exc: One of :data:`DATABASE_ERRORS`.
        committing: Whether a write was committing when it happened (a COMMIT, or an
            autocommit statement, had been sent).
        keyed: Whether the request has an ``Idempotency-Key``.
    """
    name = type(exc).__name__
    if committing and not _rolled_back(exc):
        return OutcomeUnknown(name, keyed=keyed)
    if isinstance(exc, TimeoutError):
        return DeadlineExceeded(
            f"no database connection was free in time ({name}); nothing was applied, retry later"
        )
    if isinstance(exc, asyncpg.exceptions.QueryCanceledError):
        what = "the statement took longer than statement_timeout"
    elif isinstance(exc, asyncpg.exceptions.LockNotAvailableError):
        what = "a row stayed locked longer than lock_timeout"
    elif isinstance(exc, asyncpg.exceptions.TooManyConnectionsError):
        what = "the server refused another connection"
    elif _rolled_back(exc):
        what = "the database aborted the operation"
    else:
        what = "the database is unavailable right now"
    return RetryLater(f"{what} ({name}); nothing was applied, retry later")


SCHEMA: Final = f"""
CREATE TABLE IF NOT EXISTS bank_accounts (
    id text PRIMARY KEY,
    balance bigint NOT NULL
);
CREATE TABLE IF NOT EXISTS bank_journal (
    seq bigserial PRIMARY KEY,
    kind text NOT NULL CHECK (kind IN ('open', 'deposit', 'withdraw', 'transfer')),
    account text NOT NULL,
    amount bigint NOT NULL,
    counterparty text
);
CREATE TABLE IF NOT EXISTS bank_idempotency (
    key text PRIMARY KEY,
    fingerprint text NOT NULL,
    status integer,
    body bytea,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE OR REPLACE FUNCTION bank_transfer(
    p_from text, p_to text, p_amount bigint,
    OUT status integer, OUT from_balance bigint, OUT to_balance bigint
) LANGUAGE plpgsql AS $fn$
DECLARE
    locked record;
BEGIN
    -- Both rows locked and read in id order: two transfers in opposite directions queue
    -- instead of deadlocking.
    FOR locked IN
        SELECT id, balance FROM bank_accounts WHERE id IN (p_from, p_to) ORDER BY id FOR UPDATE
    LOOP
        IF locked.id = p_from THEN
            from_balance := locked.balance;
        ELSE
            to_balance := locked.balance;
        END IF;
    END LOOP;
    IF from_balance IS NULL THEN status := 1; RETURN; END IF;
    IF to_balance IS NULL THEN status := 2; RETURN; END IF;
    IF from_balance < p_amount THEN status := 3; RETURN; END IF;
    IF to_balance > {MAX_BALANCE} - p_amount THEN status := 4; RETURN; END IF;
    UPDATE bank_accounts
        SET balance = balance + CASE WHEN id = p_from THEN -p_amount ELSE p_amount END
        WHERE id IN (p_from, p_to);
    INSERT INTO bank_journal (kind, account, amount, counterparty)
        VALUES ('transfer', p_from, p_amount, p_to);
    from_balance := from_balance - p_amount;
    to_balance := to_balance + p_amount;
    status := 0;
END
$fn$;
-- The non-atomic transfer's write: balances computed from an earlier read (a lost update if
-- another request wrote in between, which is what lock modes none to account are about), but
-- the two rows are still taken in id order, so concurrent writes never deadlock.
CREATE OR REPLACE FUNCTION bank_set_two(
    p_from text, p_from_balance bigint, p_to text, p_to_balance bigint, p_amount bigint
) RETURNS bigint LANGUAGE plpgsql AS $fn$
DECLARE
    seq bigint;
BEGIN
    PERFORM 1 FROM bank_accounts WHERE id IN (p_from, p_to) ORDER BY id FOR UPDATE;
    UPDATE bank_accounts
        SET balance = CASE WHEN id = p_from THEN p_from_balance ELSE p_to_balance END
        WHERE id IN (p_from, p_to);
    INSERT INTO bank_journal (kind, account, amount, counterparty)
        VALUES ('transfer', p_from, p_amount, p_to) RETURNING bank_journal.seq INTO seq;
    RETURN seq;
END
$fn$;
-- Added after the first release; run on every open, so an existing database is migrated.
ALTER TABLE bank_accounts ADD COLUMN IF NOT EXISTS owner text;
ALTER TABLE bank_idempotency ADD COLUMN IF NOT EXISTS client text;
ALTER TABLE bank_idempotency ADD COLUMN IF NOT EXISTS saved_at double precision;
CREATE INDEX IF NOT EXISTS bank_accounts_owner ON bank_accounts (owner);
CREATE INDEX IF NOT EXISTS bank_accounts_negative ON bank_accounts (id) WHERE balance < 0;
CREATE INDEX IF NOT EXISTS bank_idempotency_client ON bank_idempotency (client, saved_at);
CREATE TABLE IF NOT EXISTS bank_clients (
    id text PRIMARY KEY,
    key_hash text NOT NULL UNIQUE
);
CREATE OR REPLACE FUNCTION bank_open(
    p_id text, p_balance bigint, p_owner text, p_max integer
) RETURNS integer LANGUAGE plpgsql AS $fn$
BEGIN
    IF p_owner IS NOT NULL AND p_max IS NOT NULL THEN
        -- One open per owner at a time, so the count below cannot be passed by a concurrent
        -- open of the same owner (held to the end of the transaction).
        PERFORM pg_advisory_xact_lock(hashtext('asynclocks-bank-owner:' || p_owner));
        IF (SELECT count(*) FROM bank_accounts WHERE owner = p_owner) >= p_max THEN
            RETURN 2;
        END IF;
    END IF;
    INSERT INTO bank_accounts (id, balance, owner) VALUES (p_id, p_balance, p_owner)
        ON CONFLICT (id) DO NOTHING;
    IF NOT FOUND THEN RETURN 1; END IF;
    INSERT INTO bank_journal (kind, account, amount) VALUES ('open', p_id, p_balance);
    RETURN 0;
END
$fn$;
-- The audit's totals, kept by triggers with every change whatever statement makes it. One row
-- per server process (slot = its pid): a transaction only ever updates its own session's row,
-- so the totals add no lock contention and no deadlock between sessions; the audit sums them.
CREATE TABLE IF NOT EXISTS bank_totals (
    slot integer PRIMARY KEY,
    accounts bigint NOT NULL DEFAULT 0,
    total numeric NOT NULL DEFAULT 0,
    expected numeric NOT NULL DEFAULT 0
);
CREATE OR REPLACE FUNCTION bank_totals_open() RETURNS trigger LANGUAGE plpgsql AS $fn$
BEGIN
    INSERT INTO bank_totals AS t (slot, accounts, total) VALUES (pg_backend_pid(), 1, NEW.balance)
        ON CONFLICT (slot) DO UPDATE SET accounts = t.accounts + 1, total = t.total + NEW.balance;
    RETURN NULL;
END
$fn$;
CREATE OR REPLACE FUNCTION bank_totals_write() RETURNS trigger LANGUAGE plpgsql AS $fn$
BEGIN
    IF NEW.balance <> OLD.balance THEN
        INSERT INTO bank_totals AS t (slot, total)
            VALUES (pg_backend_pid(), NEW.balance - OLD.balance)
            ON CONFLICT (slot) DO UPDATE SET total = t.total + (NEW.balance - OLD.balance);
    END IF;
    RETURN NULL;
END
$fn$;
CREATE OR REPLACE FUNCTION bank_totals_journal() RETURNS trigger LANGUAGE plpgsql AS $fn$
DECLARE
    delta bigint := CASE NEW.kind WHEN 'withdraw' THEN -NEW.amount
        WHEN 'transfer' THEN 0 ELSE NEW.amount END;
BEGIN
    IF delta <> 0 THEN
        INSERT INTO bank_totals AS t (slot, expected) VALUES (pg_backend_pid(), delta)
            ON CONFLICT (slot) DO UPDATE SET expected = t.expected + delta;
    END IF;
    RETURN NULL;
END
$fn$;
-- CREATE TRIGGER locks the tables against writes until this transaction commits, so the scan
-- that seeds slot 0 of a database written before the totals existed counts every earlier
-- operation, and every later one fires a trigger: none is counted twice or missed.
CREATE OR REPLACE TRIGGER bank_totals_open AFTER INSERT ON bank_accounts
    FOR EACH ROW EXECUTE FUNCTION bank_totals_open();
CREATE OR REPLACE TRIGGER bank_totals_write AFTER UPDATE OF balance ON bank_accounts
    FOR EACH ROW EXECUTE FUNCTION bank_totals_write();
CREATE OR REPLACE TRIGGER bank_totals_journal AFTER INSERT ON bank_journal
    FOR EACH ROW EXECUTE FUNCTION bank_totals_journal();
INSERT INTO bank_totals (slot, accounts, total, expected)
SELECT 0,
    (SELECT count(*) FROM bank_accounts),
    (SELECT COALESCE(sum(balance), 0) FROM bank_accounts),
    (SELECT COALESCE(sum({money_delta_sql}), 0) FROM bank_journal)
WHERE NOT EXISTS (SELECT 1 FROM bank_totals);
-- Fold the rows of sessions that are gone into slot 0, so the audit sums few rows.
WITH gone AS (
    DELETE FROM bank_totals
    WHERE slot <> 0 AND slot NOT IN (SELECT pid FROM pg_stat_activity WHERE pid IS NOT NULL)
    RETURNING accounts, total, expected
)
UPDATE bank_totals SET
    accounts = accounts + (SELECT COALESCE(sum(accounts), 0) FROM gone),
    total = total + (SELECT COALESCE(sum(total), 0) FROM gone),
    expected = expected + (SELECT COALESCE(sum(expected), 0) FROM gone)
WHERE slot = 0;
"""

_OPEN: Final = "SELECT bank_open($1, $2, $3, $4)"
_BALANCE: Final = "SELECT balance FROM bank_accounts WHERE id = $1"
_BALANCES: Final = "SELECT id, balance FROM bank_accounts WHERE id = $1 OR id = $2"
# The non-atomic writes set the balance computed in Python from an earlier read: a lost update
# when another request wrote in between, which is the point of lock modes `none` to `account`.
_SET_ONE: Final = """
WITH written AS (UPDATE bank_accounts SET balance = $2 WHERE id = $1 RETURNING id)
INSERT INTO bank_journal (kind, account, amount) SELECT $3, id, $4 FROM written
RETURNING seq
"""
_SET_TWO: Final = "SELECT bank_set_two($1, $2, $3, $4, $5)"
_ATOMIC_DEPOSIT: Final = f"""
WITH credited AS (
    UPDATE bank_accounts SET balance = balance + $2
    WHERE id = $1 AND balance <= {MAX_BALANCE} - $2 RETURNING balance
), journaled AS (
    INSERT INTO bank_journal (kind, account, amount) SELECT 'deposit', $1, $2 FROM credited
)
SELECT balance FROM credited
"""
_ATOMIC_WITHDRAW: Final = """
WITH debited AS (
    UPDATE bank_accounts SET balance = balance - $2
    WHERE id = $1 AND balance >= $2 RETURNING balance
), journaled AS (
    INSERT INTO bank_journal (kind, account, amount) SELECT 'withdraw', $1, $2 FROM debited
)
SELECT balance FROM debited
"""
_ATOMIC_TRANSFER: Final = "SELECT status, from_balance, to_balance FROM bank_transfer($1, $2, $3)"
_TOTALS: Final = """
SELECT COALESCE(sum(accounts), 0)::bigint, COALESCE(sum(total), 0)::text,
    COALESCE(sum(expected), 0)::text
FROM bank_totals
"""
_AUDIT_SCAN: Final = f"""
SELECT
    (SELECT count(*) FROM bank_accounts) AS accounts,
    (SELECT COALESCE(sum(balance), 0)::text FROM bank_accounts) AS total,
    (SELECT COALESCE(sum({money_delta_sql}), 0)::text FROM bank_journal) AS expected
"""
_NEGATIVE: Final = "SELECT id, balance FROM bank_accounts WHERE balance < 0 ORDER BY id"
_JOURNAL: Final = """
SELECT seq, kind, account, amount, counterparty FROM bank_journal
WHERE seq > $1 ORDER BY seq LIMIT $2
"""
_CLAIM: Final = """
INSERT INTO bank_idempotency (key, fingerprint, client, saved_at) VALUES ($1, $2, $3, $4)
ON CONFLICT (key) DO NOTHING RETURNING true
"""
_RECORDED: Final = "SELECT fingerprint, status, body FROM bank_idempotency WHERE key = $1"
_RECORD: Final = "UPDATE bank_idempotency SET status = $2, body = $3, saved_at = $4 WHERE key = $1"
_HELD: Final = "SELECT count(*), min(saved_at) FROM bank_idempotency WHERE client = $1"
_EXPIRE: Final = "DELETE FROM bank_idempotency WHERE client = $1 AND saved_at < $2"


#: Connections per worker process unless the URL says ``?pool_size=N``.
DEFAULT_POOL_SIZE: Final = 16


def check_postgres_url(url: str) -> tuple[str, int]:
    """Split a store URL into what asyncpg gets and this process's pool size.

    ``pool_size`` is the one query parameter the store reads itself (``?pool_size=32``); every
    other one is passed to asyncpg, which sends unknown ones as server settings
    (``?search_path=myschema``).

    Raises:
        ValueError: Not ``postgresql://...`` / ``postgres://...``, not parseable, or a
            ``pool_size`` that is not an integer from 1 to 1000.
    """
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError as exc:
        raise ValueError(f"store URL {url!r} is not a valid PostgreSQL URL: {exc}") from None
    if parts.scheme not in ("postgresql", "postgres"):
        raise ValueError(f"store URL {url!r} must start with postgresql://")
    query = parse_qsl(parts.query, keep_blank_values=True)
    sizes = [value for key, value in query if key == "pool_size"]
    pool_size = DEFAULT_POOL_SIZE
    if sizes:
        if len(sizes) > 1 or not sizes[0].isdigit() or not 1 <= int(sizes[0]) <= 1000:
            raise ValueError(f"store URL {url!r}: pool_size must be one integer from 1 to 1000")
        pool_size = int(sizes[0])
        rest = urlencode([(key, value) for key, value in query if key != "pool_size"])
        url = urlunsplit(parts._replace(query=rest))
    return url, pool_size


async def _keep_session(conn: asyncpg.Connection) -> None:
    """The pool's reset hook: nothing to undo, so no reset query.

    asyncpg's default sends ``SELECT pg_advisory_unlock_all(); CLOSE ALL; UNLISTEN *; RESET ALL``
    on every release: a round trip per operation, for state this store never leaves behind (no
    LISTEN, cursors, session settings or session-level advisory locks). asyncpg still rolls back
    a transaction left open (a cancelled ``Idempotency-Key`` request) before calling this.
    """


class PostgresStore(DatabaseStore["_PostgresClaim"]):
    """Balances, journal and idempotency keys in PostgreSQL, shared by every worker process.

    Args:
        url: ``postgresql://user@host:port/database``; extra query parameters become server
            settings (``?search_path=myschema`` puts the tables in that schema).
        io_delay: Seconds awaited between the read and the write of a non-atomic operation, on
            top of the round trips themselves.
        race_window: Awaited instead of the delay, with the operation's kind (tests).
        pool_size: Connections of this process's pool (default: the URL's ``pool_size``, else
            16).
        attempts: Tries of an operation the database aborts before answering 503.
        lock_timeout: Seconds a statement waits for a row lock before PostgreSQL aborts it
            (``lock_timeout``; retried, then 503 ``retry_later``); ``None`` (the default) leaves
            it to ``statement_timeout``.
        statement_timeout: Seconds PostgreSQL lets one statement run (``statement_timeout``;
            503 ``retry_later``, the statement rolled back); ``None`` has no limit.
        acquire_timeout: Seconds a request waits for a pooled connection before it is answered
            503 ``deadline_exceeded`` with nothing applied; ``None`` waits as long as it takes.
        retry_budget: Seconds after which an aborted operation is no longer tried again, so
            retried lock timeouts cannot outlast the request's deadline; ``None`` has no limit.

    Raises:
        ValueError: A bad URL or setting.
    """

    _transient = staticmethod(_is_transient)

    def __init__(
        self,
        url: str,
        *,
        io_delay: float = 0.0,
        race_window: RaceWindow | None = None,
        pool_size: int | None = None,
        attempts: int = DEFAULT_ATTEMPTS,
        lock_timeout: float | None = None,
        statement_timeout: float | None = None,
        acquire_timeout: float | None = None,
        retry_budget: float | None = None,
    ) -> None:
        self._url, url_pool_size = check_postgres_url(url)
        super().__init__(io_delay, race_window, attempts, retry_budget=retry_budget)
        if pool_size is None:
            pool_size = url_pool_size
        if isinstance(pool_size, bool) or not isinstance(pool_size, int) or pool_size < 1:
            raise ValueError(f"pool_size must be a positive integer, got {pool_size!r}")
        self._pool_size = pool_size
        self._lock_timeout = check_seconds("lock_timeout", lock_timeout)
        self._statement_timeout = check_seconds("statement_timeout", statement_timeout)
        self._acquire_timeout = check_seconds("acquire_timeout", acquire_timeout)
        self._pool: asyncpg.Pool | None = None

    @property
    def name(self) -> str:
        return "postgresql"

    async def open(self) -> None:
        settings = {"application_name": "asynclocks-bank"}
        for name, seconds in (
            ("lock_timeout", self._lock_timeout),
            ("statement_timeout", self._statement_timeout),
        ):
            if seconds is not None:
                settings[name] = f"{max(1, round(seconds * 1000))}ms"
        self._pool = await asyncpg.create_pool(
            self._url,
            min_size=1,
            max_size=self._pool_size,
            server_settings=settings,
            reset=_keep_session,
        )
        try:
            async with self._pool.acquire() as conn, conn.transaction():
                # Schema-wide advisory lock: CREATE ... IF NOT EXISTS and CREATE OR REPLACE are
                # not safe against themselves when several workers start at once.
                schema = await conn.fetchval("SELECT current_schema()")
                key = zlib.crc32(f"asynclocks-bank:{schema}".encode())
                await conn.execute("SELECT pg_advisory_xact_lock($1)", key)
                await conn.execute(SCHEMA)
        except BaseException:
            await self._pool.close()
            self._pool = None
            raise

    async def close(self) -> None:
        if self._pool is not None:
            pool, self._pool = self._pool, None
            await pool.close()

    def _bound(self) -> Connection | None:
        """The connection of the unit of work's open transaction, if there is one."""
        return None if self._work is None else self._work.connection

    def _connection(self) -> AbstractAsyncContextManager[Connection]:
        bound = self._bound()
        if bound is not None:
            return nullcontext(bound)
        if self._pool is None:
            raise RuntimeError("the PostgreSQL store is not open; call open() first")
        return cast(
            AbstractAsyncContextManager[Connection],
            self._pool.acquire(timeout=self._acquire_timeout),
        )

    async def _write(self, statement: str, *args: object) -> list[asyncpg.Record]:
        """Run one write statement to its end (shielded), retrying what the database aborted.

        Raises:
            RetryLater: Nothing was applied (see the module's docstring).
            OutcomeUnknown: The connection died while the statement was committing.
        """

        claim = self._work
        # Set once an autocommit statement is on its way: from then on it may commit.
        sent = False
        try:
            if claim is not None:
                # The operation joins the unit of work's transaction (begun now if this is its
                # first write) and commits with the recorded response in save().
                await claim.begin()

            async def attempt() -> list[asyncpg.Record]:
                nonlocal sent
                sent = False
                async with self._connection() as conn:
                    if claim is None:
                        sent = True
                        return await conn.fetch(statement, *args)
                    # Inside a unit of work's transaction: a savepoint lets one statement be
                    # retried without losing the transaction.
                    async with conn.transaction():
                        return await conn.fetch(statement, *args)

            return await self._retried(attempt)
        except DATABASE_ERRORS as exc:
            # Inside a unit of work nothing commits before save(): a failure here is rolled
            # back with the whole transaction.
            raise _failure(exc, committing=sent, keyed=claim is not None) from exc

    async def _read(self, account_id: str) -> int:
        try:
            async with self._connection() as conn:
                balance = await conn.fetchval(_BALANCE, account_id)
        except DATABASE_ERRORS as exc:
            raise _failure(exc, committing=False, keyed=False) from exc
        if balance is None:
            raise AccountNotFound(account_id)
        return cast(int, balance)

    async def _fetch_rows(self, statement: str, *args: object) -> list[asyncpg.Record]:
        """Run a read; a database failure is a ``RetryLater`` (a read changes nothing)."""
        try:
            async with self._connection() as conn:
                return await conn.fetch(statement, *args)
        except DATABASE_ERRORS as exc:
            raise _failure(exc, committing=False, keyed=False) from exc

    async def ping(self) -> None:
        try:
            async with self._connection() as conn:
                await conn.fetchval("SELECT 1", timeout=self._acquire_timeout)
        except DATABASE_ERRORS as exc:
            raise _failure(exc, committing=False, keyed=False) from exc

    async def create_client(self, client_id: str, key_hash: str) -> None:
        statement = "INSERT INTO bank_clients (id, key_hash) VALUES ($1, $2) ON CONFLICT DO NOTHING"
        rows = await self._write(statement + " RETURNING true", client_id, key_hash)
        if not rows:
            raise ClientExists(client_id)

    async def client_for(self, key_hash: str) -> str | None:
        rows = await self._fetch_rows("SELECT id FROM bank_clients WHERE key_hash = $1", key_hash)
        return cast(str, rows[0][0]) if rows else None

    async def owner(self, account_id: str) -> str | None:
        rows = await self._fetch_rows("SELECT owner FROM bank_accounts WHERE id = $1", account_id)
        if not rows:
            raise AccountNotFound(account_id)
        return cast(str | None, rows[0][0])

    async def create_account(
        self,
        account_id: str,
        balance: int,
        *,
        owner: str | None = None,
        max_accounts: int | None = None,
    ) -> int:
        rows = await self._write(_OPEN, account_id, balance, owner, max_accounts)
        status = rows[0][0]
        if status == 1:
            raise AccountExists(account_id)
        if status == 2:
            raise TooManyAccounts(cast(str, owner), cast(int, max_accounts))
        return balance

    async def balance(self, account_id: str) -> int:
        return await self._read(account_id)

    async def deposit(self, account_id: str, amount: int, *, atomic: bool = False) -> int:
        if atomic:
            rows = await self._write(_ATOMIC_DEPOSIT, account_id, amount)
            if rows:
                return cast(int, rows[0][0])
            await self._read(account_id)  # raises AccountNotFound when it is missing
            raise BalanceTooLarge(account_id, MAX_BALANCE)
        balance = await self._read(account_id)
        await self._window("deposit")
        new = check_balance(account_id, balance + amount)
        await self._write(_SET_ONE, account_id, new, "deposit", amount)
        return new

    async def withdraw(self, account_id: str, amount: int, *, atomic: bool = False) -> int:
        if atomic:
            rows = await self._write(_ATOMIC_WITHDRAW, account_id, amount)
            if rows:
                return cast(int, rows[0][0])
            raise InsufficientFunds(account_id, await self._read(account_id), amount)
        balance = await self._read(account_id)
        await self._window("withdraw")
        # Checked against the value read before the window, as in the memory store.
        if balance < amount:
            raise InsufficientFunds(account_id, balance, amount)
        await self._write(_SET_ONE, account_id, balance - amount, "withdraw", amount)
        return balance - amount

    async def transfer(
        self, source: str, target: str, amount: int, *, atomic: bool = False
    ) -> tuple[int, int]:
        if source == target:
            raise SameAccount(source)
        if atomic:
            rows = await self._write(_ATOMIC_TRANSFER, source, target, amount)
            status, source_balance, target_balance = rows[0]
            if status == 1:
                raise AccountNotFound(source)
            if status == 2:
                raise AccountNotFound(target)
            if status == 3:
                raise InsufficientFunds(source, source_balance, amount)
            if status == 4:
                raise BalanceTooLarge(target, MAX_BALANCE)
            return cast(int, source_balance), cast(int, target_balance)
        found = dict(cast(list[tuple[str, int]], await self._fetch_rows(_BALANCES, source, target)))
        if source not in found:
            raise AccountNotFound(source)
        if target not in found:
            raise AccountNotFound(target)
        await self._window("transfer")
        source_balance, target_balance = found[source], found[target]
        if source_balance < amount:
            raise InsufficientFunds(source, source_balance, amount)
        new_target = check_balance(target, target_balance + amount)
        new_source = source_balance - amount
        await self._write(_SET_TWO, source, new_source, target, new_target, amount)
        return new_source, new_target

    async def audit(self, *, full_scan: bool = False) -> Audit:
        try:
            async with self._connection() as conn:
                # One snapshot for every figure: a deposit committing between two of the
                # queries would otherwise show as drift.
                async with conn.transaction(isolation="repeatable_read", readonly=True):
                    figures = await conn.fetchrow(_AUDIT_SCAN if full_scan else _TOTALS)
                    negative = await conn.fetch(_NEGATIVE)
        except DATABASE_ERRORS as exc:
            raise _failure(exc, committing=False, keyed=False) from exc
        assert figures is not None  # a SELECT of scalar subqueries returns one row
        return audit_from_rows(figures, negative)

    async def journal(self, *, since: int = 0, limit: int | None = None) -> list[JournalEntry]:
        return journal_from_rows(await self._fetch_rows(_JOURNAL, since, limit))

    async def _keys_of(
        self, client: str, scoped: str, cutoff: float
    ) -> tuple[int, asyncpg.Record | None]:
        try:
            async with self._connection() as conn:
                held, oldest = cast(asyncpg.Record, await conn.fetchrow(_HELD, client))
            if oldest is not None and oldest < cutoff:

                async def expire() -> int:
                    async with self._connection() as conn:
                        status = await conn.execute(_EXPIRE, client, cutoff)
                    return int(status.rpartition(" ")[2])

                held -= await self._retried(expire)
            async with self._connection() as conn:
                return cast(int, held), await conn.fetchrow(_RECORDED, scoped)
        except DATABASE_ERRORS as exc:
            # Before the request's own work: at most expired records were deleted, which
            # changes no answer, so a failure here is "nothing applied".
            raise _failure(exc, committing=False, keyed=False) from exc


class _PostgresClaim(DatabaseClaim[PostgresStore]):
    """One ``Idempotency-Key`` request on the PostgreSQL store.

    The transaction only begins at the request's first write, after its lock mode's locks (so a
    request holding a pooled connection never waits for an account lock, and keyed requests
    cannot starve unkeyed ones of connections while they wait): its first statement inserts the
    key's row, on which a concurrent duplicate (in any worker) blocks until this transaction
    ends, then finds the recorded response and replays it. The request's statements run on the
    same connection, each in a savepoint so that a deadlock can be retried; ``save`` records the
    response and commits.
    """

    def __init__(self, store: PostgresStore, key: str, fingerprint: str) -> None:
        super().__init__(store, key, fingerprint)
        self._transaction: Transaction | None = None
        #: The connection of the open transaction; None until the first write.
        self.connection: PoolConnectionProxy | None = None

    async def begin(self) -> None:
        """Begin the claim's transaction by inserting the key's row, unless it is begun.

        Raises:
            KeyTakenMeanwhile: A duplicate committed first; its response is to be replayed.
            IdempotencyKeyReused: The key was taken meanwhile by a different request.
            RetryLater: The database kept aborting the insert.
        """
        if self.connection is not None:
            return
        store = self._store
        if store._pool is None:
            raise RuntimeError("the PostgreSQL store is not open; call open() first")
        try:
            conn = self.connection = await store._pool.acquire(timeout=store._acquire_timeout)
            transaction = self._transaction = conn.transaction()
            await transaction.start()
            claimed = await retrying(
                lambda: conn.fetchval(
                    _CLAIM, self._key, self._fingerprint, self.client, self.clock()
                ),
                attempts=store._attempts,
                transient=_is_transient,
                on_retry=store._count_retry,
                budget=store._retry_budget,
            )
            if not claimed:
                row = await conn.fetchrow(_RECORDED, self._key)
                raise KeyTakenMeanwhile(recorded_response(row, self._shown(), self._fingerprint))
        except DATABASE_ERRORS as exc:
            # Nothing is committed before save(): whatever failed, nothing was applied.
            raise _failure(exc, committing=False, keyed=True) from exc

    async def save(self, response: StoredResponse) -> None:
        # A refusal wrote nothing, so the transaction may not be begun yet.
        await self.begin()
        conn, transaction = self.connection, self._transaction
        assert conn is not None
        assert transaction is not None

        committing = False

        async def commit() -> None:
            nonlocal committing
            await conn.execute(_RECORD, self._key, response.status, response.body, self.clock())
            committing = True
            await transaction.commit()
            self.committed = True

        try:
            await shielded(commit)
        except DATABASE_ERRORS as exc:
            raise _failure(exc, committing=committing, keyed=True) from exc

    async def abandon(self) -> None:
        """End the claim: roll back what was not committed, give the connection back."""
        conn, transaction, self.connection = self.connection, self._transaction, None
        if conn is None:
            return
        pool = self._store._pool
        try:
            if not self.committed and transaction is not None:
                await shielded(transaction.rollback)
        except DATABASE_ERRORS:
            # The connection died with the transaction (which the server rolls back on its
            # own): the request's answer is already decided, so this must not replace it (it
            # used to, as a 500 "Transaction.rollback(): the underlying connection is closed").
            # The pool replaces a closed connection on release.
            pass
        finally:
            if pool is not None:
                await shielded(lambda: pool.release(conn))


PostgresStore.claim_type = _PostgresClaim

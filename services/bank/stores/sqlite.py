"""The SQLite store (aiosqlite, WAL): the bank in one file that survives a restart.

Tables, created on :meth:`SqliteStore.open` with ``CREATE ... IF NOT EXISTS``: ``bank_accounts``,
``bank_journal`` (acknowledged operations; ``audit()`` derives ``expected`` from it) and
``bank_idempotency`` (recorded ``Idempotency-Key`` responses). The file runs in WAL mode, so
readers never wait for the writer, with ``synchronous=FULL`` (a committed operation survives a
power cut) and a busy timeout for the other processes that may share the file.

One connection per process, used by one request at a time: a transaction's statements are
never interleaved with another request's. Each operation's balances and journal row are written
in one ``BEGIN IMMEDIATE`` transaction, under :func:`services.bank.stores._sql.shielded` so a
cancelled request never leaves it half done.

- ``atomic=False`` (lock modes ``none``, ``global``, ``account``): the balance is read by one
  statement, the connection is released, the request awaits (``io_delay``), then it writes the
  balance computed from what it read in its own transaction. Requests interleave between the two,
  so the lost update is real without a lock.
- ``atomic=True`` (lock mode ``db``): read, check and write happen inside one ``BEGIN
  IMMEDIATE`` transaction, which holds SQLite's write lock for the whole file: other processes
  wait (``busy_timeout``), then retry a bounded number of times, then get 503 ``retry_later``.
  SQLite has no row locks; with one writer at a time the file lock is the coarse version of
  ``SELECT ... FOR UPDATE``.

With a single worker process, lock mode ``account`` is already enough on this store: every
request runs in that process, so its in-process locks see all of them. Its accounts are handed
over in arrival order (``ArrivalOrderAccountLock``), and the connection goes to the request that
arrived first (``ArrivalOrderLock``): together they serve requests in the order they arrived.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Awaitable, Callable, Iterable
from contextlib import AbstractAsyncContextManager, nullcontext
from pathlib import Path
from typing import Final, TypeVar, cast

import aiosqlite

from ..domain import (
    AccountExists,
    AccountNotFound,
    Audit,
    ClientExists,
    InsufficientFunds,
    JournalEntry,
    OperationKind,
    RetryLater,
    SameAccount,
    TooManyAccounts,
)
from ..locking import ArrivalOrderLock
from ..ports import KeyTakenMeanwhile, RaceWindow, StoredResponse
from ._sql import (
    DEFAULT_ATTEMPTS,
    DatabaseClaim,
    DatabaseStore,
    audit_from_rows,
    check_balance,
    journal_from_rows,
    money_delta_sql,
    recorded_response,
    retrying,
    shielded,
)

__all__ = ["SQLITE_PREFIX", "SqliteStore", "sqlite_path"]

T = TypeVar("T")

#: Store URLs naming a SQLite file start with this; the path follows (relative or absolute).
SQLITE_PREFIX: Final = "sqlite:///"

SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS bank_accounts (
    id TEXT PRIMARY KEY,
    balance INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS bank_journal (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    kind TEXT NOT NULL CHECK (kind IN ('open', 'deposit', 'withdraw', 'transfer')),
    account TEXT NOT NULL,
    amount INTEGER NOT NULL,
    counterparty TEXT
);
CREATE TABLE IF NOT EXISTS bank_idempotency (
    key TEXT PRIMARY KEY,
    fingerprint TEXT NOT NULL,
    status INTEGER NOT NULL,
    body BLOB NOT NULL,
    created_at TEXT NOT NULL DEFAULT CURRENT_TIMESTAMP
);
CREATE TABLE IF NOT EXISTS bank_clients (
    id TEXT PRIMARY KEY,
    key_hash TEXT NOT NULL UNIQUE
);
CREATE TABLE IF NOT EXISTS bank_totals (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    accounts INTEGER NOT NULL,
    total INTEGER NOT NULL,
    expected INTEGER NOT NULL
);
"""

#: Columns added after the first release, with their declarations: added to an existing file
#: when it is opened.
_ADDED_COLUMNS: Final = (
    ("bank_accounts", "owner", "TEXT"),
    ("bank_idempotency", "client", "TEXT"),
    ("bank_idempotency", "saved_at", "REAL"),
)

# Run after the columns exist, inside the migration's write transaction: the triggers keep the
# audit's totals with every change, whatever statement makes it, so a file written before
# they existed is counted once (by the scan that seeds the row) and never again.
_MIGRATION: Final = (
    "CREATE INDEX IF NOT EXISTS bank_accounts_owner ON bank_accounts (owner)",
    "CREATE INDEX IF NOT EXISTS bank_accounts_negative ON bank_accounts (id) WHERE balance < 0",
    "CREATE INDEX IF NOT EXISTS bank_idempotency_client ON bank_idempotency (client, saved_at)",
    """CREATE TRIGGER IF NOT EXISTS bank_totals_open AFTER INSERT ON bank_accounts BEGIN
    UPDATE bank_totals SET accounts = accounts + 1, total = total + NEW.balance;
END""",
    """CREATE TRIGGER IF NOT EXISTS bank_totals_write AFTER UPDATE OF balance ON bank_accounts
BEGIN
    UPDATE bank_totals SET total = total + NEW.balance - OLD.balance;
END""",
    """CREATE TRIGGER IF NOT EXISTS bank_totals_journal AFTER INSERT ON bank_journal BEGIN
    UPDATE bank_totals SET expected = expected + (
        CASE NEW.kind WHEN 'withdraw' THEN -NEW.amount WHEN 'transfer' THEN 0
        ELSE NEW.amount END
    );
END""",
    f"""INSERT INTO bank_totals (id, accounts, total, expected)
SELECT 1,
    (SELECT count(*) FROM bank_accounts),
    (SELECT COALESCE(sum(balance), 0) FROM bank_accounts),
    (SELECT COALESCE(sum({money_delta_sql}), 0) FROM bank_journal)
WHERE NOT EXISTS (SELECT 1 FROM bank_totals)""",
)

_BALANCE: Final = "SELECT balance FROM bank_accounts WHERE id = ?"
_SET: Final = "UPDATE bank_accounts SET balance = ? WHERE id = ?"
_JOURNAL_ONE: Final = "INSERT INTO bank_journal (kind, account, amount) VALUES (?, ?, ?)"
_JOURNAL_TRANSFER: Final = (
    "INSERT INTO bank_journal (kind, account, amount, counterparty) VALUES ('transfer', ?, ?, ?)"
)
_TOTALS: Final = "SELECT accounts, total, expected FROM bank_totals"
_AUDIT_SCAN: Final = f"""
SELECT
    (SELECT count(*) FROM bank_accounts),
    (SELECT COALESCE(sum(balance), 0) FROM bank_accounts),
    (SELECT COALESCE(sum({money_delta_sql}), 0) FROM bank_journal)
"""
_NEGATIVE: Final = "SELECT id, balance FROM bank_accounts WHERE balance < 0 ORDER BY id"
_JOURNAL: Final = """
SELECT seq, kind, account, amount, counterparty FROM bank_journal
WHERE seq > ? ORDER BY seq LIMIT ?
"""

Connection = aiosqlite.Connection


def sqlite_path(url: str) -> str:
    """Return the file path of a ``sqlite:///PATH`` store URL.

    ``sqlite:///bank.db`` is relative to the working directory, ``sqlite:////var/bank.db``
    absolute.

    Raises:
        ValueError: Not a ``sqlite:///`` URL, no path, or an in-memory database (which another
            process, or a restart, could never see).
    """
    if not url.startswith(SQLITE_PREFIX):
        raise ValueError(f"store URL {url!r} must start with {SQLITE_PREFIX}")
    path = url[len(SQLITE_PREFIX) :]
    if not path or path.endswith("/"):
        raise ValueError(f"store URL {url!r} names no file; expected {SQLITE_PREFIX}PATH")
    if path == ":memory:" or path.startswith("file:"):
        raise ValueError(
            f"store URL {url!r} is not a file; use 'memory' for a store that lives in the process"
        )
    return path


#: SQLite's primary result codes for a database that fails as a running service can (locked
#: past the retries, I/O error, full disk, file gone or read-only, out of memory). Others (no
#: such table, bad SQL) are a bug or a broken deployment: they stay a logged 500.
_OPERATIONAL: Final = {
    sqlite3.SQLITE_BUSY: "SQLITE_BUSY",
    sqlite3.SQLITE_LOCKED: "SQLITE_LOCKED",
    sqlite3.SQLITE_NOMEM: "SQLITE_NOMEM",
    sqlite3.SQLITE_READONLY: "SQLITE_READONLY",
    sqlite3.SQLITE_IOERR: "SQLITE_IOERR",
    sqlite3.SQLITE_FULL: "SQLITE_FULL",
    sqlite3.SQLITE_CANTOPEN: "SQLITE_CANTOPEN",
    sqlite3.SQLITE_PROTOCOL: "SQLITE_PROTOCOL",
}


def _operational(exc: sqlite3.Error) -> bool:
    code = getattr(exc, "sqlite_errorcode", None)
    return code is not None and (code & 0xFF) in _OPERATIONAL


def _failure(exc: sqlite3.Error) -> RetryLater:
    """``exc`` as the domain's refusal: nothing was applied (see :class:`SqliteStore`)."""
    name = _OPERATIONAL.get(getattr(exc, "sqlite_errorcode", 0) & 0xFF, type(exc).__name__)
    return RetryLater(f"the database failed ({name}); nothing was applied, retry later")


def _is_transient(exc: BaseException) -> bool:
    # SQLITE_BUSY / SQLITE_LOCKED: another process holds the write lock past busy_timeout.
    return isinstance(exc, sqlite3.OperationalError) and getattr(exc, "sqlite_errorcode", None) in (
        sqlite3.SQLITE_BUSY,
        sqlite3.SQLITE_LOCKED,
    )


class SqliteStore(DatabaseStore["_SqliteClaim"]):
    """Balances, journal and idempotency keys in one SQLite file.

    Args:
        url: ``sqlite:///PATH``; the file and its folder's WAL files are created as needed.
        io_delay: Seconds awaited between the read and the write of a non-atomic operation.
        race_window: Awaited instead of the delay, with the operation's kind (tests).
        busy_timeout: Seconds a transaction waits for another process's write lock before
            that attempt fails.
        attempts: Tries of an operation that found the file locked before answering 503.
        retry_budget: Seconds after which an operation that found the file locked is not
            tried again; ``None`` has no limit but ``attempts``.

    A failing database (the file locked past the retries, an I/O error, a full disk, a file
    gone or read-only) is answered 503 ``retry_later``: SQLite's COMMIT is all or nothing in
    the process that runs it, so a failed one applied nothing. A broken deployment (a missing
    table) stays a logged 500.

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
        busy_timeout: float = 5.0,
        attempts: int = DEFAULT_ATTEMPTS,
        retry_budget: float | None = None,
    ) -> None:
        self._path = sqlite_path(url)
        super().__init__(io_delay, race_window, attempts, retry_budget=retry_budget)
        if not busy_timeout >= 0:
            raise ValueError(f"busy_timeout must be >= 0 seconds, got {busy_timeout}")
        self._busy_ms = round(busy_timeout * 1000)
        self._conn: Connection | None = None
        # One request uses the connection at a time, so no two transactions interleave on it;
        # the earliest-arrived first, or lock mode `account` starves the busiest accounts.
        self._lock = ArrivalOrderLock()

    @property
    def name(self) -> str:
        return "sqlite"

    @property
    def path(self) -> Path:
        """The database file."""
        return Path(self._path)

    async def open(self) -> None:
        conn = await aiosqlite.connect(self._path, isolation_level=None)
        try:
            await conn.execute(f"PRAGMA busy_timeout = {self._busy_ms}")
            await conn.execute("PRAGMA journal_mode = WAL")
            await conn.execute("PRAGMA synchronous = FULL")
            await conn.executescript(SCHEMA)
            await _migrate(conn)
        except BaseException:
            await conn.close()
            raise
        self._conn = conn

    async def close(self) -> None:
        if self._conn is not None:
            conn, self._conn = self._conn, None
            await conn.close()

    def _connection(self) -> Connection:
        if self._conn is None:
            raise RuntimeError("the SQLite store is not open; call open() first")
        return self._conn

    def _bound(self) -> bool:
        """Whether this request's claim transaction is open: it holds the connection."""
        return self._work is not None and self._work.active

    def _access(self) -> AbstractAsyncContextManager[object]:
        return nullcontext() if self._bound() else self._lock

    async def _fetch(self, sql: str, params: Iterable[object]) -> list[sqlite3.Row]:
        try:
            async with self._access():
                rows = await self._connection().execute_fetchall(sql, tuple(params))
        except sqlite3.Error as exc:
            if not _operational(exc):
                raise
            raise _failure(exc) from exc
        return cast(list[sqlite3.Row], list(rows))

    async def ping(self) -> None:
        await self._fetch("SELECT 1", ())

    async def _transaction(self, body: Callable[[Connection], Awaitable[T]]) -> T:
        """Run ``body`` in one write transaction, to its end (shielded), retrying a busy file.

        Within a unit of work the body joins its transaction instead.
        """
        try:
            return await self._transaction_of(body)
        except sqlite3.Error as exc:
            if not _operational(exc):
                raise
            raise _failure(exc) from exc

    async def _transaction_of(self, body: Callable[[Connection], Awaitable[T]]) -> T:
        conn = self._connection()
        claim = self._work
        if claim is not None:
            # The operation joins the unit of work's transaction (opened now if this is its
            # first write) and commits with the recorded response in save().
            await claim.begin()
            return await shielded(lambda: body(conn))

        async def attempt() -> T:
            async with self._lock:
                await conn.execute("BEGIN IMMEDIATE")
                try:
                    result = await body(conn)
                    await conn.execute("COMMIT")
                except BaseException:
                    await conn.execute("ROLLBACK")
                    raise
                return result

        return await self._retried(attempt)

    async def _read(self, account_id: str) -> int:
        rows = await self._fetch(_BALANCE, (account_id,))
        if not rows:
            raise AccountNotFound(account_id)
        return cast(int, rows[0][0])

    @staticmethod
    async def _read_in(conn: Connection, account_id: str) -> int:
        rows = list(await conn.execute_fetchall(_BALANCE, (account_id,)))
        if not rows:
            raise AccountNotFound(account_id)
        return cast(int, rows[0][0])

    async def create_client(self, client_id: str, key_hash: str) -> None:
        async def create(conn: Connection) -> None:
            try:
                await conn.execute(
                    "INSERT INTO bank_clients (id, key_hash) VALUES (?, ?)", (client_id, key_hash)
                )
            except sqlite3.IntegrityError:
                raise ClientExists(client_id) from None

        await self._transaction(create)

    async def client_for(self, key_hash: str) -> str | None:
        rows = await self._fetch("SELECT id FROM bank_clients WHERE key_hash = ?", (key_hash,))
        return cast(str, rows[0][0]) if rows else None

    async def owner(self, account_id: str) -> str | None:
        rows = await self._fetch("SELECT owner FROM bank_accounts WHERE id = ?", (account_id,))
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
        async def create(conn: Connection) -> int:
            if owner is not None and max_accounts is not None:
                # Inside the write transaction: no other writer can open one meanwhile.
                rows = list(
                    await conn.execute_fetchall(
                        "SELECT count(*) FROM bank_accounts WHERE owner = ?", (owner,)
                    )
                )
                if rows[0][0] >= max_accounts:
                    raise TooManyAccounts(owner, max_accounts)
            try:
                await conn.execute(
                    "INSERT INTO bank_accounts (id, balance, owner) VALUES (?, ?, ?)",
                    (account_id, balance, owner),
                )
            except sqlite3.IntegrityError:
                raise AccountExists(account_id) from None
            await conn.execute(_JOURNAL_ONE, ("open", account_id, balance))
            return balance

        return await self._transaction(create)

    async def balance(self, account_id: str) -> int:
        return await self._read(account_id)

    async def deposit(self, account_id: str, amount: int, *, atomic: bool = False) -> int:
        async def write(conn: Connection, balance: int) -> int:
            new = check_balance(account_id, balance + amount)
            await conn.execute(_SET, (new, account_id))
            await conn.execute(_JOURNAL_ONE, ("deposit", account_id, amount))
            return new

        return await self._read_then_write(account_id, "deposit", write, atomic)

    async def withdraw(self, account_id: str, amount: int, *, atomic: bool = False) -> int:
        async def write(conn: Connection, balance: int) -> int:
            # Checked against the balance read: stale under lock mode `none`, as intended.
            if balance < amount:
                raise InsufficientFunds(account_id, balance, amount)
            await conn.execute(_SET, (balance - amount, account_id))
            await conn.execute(_JOURNAL_ONE, ("withdraw", account_id, amount))
            return balance - amount

        return await self._read_then_write(account_id, "withdraw", write, atomic)

    async def _read_then_write(
        self,
        account_id: str,
        kind: OperationKind,
        write: Callable[[Connection, int], Awaitable[int]],
        atomic: bool,
    ) -> int:
        """Read ``account_id``'s balance and hand it to ``write`` in a write transaction: the
        read inside that transaction when ``atomic``, else before it, across the race window.
        """
        if atomic:

            async def atomically(conn: Connection) -> int:
                return await write(conn, await self._read_in(conn, account_id))

            return await self._transaction(atomically)
        balance = await self._read(account_id)
        await self._window(kind)
        return await self._transaction(lambda conn: write(conn, balance))

    async def transfer(
        self, source: str, target: str, amount: int, *, atomic: bool = False
    ) -> tuple[int, int]:
        if source == target:
            raise SameAccount(source)

        async def write(conn: Connection, balances: tuple[int, int]) -> tuple[int, int]:
            source_balance, target_balance = balances
            if source_balance < amount:
                raise InsufficientFunds(source, source_balance, amount)
            new_target = check_balance(target, target_balance + amount)
            new_source = source_balance - amount
            await conn.execute(_SET, (new_source, source))
            await conn.execute(_SET, (new_target, target))
            await conn.execute(_JOURNAL_TRANSFER, (source, amount, target))
            return new_source, new_target

        if atomic:

            async def atomically(conn: Connection) -> tuple[int, int]:
                balances = (
                    await self._read_in(conn, source),
                    await self._read_in(conn, target),
                )
                return await write(conn, balances)

            return await self._transaction(atomically)
        balances = (await self._read(source), await self._read(target))
        await self._window("transfer")
        return await self._transaction(lambda conn: write(conn, balances))

    async def audit(self, *, full_scan: bool = False) -> Audit:
        conn = self._connection()
        async with self._access():
            # One read transaction: one WAL snapshot for every figure, even while other
            # processes write.
            await conn.execute("BEGIN")
            try:
                figures = list(await conn.execute_fetchall(_AUDIT_SCAN if full_scan else _TOTALS))[
                    0
                ]
                negative = list(await conn.execute_fetchall(_NEGATIVE))
            finally:
                await conn.execute("COMMIT")
        return audit_from_rows(figures, negative)

    async def journal(self, *, since: int = 0, limit: int | None = None) -> list[JournalEntry]:
        rows = await self._fetch(_JOURNAL, (since, -1 if limit is None else limit))
        return journal_from_rows(rows)

    async def _keys_of(
        self, client: str, scoped: str, cutoff: float
    ) -> tuple[int, sqlite3.Row | None]:
        held, oldest = (await self._fetch(_HELD, (client,)))[0]
        if oldest is not None and oldest < cutoff:
            conn = self._connection()

            async def expire() -> int:
                async with self._lock:
                    cursor = await conn.execute(_EXPIRE, (client, cutoff))
                    return cursor.rowcount

            try:
                held -= await self._retried(expire)
            except sqlite3.Error as exc:
                if not _operational(exc):
                    raise
                # Before the request's own work: at most expired records went.
                raise _failure(exc) from exc
        rows = await self._fetch(_RECORDED, (scoped,))
        return held, rows[0] if rows else None


async def _migrate(conn: Connection) -> None:
    """Bring a file written by an earlier version up to this schema, in one write transaction
    (another worker opening the same file meanwhile waits, then finds it done)."""
    await conn.execute("BEGIN IMMEDIATE")
    try:
        for table, column, declaration in _ADDED_COLUMNS:
            columns = {row[1] for row in await conn.execute_fetchall(f"PRAGMA table_info({table})")}
            if column not in columns:
                await conn.execute(f"ALTER TABLE {table} ADD COLUMN {column} {declaration}")
        for statement in _MIGRATION:
            await conn.execute(statement)
        await conn.execute("COMMIT")
    except BaseException:
        await conn.execute("ROLLBACK")
        raise


_RECORDED: Final = "SELECT fingerprint, status, body FROM bank_idempotency WHERE key = ?"
_HELD: Final = "SELECT count(*), min(saved_at) FROM bank_idempotency WHERE client = ?"
_EXPIRE: Final = "DELETE FROM bank_idempotency WHERE client = ? AND saved_at < ?"


class _SqliteClaim(DatabaseClaim[SqliteStore]):
    """One ``Idempotency-Key`` request on the SQLite store.

    The transaction (``BEGIN IMMEDIATE``, which takes the file's write lock) only begins at the
    request's first write, after its lock mode's locks: a request holding the connection never
    waits for an account lock, so keyed and unkeyed requests cannot deadlock. A duplicate that
    committed meanwhile (in this process or another) is found under that write lock, and its
    response is replayed instead.
    """

    def __init__(self, store: SqliteStore, key: str, fingerprint: str) -> None:
        super().__init__(store, key, fingerprint)
        #: The transaction is open and this request holds the connection lock.
        self.active = False

    async def begin(self) -> None:
        """Open the claim's transaction if it is not yet; raise if the key was taken meanwhile.

        Raises:
            KeyTakenMeanwhile: A duplicate committed first; its response is to be replayed.
            IdempotencyKeyReused: The key was taken meanwhile by a different request.
            RetryLater: The file stayed locked by another process.
        """
        if self.active:
            return
        store = self._store
        conn = store._connection()
        await store._lock.acquire()
        try:

            async def begin() -> None:
                await conn.execute("BEGIN IMMEDIATE")

            await retrying(
                begin,
                attempts=store._attempts,
                transient=_is_transient,
                on_retry=store._count_retry,
                budget=store._retry_budget,
            )
        except sqlite3.Error as exc:
            store._lock.release()
            if not _operational(exc):
                raise
            raise _failure(exc) from exc
        except BaseException:
            store._lock.release()
            raise
        self.active = True
        try:
            rows = list(await conn.execute_fetchall(_RECORDED, (self._key,)))
        except sqlite3.Error as exc:
            if not _operational(exc):
                raise
            raise _failure(exc) from exc
        if rows:
            raise KeyTakenMeanwhile(recorded_response(rows[0], self._shown(), self._fingerprint))

    async def save(self, response: StoredResponse) -> None:
        # A refusal wrote nothing, so the transaction may not be open yet.
        await self.begin()
        conn = self._store._connection()

        async def commit() -> None:
            await conn.execute(
                "INSERT INTO bank_idempotency (key, fingerprint, status, body, client, saved_at) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                (
                    self._key,
                    self._fingerprint,
                    response.status,
                    response.body,
                    self.client,
                    self.clock(),
                ),
            )
            await conn.execute("COMMIT")
            self.committed = True

        try:
            await shielded(commit)
        except sqlite3.Error as exc:
            if not _operational(exc):
                raise
            raise _failure(exc) from exc

    async def abandon(self) -> None:
        """End the claim: roll back what was not committed, give the connection back."""
        if not self.active:
            return
        self.active = False
        try:
            if not self.committed:
                conn = self._store._connection()
                await shielded(lambda: conn.execute("ROLLBACK"))
        except sqlite3.Error:
            # No transaction left to roll back (SQLite ended it with the error): the answer
            # is decided already and must not become a 500.
            pass
        finally:
            self._store._lock.release()


SqliteStore.claim_type = _SqliteClaim

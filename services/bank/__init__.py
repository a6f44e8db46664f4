"""The bank service: an aiohttp account API that loses money under lock mode ``none``.

Its tree is its architecture (inner layers first; an arrow is "imports"):

- ``domain``: amounts, account ids, journal entries, the books, every domain refusal; no I/O;
- ``ports``: the ``Store`` and idempotency protocols and the explicit ``UnitOfWork``;
- ``locking``: the lock modes (``none``, ``global``, ``account``, ``db``) and the drained switch;
- ``ledger``: deposit, withdraw, transfer: lock mode -> unit of work -> store;
- ``stores/``: memory, SQLite, PostgreSQL, their shared SQL helpers, the store-URL registry;
- ``http/``: the aiohttp app (``services.bank.http.create_app``), routes, middlewares,
  idempotency, the body models (pydantic) from which validation and OpenAPI derive, and the
  status of every refusal;
- ``run/``: ``BankConfig``, serving one process, ``serve --workers N``;
- ``tools/``: ``hammer`` (the load generator) and ``showdown`` (every mode, one table);
- ``__main__``: ``python -m services.bank serve|hammer|showdown`` (also the ``bank`` script).

``domain``, ``ports``, ``locking``, ``ledger``, ``stores`` and ``run.config`` never import
aiohttp (``tests/services/bank/test_layout.py`` holds that, and that no import circles).
"""

from .run.config import BankConfig as BankConfig

__all__ = ["BankConfig"]

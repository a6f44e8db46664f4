"""The bank service: an aiohttp account API that loses money under lock mode ``none``.

Modules: ``app`` (``create_app``), ``config`` (``BankConfig``), ``store`` (the ``Store`` protocol
and ``MemoryStore``), ``store_sqlite`` and ``store_postgres`` (the database stores),
``locking`` (lock modes, ``db`` included), ``idempotency`` (``Idempotency-Key``), ``validation``,
``errors``, ``openapi``, ``server`` (``serve``), ``workers`` (``serve --workers N``), ``hammer``
(the load generator), ``showdown`` (every mode, one table), and ``__main__`` (``python -m
services.bank serve|hammer|showdown``).
"""

from .config import BankConfig as BankConfig

__all__ = ["BankConfig"]

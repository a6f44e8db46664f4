"""The bank service: an aiohttp account API that loses money under lock mode ``none``.

Modules: ``app`` (``create_app``), ``config`` (``BankConfig``), ``store`` (the ``Store`` protocol
and ``MemoryStore``), ``locking`` (lock modes), ``validation``, ``errors``, ``openapi``,
``server`` (``serve``), ``hammer`` (the load generator), ``showdown`` (every mode, one table), and
``__main__`` (``python -m services.bank serve|hammer|showdown``).
"""

from .config import BankConfig as BankConfig

__all__ = ["BankConfig"]

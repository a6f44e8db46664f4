"""The typed keys under which the application keeps its parts, shared by the app factory, the
routes and the middlewares."""

from __future__ import annotations

from typing import Final

from aiohttp import web

from ..ledger import Ledger
from ..locking import Locking
from ..ports import Store
from ..run.config import BankConfig
from .health import StallWatch

__all__ = ["CONFIG", "LEDGER", "LOCKING", "OPENAPI", "STALLS", "STORE"]

CONFIG: Final = web.AppKey("bank_config", BankConfig)
LEDGER: Final = web.AppKey("bank_ledger", Ledger)
STORE: Final = web.AppKey[Store]("bank_store")
LOCKING: Final = web.AppKey("bank_locking", Locking)
#: The OpenAPI document, serialized once when the app is built.
OPENAPI: Final = web.AppKey("bank_openapi", bytes)
#: The recent 503 answers, which make ``/health`` say ``degraded``.
STALLS: Final = web.AppKey("bank_stalls", StallWatch)

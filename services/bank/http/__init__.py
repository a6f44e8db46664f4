"""The bank's HTTP API on aiohttp: ``create_app(config)`` and the parts it wires.

- ``app``: the factory, :func:`create_app`;
- ``routes``: the handlers, a few lines each: parse, call the ledger, answer;
- ``middlewares``: the one middleware (its layers in order, JSON refusals around them) and the
  body deadline;
- ``idempotency``: the ``Idempotency-Key`` header, whose claim is the request's unit of work;
- ``errors``: the request's own refusals, and the status of every refusal;
- ``models``: every body as a pydantic model, from which validation and the schemas derive;
- ``validation``: a request body as strict JSON;
- ``openapi``: the document served at ``/openapi.json`` (schemas generated from ``models``);
- ``keys``: the typed application keys.
"""

from .app import create_app as create_app
from .keys import CONFIG as CONFIG
from .keys import LEDGER as LEDGER
from .keys import LOCKING as LOCKING
from .keys import STORE as STORE

__all__ = ["CONFIG", "LEDGER", "LOCKING", "STORE", "create_app"]

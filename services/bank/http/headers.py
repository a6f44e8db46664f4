"""The bank's own HTTP header names and the Idempotency-Key's length limit.

In a module of their own, importing nothing, so that every part of the web layer spells them
the same way: the idempotency layer reads the key, the error middleware asks whether a request
carried one, the OpenAPI document describes them, and none of these has to import another for
a name (``middlewares`` imports ``idempotency`` to call it, never the other way round).
"""

from __future__ import annotations

from typing import Final

__all__ = ["HEADER", "MAX_KEY_LENGTH", "REPLAYED_HEADER"]

#: The request header carrying the key.
HEADER: Final = "Idempotency-Key"
#: Set to ``true`` on a response replayed from an earlier request.
REPLAYED_HEADER: Final = "Idempotent-Replayed"
#: Longest key accepted, in characters.
MAX_KEY_LENGTH: Final = 128

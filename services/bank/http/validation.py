"""Reading a request body as strict JSON, or refusing it precisely.

Order of checks for a body: content type (415), size (413, enforced by aiohttp's
``client_max_size`` while reading), UTF-8 and JSON syntax (400 ``invalid_json``, which also covers
duplicate keys, ``NaN``/``Infinity`` and nesting too deep to parse), then shape (422
``validation_error``, by the body's model: see ``services.bank.http.models``). Nothing is touched
before all of them pass, so a refused request changes nothing.

The decoding stays the standard library's, with hooks: the model libraries' own JSON parsers keep
the last of two duplicate keys silently, and the refusals quote its messages.
"""

from __future__ import annotations

import json

from aiohttp import web

from ..domain import describe_id
from .errors import InvalidJson, UnsupportedMediaType

__all__ = ["json_type", "parse_json", "read_json"]


def json_type(value: object) -> str:
    """How a refusal names the JSON type of ``value``."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a number with a fraction or exponent"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    return "an object"


def _reject_duplicates(pairs: list[tuple[str, object]]) -> dict[str, object]:
    result: dict[str, object] = {}
    for key, value in pairs:
        if key in result:
            raise InvalidJson(f"body has the key {describe_id(key)} more than once")
        result[key] = value
    return result


def _reject_constant(name: str) -> object:
    raise InvalidJson(f"body uses {name}, which is not JSON")


# Built once: json.loads with hooks would build a new decoder for every request.
_DECODER = json.JSONDecoder(object_pairs_hook=_reject_duplicates, parse_constant=_reject_constant)


def parse_json(body: bytes) -> object:
    """Decode a JSON body strictly.

    Raises:
        InvalidJson: Not UTF-8, not JSON, a duplicate key, NaN/Infinity, or nested too deep.
    """
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidJson(f"body is not valid UTF-8 (byte {exc.start})") from None
    try:
        return _DECODER.decode(text)
    except RecursionError:
        raise InvalidJson("body nests arrays or objects too deeply") from None
    except json.JSONDecodeError as exc:
        raise InvalidJson(f"body is not valid JSON: {exc.msg} at position {exc.pos}") from None
    except ValueError as exc:
        # e.g. an integer literal beyond Python's digit limit
        raise InvalidJson(f"body is not valid JSON: {exc}") from None


async def read_json(request: web.Request) -> object:
    """Check the content type, read the body (aiohttp enforces the size cap), and parse it.

    Raises:
        UnsupportedMediaType: The content type is not ``application/json``.
        InvalidJson: See :func:`parse_json`.
        aiohttp.web.HTTPRequestEntityTooLarge: The body is over the cap (the app's error
            middleware answers it as 413 ``body_too_large``).
    """
    if request.content_type != "application/json":
        raise UnsupportedMediaType(
            f"send the body as application/json, not {describe_id(request.content_type)}"
        )
    return parse_json(await request.read())

"""Turning a request body into checked values, or into a precise refusal.

Order of checks for a body: content type (415), size (413, enforced by aiohttp's
``client_max_size`` while reading), UTF-8 and JSON syntax (400 ``invalid_json``, which also covers
duplicate keys, ``NaN``/``Infinity`` and nesting too deep to parse), then shape (422
``validation_error``: not an object, missing field, unexpected field, wrong type, out of range).
Nothing is touched before all of them pass, so a refused request changes nothing.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Final, cast

from aiohttp import web

from ..domain import MAX_AMOUNT, describe_id, is_account_id
from .errors import InvalidJson, UnsupportedMediaType, ValidationFailed

__all__ = [
    "AMOUNT_BODY",
    "MODE_BODY",
    "NEW_ACCOUNT_BODY",
    "TRANSFER_BODY",
    "BodySpec",
    "Field",
    "IdField",
    "IntField",
    "ModeField",
    "check_body",
    "check_transfer",
    "parse_json",
    "read_json",
]


@dataclass(frozen=True, slots=True)
class IdField:
    """An account id."""

    def check(self, name: str, value: object) -> object:
        if not isinstance(value, str):
            raise ValidationFailed(f"field {name!r} must be a string, got {_json_type(value)}")
        if not is_account_id(value):
            raise ValidationFailed(
                f"field {name!r} must be 1 to 64 characters from A-Z, a-z, 0-9, '_' and '-', "
                f"got {describe_id(value)}"
            )
        return value


@dataclass(frozen=True, slots=True)
class IntField:
    """An integer (never a boolean or a float, even ``1.0``) within bounds."""

    minimum: int
    maximum: int

    def check(self, name: str, value: object) -> object:
        if not isinstance(value, int) or isinstance(value, bool):
            raise ValidationFailed(f"field {name!r} must be an integer, got {_json_type(value)}")
        if not self.minimum <= value <= self.maximum:
            raise ValidationFailed(
                f"field {name!r} must be between {self.minimum} and {self.maximum}, got {value}"
            )
        return value


@dataclass(frozen=True, slots=True)
class ModeField:
    """One of a set of strings known at request time (the lock modes)."""

    choices: Callable[[], Sequence[str]]

    def check(self, name: str, value: object) -> object:
        choices = self.choices()
        if not isinstance(value, str) or value not in choices:
            shown = describe_id(value) if isinstance(value, str) else _json_type(value)
            raise ValidationFailed(
                f"field {name!r} must be one of {', '.join(choices)}, got {shown}"
            )
        return value


Field = IdField | IntField | ModeField
BodySpec = dict[str, Field]

NEW_ACCOUNT_BODY: Final[BodySpec] = {"id": IdField(), "balance": IntField(0, MAX_AMOUNT)}
AMOUNT_BODY: Final[BodySpec] = {"amount": IntField(1, MAX_AMOUNT)}
TRANSFER_BODY: Final[BodySpec] = {
    "from": IdField(),
    "to": IdField(),
    "amount": IntField(1, MAX_AMOUNT),
}


def MODE_BODY(modes: Sequence[str]) -> BodySpec:  # noqa: N802 - reads like the constants above
    """The ``PUT /admin/lock`` body for a service offering ``modes``."""
    return {"mode": ModeField(lambda: modes)}


def _json_type(value: object) -> str:
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


def check_body(data: object, spec: BodySpec) -> dict[str, object]:
    """Check that ``data`` is an object with exactly the fields of ``spec``, each valid.

    Raises:
        ValidationFailed: The first problem found: not an object, then missing fields (in
            ``spec`` order), then unexpected fields (sorted), then each field's value.
    """
    if not isinstance(data, dict):
        raise ValidationFailed(f"body must be a JSON object, got {_json_type(data)}")
    missing = [name for name in spec if name not in data]
    if missing:
        raise ValidationFailed(f"missing field {missing[0]!r}; expected {_field_list(spec)}")
    extra = sorted(name for name in data if name not in spec)
    if extra:
        raise ValidationFailed(
            f"unexpected field {describe_id(extra[0])}; expected {_field_list(spec)}"
        )
    return {name: field.check(name, data[name]) for name, field in spec.items()}


def check_transfer(data: object) -> tuple[str, str, int]:
    """Check a ``POST /transfers`` body and return ``(from, to, amount)``.

    Raises:
        ValidationFailed: Wrong shape (a transfer to the same account is the ledger's refusal).
    """
    fields = check_body(data, TRANSFER_BODY)
    return cast(str, fields["from"]), cast(str, fields["to"]), cast(int, fields["amount"])


def _field_list(spec: BodySpec) -> str:
    return "exactly " + ", ".join(repr(name) for name in spec)

"""Every request and response body of the bank as a pydantic model: the one description from
which both the request validation and the schemas of ``/openapi.json`` derive.

A body is checked in a fixed order, so that a refusal names the first problem a reader would
look for: not an object, then a missing field (in the model's order), then an unexpected one
(sorted), then the first field whose value breaks its rule. The sentence of each refusal is built
from the field's own declaration (its type, bounds, allowed values, description), so the message,
the check and the published schema cannot disagree.

Why pydantic rather than msgspec: on the service benchmark (``benchmarks/service.py``'s deposit
route, both variants served side by side and measured in interleaved rounds) the two could not
be told apart: each validates a decoded body in about a microsecond of a request's hundreds.
Then fit decided: pydantic reports every failing field with its location and input, from which
the bank's sentences are rebuilt (msgspec stops at the first error, as prose to be parsed), and
its JSON schemas needed nothing written by hand.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import cache
from typing import Annotated, Any, Literal, TypeVar, get_args, get_origin

import annotated_types
from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError, create_model
from pydantic.fields import FieldInfo

from ..domain import ACCOUNT_ID_PATTERN, MAX_AMOUNT, describe_id
from .errors import ValidationFailed
from .validation import json_type

__all__ = [
    "Account",
    "AccountId",
    "AmountRequest",
    "Audit",
    "Body",
    "ClientKey",
    "Error",
    "NewAccount",
    "NewClient",
    "TransferRequest",
    "TransferResult",
    "HealthBody",
    "LockModeBody",
    "health_model",
    "lock_mode_model",
    "parse",
]

#: What an account id may be, as the refusal and the schema's description say it.
ACCOUNT_ID_RULE = "1 to 64 characters from A-Z, a-z, 0-9, '_' and '-'"

AccountId = Annotated[
    str,
    StringConstraints(pattern=ACCOUNT_ID_PATTERN, min_length=1, max_length=64),
    Field(description=ACCOUNT_ID_RULE),
]
_INT64 = {"format": "int64"}
OpeningBalance = Annotated[int, Field(ge=0, le=MAX_AMOUNT, json_schema_extra=_INT64)]
Amount = Annotated[int, Field(ge=1, le=MAX_AMOUNT, json_schema_extra=_INT64)]
Balance = Annotated[
    int, Field(description="cents; below 0 only by races", json_schema_extra=_INT64)
]


class Body(BaseModel):
    """A JSON object with exactly the declared fields, each of exactly its JSON type: strict, so
    ``1.0`` or ``true`` is no integer and ``"1"`` no number."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


# --- requests ---------------------------------------------------------------------------------


class NewAccount(Body):
    """The body of POST /accounts: the new account's id and opening balance in cents."""

    id: AccountId
    balance: OpeningBalance


class NewClient(Body):
    """The body of POST /clients: the new client's id (same rule as an account id)."""

    id: AccountId


class AmountRequest(Body):
    """The body of POST /accounts/{id}/deposit and /withdraw: cents to move."""

    amount: Amount


class TransferRequest(Body):
    """The body of POST /transfers: cents to move from one account to another."""

    source: AccountId = Field(alias="from")
    target: AccountId = Field(alias="to")
    amount: Amount


# --- responses --------------------------------------------------------------------------------


class Account(Body):
    """An account and its balance."""

    id: AccountId
    balance: Balance


class TransferResult(Body):
    """Both accounts of a transfer, after it."""

    source: Account = Field(alias="from")
    target: Account = Field(alias="to")


class ClientKey(Body):
    """A client just registered, with its API key (shown this once; only its digest is kept)."""

    id: AccountId
    key: Annotated[str, Field(description="send as 'Authorization: Bearer <key>'")]


class Audit(Body):
    """The books (GET /audit): the balances against the journal of acknowledged operations."""

    accounts: Annotated[int, Field(ge=0)]
    total: int
    expected: Annotated[int, Field(description="opening + deposits - withdrawals")]
    drift: Annotated[int, Field(description="total - expected; 0 when correct")]
    negative_accounts: list[Account]


class Error(Body):
    """Every refusal: a snake_case code and a sentence."""

    error: Annotated[str, StringConstraints(pattern="^[a-z][a-z0-9_]*$")]
    detail: str


class LockModeBody(Body):
    """A lock mode; :func:`lock_mode_model` narrows it to the modes of one service."""

    mode: str


class HealthBody(Body):
    """``GET /health``; :func:`health_model` narrows ``lock_mode`` to the modes of one service."""

    status: Literal["ok", "degraded"]
    lock_mode: str
    store: str
    reason: str | None = Field(
        default=None, description="why the service is degraded (only when it is)"
    )
    unsafe: str | None = Field(
        default=None,
        description="why this configuration loses money on purpose (lock mode none, or an "
        "in-process lock mode over several workers)",
    )


@cache
def lock_mode_model(modes: tuple[str, ...]) -> type[LockModeBody]:
    """The ``PUT /admin/lock`` body (and answer) of a service offering ``modes``."""
    return create_model("LockMode", __base__=LockModeBody, mode=(_one_of(modes), ...))


@cache
def health_model(modes: tuple[str, ...]) -> type[HealthBody]:
    """The ``GET /health`` answer of a service offering ``modes``."""
    return create_model("Health", __base__=HealthBody, lock_mode=(_one_of(modes), ...))


def _one_of(choices: tuple[str, ...]) -> Any:
    # The lock modes are known when the app is built (``db`` only on a database store).
    return Literal[choices]


# --- validation -------------------------------------------------------------------------------

M = TypeVar("M", bound=Body)


def parse(model: type[M], data: object) -> M:
    """Return ``data`` (a decoded JSON body) as ``model``.

    Raises:
        ValidationFailed: The first problem, in the order of the module's docstring.
    """
    if not isinstance(data, dict):
        raise ValidationFailed(f"body must be a JSON object, got {json_type(data)}")
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise ValidationFailed(_first_problem(model, data, exc)) from None


@cache
def _fields(model: type[Body]) -> tuple[tuple[str, FieldInfo], ...]:
    """The model's fields by their JSON names, in declaration order."""
    return tuple((info.alias or name, info) for name, info in model.model_fields.items())


def _first_problem(model: type[Body], data: dict[Any, Any], exc: ValidationError) -> str:
    fields = _fields(model)
    names = [name for name, _ in fields]
    expected = "exactly " + ", ".join(repr(name) for name in names)
    missing = [name for name in names if name not in data]
    if missing:
        return f"missing field {missing[0]!r}; expected {expected}"
    extra = sorted(str(key) for key in data if key not in names)
    if extra:
        return f"unexpected field {describe_id(extra[0])}; expected {expected}"
    failed = {error["loc"][0] for error in exc.errors(include_url=False) if error["loc"]}
    for name, info in fields:
        if name in failed:
            return f"field {name!r} must be {_rule(info, data[name])}"
    # Every failure pydantic reports is one of the cases above; keep its words if not.
    return str(exc)


def _rule(info: FieldInfo, value: object) -> str:
    """The rule ``value`` broke, as ``must be ...`` continues it, from the field's declaration."""
    annotation = info.annotation
    if get_origin(annotation) is Literal:
        shown = describe_id(value) if isinstance(value, str) else json_type(value)
        return f"one of {', '.join(map(str, get_args(annotation)))}, got {shown}"
    if annotation is int:
        if not isinstance(value, int) or isinstance(value, bool):
            return f"an integer, got {json_type(value)}"
        low = _bound(info, annotated_types.Ge)
        high = _bound(info, annotated_types.Le)
        return f"between {low} and {high}, got {value}"
    if not isinstance(value, str):
        return f"a string, got {json_type(value)}"
    return f"{info.description}, got {describe_id(value)}"


def _bound(info: FieldInfo, kind: type[annotated_types.Ge] | type[annotated_types.Le]) -> object:
    for constraint in info.metadata:
        if isinstance(constraint, kind):
            return constraint.ge if isinstance(constraint, annotated_types.Ge) else constraint.le
    raise TypeError(f"an integer field without both bounds: {info!r}")


def request_models(modes: Sequence[str]) -> tuple[type[Body], ...]:
    """Every request body model of a service offering ``modes``, for the OpenAPI document."""
    return (NewClient, NewAccount, AmountRequest, TransferRequest, lock_mode_model(tuple(modes)))


def response_models(modes: Sequence[str]) -> tuple[type[Body], ...]:
    """Every response body model of a service offering ``modes``, for the OpenAPI document."""
    return (Account, ClientKey, TransferResult, Audit, Error, health_model(tuple(modes)))

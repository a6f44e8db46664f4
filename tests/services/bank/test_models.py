"""The body models: every field's refusal is a sentence built from its declaration, and the
OpenAPI document publishes the same rules the validation applies."""

from __future__ import annotations

from typing import Any

import pytest

from services.bank.domain import MAX_AMOUNT
from services.bank.http.errors import ValidationFailed
from services.bank.http.models import (
    AmountRequest,
    Body,
    NewAccount,
    TransferRequest,
    lock_mode_model,
    parse,
    request_models,
)
from services.bank.http.openapi import openapi_document

MODES = ("none", "global", "account")
VALID: dict[str, dict[str, Any]] = {
    "NewClient": {"id": "alice"},
    "NewAccount": {"id": "alice", "balance": 0},
    "AmountRequest": {"amount": 1},
    "TransferRequest": {"from": "alice", "to": "bob", "amount": MAX_AMOUNT},
    "LockMode": {"mode": "account"},
}
# For each JSON field name: a value of the wrong type, and one of the right type that breaks
# the field's rule.
BROKEN: dict[str, tuple[object, object]] = {
    "id": (7, "no spaces"),
    "from": (None, ""),
    "to": ([], "x" * 65),
    "balance": ("1", -1),
    "amount": (1.0, MAX_AMOUNT + 1),
    "mode": (True, "db"),
}


def _models() -> list[type[Body]]:
    return list(request_models(MODES))


@pytest.mark.parametrize("model", _models(), ids=lambda model: model.__name__)
def test_a_valid_body_parses(model: type[Body]) -> None:
    parsed = parse(model, VALID[model.__name__])
    assert parsed.model_dump(by_alias=True) == VALID[model.__name__]


@pytest.mark.parametrize("model", _models(), ids=lambda model: model.__name__)
def test_every_field_refuses_in_a_sentence_of_its_own(model: type[Body]) -> None:
    for name in VALID[model.__name__]:
        for value in BROKEN[name]:
            body = {**VALID[model.__name__], name: value}
            with pytest.raises(ValidationFailed) as caught:
                parse(model, body)
            assert caught.value.detail.startswith(f"field {name!r} must be "), caught.value.detail
            # Built from the declaration, never pydantic's own wording.
            assert "Input should" not in caught.value.detail


def test_the_first_problem_is_named_in_a_fixed_order() -> None:
    body = {"to": 5, "memo": "x", "zzz": 1}
    with pytest.raises(ValidationFailed, match="^missing field 'from'; expected exactly 'from', "):
        parse(TransferRequest, body)
    body = {"from": "a", "to": 5, "amount": 0, "zzz": 1, "memo": "x"}
    with pytest.raises(ValidationFailed, match="^unexpected field 'memo'; expected exactly"):
        parse(TransferRequest, body)
    with pytest.raises(ValidationFailed, match="^field 'to' must be a string, got an integer$"):
        parse(TransferRequest, {"from": "a", "to": 5, "amount": 0})
    with pytest.raises(ValidationFailed, match="^body must be a JSON object, got an array$"):
        parse(AmountRequest, [1])


def test_the_rules_in_the_messages_are_the_rules_in_the_models() -> None:
    with pytest.raises(ValidationFailed, match=f"between 0 and {MAX_AMOUNT}, got -1$"):
        parse(NewAccount, {"id": "a", "balance": -1})
    with pytest.raises(ValidationFailed, match="must be one of none, global, got 'account'$"):
        parse(lock_mode_model(("none", "global")), {"mode": "account"})


def test_the_document_publishes_the_models_rules() -> None:
    schemas = openapi_document(MODES)["components"]["schemas"]
    for model in _models():
        schema = schemas[model.__name__]
        assert schema["required"] == list(VALID[model.__name__])
        assert schema["additionalProperties"] is False
        for name, info in model.model_fields.items():
            published = schema["properties"][info.alias or name]
            for constraint in info.metadata:
                for bound, key in (("ge", "minimum"), ("le", "maximum")):
                    if hasattr(constraint, bound):
                        assert published[key] == getattr(constraint, bound)
    assert schemas["Health"]["properties"]["status"]["enum"] == ["ok", "degraded"]
    assert "const" not in str(schemas)

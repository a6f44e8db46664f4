"""The OpenAPI 3.0 description served at ``GET /openapi.json``.

The schemas of every body (``additionalProperties: false``, integer bounds, the id pattern, the
lock modes) are generated from the pydantic models that also validate the requests
(``services.bank.http.models``), so the document and the checks cannot drift; what is written
here is what a model cannot say: the routes, their parameters, and which refusal each status
means. It is precise enough for a schema-driven fuzzer to check each response against it, and
tests compare its paths with the app's router.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, cast

from pydantic import TypeAdapter
from pydantic.json_schema import JsonSchemaMode, models_json_schema

from ..run.config import DEFAULT_MAX_BODY_BYTES
from .idempotency import HEADER, MAX_KEY_LENGTH, REPLAYED_HEADER
from .models import AccountId, Body, request_models, response_models

__all__ = ["openapi_document"]

_REF = "#/components/schemas/"


def _ref(name: str) -> dict[str, str]:
    return {"$ref": _REF + name}


def _json_body(schema: str, description: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {"application/json": {"schema": _ref(schema)}},
    }


def _error(description: str) -> dict[str, Any]:
    return _json_body("Error", description)


_BAD_JSON = _error("invalid_json: the body is not UTF-8 JSON (or has duplicate keys, NaN)")
_MEDIA = _error("unsupported_media_type: the Content-Type is not application/json")
_SHAPE = _error("validation_error: missing or extra field, wrong type, or out of range")
_NOT_FOUND = _error("account_not_found: no such account")
_UNAUTHENTICATED = _error(
    "unauthenticated: no credential where one is needed, a bearer token nobody has, or the "
    "admin routes disabled (no admin token configured)"
)
_FORBIDDEN = _error(
    "forbidden: a client's key on an admin route, the admin token where a client must act, or "
    "an account another client owns"
)
_WHO = {"401": _UNAUTHENTICATED, "403": _FORBIDDEN}

_TIMEOUT = _error("body_timeout: the body did not arrive within the server's body timeout")


def _body_refusals(max_body_bytes: int) -> dict[str, Any]:
    """The refusals of a request body, with the service's cap on its size."""
    return {
        "400": _BAD_JSON,
        "408": _TIMEOUT,
        "413": _error(f"body_too_large: the body is over {max_body_bytes} bytes"),
        "415": _MEDIA,
        "422": _SHAPE,
    }


#: POSTs that move money or open accounts take an Idempotency-Key (see
#: services.bank.http.idempotency).
_IDEMPOTENCY_KEY = {
    "name": HEADER,
    "in": "header",
    "required": False,
    "schema": {
        "type": "string",
        "minLength": 1,
        "maxLength": MAX_KEY_LENGTH,
        "pattern": f"^[ -~]{{1,{MAX_KEY_LENGTH}}}$",
    },
    "description": (
        f"1 to {MAX_KEY_LENGTH} printable ASCII characters. A request repeated with the same "
        "key, method, path and body gets the first response again (header "
        f"{REPLAYED_HEADER}: true) and is not applied twice; the same key with another request "
        "is 422 idempotency_key_reused."
    ),
}
_POST_REFUSALS = {
    "400": _error(
        "invalid_json: the body is not UTF-8 JSON (or has duplicate keys, NaN); "
        "invalid_idempotency_key: the Idempotency-Key header is empty, too long, not printable "
        "ASCII or sent twice"
    ),
    "422": _error(
        "validation_error: missing or extra field, wrong type, or out of range; "
        "idempotency_key_reused: the Idempotency-Key was used for another request"
    ),
    "429": _error(
        "idempotency_quota_exceeded: the client holds its quota of Idempotency-Key records "
        "younger than the retention window; nothing was applied"
    ),
    "503": _error(
        "retry_later: nothing was applied (the database aborted the operation, timed out, or "
        "could not be reached before anything was written); deadline_exceeded: nothing was "
        "applied, the request did not get its locks or a database connection within the "
        "request timeout; outcome_unknown: the database connection was lost while the "
        "operation was committing, it may or may not have been applied: retry with the same "
        "Idempotency-Key"
    ),
    **_WHO,
}
_UNAVAILABLE = _error(
    "retry_later: the database is unreachable or timed out right now (restarting, down)"
)


def _request(schema: str) -> dict[str, Any]:
    return {"required": True, "content": {"application/json": {"schema": _ref(schema)}}}


def _schemas(modes: Sequence[str]) -> dict[str, Any]:
    """The component schemas, generated from the body models (``services.bank.http.models``)."""
    inputs: list[tuple[type[Body], JsonSchemaMode]] = [
        *((model, "validation") for model in request_models(modes)),
        *((model, "serialization") for model in response_models(modes)),
    ]
    _, top = models_json_schema(inputs, ref_template=_REF + "{model}")
    schemas: dict[str, Any] = {
        "AccountId": TypeAdapter(AccountId).json_schema(),
        **top["$defs"],
    }
    return cast(dict[str, Any], _openapi_3_0(schemas))


def _openapi_3_0(schema: object) -> object:
    """Rewrite what JSON Schema 2020-12 has and OpenAPI 3.0 lacks: ``const`` becomes a one-value
    ``enum``."""
    if isinstance(schema, dict):
        rewritten = {key: _openapi_3_0(value) for key, value in schema.items()}
        if "const" in rewritten:
            rewritten["enum"] = [rewritten.pop("const")]
        return rewritten
    if isinstance(schema, list):
        return [_openapi_3_0(item) for item in schema]
    return schema


def openapi_document(
    modes: Sequence[str], *, require_keys: bool = True, max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
) -> dict[str, Any]:
    """Return the OpenAPI 3.0.3 document of a service offering the lock ``modes``.

    Args:
        modes: The lock modes offered.
        require_keys: Whether the client routes need an API key; without, their security
            lists the anonymous alternative ``{}`` too (``BankConfig.require_keys``).
        max_body_bytes: The service's cap on a request body (``BankConfig.max_body_bytes``),
            which the 413 refusals state.
    """
    body_refusals = _body_refusals(max_body_bytes)
    # The POST refusals' 400 and 422 also cover the Idempotency-Key: they replace the body's.
    post_refusals = {**body_refusals, **_POST_REFUSALS}
    anyone: list[dict[str, list[str]]] = [] if require_keys else [{}]
    client_security = [{"clientKey": []}, *anyone]
    reader_security = [{"clientKey": []}, {"adminToken": []}, *anyone]
    id_param = {
        "name": "id",
        "in": "path",
        "required": True,
        "schema": _ref("AccountId"),
        "description": "an account id; a malformed one is answered 404 account_not_found",
    }
    money_move = {
        "200": _json_body("Account", "the new balance"),
        **post_refusals,
        "404": _NOT_FOUND,
        "409": _error("balance_too_large: the credit would exceed what a database store holds"),
    }
    admin_security: list[dict[str, list[str]]] = [{"adminToken": []}]
    return {
        "openapi": "3.0.3",
        "info": {
            "title": "asynclocks bank",
            "version": "1.0.0",
            "description": (
                "An account API that loses money under concurrent requests with lock mode "
                "'none'. Money is integer cents. Every error is "
                '{"error": code, "detail": sentence}.'
            ),
        },
        "servers": [{"url": "/"}],
        "paths": {
            "/health": {
                "get": {
                    "operationId": "health",
                    "summary": "Liveness, lock mode and store",
                    "responses": {
                        "200": _json_body("Health", "the service is up"),
                        "503": _json_body(
                            "Health",
                            "degraded: the database is away or stalled, or requests were "
                            "refused with 503 in the last seconds (reason says which)",
                        ),
                    },
                }
            },
            "/clients": {
                "post": {
                    "operationId": "createClient",
                    "summary": "Register a client; its API key is in the answer, shown once",
                    "security": admin_security,
                    "requestBody": _request("NewClient"),
                    "responses": {
                        "201": _json_body("ClientKey", "the client and its API key"),
                        **body_refusals,
                        **_WHO,
                        "409": _error("client_exists: the id is taken"),
                        "503": _UNAVAILABLE,
                    },
                }
            },
            "/accounts": {
                "post": {
                    "operationId": "createAccount",
                    "summary": "Open an account, owned by the calling client",
                    "security": client_security,
                    "parameters": [_IDEMPOTENCY_KEY],
                    "requestBody": _request("NewAccount"),
                    "responses": {
                        "201": _json_body("Account", "the account was opened"),
                        **post_refusals,
                        "409": _error(
                            "account_exists: the id is taken; too_many_accounts: the client "
                            "owns as many accounts as it may; opening_balance_too_large: over "
                            "the service's cap"
                        ),
                    },
                }
            },
            "/accounts/{id}": {
                "get": {
                    "operationId": "getAccount",
                    "summary": "Read a balance (its owner, or the admin)",
                    "security": reader_security,
                    "parameters": [id_param],
                    "responses": {
                        "200": _json_body("Account", "the account"),
                        **_WHO,
                        "404": _NOT_FOUND,
                        "503": _UNAVAILABLE,
                    },
                }
            },
            "/accounts/{id}/deposit": {
                "post": {
                    "operationId": "deposit",
                    "summary": "Credit an account (any client)",
                    "security": client_security,
                    "parameters": [id_param, _IDEMPOTENCY_KEY],
                    "requestBody": _request("AmountRequest"),
                    "responses": money_move,
                }
            },
            "/accounts/{id}/withdraw": {
                "post": {
                    "operationId": "withdraw",
                    "summary": "Debit an account (its owner); refused if it would overdraw",
                    "security": client_security,
                    "parameters": [id_param, _IDEMPOTENCY_KEY],
                    "requestBody": _request("AmountRequest"),
                    "responses": {
                        **money_move,
                        "409": _error("insufficient_funds: the balance does not cover it"),
                    },
                }
            },
            "/transfers": {
                "post": {
                    "operationId": "transfer",
                    "summary": "Move money out of an account the client owns, all or nothing",
                    "security": client_security,
                    "parameters": [_IDEMPOTENCY_KEY],
                    "requestBody": _request("TransferRequest"),
                    "responses": {
                        "200": _json_body("TransferResult", "both new balances"),
                        **post_refusals,
                        "404": _NOT_FOUND,
                        "409": _error(
                            "insufficient_funds: the source does not cover it; "
                            "balance_too_large: the target could not hold it"
                        ),
                        "422": _error(
                            "validation_error: wrong shape; same_account: from equals to; "
                            "idempotency_key_reused: the key was used for another request"
                        ),
                    },
                }
            },
            "/audit": {
                "get": {
                    "operationId": "audit",
                    "summary": "Balances against the journal of acknowledged operations",
                    "security": admin_security,
                    "responses": {
                        "200": _json_body("Audit", "the books"),
                        **_WHO,
                        "503": _UNAVAILABLE,
                    },
                }
            },
            "/admin/lock": {
                "get": {
                    "operationId": "getLockMode",
                    "summary": "The current lock mode",
                    "security": admin_security,
                    "responses": {
                        "200": _json_body("LockMode", "the mode"),
                        **_WHO,
                    },
                },
                "put": {
                    "operationId": "setLockMode",
                    "summary": "Switch the lock mode once in-flight requests have drained",
                    "security": admin_security,
                    "requestBody": _request("LockMode"),
                    "responses": {
                        "200": _json_body("LockMode", "the mode now in force"),
                        **body_refusals,
                        **_WHO,
                        "409": _error(
                            "lock_mode_per_worker: the server runs several worker processes; "
                            "restart it with --lock instead"
                        ),
                        "422": _error(
                            "validation_error: unknown mode; unsupported_lock_mode: the store "
                            "cannot provide it"
                        ),
                    },
                },
            },
            "/openapi.json": {
                "get": {
                    "operationId": "openapi",
                    "summary": "This document",
                    "responses": {
                        "200": {
                            "description": "the OpenAPI document",
                            "content": {"application/json": {"schema": {"type": "object"}}},
                        }
                    },
                }
            },
        },
        "components": {
            "schemas": _schemas(modes),
            "securitySchemes": {
                "clientKey": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "a client's API key, from POST /clients",
                },
                "adminToken": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "the admin token the server was started with",
                },
            },
        },
    }

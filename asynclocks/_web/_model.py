"""Requests, responses and outcomes: what a request set sends and what it observes.

An *outcome* is every response of one run, in a fixed order: the concurrent requests in the order
they were given (not the order they ran), then the ``observe`` requests. Two outcomes are equal when
every status and every JSON body is, after the ignored fields are removed.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeAlias

#: A JSON value as the standard library parses it.
JSON: TypeAlias = Any

_METHOD = re.compile(r"^[A-Z]+$")
_NO_BODY: Any = object()


@dataclass(frozen=True)
class Request:
    """One HTTP request of a request set.

    Args:
        method: An upper-case HTTP method, e.g. ``"POST"``.
        path: The path and query, starting with ``/``.
        json: The JSON body, or None for no body.
        headers: Extra request headers.

    Raises:
        ValueError: The method is not an upper-case token, or the path does not start with ``/``.
        TypeError: The body is not JSON-serialisable, or a header is not a string.
    """

    method: str
    path: str
    json: JSON = None
    headers: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not isinstance(self.method, str) or not _METHOD.match(self.method):
            raise ValueError(f"method must be an upper-case HTTP method, got {self.method!r}")
        if not isinstance(self.path, str) or not self.path.startswith("/"):
            raise ValueError(f"path must start with '/', got {self.path!r}")
        try:
            json.dumps(self.json)
        except (TypeError, ValueError) as error:
            raise TypeError(
                f"json body of {self.method} {self.path} is not JSON: {error}"
            ) from None
        for name, value in self.headers.items():
            if not isinstance(name, str) or not isinstance(value, str):
                raise TypeError(f"headers must map str to str, got {name!r}: {value!r}")
        object.__setattr__(self, "headers", dict(self.headers))

    @classmethod
    def of(cls, spec: object) -> Request:
        """A request from a :class:`Request`, a ``(method, path[, json[, headers]])`` tuple, a
        ``"METHOD /path"`` string or a mapping with ``method``, ``path``, ``json``, ``headers``.

        Raises:
            TypeError: ``spec`` is none of those.
            ValueError: a mapping has unknown keys, or a field is invalid.
        """
        if isinstance(spec, Request):
            return spec
        if isinstance(spec, str):
            method, _, path = spec.strip().partition(" ")
            return cls(method, path.strip())
        if isinstance(spec, tuple) and 2 <= len(spec) <= 4:
            return cls(*spec)
        if isinstance(spec, Mapping):
            unknown = set(spec) - {"method", "path", "json", "headers"}
            if unknown:
                raise ValueError(
                    f"a request has the keys method, path, json, headers; got {sorted(unknown)}"
                )
            if "method" not in spec or "path" not in spec:
                raise ValueError(f"a request needs 'method' and 'path', got {dict(spec)!r}")
            return cls(spec["method"], spec["path"], spec.get("json"), spec.get("headers") or {})
        raise TypeError(
            "a request is a Request, a (method, path[, json[, headers]]) tuple, a 'METHOD /path' "
            f"string or a mapping, not {type(spec).__name__}"
        )

    def __str__(self) -> str:
        body = "" if self.json is None else " " + json.dumps(self.json, sort_keys=True)
        return f"{self.method} {self.path}{body}"


@dataclass(frozen=True)
class Response:
    """What the app answered: the status and the body (parsed JSON, or the text when not JSON)."""

    status: int
    body: JSON

    def __str__(self) -> str:
        if self.body is None or self.body == "":
            return str(self.status)
        text = self.body if isinstance(self.body, str) else json.dumps(self.body, sort_keys=True)
        return f"{self.status} {text}"


#: Every response of one run: the concurrent requests in their given order, then observe's.
Outcome: TypeAlias = tuple[Response, ...]


def parse_ignore(paths: Iterable[str]) -> tuple[tuple[str, ...], ...]:
    """Field paths to leave out of every body: ``"id"``, ``"items.*.created_at"``, ``"$.id"``.

    A path is dotted keys from the body's top level; ``*`` matches any key or list index.

    Raises:
        TypeError: ``paths`` is a single string, or holds a non-string.
        ValueError: a path is empty or has an empty part.
    """
    if isinstance(paths, str):
        raise TypeError(f"ignore must be a list of field paths, not the string {paths!r}")
    parsed = []
    for path in paths:
        if not isinstance(path, str):
            raise TypeError(f"ignore holds field paths (str), got {path!r}")
        text = path.removeprefix("$.").removeprefix("$")
        parts = tuple(text.split("."))
        if not text or any(not part for part in parts):
            raise ValueError(f"ignore path {path!r} is empty or has an empty part")
        parsed.append(parts)
    return tuple(parsed)


def without(body: JSON, ignore: Sequence[tuple[str, ...]]) -> JSON:
    """``body`` with every ignored field removed (the body itself is not changed)."""
    for path in ignore:
        body = _drop(body, path)
    return body


def _drop(value: JSON, path: tuple[str, ...]) -> JSON:
    if not path:
        return value
    head, rest = path[0], path[1:]
    if isinstance(value, dict):
        keys = list(value) if head == "*" else [head]
        copy = dict(value)
        for key in keys:
            if key in copy:
                if rest:
                    copy[key] = _drop(copy[key], rest)
                else:
                    del copy[key]
        return copy
    if isinstance(value, list) and (head == "*" or head.isdigit()):
        indices = range(len(value)) if head == "*" else [int(head)]
        items = list(value)
        for index in indices:
            if index < len(items) and rest:
                items[index] = _drop(items[index], rest)
        if not rest:
            items = [item for index, item in enumerate(items) if index not in set(indices)]
        return items
    return value


def key_of(outcome: Outcome) -> str:
    """A canonical text of an outcome: equal outcomes, equal keys."""
    return json.dumps([[r.status, r.body] for r in outcome], sort_keys=True)


def leaves(outcome: Outcome) -> dict[tuple[int, str], JSON]:
    """Every comparable value of an outcome: (response index, "status" or "body.a.b") -> value."""
    found: dict[tuple[int, str], JSON] = {}
    for index, response in enumerate(outcome):
        found[(index, "status")] = response.status
        _walk(response.body, "body", index, found)
    return found


def _walk(value: JSON, at: str, index: int, found: dict[tuple[int, str], JSON]) -> None:
    if isinstance(value, dict) and value:
        for key, item in value.items():
            _walk(item, f"{at}.{key}", index, found)
    elif isinstance(value, list) and value:
        for position, item in enumerate(value):
            _walk(item, f"{at}[{position}]", index, found)
    else:
        found[(index, at)] = value


_ABSENT = "<absent>"


def differences(observed: Outcome, allowed: Outcome) -> list[tuple[int, str, JSON, JSON]]:
    """The leaves where two outcomes differ: (response index, field, observed, allowed)."""
    mine, theirs = leaves(observed), leaves(allowed)
    # Per response, the status first: it is what a reader compares first.
    keys = sorted(set(mine) | set(theirs), key=lambda k: (k[0], k[1] != "status", k[1]))
    return [
        (index, name, mine.get((index, name), _ABSENT), theirs.get((index, name), _ABSENT))
        for index, name in keys
        if mine.get((index, name), _ABSENT) != theirs.get((index, name), _ABSENT)
    ]


def show(value: JSON) -> str:
    """A value as the report prints it."""
    if value == _ABSENT:
        return "absent"
    return json.dumps(value, sort_keys=True)

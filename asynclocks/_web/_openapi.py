"""Request sets generated from an OpenAPI document, checked one after another.

How a set is made, with no knowledge of the app beyond its document:

* *Id kinds* are the schemas of path parameters (``{id}`` of ``/accounts/{id}``). A body field with
  the same schema (``from`` and ``to`` of a transfer) refers to a resource of that kind.
* A *creator* is a ``POST`` without path parameters whose body has an ``id`` field of a kind
  (``POST /accounts {"id", "balance"}``); the set's ``setup`` creates a small pool of resources with
  it, so the concurrent requests find something to act on.
* The *concurrent* requests are 2 (or up to ``concurrent``) state-changing operations that touch the
  same resource: each has a path parameter or body field set to one target id.
* The *observe* requests read every pooled resource back (``GET`` with that one path parameter)
  and every ``GET`` without parameters but the document itself (``/audit``...).
* Operations that require credentials (a ``security`` requirement with no anonymous ``{}``
  alternative) are left out: the check sends none, so they could only be refused.

Bodies are drawn from the operations' schemas by schemathesis's generator (Hypothesis underneath),
from one seed: the same seed gives the same sets. They are tidied to what the schema declares
(undeclared properties dropped, integral floats of integer fields made ints) so that a strict API
does not refuse them all alone and together alike, which would hide every race. Integer fields of
one set are often drawn from a small shared pool, so a balance and the amounts withdrawn from it
tend to coincide: that is where overdrafts show.
"""

from __future__ import annotations

import copy
import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from .._explore._common import Backend, Strategy
from ._check import (
    Allowed,
    RequestSet,
    WebReport,
    check_explore_options,
    explore_concurrent,
    sequential_outcomes,
)
from ._drivers import AppFactory
from ._model import JSON, Request, parse_ignore

_STATE_CHANGING = ("post", "put", "patch", "delete")
_PARAMETER = re.compile(r"{([^}/]+)}")
_DESCRIPTIVE = {"title", "description", "example", "examples", "format"}
#: Resources of each kind created by the setup of a set.
POOL_SIZE = 2
#: Generated sets are explored exhaustively within this many preemptions unless told otherwise.
DEFAULT_PREEMPTION_BOUND = 2


@dataclass(frozen=True)
class Operation:
    """One operation of the document, with its schemas resolved."""

    method: str
    path: str
    parameters: Mapping[str, JSON]  # path parameter -> resolved schema
    body: JSON | None  # resolved JSON request-body schema, or None

    @property
    def state_changing(self) -> bool:
        return self.method in _STATE_CHANGING

    def fill(self, values: Mapping[str, str]) -> str:
        return _PARAMETER.sub(lambda m: values[m.group(1)], self.path)


def _resolve(document: Mapping[str, Any], schema: JSON, depth: int = 0) -> JSON:
    """``schema`` with every local ``$ref`` replaced by what it points to."""
    if depth > 50:
        raise ValueError("the OpenAPI document's schemas are recursive beyond 50 levels")
    if isinstance(schema, dict):
        if "$ref" in schema:
            reference = schema["$ref"]
            if not isinstance(reference, str) or not reference.startswith("#/"):
                raise ValueError(f"only local $ref are supported, got {reference!r}")
            target: Any = document
            for part in reference[2:].split("/"):
                target = target[part.replace("~1", "/").replace("~0", "~")]
            return _resolve(document, target, depth + 1)
        return {key: _resolve(document, value, depth + 1) for key, value in schema.items()}
    if isinstance(schema, list):
        return [_resolve(document, item, depth + 1) for item in schema]
    return schema


def _shape(schema: JSON) -> str:
    """A schema's identity for matching ids: descriptive keywords left out."""
    if isinstance(schema, dict):
        kept = {k: _shape(v) for k, v in sorted(schema.items()) if k not in _DESCRIPTIVE}
        return repr(kept)
    return repr(schema)


def _needs_credentials(security: object) -> bool:
    """Whether an operation's security requirements leave no way in without credentials."""
    if not isinstance(security, list) or not security:
        return False
    return not any(requirement == {} for requirement in security)


def operations(document: Mapping[str, Any]) -> list[Operation]:
    """Every operation of an OpenAPI 3 document that needs no credentials, schemas resolved.

    Raises:
        ValueError: it is not an OpenAPI 3 document with ``paths``.
    """
    if not isinstance(document, Mapping) or not isinstance(document.get("paths"), Mapping):
        raise ValueError("not an OpenAPI 3 document: it has no 'paths' object")
    default_security = document.get("security") or []
    found = []
    for path, item in document["paths"].items():
        shared = item.get("parameters", [])
        for method in ("get", *_STATE_CHANGING):
            op = item.get(method)
            if not isinstance(op, Mapping):
                continue
            if _needs_credentials(op.get("security", default_security)):
                continue  # the check sends none: it would only ever be refused
            parameters: dict[str, JSON] = {}
            for parameter in [*shared, *op.get("parameters", [])]:
                parameter = _resolve(document, parameter)
                if parameter.get("in") == "path":
                    parameters[parameter["name"]] = parameter.get("schema", {"type": "string"})
            content = _resolve(document, op.get("requestBody", {})).get("content", {})
            body = content.get("application/json", {}).get("schema")
            found.append(Operation(method, path, parameters, body))
    return found


@dataclass
class _Model:
    """What the generator learned from the document."""

    operations: list[Operation]
    kinds: dict[str, JSON] = field(default_factory=dict)  # shape -> schema of an id kind
    creators: dict[str, Operation] = field(default_factory=dict)  # shape -> creator
    document_path: str | None = None

    def kind_of(self, schema: JSON) -> str | None:
        shape = _shape(schema)
        return shape if shape in self.kinds else None

    def body_references(self, operation: Operation) -> dict[str, str]:
        """Top-level body fields that hold an id: field -> kind."""
        body = operation.body
        if not isinstance(body, dict) or body.get("type", "object") != "object":
            return {}
        found = {}
        for name, schema in (body.get("properties") or {}).items():
            kind = self.kind_of(schema)
            if kind is not None:
                found[name] = kind
        return found

    def touches(self, operation: Operation) -> set[str]:
        kinds = {self.kind_of(schema) for schema in operation.parameters.values()}
        kinds |= set(self.body_references(operation).values())
        return {kind for kind in kinds if kind is not None}


def _model(document: Mapping[str, Any], document_path: str | None) -> _Model:
    model = _Model(operations(document), document_path=document_path)
    for operation in model.operations:
        for schema in operation.parameters.values():
            model.kinds.setdefault(_shape(schema), schema)
    for operation in model.operations:
        if operation.method == "post" and not operation.parameters:
            references = model.body_references(operation)
            if "id" in references:
                model.creators.setdefault(references["id"], operation)
    return model


class _Strategies:
    """schemathesis's strategies for the document's operations, built once per document."""

    def __init__(self, document: Mapping[str, Any]) -> None:
        import schemathesis

        self._schema = schemathesis.openapi.from_dict(dict(document))
        self._cache: dict[tuple[str, str], Any] = {}

    def cases(self, operation: Operation) -> Any:
        key = (operation.path, operation.method)
        if key not in self._cache:
            api_operation = self._schema[operation.path][operation.method.upper()]
            self._cache[key] = api_operation.as_strategy()
        return self._cache[key]


def _tidy(value: JSON, schema: JSON) -> JSON:
    """``value`` as a strict server expects it: only declared properties, integers as ints."""
    if not isinstance(schema, dict):
        return value
    if isinstance(value, dict) and isinstance(schema.get("properties"), dict):
        properties = schema["properties"]
        return {k: _tidy(v, properties[k]) for k, v in value.items() if k in properties}
    if isinstance(value, list) and isinstance(schema.get("items"), dict):
        return [_tidy(item, schema["items"]) for item in value]
    if schema.get("type") == "integer" and isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def _draw_body(
    data: Any,
    strategies: _Strategies,
    operation: Operation,
    fixed: Mapping[str, str],
    integers: Sequence[int],
) -> JSON:
    """A body for ``operation`` from its schema, with the id fields set and shared integers."""
    import hypothesis.strategies as st
    import jsonschema

    if operation.body is None:
        return None
    body = _tidy(data.draw(strategies.cases(operation)).body, operation.body)
    if not isinstance(body, dict):
        return body
    body = dict(body)
    body.update(fixed)
    properties = operation.body.get("properties") or {}
    for name, schema in properties.items():
        if name in body and isinstance(body[name], int) and not isinstance(body[name], bool):
            if data.draw(st.integers(min_value=0, max_value=3)):  # 3 times in 4: shared
                value = data.draw(st.sampled_from(integers))
                if jsonschema.Draft202012Validator(schema).is_valid(value):
                    body[name] = value
    return body


def _parameter_values(
    data: Any, strategies: _Strategies, operation: Operation, name: str, count: int
) -> list[Any]:
    """``count`` distinct values of one path parameter, drawn from the operation's cases."""
    import hypothesis.strategies as st

    values = st.lists(
        strategies.cases(operation).map(lambda case: case.path_parameters[name]),
        min_size=count,
        max_size=count,
        unique=True,
    )
    drawn: list[Any] = data.draw(values)
    return drawn


def _pool(data: Any, strategies: _Strategies, model: _Model, kind: str, count: int) -> list[Any]:
    """The ids a set works on: the schema's own examples or enum when it has them (resources the
    app holds from the start), else fresh ones drawn from the schema (the setup creates them)."""
    id_schema = model.kinds[kind]
    known = list(id_schema.get("examples") or []) if isinstance(id_schema, dict) else []
    if isinstance(id_schema, dict) and "example" in id_schema:
        known.append(id_schema["example"])
    if isinstance(id_schema, dict) and not known:
        known = list(id_schema.get("enum") or [])
    if known:
        return list(dict.fromkeys(known))[:count]
    for operation in model.operations:
        for name, schema in operation.parameters.items():
            if model.kind_of(schema) == kind:
                return _parameter_values(data, strategies, operation, name, count)
    raise AssertionError("an id kind comes from a path parameter")  # pragma: no cover


def _draw_set(
    data: Any, model: _Model, strategies: _Strategies, concurrent: int
) -> RequestSet | None:
    import hypothesis.strategies as st

    kinds = [kind for kind in model.kinds if kind in model.creators]
    if not kinds:
        kinds = list(model.kinds)
    if not kinds:
        return None
    kind = data.draw(st.sampled_from(kinds))
    creator = model.creators.get(kind)
    # With a creator: the setup creates all but the last id; a set races either on a created one
    # (creating it again would only be refused) or on the fresh one, creation included.
    pool = _pool(data, strategies, model, kind, POOL_SIZE + (creator is not None))
    integers = data.draw(st.lists(st.integers(min_value=0, max_value=1000), min_size=1, max_size=3))
    created = pool[:POOL_SIZE] if creator is not None else pool
    target = created[0] if creator is None or data.draw(st.booleans()) else pool[-1]
    candidates = [
        op
        for op in model.operations
        if op.state_changing
        and kind in model.touches(op)
        and (op is not creator or target not in created)
    ]
    if not candidates:
        return None
    setup = []
    if creator is not None:
        for identifier in created:
            body = _draw_body(data, strategies, creator, {"id": identifier}, integers)
            setup.append(Request("POST", creator.path, body))
    count = data.draw(st.integers(min_value=2, max_value=concurrent))
    chosen = []
    for _ in range(count):
        operation = data.draw(st.sampled_from(candidates))
        values = {}
        for name, schema in operation.parameters.items():
            if model.kind_of(schema) == kind:
                values[name] = target
            else:
                values[name] = _parameter_values(data, strategies, operation, name, 1)[0]
        fixed: dict[str, str] = {}
        references = model.body_references(operation)
        if operation is creator:
            fixed["id"] = target
        elif references:
            first = True
            for name, field_kind in references.items():
                if field_kind != kind:
                    continue
                # The first reference (or the path) is the target; the others any pooled id.
                on_target = first and not any(
                    model.kind_of(s) == kind for s in operation.parameters.values()
                )
                fixed[name] = target if on_target else data.draw(st.sampled_from(pool))
                first = False
        body = _draw_body(data, strategies, operation, fixed, integers)
        chosen.append(Request(operation.method.upper(), operation.fill(values), body))
    observe = []
    for operation in model.operations:
        if operation.method != "get" or operation.path == model.document_path:
            continue
        if not operation.parameters:
            observe.append(Request("GET", operation.path))
        elif len(operation.parameters) == 1:
            ((name, schema),) = operation.parameters.items()
            if model.kind_of(schema) == kind:
                observe += [Request("GET", operation.fill({name: i})) for i in pool]
    return RequestSet(tuple(chosen), tuple(setup), tuple(observe))


def request_sets(
    document: Mapping[str, Any],
    *,
    sets: int = 20,
    seed: int = 0,
    concurrent: int = 2,
    document_path: str | None = None,
) -> list[RequestSet]:
    """Request sets for an OpenAPI 3 document (see the module's docstring for how).

    Args:
        document: The OpenAPI document, as parsed JSON.
        sets: How many distinct sets at most.
        seed: The same seed gives the same sets.
        concurrent: At most this many concurrent requests per set (2 to 4).
        document_path: The path that serves the document itself, left out of ``observe``.

    Raises:
        ValueError: the document is not OpenAPI 3, or an argument is out of range.
    """
    from hypothesis import HealthCheck, Phase, given, settings
    from hypothesis import seed as hypothesis_seed
    from hypothesis import strategies as st

    if not isinstance(sets, int) or sets < 1:
        raise ValueError(f"sets must be an int >= 1, got {sets!r}")
    if not isinstance(concurrent, int) or not 2 <= concurrent <= 4:
        raise ValueError(f"concurrent must be 2 to 4, got {concurrent!r}")
    model = _model(document, document_path)
    strategies = _Strategies(document)
    found: dict[str, RequestSet] = {}

    @settings(
        max_examples=sets * 2,
        database=None,
        phases=[Phase.generate],
        deadline=None,
        suppress_health_check=list(HealthCheck),
    )
    @hypothesis_seed(seed)
    @given(st.data())
    def generate(data: Any) -> None:
        # Every example draws in full (an early return reads to Hypothesis as flaky generation);
        # the first ``sets`` distinct ones are kept.
        drawn = _draw_set(data, model, strategies, concurrent)
        if drawn is not None:
            found.setdefault(repr(drawn), copy.deepcopy(drawn))

    generate()
    return list(found.values())[:sets]


@dataclass
class OpenAPISummary:
    """What :func:`check_openapi` found over the generated sets.

    Attributes:
        reports: One :class:`WebReport` per set checked, in order.
        generated: How many sets were generated (some may be left unchecked by the time limit).
        seconds: Wall-clock time of the checks.
    """

    reports: list[WebReport]
    generated: int
    seconds: float

    @property
    def failures(self) -> list[WebReport]:
        """The sets with a failing schedule."""
        return [report for report in self.reports if report.failed]

    @property
    def schedules(self) -> int:
        """Schedules explored over every checked set."""
        return sum(report.report.schedules for report in self.reports)

    @property
    def summary(self) -> str:
        """One line: sets tried, schedules run, failures found."""
        return (
            f"{len(self.reports)} of {self.generated} generated request set(s) checked, "
            f"{self.schedules} schedule(s) run, {len(self.failures)} not linearizable "
            f"({self.seconds:.1f} s)"
        )


def fetch_document(app_factory: AppFactory, path: str, backend: Backend) -> JSON:
    """GET ``path`` from a fresh app (one run on the explorer's loop) and parse it.

    Raises:
        ValueError: the app does not answer 200 with a JSON object there.
    """
    from .._explore import explore
    from ._drivers import driver_for, make_app, prepare

    prepare()
    box: list[Any] = []

    async def get() -> None:
        app = await make_app(app_factory)
        async with driver_for(app, backend) as driver:
            box.append(await driver.send(Request("GET", path)))

    report = explore(get, backend=backend, strategy="fifo")
    if report.failed or not box:
        raise ValueError(f"fetching the OpenAPI document at {path} failed: {report.verdict}")
    response = box[0]
    if response.status != 200 or not isinstance(response.body, dict):
        raise ValueError(f"GET {path} answered {response.status}, not a JSON OpenAPI document")
    return response.body


def check_openapi(
    app_factory: AppFactory,
    *,
    openapi: str | Mapping[str, Any] = "/openapi.json",
    sets: int = 20,
    seed: int = 0,
    concurrent: int = 2,
    backend: Backend = "asyncio",
    time_limit: float | None = None,
    stop_on_failure: bool = False,
    ignore: Sequence[str] = (),
    preemption_bound: int | None = DEFAULT_PREEMPTION_BOUND,
    strategy: Strategy = "dfs",
    max_schedules: int = 10_000,
    progress: Callable[[int, int, WebReport], None] | None = None,
) -> OpenAPISummary:
    """Generate request sets from the app's OpenAPI document and check each one.

    Args:
        app_factory: As for :func:`check_requests`.
        openapi: The path the app serves its document at, or the document itself.
        sets: How many sets to generate.
        seed: The same seed gives the same sets (and the same verdicts).
        concurrent: At most this many concurrent requests per set (2 to 4).
        backend: ``"asyncio"`` or ``"trio"``.
        time_limit: Stop starting new sets after this many seconds (None: no limit).
        stop_on_failure: Stop at the first set that is not linearizable.
        ignore: As for :func:`check_requests`.
        preemption_bound: Explore each set exhaustively within this many preemptions (default
            2; None for no bound). Many sets, each on a fresh app: a bound keeps each one short,
            and the races a generated set finds need few preemptions.
        progress: Called after each set as ``progress(done, total, report)``.
        strategy: The explorer's strategy for each set (see :func:`asynclocks.explore`); the
            bound deepens only under ``dfs``.
        max_schedules: At most this many schedules per set and pass.

    Raises:
        ValueError: the document cannot be had or is not OpenAPI 3; an argument is out of range.
    """
    if time_limit is not None and (not isinstance(time_limit, int | float) or time_limit <= 0):
        raise ValueError(f"time_limit must be a positive number of seconds, got {time_limit!r}")
    check_explore_options(backend, strategy, max_schedules, seed, preemption_bound)
    parse_ignore(ignore)
    started = time.perf_counter()
    path: str | None = None
    if isinstance(openapi, str):
        path = openapi
        document: Mapping[str, Any] = fetch_document(app_factory, openapi, backend)
    else:
        document = openapi
    generated = request_sets(
        document, sets=sets, seed=seed, concurrent=concurrent, document_path=path
    )
    # Iterative deepening over the preemption bound (CHESS's iterative context bounding): every
    # set at 0 preemptions, then 1, ... up to the bound asked for. Most races of a generated set
    # show at 0 or 1, so the first failure comes early; a set that passes at the last bound has
    # the same verdict as if it had been explored at that bound alone.
    passes: list[int | None] = (
        list(range(preemption_bound + 1)) if preemption_bound is not None else [0, 1, None]
    )
    if strategy != "dfs":
        passes = [preemption_bound]  # a bound is a dfs notion; other strategies sample
    allowed: dict[int, tuple[Allowed, ...]] = {}
    final: dict[int, WebReport] = {}
    done = 0
    total = len(generated) * len(passes)
    for bound in passes:
        for index, requests in enumerate(generated):
            if index in final and final[index].failed:
                continue
            if time_limit is not None and time.perf_counter() - started > time_limit:
                break
            if index not in allowed:
                allowed[index] = sequential_outcomes(app_factory, requests, backend, ignore)
            report = explore_concurrent(
                app_factory,
                requests,
                allowed[index],
                backend=backend,
                ignore=ignore,
                lifespan=True,
                strategy=strategy,
                max_schedules=max_schedules,
                seed=seed,
                preemption_bound=bound,
            )
            final[index] = report
            done += 1
            if progress is not None:
                progress(done, total, report)
            if stop_on_failure and report.failed:
                break
        else:
            continue
        break
    reports = [final[index] for index in sorted(final)]
    return OpenAPISummary(reports, len(generated), time.perf_counter() - started)

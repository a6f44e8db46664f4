"""Schema-driven fuzzing of every route the bank describes at ``GET /openapi.json``.

schemathesis reads the live ``/openapi.json`` and generates requests for every operation, both
ones that fit the schema and ones that break it (wrong types, missing fields, out of range, odd
path ids). For each response it runs its checks (no 5xx, the status and the body are what the
document describes, the content type is right) and this suite adds the bank's own:

- a refused request (4xx) leaves the books exactly as they were: the ``/audit`` figures are
  unchanged and the journal has no new entry;
- after every request, accepted or not, the drift is 0 and no balance is negative.

Budget: 5,000 cases in the deep run (``make test-deep``, a stage of CI), spread over the stores
(memory 2,600, SQLite 1,200, PostgreSQL 1,200; three quarters fit the schema, one quarter break
it), about a minute on 2 cores, most of it spent generating the cases; ``make test`` sends 1,000
in the same proportions (memory 520, SQLite 240, PostgreSQL 240), over the same seeds. Generation
is seeded, so every run sends the same cases and CI cannot flake on it. Each store's server
starts with a few funded accounts whose ids the generator is also given, so that money really
moves during the fuzzing instead of every request being a 404.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given, seed, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.specs.openapi.checks import ignored_auth, positive_data_acceptance

from services.bank.domain import Audit
from services.bank.http import STORE, create_app
from services.bank.run.config import BankConfig
from tests.depth import by_depth

from ._loop_thread import ServedApp
from ._reliability import url_for
from .conftest import ADMIN_TOKEN

#: Cases per store and generation mode; the sum is the suite's total per run (1,000 by default,
#: 5,000 deep). Negative cases cost about three times as much to generate as positive ones.
CASES = by_depth(
    {
        "memory": {"positive": 400, "negative": 120},
        "sqlite": {"positive": 180, "negative": 60},
        "postgresql": {"positive": 180, "negative": 60},
    },
    deep={
        "memory": {"positive": 2_000, "negative": 600},
        "sqlite": {"positive": 900, "negative": 300},
        "postgresql": {"positive": 900, "negative": 300},
    },
)
#: Cases per test (one Hypothesis run, with a seed of its own: as reproducible as
#: `derandomize`, and different cases in every chunk). Hypothesis slows down as one run's example
#: tree grows (3,000 cases in one run cost three times as much per case as 300), and small tests
#: stay well inside the per-test timeout on a busy machine.
CHUNK = 300
ACCOUNTS = {"fz_alice": 10**6, "fz_bob": 10**6, "fz_carol": 0}
#: Refusals a request that fits the schema may still get: the schema cannot say that an account
#: must exist, that a balance must cover a debit, or that a transfer needs two accounts.
SEMANTIC_REFUSALS = {
    404: {"account_not_found"},
    409: {
        "account_exists",
        "insufficient_funds",
        "balance_too_large",
        "client_exists",
        "too_many_accounts",
        "opening_balance_too_large",
    },
    422: {"same_account", "unsupported_lock_mode", "idempotency_key_reused"},
}
AUTH = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


class Books:
    """The store's figures and journal length, read in-process between two requests."""

    def __init__(self, served: ServedApp) -> None:
        self._served = served
        self._store = served.app[STORE]
        self.seen = 0

    def read(self) -> tuple[Audit, int]:
        """The audit and how many journal entries there are (reading only the new ones)."""

        async def read() -> tuple[Audit, int]:
            audit = await self._store.audit()
            self.seen += len(await self._store.journal(since=self.seen))
            return audit, self.seen

        return self._served.thread.run(read())


def _open_accounts(served: ServedApp, session: requests.Session) -> dict[str, str]:
    """Register the fuzzing client, open its funded accounts; return its ``Authorization``."""
    answer = session.post(f"{served.base_url}/clients", json={"id": "fuzzer"}, headers=AUTH)
    assert answer.status_code == 201, answer.text
    client_auth = {"Authorization": f"Bearer {answer.json()['key']}"}
    for account_id, balance in ACCOUNTS.items():
        answer = session.post(
            f"{served.base_url}/accounts",
            json={"id": account_id, "balance": balance},
            headers=client_auth,
        )
        assert answer.status_code == 201, answer.text
    return client_auth


def _fuzz(
    served: ServedApp,
    session: requests.Session,
    client_auth: dict[str, str],
    strategy: st.SearchStrategy[Any],
    cases: int,
    *,
    positive: bool,
    chunk: int,
) -> Counter[int]:
    books = Books(served)
    # Requests are sequential and this is the only client, so the books after one case are the
    # books before the next.
    last = [books.read()]
    statuses: Counter[int] = Counter()
    pairs = st.permutations(sorted(ACCOUNTS)).map(lambda ids: (ids[0], ids[1]))
    # The schema-driven acceptance and auth checks are replaced by the bank's own below: the
    # credentials are sent on purpose (the admin token to the admin routes, the fuzzing
    # client's key to the others; the security tests cover the 401s and 403s), and a request
    # that fits the schema can still be refused for what the schema cannot express.
    excluded = [positive_data_acceptance, ignored_auth]

    def one_case(case: Any, pair: tuple[str, str], use_known: bool) -> None:
        body = case.body
        if positive and use_known and case.path == "/transfers" and isinstance(body, dict):
            # Two funded accounts now and then, so that money really moves.
            body["from"], body["to"] = pair
        before = last[0]
        admin = case.path.startswith(("/audit", "/admin", "/clients"))
        headers = AUTH if admin else client_auth
        kwargs = case.as_transport_kwargs(base_url=served.base_url, headers=headers)
        response = session.request(**kwargs)
        statuses[response.status_code] += 1
        case.validate_response(response, excluded_checks=excluded, transport_kwargs=kwargs)
        after = last[0] = books.read()
        where = (case.method, case.path, case.path_parameters, body, response.text)
        assert after[0].drift == 0, where
        assert after[0].negative_accounts == (), where
        if response.status_code >= 400:
            assert after == before, where
            if positive:
                error = response.json()["error"]
                assert error in SEMANTIC_REFUSALS.get(response.status_code, set()), where

    run = seed(chunk)(
        settings(
            max_examples=cases,
            deadline=None,
            database=None,
            phases=[Phase.explicit, Phase.generate],
            suppress_health_check=list(HealthCheck),
        )(given(case=strategy, pair=pairs, use_known=st.booleans())(one_case))
    )
    run()
    return statuses


def _parts() -> list[Any]:
    """One test per chunk of at most CHUNK cases: (store, mode, chunk number, cases)."""
    parts = []
    for kind, modes in CASES.items():
        marks = [pytest.mark.postgres] if kind == "postgresql" else []
        for mode, cases in modes.items():
            for chunk, start in enumerate(range(0, cases, CHUNK)):
                size = min(CHUNK, cases - start)
                parts.append(
                    pytest.param(kind, mode, chunk, size, marks=marks, id=f"{kind}-{mode}-{chunk}")
                )
    return parts


PARTS = _parts()


@pytest.mark.depth
@pytest.mark.parametrize(("kind", "mode", "chunk", "cases"), PARTS)
def test_fuzz_every_route(
    kind: str, mode: str, chunk: int, cases: int, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    url = url_for(kind, tmp_path, request)
    lock_mode = "db" if kind != "memory" else "account"
    app = create_app(BankConfig(store=url, lock_mode=lock_mode, admin_token=ADMIN_TOKEN))
    with ServedApp(app) as served, requests.Session() as session:
        session.trust_env = False
        client_auth = _open_accounts(served, session)
        schema = schemathesis.openapi.from_url(f"{served.base_url}/openapi.json")
        if mode == "positive":
            strategy = st.one_of(
                schema.as_strategy(generation_mode=GenerationMode.POSITIVE),
                # The account routes on a funded account, so deposits and withdrawals succeed.
                schema.as_strategy(
                    generation_mode=GenerationMode.POSITIVE, path_parameters={"id": "fz_alice"}
                ),
            )
        else:
            strategy = schema.as_strategy(generation_mode=GenerationMode.NEGATIVE)
        statuses = _fuzz(
            served, session, client_auth, strategy, cases, positive=mode == "positive", chunk=chunk
        )
    assert statuses.total() >= cases
    assert not [status for status in statuses if status >= 500], statuses
    # Refusals are reached in every chunk, and acceptances whenever the data fit the schema.
    assert any(400 <= status < 500 for status in statuses), statuses
    if mode == "positive":
        assert any(200 <= status < 300 for status in statuses), statuses


@pytest.mark.depth
def test_the_budget_is_1000_cases_by_default_and_5000_deep() -> None:
    assert sum(part.values[3] for part in PARTS) == by_depth(1_000, deep=5_000)

"""A Hypothesis state machine drives the bank over HTTP next to a plain model of a bank.

Every response (status and whole JSON body, refusal messages included) and every balance is
compared with what the model says, on memory, SQLite and PostgreSQL, with a lock mode on. The
requests are sequential: this checks the semantics, the concurrency tests check the locking.

One server per store serves every example; each example opens its accounts under a fresh id
prefix, so the model only has to know its own accounts, and the bank-wide invariants (drift 0,
total = what was there before + the model's total, nothing negative) are checked after each step.
``derandomize=True`` makes the run the same on every machine, so CI cannot flake on it.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from services.bank.domain import MAX_AMOUNT
from services.bank.http import create_app
from services.bank.run.config import BankConfig

from ._loop_thread import ServedApp
from ._reliability import url_for
from .conftest import ADMIN_TOKEN, register_client

#: Examples per store: the memory store answers in a fraction of a millisecond, the databases in
#: a few; the budget of the whole file is about 15 seconds on 2 cores.
EXAMPLES = {"memory": 25, "sqlite": 12, "postgresql": 12}


def _settings(kind: str) -> settings:
    return settings(
        max_examples=EXAMPLES[kind],
        stateful_step_count=25,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=[HealthCheck.too_slow],
    )


NAMES = ["a", "b", "c", "d"]
# Mostly amounts of the size of the balances (so withdrawals and transfers both succeed and get
# refused), sometimes the extremes.
AMOUNTS = st.one_of(
    st.integers(1, 80),
    st.sampled_from([1, MAX_AMOUNT]),
    st.integers(1, MAX_AMOUNT),
)
BAD_BODIES: list[object] = [
    {},
    {"amount": 0},
    {"amount": -1},
    {"amount": MAX_AMOUNT + 1},
    {"amount": True},
    {"amount": 1.5},
    {"amount": "5"},
    {"amount": None},
    {"amount": 5, "extra": 1},
    [5],
    "5",
]


class Model:
    """The bank as a dict, and the answers it would give."""

    def __init__(self) -> None:
        self.balances: dict[str, int] = {}

    @staticmethod
    def not_found(account: str) -> tuple[int, dict[str, str]]:
        return 404, {"error": "account_not_found", "detail": f"account {account!r} does not exist"}

    @staticmethod
    def insufficient(account: str, balance: int, amount: int) -> tuple[int, dict[str, str]]:
        return 409, {
            "error": "insufficient_funds",
            "detail": f"account {account!r} holds {balance} cents, "
            f"which does not cover {amount} cents",
        }


class BankMachine(RuleBasedStateMachine):
    """Rules send one request each and compare the answer with the model's."""

    served: ServedApp
    counter: Iterator[int]
    #: The API key of the client every money request acts for (admin routes get the token).
    api_key: str

    def __init__(self) -> None:
        super().__init__()
        self.model = Model()
        self.prefix = f"x{next(self.counter)}_"
        self.base: dict[str, Any] = {}
        self.keys: dict[str, tuple[str, object, tuple[int, Any]]] = {}

    def call(
        self, method: str, path: str, body: object = None, headers: dict[str, str] | None = None
    ) -> tuple[int, Any]:
        async def send() -> tuple[int, Any]:
            data = None if body is None else json.dumps(body).encode()
            admin = path.startswith(("/audit", "/admin"))
            token = ADMIN_TOKEN if admin else self.api_key
            sent = {
                "Content-Type": "application/json",
                "Authorization": f"Bearer {token}",
                **(headers or {}),
            }
            async with self.served.client.request(method, path, data=data, headers=sent) as resp:
                text = await resp.text()
                assert resp.content_type == "application/json", (resp.status, text)
                return resp.status, json.loads(text)

        return self.served.thread.run(send())

    def id_of(self, name: str) -> str:
        return self.prefix + name

    @initialize(balances=st.lists(st.integers(0, 200), min_size=3, max_size=3))
    def open_most_accounts(self, balances: list[int]) -> None:
        """Remember the books, then open a, b and c (d stays unknown until a rule opens it)."""
        status, self.base = self.call("GET", "/audit")
        assert status == 200
        for name, balance in zip(NAMES, balances, strict=False):
            self.open_account(name, balance)

    @rule(name=st.sampled_from(NAMES), balance=st.one_of(st.integers(0, 100), st.just(MAX_AMOUNT)))
    def open_account(self, name: str, balance: int) -> None:
        account = self.id_of(name)
        got = self.call("POST", "/accounts", {"id": account, "balance": balance})
        if account in self.model.balances:
            detail = f"account {account!r} already exists"
            assert got == (409, {"error": "account_exists", "detail": detail})
        else:
            assert got == (201, {"id": account, "balance": balance})
            self.model.balances[account] = balance

    @rule(name=st.sampled_from(NAMES))
    def read_balance(self, name: str) -> None:
        account = self.id_of(name)
        got = self.call("GET", f"/accounts/{account}")
        if account in self.model.balances:
            assert got == (200, {"id": account, "balance": self.model.balances[account]})
        else:
            assert got == self.model.not_found(account)

    def _deposit(self, account: str, amount: int) -> tuple[int, Any]:
        if account not in self.model.balances:
            return self.model.not_found(account)
        self.model.balances[account] += amount
        return 200, {"id": account, "balance": self.model.balances[account]}

    def _withdraw(self, account: str, amount: int) -> tuple[int, Any]:
        if account not in self.model.balances:
            return self.model.not_found(account)
        balance = self.model.balances[account]
        if balance < amount:
            return self.model.insufficient(account, balance, amount)
        self.model.balances[account] = balance - amount
        return 200, {"id": account, "balance": balance - amount}

    @rule(name=st.sampled_from(NAMES), amount=AMOUNTS)
    def deposit(self, name: str, amount: int) -> None:
        account = self.id_of(name)
        got = self.call("POST", f"/accounts/{account}/deposit", {"amount": amount})
        assert got == self._deposit(account, amount)

    @rule(name=st.sampled_from(NAMES), amount=AMOUNTS)
    def withdraw(self, name: str, amount: int) -> None:
        account = self.id_of(name)
        got = self.call("POST", f"/accounts/{account}/withdraw", {"amount": amount})
        assert got == self._withdraw(account, amount)

    # `target` is taken by `rule` itself (bundles), hence `to`.
    @rule(source=st.sampled_from(NAMES), to=st.sampled_from(NAMES), amount=AMOUNTS)
    def transfer(self, source: str, to: str, amount: int) -> None:
        src, dst = self.id_of(source), self.id_of(to)
        got = self.call("POST", "/transfers", {"from": src, "to": dst, "amount": amount})
        balances = self.model.balances
        if src == dst:
            detail = f"cannot transfer from account {src!r} to itself"
            expected: tuple[int, Any] = (422, {"error": "same_account", "detail": detail})
        elif src not in balances:
            expected = self.model.not_found(src)
        elif dst not in balances:
            expected = self.model.not_found(dst)
        elif balances[src] < amount:
            expected = self.model.insufficient(src, balances[src], amount)
        else:
            balances[src] -= amount
            balances[dst] += amount
            expected = (
                200,
                {
                    "from": {"id": src, "balance": balances[src]},
                    "to": {"id": dst, "balance": balances[dst]},
                },
            )
        assert got == expected

    @rule(
        name=st.sampled_from(NAMES),
        operation=st.sampled_from(["deposit", "withdraw"]),
        body=st.sampled_from(BAD_BODIES),
    )
    def malformed_body(self, name: str, operation: str, body: object) -> None:
        status, answer = self.call("POST", f"/accounts/{self.id_of(name)}/{operation}", body)
        assert (status, answer["error"]) == (422, "validation_error")

    @rule(
        key=st.sampled_from(["k1", "k2", "k3"]),
        name=st.sampled_from(NAMES),
        operation=st.sampled_from(["deposit", "withdraw"]),
        amount=st.integers(1, 50),
    )
    def with_idempotency_key(self, key: str, name: str, operation: str, amount: int) -> None:
        """A key replays its first answer for the same request, and refuses a different one."""
        full_key = self.prefix + key
        path = f"/accounts/{self.id_of(name)}/{operation}"
        body = {"amount": amount}
        got = self.call("POST", path, body, headers={"Idempotency-Key": full_key})
        if full_key not in self.keys:
            account = self.id_of(name)
            if operation == "deposit":
                expected = self._deposit(account, amount)
            else:
                expected = self._withdraw(account, amount)
            assert got == expected
            self.keys[full_key] = (path, body, got)
        elif self.keys[full_key][:2] == (path, body):
            assert got == self.keys[full_key][2]
        else:
            assert got[0] == 422
            assert got[1]["error"] == "idempotency_key_reused"

    @precondition(lambda self: bool(self.model.balances))
    @rule()
    def switch_lock_mode_and_back(self) -> None:
        """Switching modes between requests changes no balance and no answer."""
        auth = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
        status, current = self.call("GET", "/admin/lock", headers=auth)
        assert status == 200
        assert self.call("PUT", "/admin/lock", {"mode": "global"}, headers=auth)[0] == 200
        assert self.call("PUT", "/admin/lock", current, headers=auth) == (200, current)

    @invariant()
    def books_balance(self) -> None:
        if not self.base:
            return
        status, books = self.call("GET", "/audit")
        assert status == 200
        assert books["drift"] == 0
        assert books["negative_accounts"] == []
        assert books["accounts"] == self.base["accounts"] + len(self.model.balances)
        assert books["total"] == self.base["total"] + sum(self.model.balances.values())


@pytest.mark.parametrize(
    ("kind", "lock_mode"),
    [
        ("memory", "account"),
        ("sqlite", "account"),
        ("sqlite", "db"),
        pytest.param("postgresql", "account", marks=pytest.mark.postgres),
        pytest.param("postgresql", "db", marks=pytest.mark.postgres),
    ],
)
def test_bank_matches_the_model(
    kind: str, lock_mode: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    url = url_for(kind, tmp_path, request)
    # Every example opens its accounts on the same server, for the same client.
    config = BankConfig(
        store=url,
        lock_mode=lock_mode,
        admin_token=ADMIN_TOKEN,
        max_accounts_per_client=10**6,
        max_opening_balance=MAX_AMOUNT,
    )
    app = create_app(config)
    with ServedApp(app) as served:

        class Machine(BankMachine):
            pass

        Machine.served = served
        Machine.counter = itertools.count()
        Machine.api_key = served.thread.run(register_client(served.client, "tester"))
        run_state_machine_as_test(Machine, settings=_settings(kind))

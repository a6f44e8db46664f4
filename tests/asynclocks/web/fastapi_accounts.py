"""A tiny FastAPI bank for the OpenAPI tests: create, deposit, withdraw, read.

No ``from __future__ import annotations`` here: FastAPI reads the annotations at run time.
"""

from typing import Annotated, Any

import anyio
from fastapi import FastAPI, Path
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

AccountId = Annotated[str, Path(pattern="^[a-z]{1,8}$")]


class NewAccount(BaseModel):
    id: str = Field(pattern="^[a-z]{1,8}$")
    balance: int = Field(ge=0, le=1000)


class Amount(BaseModel):
    amount: int = Field(ge=1, le=1000)


def accounts_app(locked: bool = False) -> FastAPI:
    """Read the balance, await the database, write: without ``locked``, a lost update."""
    app = FastAPI()
    balances: dict[str, int] = {}
    lock = anyio.Lock()

    @app.post("/accounts", status_code=201)
    async def create(account: NewAccount) -> Any:
        if account.id in balances:
            return JSONResponse({"error": "account_exists"}, status_code=409)
        balances[account.id] = account.balance
        return {"id": account.id, "balance": account.balance}

    async def change(name: str, delta: int) -> Any:
        if name not in balances:
            return JSONResponse({"error": "account_not_found"}, status_code=404)
        balance = balances[name]
        if balance + delta < 0:
            return JSONResponse({"error": "insufficient_funds"}, status_code=409)
        await anyio.sleep(0.001)  # the database round trip
        balances[name] = balance + delta
        return {"id": name, "balance": balance + delta}

    async def guarded(name: str, delta: int) -> Any:
        if not locked:
            return await change(name, delta)
        async with lock:
            return await change(name, delta)

    @app.post("/accounts/{name}/deposit")
    async def deposit(name: AccountId, body: Amount) -> Any:
        return await guarded(name, body.amount)

    @app.post("/accounts/{name}/withdraw")
    async def withdraw(name: AccountId, body: Amount) -> Any:
        return await guarded(name, -body.amount)

    @app.get("/accounts/{name}")
    async def show(name: AccountId) -> Any:
        if name not in balances:
            return JSONResponse({"error": "account_not_found"}, status_code=404)
        return {"id": name, "balance": balances[name]}

    return app


def locked_accounts_app() -> FastAPI:
    return accounts_app(locked=True)

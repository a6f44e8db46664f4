"""A coupon redeemed twice: a check-then-act race in a FastAPI app, found without an invariant.

``POST /coupons/{code}/redeem`` checks that the coupon is unused, awaits the payment provider, then
marks it used. Two overlapping requests both pass the check. ``asynclocks.web.check_requests``
needs no hand-written invariant: it runs the two requests one at a time in both orders to learn
what may happen (one redemption succeeds, the other is refused), then runs them together under the
explorer, which finds the schedule where both succeed. The fix holds a per-coupon lock
(``KeyedLock``) across the check and the act; the same check then passes on every schedule.
"""

from __future__ import annotations

import anyio
from fastapi import FastAPI, Path
from fastapi.responses import JSONResponse

import asynclocks
import asynclocks.web

#: The coupon codes the service starts with, also shown in its OpenAPI document.
CODE = Path(examples=["WELCOME10"])


def make_app(locked: bool = False) -> FastAPI:
    """The coupon service; ``locked`` holds the coupon's lock from the check to the act."""
    app = FastAPI()
    coupons = {"WELCOME10": {"discount": 10, "used": False}}
    locks = asynclocks.KeyedLock()

    async def redeem_now(code: str) -> JSONResponse:
        coupon = coupons.get(code)
        if coupon is None:
            return JSONResponse({"error": "unknown_coupon"}, status_code=404)
        if coupon["used"]:  # check
            return JSONResponse({"error": "already_used"}, status_code=409)
        await anyio.sleep(0.01)  # the payment provider applies the discount
        coupon["used"] = True  # act, on a check that may be stale
        return JSONResponse({"code": code, "discount": coupon["discount"]})

    @app.post("/coupons/{code}/redeem")
    async def redeem(code: str = CODE) -> JSONResponse:
        if not locked:
            return await redeem_now(code)
        async with locks(code):
            return await redeem_now(code)

    @app.get("/coupons/{code}")
    async def show(code: str = CODE) -> dict[str, object]:
        return {"code": code, **coupons[code]}

    return app


def locked_app() -> FastAPI:
    return make_app(locked=True)


REDEEM_TWICE = ["POST /coupons/WELCOME10/redeem", "POST /coupons/WELCOME10/redeem"]
OBSERVE = ["GET /coupons/WELCOME10"]


def main() -> None:
    for backend in ("asyncio", "trio"):
        racy = asynclocks.web.check_requests(
            make_app, concurrent=REDEEM_TWICE, observe=OBSERVE, backend=backend
        )
        print(f"{backend:>7}: without a lock -> {racy.verdict}")
        fixed = asynclocks.web.check_requests(
            locked_app, concurrent=REDEEM_TWICE, observe=OBSERVE, backend=backend
        )
        print(f"{backend:>7}: KeyedLock per coupon -> {fixed.verdict}")
    print()
    print(racy.error.explanation if isinstance(racy.error, asynclocks.web.NotLinearizable) else "")


if __name__ == "__main__":
    main()

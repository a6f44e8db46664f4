"""The explorer in pytest. ``test_overdraft`` fails on purpose: it shows what a race looks like."""

import asynclocks
from overdraft import overdraft, overdraft_fixed

test_overdraft = asynclocks.check_interleavings("asyncio")(overdraft)
test_overdraft_fixed = asynclocks.check_interleavings()(overdraft_fixed)  # asyncio and trio
test_overdraft_is_a_race = asynclocks.check_interleavings("asyncio", expect="fail")(overdraft)
test_regression_1 = asynclocks.check_interleavings(replay_token="al1:a:2::d2c2:3076")(
    overdraft_fixed
)


@asynclocks.check_interleavings("trio", preemption_bound=2)
async def test_written_inline() -> None:
    await overdraft_fixed()

"""The explorer from Python: find the race, replay its token, prove the fix."""

import asynclocks
from overdraft import overdraft, overdraft_fixed

report = asynclocks.explore(overdraft, backend="trio")  # strategy="dfs", max_schedules=10_000
print(report.failed, report.kind, repr(report.error), report.schedules, report.token)
assert report.token is not None  # every failure comes with one
try:
    asynclocks.replay(overdraft, report.token)  # the token names its backend
except AssertionError as error:
    print("replayed:", error)  # the same failure, every time
print(asynclocks.explore(overdraft_fixed, backend="trio").verdict)

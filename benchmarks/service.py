"""What the bank's locking and our load generator cost, measured with wrk in one run.

Run: ``.venv/bin/python benchmarks/service.py`` (about 2.5 min) or ``--quick`` (40 s); each round's
figures go to stderr as it ends, as progress (``--quiet``: not).
``BENCH_ACCOUNTS=N`` changes the number of accounts of the first pair (default 64).

``--against REV`` measures something else: this tree's bank against the bank of git revision
REV (``git archive`` into a temporary directory), ``none`` and ``account`` over 64 random
accounts, one server per tree run from its own tree, in interleaved rounds (each round measures
all four back to back, the order of the trees and of the modes changing from round to round),
the servers and wrk kept on separate CPUs (``--no-pin`` to let them float). It prints the best
requests/s and the best (lowest) server CPU per request of each and their after/before;
PASS/MISS (exit 1 on a MISS) judges CPU per request within 5%, since on a loaded machine
wall-clock rps moves far more than the work per request, and load only ever adds to it. The
median over the rounds of each round's ratio is printed beside it as a check of the noise. The
servers get the admin token from ``BANK_ADMIN_TOKEN`` and, where the revision has client keys,
the benchmark registers a client (``POST /clients``) and sends its key.

Every figure is requests per second of ``POST /accounts/{id}/deposit`` (``{"amount": 1}``) sent
by 64 connections:

- ``bare``: a bare aiohttp app with the same route that parses the JSON and answers JSON, no
  validation, store or lock (the ceiling of aiohttp on this machine), over 64 accounts;
- ``none`` and ``account``: the bank (memory store, io-delay 0) in those lock modes, over 64
  accounts picked at random: one server process, switched between the two through
  ``PUT /admin/lock`` before each measurement. Two processes would not compare the modes alone:
  on two cores, where each process happens to run relative to wrk changes its CPU per request
  (one sitting gave 0.80 between two processes and 0.98 within one);
- ``hammer``: ``python -m services.bank hammer`` (deposits only, same accounts count and
  concurrency) against the same ``account`` server wrk just measured;
- ``none``/``account`` twice more over ``BENCH_WIDE_ACCOUNTS`` (default 4,096) other accounts of
  the same server: ``random``, wrk picking each deposit's account at random as above, and
  ``in turn``, wrk taking the accounts one after another (round robin).

Why three pairs. With 64 connections on 64 random accounts, about a third of the requests find
their account held by another in-flight request (counted: 33.5% of acquires waited, at io-delay
0) and wait a turn, which costs a parked future, a hand-over and extra event-loop passes. That
is the price of *contention*, which ``none`` avoids by being wrong. Over 4,096 random accounts
about 0.5% of the requests still meet another on their account (the birthday problem: 64
requests in flight), and under uvloop on this machine even that costs 0.82-0.87, mostly in
waking wrk: a waiting request answers two loop passes late, the server stops answering wrk's
connections in bursts, and each extra wake-up of wrk is a cross-CPU interrupt inside the
server's ``send()`` (measured with perf and /proc: wrk sleeps 0.67-0.72 times per request
instead of 0.51, and the server's kernel time per request grows by half; with the same lock
taken on a key no other request uses, the ratio is 0.99-1.01; on the stock asyncio loop,
``--loop asyncio``, contention costs almost nothing: 0.94 here, 0.98 over 64). Taken in turn,
4,096 accounts put no two in-flight requests on one account (counted: 0 waits in 280,000
requests), so ``account``/``none`` *in turn* is the price of the lock itself, which is what the
target (a per-account lock costs little) judges. The two random ratios are printed next to it as
what contention costs.

wrk (the Debian package; installed with apt-get when missing and running as root) drives all but
the hammer through Lua scripts. The two servers run side by side and are measured in
``--rounds`` interleaved rounds, each round starting with a different measurement; the best
round of each is kept. The event loop is uvloop when installed, for servers and hammer alike.

Two figures per server: requests/s of wall time, and requests per second of the *server's own CPU
time* (read from /proc), which is what a whole core would sustain. On a shared machine the second
is steadier, since a neighbour stealing the core slows the wall clock but not the work done
per request; the PASS/MISS of the two server ratios uses it. hammer/wrk can only be wall-clock
(is the client fast enough to keep the server as busy as wrk does?).

Every ratio is the median over the rounds of the ratio within a round, the two modes of a pair
measured back to back (which one first alternates). It used to be the best figure of one mode
over the best of the other, two different moments of a noisy machine: under a load average of
8 the same server in the same mode gave 11,688 and 16,526 requests per CPU-second in two rounds.
That is how account/none in turn could miss 0.9 on the old and the new tree alike. Paired,
it still reads about 0.90 under such load (rounds of 0.88, 0.85, 0.93, 1.01), while in one
process, with no HTTP, the lock adds 0.4-0.7 us to a deposit (4.1 against 3.5 us, uvloop,
accounts in turn): about 1% of the 60-80 us of server CPU a request takes. The rest of the gap
under load is in how the server and wrk share two cores (as for the random accounts above), not
in the lock's work.

Targets (PASS/MISS): account/none in turn >= 0.9 (a per-account lock costs little), none/bare
>= 0.7 (the service's validation, store and JSON errors cost little), hammer/wrk >= 0.7 (our
Python load generator keeps up with a C one).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import secrets
import selectors
import shutil
import statistics
import subprocess
import sys
import tempfile
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import get_args

from services.bank.run.server import LoopKind, run

ACCOUNTS = int(os.environ.get("BENCH_ACCOUNTS", "64"))
WIDE_ACCOUNTS = int(os.environ.get("BENCH_WIDE_ACCOUNTS", "4096"))
ADMIN_TOKEN = secrets.token_hex(16)
TARGETS = {"account/none (in turn)": 0.9, "none/bare": 0.7, "hammer/wrk": 0.7}

# wrk's Lua script; wrk calls request() for every request it sends, on its one thread. `pick`
# sets `account`, the index of the account the next deposit goes to.
LUA = """
local headers = {["Content-Type"] = "application/json"%(headers)s}
local body = '{"amount":1}'
local accounts = %(accounts)d
local prefix = "/accounts/%(prefix)s"
local turn = -1
request = function()
  %(pick)s
  return wrk.format("POST", prefix .. account .. "/deposit", headers, body)
end
"""
PICK_RANDOM = "local account = math.random(0, accounts - 1)"
PICK_IN_TURN = "turn = (turn + 1) % accounts; local account = turn"


def lua_script(accounts: int, prefix: str, pick: str, key: str | None = None) -> str:
    """wrk's script depositing 1 cent into ``{prefix}0`` .. ``{prefix}{accounts - 1}``, with
    ``Authorization: Bearer key`` when the bank gave the benchmark a client key."""
    headers = "" if key is None else f', ["Authorization"] = "Bearer {key}"'
    return LUA % {"accounts": accounts, "prefix": prefix, "pick": pick, "headers": headers}


# ------------------------------------------------------------------------- the bare server


def _serve_bare(loop: LoopKind) -> None:
    """A bare aiohttp server: same route, parses JSON, answers JSON, nothing else."""
    import asyncio
    import signal

    from aiohttp import web

    async def deposit(request: web.Request) -> web.Response:
        body = await request.json()
        return web.json_response({"id": request.match_info["id"], "balance": body["amount"]})

    async def main() -> None:
        app = web.Application()
        app.router.add_post("/accounts/{id}/deposit", deposit)
        runner = web.AppRunner(app, handle_signals=False, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        host, port = runner.addresses[0][:2]
        print(f"listening on http://{host}:{port}", flush=True)
        stop = asyncio.Event()
        for signum in (signal.SIGINT, signal.SIGTERM):
            asyncio.get_running_loop().add_signal_handler(signum, stop.set)
        await stop.wait()
        await runner.cleanup()

    run(main(), loop=loop)


# ------------------------------------------------------------------------------- helpers


def ensure_wrk() -> str:
    """Return the path of wrk, installing the Debian package when missing."""
    path = shutil.which("wrk")
    if path:
        return path
    if os.geteuid() != 0:
        sys.exit("wrk is missing; install it with: sudo apt-get install -y wrk")
    print("installing wrk: apt-get update && apt-get install -y wrk", file=sys.stderr)
    subprocess.run(["apt-get", "update"], check=True, capture_output=True)
    subprocess.run(["apt-get", "install", "-y", "wrk"], check=True, capture_output=True)
    path = shutil.which("wrk")
    if not path:
        sys.exit("apt-get install wrk did not provide a wrk executable")
    return path


@dataclass(frozen=True)
class Server:
    url: str
    pid: int

    def cpu_seconds(self) -> float:
        """User + system CPU time the server process has used so far."""
        fields = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class Run:
    requests: int
    seconds: float
    server_cpu: float

    @property
    def rps(self) -> float:
        return self.requests / self.seconds

    @property
    def per_cpu(self) -> float:
        """Requests per second of server CPU: the rate a whole core would sustain."""
        return self.requests / self.server_cpu if self.server_cpu > 0 else 0.0

    @property
    def us_per_request(self) -> float:
        """Microseconds of server CPU per request (``--against`` compares these)."""
        return self.server_cpu / self.requests * 1e6


@contextmanager
def server(
    command: Sequence[str],
    *,
    tree: Path | None = None,
    cpus: set[int] | None = None,
    start_timeout: float = 30,
) -> Iterator[Server]:
    """Start a server that prints ``listening on URL``; yield it; stop it.

    ``tree``: run that source tree's code (its directory first on ``PYTHONPATH``, and the
    working directory). ``cpus``: the CPUs the process may run on. ``start_timeout``: seconds
    it gets to say it listens (a server under valgrind needs minutes). The admin token reaches
    it through the environment (every revision reads ``BANK_ADMIN_TOKEN``).
    """
    env = {**os.environ, "BANK_ADMIN_TOKEN": ADMIN_TOKEN}
    if tree is not None:
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(tree), env.get("PYTHONPATH")]))
    process = subprocess.Popen(
        list(command),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        cwd=tree,
    )
    if cpus is not None:
        os.sched_setaffinity(process.pid, cpus)
    try:
        assert process.stdout is not None
        with selectors.DefaultSelector() as selector:
            selector.register(process.stdout, selectors.EVENT_READ)
            line = process.stdout.readline() if selector.select(start_timeout) else ""
        if not line.startswith("listening on "):
            process.kill()
            assert process.stderr is not None
            sys.exit(f"server {' '.join(command)} did not start: {process.stderr.read()[-2000:]}")
        yield Server(line.removeprefix("listening on ").strip(), process.pid)
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        for stream in (process.stdout, process.stderr):
            if stream is not None:
                stream.close()


def client_key(url: str) -> str | None:
    """Register a client and return its API key, or None from a bank without client keys."""
    request = urllib.request.Request(
        url + "/clients",
        data=json.dumps({"id": f"bench-{secrets.token_hex(4)}"}).encode(),
        headers={"Content-Type": "application/json", "Authorization": f"Bearer {ADMIN_TOKEN}"},
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            key: str = json.loads(response.read())["key"]
            return key
    except urllib.error.HTTPError as exc:
        if exc.code in (404, 405):  # a revision from before client keys
            return None
        raise


def open_accounts(
    url: str, prefix: str = "bench-", count: int | None = None, key: str | None = None
) -> None:
    headers = {"Content-Type": "application/json"}
    if key is not None:
        headers["Authorization"] = f"Bearer {key}"
    for index in range(ACCOUNTS if count is None else count):
        body = json.dumps({"id": f"{prefix}{index}", "balance": 0}).encode()
        request = urllib.request.Request(url + "/accounts", data=body, headers=headers)
        with urllib.request.urlopen(request, timeout=10) as response:
            assert response.status == 201


def set_mode(url: str, mode: str) -> None:
    """Switch the bank's lock mode (it waits for the requests of the old mode to finish)."""
    request = urllib.request.Request(
        url + "/admin/lock",
        data=json.dumps({"mode": mode}).encode(),
        method="PUT",
        headers={"Content-Type": "application/json", "Authorization": f"Bearer {ADMIN_TOKEN}"},
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        assert json.loads(response.read()) == {"mode": mode}


def run_wrk(
    wrk: str,
    target: Server,
    script: Path,
    seconds: float,
    connections: int,
    cpus: set[int] | None = None,
) -> Run:
    """Run wrk against ``target`` (on ``cpus``, if given); fail on any non-2xx answer."""
    command = [
        wrk,
        "-t1",
        f"-c{connections}",
        f"-d{max(1, round(seconds))}s",
        "-s",
        str(script),
        target.url,
    ]
    pin = None if cpus is None else (lambda: os.sched_setaffinity(0, cpus))
    cpu = target.cpu_seconds()
    result = subprocess.run(command, capture_output=True, text=True, check=True, preexec_fn=pin)
    cpu = target.cpu_seconds() - cpu
    match = re.search(r"(\d+) requests in ([\d.]+)(m?s)", result.stdout)
    if match is None:
        sys.exit(f"cannot read wrk's output:\n{result.stdout}\n{result.stderr}")
    bad = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", result.stdout)
    if bad:
        sys.exit(f"{target.url} answered {bad.group(1)} non-2xx responses to wrk")
    errors = re.search(r"Socket errors:.*", result.stdout)
    if errors:
        print(f"  wrk: {errors.group(0)}", file=sys.stderr)
    elapsed = float(match.group(2)) / (1000 if match.group(3) == "ms" else 1)
    return Run(int(match.group(1)), elapsed, cpu)


def run_hammer(target: Server, seconds: float, connections: int, loop: LoopKind) -> Run:
    with tempfile.TemporaryDirectory() as folder:
        report = Path(folder) / "hammer.json"
        command = [
            sys.executable,
            "-m",
            "services.bank",
            "hammer",
            "--url",
            target.url,
            "--duration",
            str(seconds),
            "--concurrency",
            str(connections),
            "--accounts",
            str(ACCOUNTS),
            "--mix",
            "deposit:1",
            "--no-progress",
            "--loop",
            loop,
            "--fail-on-drift",
            "--json",
            str(report),
        ]
        # The server's CPU is counted over the whole hammer process, setup included, so the
        # per-CPU figure of hammer is slightly pessimistic.
        cpu = target.cpu_seconds()
        # The hammer registers a client of its own with the admin token.
        env = {**os.environ, "BANK_ADMIN_TOKEN": ADMIN_TOKEN}
        subprocess.run(command, check=True, capture_output=True, env=env)
        cpu = target.cpu_seconds() - cpu
        document = json.loads(report.read_text())
        return Run(document["requests"], document["duration_s"], cpu)


def measure(
    rounds: int, seconds: float, connections: int, loop: LoopKind, progress: bool = True
) -> dict[str, list[Run]]:
    """Start the two servers once, then measure them in interleaved rounds (each round's
    figures on stderr as it ends, unless not ``progress``)."""
    wrk = ensure_wrk()
    runs: dict[str, list[Run]] = {
        "bare": [],
        "none": [],
        "account": [],
        "none random": [],
        "account random": [],
        "none in turn": [],
        "account in turn": [],
        "hammer": [],
    }
    bank = [sys.executable, "-m", "services.bank", "serve", "--port", "0", "--io-delay", "0"]
    bank += ["--loop", loop]
    # This tree's bank caps accounts per client; the wide pairs open more than the default.
    bank += ["--lock", "none", "--max-accounts-per-client", str(ACCOUNTS + WIDE_ACCOUNTS)]
    with contextlib.ExitStack() as stack:
        folder = Path(stack.enter_context(tempfile.TemporaryDirectory()))
        servers = {
            "bare": stack.enter_context(
                server([sys.executable, __file__, "--serve-bare", "--loop", loop])
            ),
            "bank": stack.enter_context(server(bank)),
        }
        key = client_key(servers["bank"].url)
        script = folder / "deposit.lua"
        script.write_text(lua_script(ACCOUNTS, "bench-", PICK_RANDOM, key))
        random_script = folder / "deposit-random.lua"
        random_script.write_text(lua_script(WIDE_ACCOUNTS, "wide-", PICK_RANDOM, key))
        in_turn_script = folder / "deposit-in-turn.lua"
        in_turn_script.write_text(lua_script(WIDE_ACCOUNTS, "wide-", PICK_IN_TURN, key))
        open_accounts(servers["bank"].url, key=key)
        open_accounts(servers["bank"].url, "wide-", WIDE_ACCOUNTS, key=key)
        for target in servers.values():
            run_wrk(wrk, target, script, 1, connections)  # warm-up
        # (measurement name, server, lock mode, script), in units: the two modes of a pair are
        # measured back to back, so that their ratio in one round compares like with like.
        plan: list[list[tuple[str, str, str | None, Path]]] = [
            [("bare", "bare", None, script)],
            [("none", "bank", "none", script), ("account", "bank", "account", script)],
            [
                ("none random", "bank", "none", random_script),
                ("account random", "bank", "account", random_script),
            ],
            [
                ("none in turn", "bank", "none", in_turn_script),
                ("account in turn", "bank", "account", in_turn_script),
            ],
        ]
        for round_number in range(1, rounds + 1):
            # Each round starts with a different unit, so whatever the previous measurement
            # leaves behind (sockets in TIME_WAIT, a busy neighbour) falls on each in turn;
            # within a pair, which mode goes first alternates from round to round.
            shift = (round_number - 1) % len(plan)
            for unit in plan[shift:] + plan[:shift]:
                for name, server_name, mode, lua in unit[:: 1 if round_number % 2 else -1]:
                    if mode is not None:
                        set_mode(servers[server_name].url, mode)
                    target = servers[server_name]
                    runs[name].append(run_wrk(wrk, target, lua, seconds, connections))
            # hammer against the server wrk measured, in mode account (paired with that run)
            set_mode(servers["bank"].url, "account")
            runs["hammer"].append(run_hammer(servers["bank"], seconds, connections, loop))
            if not progress:
                continue
            print(
                f"round {round_number}/{rounds}: "
                + "  ".join(
                    f"{name} {found[-1].rps:,.0f} rps ({found[-1].per_cpu:,.0f}/cpu-s)"
                    for name, found in runs.items()
                ),
                file=sys.stderr,
            )
        # No /audit check: the bank's own books drift by design (wrk's deposits under `none`
        # lose updates). The hammer runs with --fail-on-drift on accounts of its own, all in
        # mode account, so a lock that let money slip would fail it.
    return runs


# ------------------------------------------------------------- --against: before and after

ROOT = Path(__file__).resolve().parents[1]
#: After/before of server CPU per request, and of requests/s, that still PASS: within 5%.
AGAINST_TARGET = 1.05
AGAINST_MODES = ("none", "account")


def resolve_revision(revision: str) -> str:
    """Return the commit ``revision`` names in this repository.

    Raises:
        ValueError: It names none (or git is missing), said in one line.
    """
    try:
        found = subprocess.run(
            ["git", "-C", str(ROOT), "rev-parse", "--verify", "--quiet", f"{revision}^{{commit}}"],
            capture_output=True,
            text=True,
        )
    except FileNotFoundError:
        raise ValueError("--against needs git, which is not installed") from None
    if found.returncode != 0:
        raise ValueError(f"--against {revision!r}: no such revision in {ROOT}")
    return found.stdout.strip()


@contextmanager
def revision_tree(commit: str) -> Iterator[Path]:
    """Yield a temporary directory holding the tree of ``commit``; remove it afterwards.

    ``git archive`` rather than ``git worktree add``: the same files, and nothing registered in
    the repository that an interrupted run would leave behind.
    """
    with tempfile.TemporaryDirectory(prefix="asynclocks-before-") as folder:
        archive = subprocess.run(
            ["git", "-C", str(ROOT), "archive", "--format=tar", commit],
            capture_output=True,
            check=True,
        )
        subprocess.run(["tar", "-x", "-C", folder], input=archive.stdout, check=True)
        yield Path(folder)


def _pinning(enabled: bool) -> tuple[set[int] | None, set[int] | None]:
    """CPUs for (the servers, wrk): apart, so every server meets wrk in the same placement."""
    cpus = sorted(os.sched_getaffinity(0))
    if not enabled or len(cpus) < 2:
        return None, None
    return {cpus[-1]}, {cpus[0]}


def measure_against(
    before: Path,
    rounds: int,
    seconds: float,
    connections: int,
    loop: LoopKind,
    pin: bool,
    progress: bool = True,
) -> dict[tuple[str, str], list[Run]]:
    """Measure the bank of ``before`` and of this tree in interleaved rounds.

    Returns runs keyed by (``"before"`` or ``"after"``, lock mode). One server per tree, both
    started once and switched between the modes; in each round every (tree, mode) is measured
    once, in an order that changes from round to round (which tree first, which mode first).
    """
    wrk = ensure_wrk()
    server_cpus, wrk_cpus = _pinning(pin)
    command = [sys.executable, "-m", "services.bank", "serve", "--port", "0", "--io-delay", "0"]
    command += ["--loop", loop, "--lock", "none"]
    runs: dict[tuple[str, str], list[Run]] = {
        (tree, mode): [] for tree in ("before", "after") for mode in AGAINST_MODES
    }
    with contextlib.ExitStack() as stack:
        folder = Path(stack.enter_context(tempfile.TemporaryDirectory()))
        servers: dict[str, Server] = {}
        scripts: dict[str, Path] = {}
        for tree, root in (("before", before), ("after", ROOT)):
            target = stack.enter_context(server(command, tree=root, cpus=server_cpus))
            key = client_key(target.url)
            open_accounts(target.url, key=key)
            scripts[tree] = folder / f"{tree}.lua"
            scripts[tree].write_text(lua_script(ACCOUNTS, "bench-", PICK_RANDOM, key))
            servers[tree] = target
        for tree, target in servers.items():
            for mode in AGAINST_MODES:  # warm-up
                set_mode(target.url, mode)
                run_wrk(wrk, target, scripts[tree], 1, connections, wrk_cpus)
        for number in range(rounds):
            trees = ("before", "after") if number % 2 == 0 else ("after", "before")
            modes = AGAINST_MODES if number % 4 < 2 else AGAINST_MODES[::-1]
            for tree in trees:
                for mode in modes:
                    set_mode(servers[tree].url, mode)
                    found = run_wrk(
                        wrk, servers[tree], scripts[tree], seconds, connections, wrk_cpus
                    )
                    runs[tree, mode].append(found)
            if not progress:
                continue
            print(
                f"round {number + 1}/{rounds}: "
                + "  ".join(
                    f"{tree} {mode} {found[-1].rps:,.0f} rps "
                    f"({found[-1].us_per_request:.1f} us/request)"
                    for (tree, mode), found in runs.items()
                ),
                file=sys.stderr,
            )
    return runs


def report_against(
    runs: dict[tuple[str, str], list[Run]], label: str, rounds: int, seconds: float
) -> bool:
    """Print before/after per mode; return whether every CPU-per-request ratio is on target.

    The verdict divides the best (lowest) CPU per request of each tree: load from elsewhere
    only ever adds to it, so the least disturbed round is the one that says what a request
    costs. The median over the rounds of the two trees' ratio, each round's pair measured back
    to back, is printed beside it as a check: far from the first, the run was too noisy.
    """
    print(
        f"POST /accounts/{{id}}/deposit, {ACCOUNTS} random accounts, before = {label}, "
        f"after = this tree, {rounds} interleaved rounds x {seconds:g} s, "
        f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}"
    )
    print(f"  {'':<9}{'requests/s (best)':^36}  {'server CPU us/request (best)':^36}")
    print(
        f"  {'mode':<9}{'before':>10}{'after':>10}{'after/before':>16}"
        f"  {'before':>10}{'after':>10}{'after/before':>16}"
    )
    passed = True
    for mode in AGAINST_MODES:
        before, after = runs["before", mode], runs["after", mode]
        pairs = list(zip(before, after, strict=True))
        best_rps = max(r.rps for r in before), max(r.rps for r in after)
        best_us = min(r.us_per_request for r in before), min(r.us_per_request for r in after)
        cpu_ratio = best_us[1] / best_us[0]
        paired = statistics.median(new.us_per_request / old.us_per_request for old, new in pairs)
        ok = cpu_ratio <= AGAINST_TARGET
        passed &= ok
        print(
            f"  {mode:<9}{best_rps[0]:>10,.0f}{best_rps[1]:>10,.0f}"
            f"{best_rps[1] / best_rps[0]:>16.3f}  {best_us[0]:>10.1f}{best_us[1]:>10.1f}"
            f"{cpu_ratio:>16.3f}  {'PASS' if ok else 'MISS'} (paired median {paired:.3f})"
        )
    print(
        f"  PASS/MISS: after/before of the best CPU per request <= {AGAINST_TARGET}; the paired "
        "median is each round's ratio, back to back"
    )
    return passed


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=3.0, help="seconds per measurement")
    parser.add_argument("--rounds", type=int, default=6, help="interleaved repeats; best kept")
    parser.add_argument("--connections", type=int, default=64, help="concurrent connections")
    parser.add_argument("--quick", action="store_true", help="one round of 2 s per figure")
    parser.add_argument(
        "--loop",
        choices=get_args(LoopKind),
        default="auto",
        help="event loop of the servers and hammer: uvloop when installed (auto), or force one",
    )
    parser.add_argument(
        "--against",
        metavar="REV",
        help="instead: the bank of git revision REV against this tree's, none and account, "
        "in interleaved rounds; CPU per request within 5%% is PASS",
    )
    parser.add_argument(
        "--no-pin",
        action="store_true",
        help="with --against: do not keep the servers and wrk on separate CPUs",
    )
    parser.add_argument(
        "--quiet", action="store_true", help="no progress (each round's figures) on stderr"
    )
    parser.add_argument("--serve-bare", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve_bare:
        _serve_bare(args.loop)
        return 0
    if args.rounds < 1 or args.seconds < 1 or args.connections < 1:
        parser.error("--rounds and --connections must be >= 1, --seconds >= 1")
    rounds, seconds = (2, 2.0) if args.quick else (args.rounds, args.seconds)
    if args.against is not None:
        try:
            commit = resolve_revision(args.against)
        except ValueError as exc:
            parser.error(str(exc))
        if args.quick:
            rounds = 4  # every order of trees and modes once
        with revision_tree(commit) as before:
            found = measure_against(
                before,
                rounds,
                seconds,
                args.connections,
                args.loop,
                not args.no_pin,
                progress=not args.quiet,
            )
        label = f"{args.against} ({commit[:10]})"
        return 0 if report_against(found, label, rounds, seconds) else 1
    runs = measure(rounds, seconds, args.connections, args.loop, progress=not args.quiet)
    wall = {name: max(run.rps for run in found) for name, found in runs.items()}
    cpu = {name: max(run.per_cpu for run in found) for name, found in runs.items()}
    # hammer against wrk on the same server, paired round by round.
    pairs = zip(runs["hammer"], runs["account"], strict=True)
    hammer_ratio = statistics.median(hammer.rps / wrk_run.rps for hammer, wrk_run in pairs)
    load = os.getloadavg()[0]
    print(
        f"POST /accounts/{{id}}/deposit, {args.connections} connections, {ACCOUNTS} accounts, "
        f"best of {rounds} x {seconds:g} s, {os.cpu_count()} CPUs, load average {load:.1f}"
    )
    print(f"  {'':<34}{'requests/s':>12}{'per server CPU-s':>18}")
    labels = {
        "bare": "bare aiohttp handler (wrk)",
        "none": "bank, lock none (wrk)",
        "account": "bank, lock account (wrk)",
        "none random": f"  {WIDE_ACCOUNTS:,} random accounts: none",
        "account random": f"  {WIDE_ACCOUNTS:,} random accounts: account",
        "none in turn": f"  {WIDE_ACCOUNTS:,} accounts in turn: none",
        "account in turn": f"  {WIDE_ACCOUNTS:,} accounts in turn: account",
        "hammer": "hammer on the account server",
    }
    for name, label in labels.items():
        print(f"  {label:<34}{wall[name]:>12,.0f}{cpu[name]:>18,.0f}")

    def ratio(numerator: str, denominator: str) -> tuple[float, float | None]:
        """By wall clock and by server CPU: the median of the rounds' ratios.

        Each round's two figures were measured one after the other (the pairs back to back),
        so a round's ratio compares the modes under the same load from elsewhere; the best of
        each mode taken apart would pair two different moments of a noisy machine.
        """
        rounds = list(zip(runs[numerator], runs[denominator], strict=True))
        return (
            statistics.median(top.rps / bottom.rps for top, bottom in rounds),
            statistics.median(top.per_cpu / bottom.per_cpu for top, bottom in rounds),
        )

    ratios: dict[str, tuple[float, float | None]] = {
        "account/none (in turn)": ratio("account in turn", "none in turn"),
        f"account/none ({WIDE_ACCOUNTS:,} random)": ratio("account random", "none random"),
        f"account/none ({ACCOUNTS:,} random)": ratio("account", "none"),
        "none/bare": ratio("none", "bare"),
        "hammer/wrk": (hammer_ratio, None),
    }
    print(f"  {'ratio (median of the rounds)':<34}{'wall':>7}{'per CPU':>9}   target")
    for name, (by_wall, by_cpu) in ratios.items():
        shown = f"{by_cpu:9.2f}" if by_cpu is not None else f"{'-':>9}"
        decisive = by_cpu if by_cpu is not None else by_wall
        target = TARGETS.get(name)
        verdict = (
            f">= {target:.1f}  {'PASS' if decisive >= target else 'MISS'}"
            if target is not None
            else "(reported: with contention)"
        )
        print(f"  {name:<34}{by_wall:7.2f}{shown}   {verdict}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Instructions per request of the bank's server, this tree against git revisions (callgrind).

Run: ``.venv/bin/python benchmarks/instructions.py --against 46cd63c,ac3b791`` (about 6
minutes; valgrind must be installed).

Wall-clock and even CPU-time figures move with the load of a shared machine; the number of
instructions a process runs for a request does not. Each tree (this one, and every revision of
``--against``, ``git archive``-d into a temporary directory as ``service.py --against`` does)
runs its real server, ``python -m services.bank serve`` (memory store, io-delay 0, the same
event loop for all, ``PYTHONHASHSEED=0``), under ``valgrind --tool=callgrind --dump-instr=no``.
One client process (this one, outside valgrind) holds 64 keep-alive connections to it and sends
``POST /accounts/{id}/deposit`` ``{"amount":1}``, each connection one request at a time, over 64
accounts, registering a client (``POST /clients``) and sending its key where the tree has client
keys. Per measurement it sends a warm-up, then N deposits, then 2N, and has callgrind dump its
counters before and after each (``callgrind_control --dump``): instructions per request is
(I(2N) - I(N)) / N, so whatever a batch costs once (the dump, the connections' idle turns)
cancels out. The measurements:

- ``none``: lock mode ``none``, each connection's accounts drawn at random (seeded per
  connection, the same sequence for every tree);
- ``account``: lock mode ``account``, the same random accounts: 64 requests in flight over 64
  accounts, so about a third of them find their account held (contention, as in
  ``service.py``);
- ``account uncontended``: lock mode ``account``, connection *i* always depositing into account
  *i*: the lock taken with no one else on it.

It prints, per measurement, the instructions per request of every tree (and, in brackets, the
part of CPython's cyclic garbage collector, read from the dump with ``callgrind_annotate``: its
full collections come in lumps, which move a figure by a few percent from run to run, up to
10,000 instructions per request at N = 1,024; more requests, ``--requests``, average them
out) and this tree's ratio to each revision, with the ratio of the instructions outside the
collector beside it, the steadier of the two. PASS/MISS (exit 1 on a MISS) judges every ratio
of all instructions within 5% (after/before <= 1.05). The trees are measured at the same time,
one server each, since an instruction count does not depend on what else runs.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import random
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import get_args

from service import (
    ROOT,
    Server,
    client_key,
    open_accounts,
    resolve_revision,
    revision_tree,
    server,
    set_mode,
)

from services.bank.run.server import LoopKind

CONNECTIONS = 64
ACCOUNTS = 64
PREFIX = "bench-"
#: this tree / a revision that still PASSes.
TARGET = 1.05
#: The seed of every connection's accounts: the same requests for every tree.
SEED = 14
#: A server under valgrind takes a minute or two to import and open its store.
START_TIMEOUT = 600


@dataclass(frozen=True)
class Measurement:
    """One line of the table: the lock mode and how each connection picks its accounts."""

    name: str
    mode: str
    contended: bool


MEASUREMENTS = (
    Measurement("none", "none", contended=True),
    Measurement("account", "account", contended=True),
    Measurement("account uncontended", "account", contended=False),
)


def accounts_of(connection: int, count: int, contended: bool) -> list[int]:
    """The accounts ``connection`` deposits into, in order: seeded random ones, or its own."""
    if not contended:
        return [connection % ACCOUNTS] * count
    picker = random.Random(SEED * 1_000 + connection)
    return [picker.randrange(ACCOUNTS) for _ in range(count)]


class Callgrind:
    """The counters of one server run under callgrind: each :meth:`dump` returns the
    instructions run since the previous one."""

    def __init__(self, out: Path, pid: int) -> None:
        self._out = out
        self._pid = pid
        self._dumps = 0
        self._started = False

    def start(self) -> None:
        """Start counting (once): the server starts uninstrumented (``--instr-atstart=no``),
        which makes its imports under valgrind take seconds instead of minutes."""
        if self._started:
            return
        self._started = True
        subprocess.run(
            ["callgrind_control", "--instr=on", str(self._pid)], check=True, capture_output=True
        )

    def dump(self) -> Count:
        subprocess.run(
            ["callgrind_control", "--dump", str(self._pid)], check=True, capture_output=True
        )
        self._dumps += 1
        path = self._out.with_name(f"{self._out.name}.{self._dumps}")
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            # callgrind_control returns once the dump is asked for; the file may still be on
            # its way, and its totals line comes last.
            text = path.read_text() if path.exists() else ""
            found = re.search(r"^totals: (\d+)", text, re.MULTILINE)
            if found:
                return Count(int(found.group(1)), _collector(path))
            time.sleep(0.2)
        raise RuntimeError(f"callgrind wrote no totals to {path}")


@dataclass(frozen=True)
class Count:
    """Instructions of one dump: all of them, and those of the cyclic garbage collector."""

    total: int
    gc: int

    def __sub__(self, other: Count) -> Count:
        return Count(self.total - other.total, self.gc - other.gc)


def _collector(path: Path) -> int:
    """Instructions spent in CPython's cyclic garbage collector (inclusive), from a dump.

    Printed apart because its full collections come in lumps: whether one falls in the N or
    the 2N batch moves a figure by a few percent from run to run.
    """
    annotated = subprocess.run(
        # Every function listed (the default stops at 99% of the total, which may leave the
        # collector out).
        ["callgrind_annotate", "--inclusive=yes", "--threshold=100", str(path)],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    found = re.search(r"^\s*([\d,]+) .*:gc_collect_main ", annotated, re.MULTILINE)
    return int(found.group(1).replace(",", "")) if found else 0


async def _read_reply(reader: asyncio.StreamReader) -> int:
    head = await reader.readuntil(b"\r\n\r\n")
    match = re.search(rb"content-length: *(\d+)", head, re.IGNORECASE)
    if match:
        await reader.readexactly(int(match[1]))
    return int(head.split(b" ", 2)[1])


class Client:
    """The keep-alive connections of one measurement, each sending one request at a time."""

    def __init__(self, url: str, key: str | None, contended: bool) -> None:
        host, _, port = url.removeprefix("http://").rpartition(":")
        self._host, self._port = host, int(port)
        self._contended = contended
        auth = "" if key is None else f"Authorization: Bearer {key}\r\n"
        self._head = (
            f"Host: {host}:{port}\r\n{auth}Content-Type: application/json\r\n"
            "Content-Length: 12\r\n\r\n"
        ).encode()
        self._streams: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
        self._sent = [0] * CONNECTIONS

    async def open(self) -> None:
        for _ in range(CONNECTIONS):
            self._streams.append(await asyncio.open_connection(self._host, self._port))

    async def send(self, total: int) -> None:
        """Send ``total`` deposits, an equal share on every connection."""
        share, left = divmod(total, CONNECTIONS)
        if left:
            raise ValueError(f"{total} requests do not split over {CONNECTIONS} connections")
        await asyncio.gather(*(self._run(number, share) for number in range(CONNECTIONS)))

    async def _run(self, number: int, count: int) -> None:
        reader, writer = self._streams[number]
        # Every tree gets the same sequence: the accounts follow on from the previous batch.
        picks = accounts_of(number, self._sent[number] + count, self._contended)
        for account in picks[self._sent[number] :]:
            writer.write(
                f"POST /accounts/{PREFIX}{account}/deposit HTTP/1.1\r\n".encode()
                + self._head
                + b'{"amount":1}'
            )
            status = await _read_reply(reader)
            if status != 200:
                raise RuntimeError(f"a deposit was answered {status}")
        self._sent[number] += count

    async def close(self) -> None:
        for _, writer in self._streams:
            writer.close()
        for _, writer in self._streams:
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()


async def _measure_one(
    target: Server, counters: Callgrind, key: str | None, measurement: Measurement, n: int
) -> tuple[float, float]:
    """Instructions per request, all and the garbage collector's, of one measurement."""
    set_mode(target.url, measurement.mode)
    # Instrumented from the first measurement on, after the set-up's requests: translated
    # afresh with instrumentation, a first request can outlast urllib's timeout.
    counters.start()
    client = Client(target.url, key, measurement.contended)
    await client.open()
    try:
        await client.send(CONNECTIONS * 2)  # warm-up: every connection's first requests
        counters.dump()  # the set-up above, discarded
        await client.send(n)
        once = counters.dump()
        await client.send(2 * n)
        twice = counters.dump()
    finally:
        await client.close()
    extra = twice - once
    return extra.total / n, extra.gc / n


def _patient(root: Path) -> list[str]:
    """``serve`` options that keep this tree's connection deadlines out of the way.

    Under valgrind on a loaded machine, a request head can wait longer than the default header
    timeout behind the 63 others, and a connection idle through a dump longer than the
    keep-alive timeout; a revision from before these options has neither deadline.
    """
    cli = (root / "services" / "bank" / "__main__.py").read_text()
    flags = ("--header-timeout", "--keepalive-timeout", "--request-timeout")
    return [part for flag in flags if flag in cli for part in (flag, "3600")]


def measure_tree(
    label: str, root: Path, n: int, loop: LoopKind, keep: Path | None
) -> dict[str, tuple[float, float]]:
    """Instructions per request of the server of ``root`` (``label``: this tree or its
    revision), per measurement."""
    with contextlib.ExitStack() as stack:
        folder = keep or Path(stack.enter_context(tempfile.TemporaryDirectory()))
        out = folder / f"callgrind.{label.replace(' ', '-')}.out"
        command = [
            "valgrind", "--tool=callgrind", "-q", "--dump-instr=no", "--instr-atstart=no",
            f"--callgrind-out-file={out}",
            sys.executable, "-m", "services.bank", "serve", "--port", "0", "--io-delay", "0",
            "--loop", loop, "--lock", "none", *_patient(root),
        ]  # fmt: skip
        target = stack.enter_context(server(command, tree=root, start_timeout=START_TIMEOUT))
        counters = Callgrind(out, target.pid)
        key = client_key(target.url)
        open_accounts(target.url, PREFIX, ACCOUNTS, key=key)
        return {
            measurement.name: asyncio.run(_measure_one(target, counters, key, measurement, n))
            for measurement in MEASUREMENTS
        }


def report(
    found: dict[str, dict[str, tuple[float, float]]], revisions: Sequence[str], n: int
) -> bool:
    """Print the table; return whether this tree is within 5% of every revision everywhere."""
    print(
        f"POST /accounts/{{id}}/deposit, {CONNECTIONS} keep-alive connections, {ACCOUNTS} "
        f"accounts: server instructions per request = (I(2N) - I(N)) / N, N = {n:,} "
        "(callgrind; in brackets, the part of the cyclic garbage collector)"
    )
    trees = [*revisions, "this tree"]
    print(f"  {'measurement':<22}" + "".join(f"{tree:>22}" for tree in trees))
    passed = True
    for measurement in MEASUREMENTS:
        name = measurement.name
        cells = (f"{found[tree][name][0]:,.0f} ({found[tree][name][1]:,.0f})" for tree in trees)
        print(f"  {name:<22}" + "".join(f"{cell:>22}" for cell in cells))
        for revision in revisions:
            after, before = found["this tree"][name], found[revision][name]
            ratio = after[0] / before[0]
            outside = (after[0] - after[1]) / (before[0] - before[1])
            ok = ratio <= TARGET
            passed &= ok
            print(
                f"  {'':<4}this tree / {revision:<20}{ratio:>8.3f}  {'PASS' if ok else 'MISS'}"
                f"  (outside the collector {outside:.3f})"
            )
    print(f"  PASS/MISS: this tree / revision <= {TARGET} in instructions per request")
    return passed


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--against",
        metavar="REV[,REV...]",
        default="46cd63c",
        help="git revisions to compare this tree with (default: 46cd63c, the pre-redesign bank)",
    )
    parser.add_argument(
        "--requests",
        type=int,
        default=1_024,
        metavar="N",
        help=f"N of (I(2N) - I(N)) / N, a multiple of {CONNECTIONS} (default: 1,024)",
    )
    parser.add_argument(
        "--loop",
        choices=get_args(LoopKind),
        default="auto",
        help="event loop of every server: uvloop when installed (auto), or force one",
    )
    parser.add_argument(
        "--keep",
        type=Path,
        metavar="DIR",
        help="keep the callgrind files here (callgrind_annotate reads them)",
    )
    args = parser.parse_args(argv)
    if args.requests < CONNECTIONS or args.requests % CONNECTIONS:
        parser.error(f"--requests must be a positive multiple of {CONNECTIONS}")
    if shutil.which("valgrind") is None or shutil.which("callgrind_control") is None:
        print("valgrind is not installed (apt-get install valgrind)", file=sys.stderr)
        return 2
    revisions = [revision for revision in args.against.split(",") if revision]
    try:
        commits = {revision: resolve_revision(revision) for revision in revisions}
    except ValueError as exc:
        parser.error(str(exc))
    if args.keep is not None:
        args.keep.mkdir(parents=True, exist_ok=True)
    # Fixed, so that every server's dicts and sets hash alike from run to run.
    os.environ["PYTHONHASHSEED"] = "0"
    with contextlib.ExitStack() as stack:
        roots = {"this tree": ROOT}
        for revision, commit in commits.items():
            roots[revision] = stack.enter_context(revision_tree(commit))
        with ThreadPoolExecutor(max_workers=len(roots)) as pool:
            futures = {
                name: pool.submit(measure_tree, name, root, args.requests, args.loop, args.keep)
                for name, root in roots.items()
            }
            found = {name: future.result() for name, future in futures.items()}
    return 0 if report(found, revisions, args.requests) else 1


if __name__ == "__main__":
    sys.exit(main())

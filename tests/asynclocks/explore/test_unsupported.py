"""What the explorer cannot run is an UnsupportedScenario naming the call, never a verdict."""

from __future__ import annotations

import asyncio
import io
import re
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

import asynclocks
from asynclocks import Backend
from asynclocks._explore import _cli
from asynclocks._explore._asyncio import ControlledLoop
from asynclocks._explore._common import take_unsupported
from asynclocks._explore._report import encode_token
from asynclocks._explore._unsupported import UnsupportedLoopAPI

from . import scenarios, unsupported_scenarios

pytest_plugins = ["pytester"]

HELD = Path(unsupported_scenarios.__file__)


def where(marker: str) -> str:
    """``unsupported_scenarios.py:<line>`` of the line ending in ``# marker``."""
    for number, line in enumerate(HELD.read_text(encoding="utf-8").splitlines(), 1):
        if line.rstrip().endswith(f"# {marker}"):
            return f"{HELD.name}:{number}"
    raise LookupError(marker)


THREADS = "a thread runs outside the explorer's control"
SUBPROCESSES = "a subprocess runs outside the explorer's control"
SOCKETS = "real sockets outside the simulated loopback network are not supported"

# (scenario, backend, the call named, marker of the user's line, why)
CASES = [
    ("trio_nursery", "asyncio", "trio.open_nursery()", "TRIO_NURSERY", "is trio code"),
    # The innermost trio frame the traceback keeps: sleep(0) or the checkpoint it awaits.
    (
        "trio_sleep",
        "asyncio",
        r"trio\.(sleep|lowlevel\.checkpoint)\(\)",
        "TRIO_SLEEP",
        "is trio code",
    ),
    (
        "asyncio_task_group",
        "trio",
        "asyncio.TaskGroup.__aenter__()",
        "ASYNCIO_TASK_GROUP",
        "is asyncio code",
    ),
    ("asyncio_sleep", "trio", "asyncio.sleep()", "ASYNCIO_SLEEP", "is asyncio code"),
    ("asyncio_to_thread", "asyncio", "asyncio.to_thread()", "ASYNCIO_TO_THREAD", THREADS),
    ("run_in_executor", "asyncio", "loop.run_in_executor()", "RUN_IN_EXECUTOR", THREADS),
    ("trio_to_thread", "trio", "trio.to_thread.run_sync()", "TRIO_TO_THREAD", THREADS),
    ("anyio_to_thread", "asyncio", "anyio.to_thread.run_sync()", "ANYIO_TO_THREAD", THREADS),
    ("anyio_to_thread", "trio", "anyio.to_thread.run_sync()", "ANYIO_TO_THREAD", THREADS),
    (
        "subprocess_exec",
        "asyncio",
        "asyncio.create_subprocess_exec()",
        "SUBPROCESS_EXEC",
        SUBPROCESSES,
    ),
    (
        "subprocess_shell",
        "asyncio",
        "asyncio.create_subprocess_shell()",
        "SUBPROCESS_SHELL",
        SUBPROCESSES,
    ),
    ("trio_run_process", "trio", "trio.run_process()", "TRIO_RUN_PROCESS", SUBPROCESSES),
    ("anyio_run_process", "asyncio", "anyio.run_process()", "ANYIO_RUN_PROCESS", SUBPROCESSES),
    ("anyio_run_process", "trio", "anyio.run_process()", "ANYIO_RUN_PROCESS", SUBPROCESSES),
    (
        "signal_handler",
        "asyncio",
        "loop.add_signal_handler()",
        "SIGNAL_HANDLER",
        "signals arrive outside",
    ),
    # A simulated loopback network (a mixin before UnsupportedLoopAPI) may word these its own
    # way, naming the address: only the exception and the user's line are pinned.
    ("real_socket", "asyncio", "", "REAL_SOCKET", ""),
    ("sock_connect", "asyncio", "", "SOCK_CONNECT", ""),
    ("fd_reader", "asyncio", "loop.add_reader()", "FD_READER", "file descriptors"),
    ("task_factory", "asyncio", "loop.set_task_factory()", "TASK_FACTORY", "asyncio's own Task"),
    ("caught_to_thread", "asyncio", "asyncio.to_thread()", "CAUGHT_TO_THREAD", THREADS),
    ("to_thread_in_a_task", "asyncio", "anyio.to_thread.run_sync()", "TASK_TO_THREAD", THREADS),
    ("to_thread_in_a_task", "trio", "anyio.to_thread.run_sync()", "TASK_TO_THREAD", THREADS),
]
IDS = [f"{case[0]}-{case[1]}" for case in CASES]


@pytest.mark.parametrize(("name", "backend", "call", "marker", "why"), CASES, ids=IDS)
def test_explore_raises_unsupported_naming_the_call_the_line_and_what_to_do(
    name: str, backend: Backend, call: str, marker: str, why: str
) -> None:
    scenario = getattr(unsupported_scenarios, name)
    with pytest.raises(asynclocks.UnsupportedScenario) as raised:
        asynclocks.explore(scenario, backend=backend)
    message = str(raised.value)
    assert "\n" not in message
    if not call:
        assert where(marker) in message
        return
    assert re.match(f"{call if name == 'trio_sleep' else re.escape(call)} at ", message), message
    assert f"{where(marker)} is not supported inside an exploration" in message
    assert why in message
    assert "\n" not in message
    # What to do instead, as a sentence after the reason.
    assert any(word in message for word in ("Explore it with", "Keep", "Replace", "Use", "Install"))


@pytest.mark.parametrize(
    ("name", "backend"),
    [("trio_nursery", "asyncio"), ("asyncio_sleep", "trio"), ("asyncio_to_thread", "asyncio")],
)
def test_replay_raises_unsupported_too(name: str, backend: Backend) -> None:
    token = encode_token(backend, [], [])
    with pytest.raises(asynclocks.UnsupportedScenario):
        asynclocks.replay(getattr(unsupported_scenarios, name), token)


def test_every_event_loop_method_is_implemented_or_refused_by_name() -> None:
    # An empty NotImplementedError from AbstractEventLoop would come back as a FAIL.
    methods = [
        name
        for name, value in vars(asyncio.AbstractEventLoop).items()
        if callable(value) and not name.startswith("__")
    ]
    inherited = [
        name
        for name in methods
        if getattr(ControlledLoop, name) is getattr(asyncio.AbstractEventLoop, name)
    ]
    assert inherited == []
    assert issubclass(ControlledLoop, UnsupportedLoopAPI)


@pytest.mark.parametrize(
    "method", ["create_connection", "create_server", "sock_connect", "sock_recv", "getaddrinfo"]
)
def test_the_base_refuses_network_methods_as_real_sockets(method: str) -> None:
    async def call() -> None:
        loop = UnsupportedLoopAPI()  # type: ignore[abstract]  # only the refusals are called
        await getattr(loop, method)(None, "192.0.2.1", 80)

    with pytest.raises(asynclocks.UnsupportedScenario) as raised:
        asyncio.run(call())
    take_unsupported()  # recorded for a search; none runs here
    message = str(raised.value)
    assert message.startswith(f"loop.{method}() at ")
    assert f"{Path(__file__).name}:" in message.split(" is not supported")[0]
    assert SOCKETS in message
    assert "Use TCP over 127.0.0.1, ::1 or localhost" in message


def test_refused_network_methods_can_be_overridden_by_a_mixin_before_the_base() -> None:
    class Network:
        async def create_connection(self, *args: Any, **kwargs: Any) -> Any:
            return "simulated"

    class Loop(Network, ControlledLoop):
        pass

    async def connect() -> Any:
        return await Loop().create_connection(None, "127.0.0.1", 80)

    assert asyncio.run(connect()) == "simulated"


def test_the_threads_patches_are_removed_after_an_exploration(backend: Backend) -> None:
    import anyio.to_thread
    import trio

    with pytest.raises(asynclocks.UnsupportedScenario):
        asynclocks.explore(unsupported_scenarios.anyio_to_thread, backend=backend)
    assert asyncio.run(asyncio.to_thread(sum, [1, 2])) == 3

    async def trio_thread() -> int:
        return await trio.to_thread.run_sync(sum, [1, 2])

    async def anyio_thread() -> int:
        return await anyio.to_thread.run_sync(sum, [1, 2])

    assert trio.run(trio_thread) == 3
    assert anyio.run(anyio_thread) == 3


# -- a backend package that is missing or untested ---------------------------------------------


def test_a_missing_trio_is_unsupported(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "trio", None)
    with pytest.raises(asynclocks.UnsupportedScenario, match=r"trio is not installed.*pip install"):
        asynclocks.explore(scenarios.lost_update, backend="trio")
    token = encode_token("trio", [], [])
    with pytest.raises(asynclocks.UnsupportedScenario, match="trio is not installed"):
        asynclocks.replay(scenarios.lost_update, token)


# -- the command line ----------------------------------------------------------------------------


def _cli_run(*argv: str) -> tuple[int, str, str]:
    import argparse

    parser = argparse.ArgumentParser()
    _cli.register(parser.add_subparsers())
    args = parser.parse_args(["explore", *argv])
    out, err = io.StringIO(), io.StringIO()
    code = _cli.run(args, out, err)
    return code, out.getvalue(), err.getvalue()


@pytest.mark.parametrize(
    ("name", "backend"),
    [("trio_nursery", "asyncio"), ("asyncio_sleep", "trio"), ("asyncio_to_thread", "asyncio")],
)
def test_the_cli_prints_one_line_and_exits_2(name: str, backend: Backend) -> None:
    target = f"tests.asynclocks.explore.unsupported_scenarios:{name}"
    code, out, err = _cli_run(target, "--backend", backend, "--quiet")
    assert code == 2
    assert out == ""
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("python -m asynclocks explore: unsupported: ")
    assert "is not supported inside an exploration" in lines[0]


def test_the_cli_with_trio_missing_exits_2_without_a_traceback(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    target = tmp_path / "plain.py"
    target.write_text(
        textwrap.dedent(
            """
            async def scenario() -> None:
                pass
            """
        ),
        encoding="utf-8",
    )
    monkeypatch.setitem(sys.modules, "trio", None)
    code, out, err = _cli_run(f"{target}:scenario", "--backend", "trio", "--quiet")
    assert code == 2
    assert err.count("\n") == 1
    assert "unsupported: backend='trio' is not supported here: trio is not installed" in err
    assert "Traceback" not in err + out


# -- pytest: never a pass ----------------------------------------------------------------------

EXPECT_FAIL = """
import asyncio
import trio
import asynclocks

@asynclocks.check_interleavings("asyncio", expect="fail")
async def test_trio_code_on_asyncio() -> None:
    async with trio.open_nursery() as nursery:
        nursery.start_soon(trio.sleep, 0)

@asynclocks.check_interleavings("trio", expect="fail")
async def test_asyncio_code_on_trio() -> None:
    await asyncio.sleep(0)

@asynclocks.check_interleavings("asyncio", expect="fail")
async def test_a_thread() -> None:
    await asyncio.to_thread(sum, [1])

@asynclocks.check_interleavings("asyncio")
async def test_a_thread_expecting_a_pass() -> None:
    await asyncio.to_thread(sum, [1])
"""


def test_check_interleavings_errors_and_never_satisfies_expect_fail(
    pytester: pytest.Pytester,
) -> None:
    pytester.makepyfile(test_unsupported=EXPECT_FAIL)
    result = pytester.runpytest("-p", "no:cacheprovider")
    result.assert_outcomes(failed=4)
    result.stdout.fnmatch_lines(["*UnsupportedScenario: trio.open_nursery() at *"])
    result.stdout.no_fnmatch_line("*InterleavingFailure*")


def test_every_held_program_is_exercised() -> None:
    held: set[str] = {
        name
        for name, value in vars(unsupported_scenarios).items()
        if asyncio.iscoroutinefunction(value)
        and getattr(value, "__module__", "") == unsupported_scenarios.__name__
    }
    assert held == {case[0] for case in CASES}

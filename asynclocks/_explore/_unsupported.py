"""What the explorer cannot control, turned into :class:`UnsupportedScenario` instead of a verdict.

Three kinds of limits end up here:

* asyncio event-loop methods the controlled loop does not implement (threads, subprocesses,
  signals, pipes, file descriptors, real sockets): :class:`UnsupportedLoopAPI` is the base class
  of the controlled loop, so each one raises a message naming the call instead of an empty
  ``NotImplementedError``. Mixins placed before it in the MRO (the simulated loopback network)
  override the methods they implement.
* thread and subprocess entry points of trio and anyio, which would run outside the explorer's
  control; they are patched only while an exploration runs (see :func:`patch_trio_threads` and
  :func:`patch_anyio_threads`).
* code written for one backend explored on the other, recognised from the error it dies with
  (:func:`foreign_backend`).
"""

from __future__ import annotations

import asyncio
import os
import sys
import traceback
import types
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, NoReturn

from ._common import UnsupportedScenario, is_library, short_path, unsupported

_THREADS = (
    "a thread runs outside the explorer's control, so its schedules could not be explored or "
    "replayed",
    "Keep blocking work out of the scenario, or replace it with an async fake",
)
_SUBPROCESSES = (
    "a subprocess runs outside the explorer's control, so its schedules could not be explored "
    "or replayed",
    "Replace the subprocess with an async fake inside the scenario",
)
_SOCKETS = (
    "real sockets outside the simulated loopback network are not supported (their I/O is "
    "outside the explorer's control)",
    "Use TCP over 127.0.0.1, ::1 or localhost (simulated in memory), or replace the I/O with an "
    "async fake",
)
_PIPES = (
    "pipes and file descriptors do I/O outside the explorer's control",
    "Replace the I/O with an async fake inside the scenario",
)
_SIGNALS = (
    "signals arrive outside the explorer's control",
    "Install signal handlers outside the scenario, or call the handler from a task directly",
)
_LOOP_CONTROL = (
    "the explorer runs its event loop itself, one task at a time",
    "Await the coroutine (or start a task) instead of driving the loop",
)

# Public names of library functions whose module path is private, as users call them.
_PUBLIC_NAMES = {
    ("trio._threads", "to_thread_run_sync"): "trio.to_thread.run_sync",
    ("trio._subprocess", "_open_process"): "trio.lowlevel.open_process",
    ("trio._subprocess", "_run_process"): "trio.run_process",
    ("trio._core._run", "checkpoint"): "trio.lowlevel.checkpoint",
    ("trio._core._run", "checkpoint_if_cancelled"): "trio.lowlevel.checkpoint_if_cancelled",
    ("trio._core._run", "current_task"): "trio.lowlevel.current_task",
    ("anyio.to_thread", "run_sync"): "anyio.to_thread.run_sync",
    ("anyio.to_process", "run_sync"): "anyio.to_process.run_sync",
}


def _public_module(module: str) -> str:
    """``trio._core._run`` -> ``trio``; ``asyncio.subprocess`` -> ``asyncio``."""
    parts = module.split(".")
    if parts[0] == "asyncio":
        return "asyncio"
    kept = [parts[0]]
    for part in parts[1:]:
        if part.startswith("_"):
            break
        kept.append(part)
    return ".".join(kept)


def _public_name(frame: types.FrameType) -> str:
    module = str(frame.f_globals.get("__name__", "?"))
    code = frame.f_code
    qualname = getattr(code, "co_qualname", code.co_name)
    known = _PUBLIC_NAMES.get((module, qualname))
    if known is not None:
        return f"{known}()"
    return f"{_public_module(module)}.{qualname.rpartition('<locals>.')[2]}()"


def called_api(default: str) -> str:
    """The library function user code called to end up here, e.g. ``asyncio.to_thread()``.

    The outermost library frame just inside the innermost user frame of the current stack; the
    explorer's own frames do not count. ``default`` when user code called the caller directly.
    """
    explorer = os.path.dirname(__file__)
    frame: types.FrameType | None = sys._getframe(1)
    api: types.FrameType | None = None
    while frame is not None:
        filename = frame.f_code.co_filename
        if not is_library(filename):
            break
        if not filename.startswith(explorer):
            api = frame
        frame = frame.f_back
    if frame is None or api is None:
        return default
    return _public_name(api)


def _refuse(default: str, why: str, instead: str) -> NoReturn:
    raise unsupported(called_api(default), why, instead)


class UnsupportedLoopAPI(asyncio.AbstractEventLoop):
    """Every asyncio event-loop method the controlled loop does not implement, refused by name.

    Each raises (and records for the running search) an :class:`UnsupportedScenario` naming the
    call, the user's ``file:line`` and what to do instead. The network methods are refused here
    only as a fallback: a loopback-network mixin before this class in the MRO replaces them.
    """

    # -- driving the loop ---------------------------------------------------------------------

    def run_forever(self) -> None:
        _refuse("loop.run_forever()", *_LOOP_CONTROL)

    def run_until_complete(self, future: Any) -> Any:
        _refuse("loop.run_until_complete()", *_LOOP_CONTROL)

    def stop(self) -> None:
        _refuse("loop.stop()", *_LOOP_CONTROL)

    async def shutdown_asyncgens(self) -> None:
        _refuse("loop.shutdown_asyncgens()", *_LOOP_CONTROL)

    def set_exception_handler(self, handler: Any) -> None:
        _refuse(
            "loop.set_exception_handler()",
            "the explorer keeps the errors of unawaited tasks and callbacks itself",
            "Await the tasks whose errors matter, or check them in the scenario",
        )

    # -- threads --------------------------------------------------------------------------------

    def run_in_executor(  # type: ignore[override]
        self, executor: Any, func: Any, *args: Any
    ) -> asyncio.Future[Any]:
        _refuse("loop.run_in_executor()", *_THREADS)

    def set_default_executor(self, executor: Any) -> None:
        _refuse("loop.set_default_executor()", *_THREADS)

    async def shutdown_default_executor(self, *args: Any, **kwargs: Any) -> None:
        _refuse("loop.shutdown_default_executor()", *_THREADS)

    # -- subprocesses ---------------------------------------------------------------------------

    async def subprocess_exec(self, *args: Any, **kwargs: Any) -> Any:
        _refuse("loop.subprocess_exec()", *_SUBPROCESSES)

    async def subprocess_shell(self, *args: Any, **kwargs: Any) -> Any:
        _refuse("loop.subprocess_shell()", *_SUBPROCESSES)

    # -- signals, pipes and file descriptors ----------------------------------------------------

    def add_signal_handler(self, sig: int, callback: Any, *args: Any) -> None:  # type: ignore[override]
        _refuse("loop.add_signal_handler()", *_SIGNALS)

    def remove_signal_handler(self, sig: int) -> bool:
        _refuse("loop.remove_signal_handler()", *_SIGNALS)

    async def connect_read_pipe(self, *args: Any, **kwargs: Any) -> Any:
        _refuse("loop.connect_read_pipe()", *_PIPES)

    async def connect_write_pipe(self, *args: Any, **kwargs: Any) -> Any:
        _refuse("loop.connect_write_pipe()", *_PIPES)

    def add_reader(self, fd: Any, callback: Any, *args: Any) -> None:  # type: ignore[override]
        _refuse("loop.add_reader()", *_PIPES)

    def remove_reader(self, fd: Any) -> bool:
        _refuse("loop.remove_reader()", *_PIPES)

    def add_writer(self, fd: Any, callback: Any, *args: Any) -> None:  # type: ignore[override]
        _refuse("loop.add_writer()", *_PIPES)

    def remove_writer(self, fd: Any) -> bool:
        _refuse("loop.remove_writer()", *_PIPES)

    # -- the network (a simulated loopback network mixin overrides what it supports) -------------

    async def getaddrinfo(self, *args: Any, **kwargs: Any) -> Any:
        _refuse("loop.getaddrinfo()", *_SOCKETS)

    async def getnameinfo(self, *args: Any, **kwargs: Any) -> Any:
        _refuse("loop.getnameinfo()", *_SOCKETS)

    async def create_connection(self, *args: Any, **kwargs: Any) -> Any:
        _refuse("loop.create_connection()", *_SOCKETS)

    async def create_server(self, *args: Any, **kwargs: Any) -> Any:
        _refuse("loop.create_server()", *_SOCKETS)

    async def sendfile(self, *args: Any, **kwargs: Any) -> Any:
        _refuse("loop.sendfile()", *_SOCKETS)

    async def start_tls(self, *args: Any, **kwargs: Any) -> Any:
        _refuse("loop.start_tls()", *_SOCKETS)

    async def create_unix_connection(self, *args: Any, **kwargs: Any) -> Any:
        _refuse("loop.create_unix_connection()", *_SOCKETS)

    async def create_unix_server(self, *args: Any, **kwargs: Any) -> Any:
        _refuse("loop.create_unix_server()", *_SOCKETS)

    async def connect_accepted_socket(self, *args: Any, **kwargs: Any) -> Any:
        _refuse("loop.connect_accepted_socket()", *_SOCKETS)

    async def create_datagram_endpoint(self, *args: Any, **kwargs: Any) -> Any:
        _refuse("loop.create_datagram_endpoint()", *_SOCKETS)

    async def sock_recv(self, *args: Any, **kwargs: Any) -> Any:
        _refuse("loop.sock_recv()", *_SOCKETS)

    async def sock_recv_into(self, *args: Any, **kwargs: Any) -> Any:
        _refuse("loop.sock_recv_into()", *_SOCKETS)

    async def sock_recvfrom(self, *args: Any, **kwargs: Any) -> Any:
        _refuse("loop.sock_recvfrom()", *_SOCKETS)

    async def sock_recvfrom_into(self, *args: Any, **kwargs: Any) -> Any:
        _refuse("loop.sock_recvfrom_into()", *_SOCKETS)

    async def sock_sendall(self, *args: Any, **kwargs: Any) -> Any:
        _refuse("loop.sock_sendall()", *_SOCKETS)

    async def sock_sendto(self, *args: Any, **kwargs: Any) -> Any:
        _refuse("loop.sock_sendto()", *_SOCKETS)

    async def sock_connect(self, *args: Any, **kwargs: Any) -> Any:
        _refuse("loop.sock_connect()", *_SOCKETS)

    async def sock_accept(self, *args: Any, **kwargs: Any) -> Any:
        _refuse("loop.sock_accept()", *_SOCKETS)

    async def sock_sendfile(self, *args: Any, **kwargs: Any) -> Any:
        _refuse("loop.sock_sendfile()", *_SOCKETS)


# -- trio and anyio threads -----------------------------------------------------------------------


def _refuse_thread(*args: Any, **kwargs: Any) -> NoReturn:
    api = called_api("a worker thread")
    why, instead = _SUBPROCESSES if "process" in api else _THREADS
    raise unsupported(api, why, instead)


@contextmanager
def patch_trio_threads() -> Iterator[None]:
    """While an exploration runs on trio, starting a worker thread raises UnsupportedScenario.

    ``trio.to_thread.run_sync`` looks ``start_thread_soon`` up in its module at call time, so the
    patch catches every caller however it imported trio: anyio's threads on trio and trio's
    subprocesses (which start ``Popen`` in a thread) included.
    """
    import trio._threads

    module: Any = trio._threads
    original = module.start_thread_soon
    module.start_thread_soon = _refuse_thread
    try:
        yield
    finally:
        module.start_thread_soon = original


async def _refuse_worker_thread(*args: Any, **kwargs: Any) -> NoReturn:
    _refuse_thread()


_anyio_depth = 0
_anyio_original: Any = None


def patch_anyio_threads(install: bool) -> None:
    """Install (or, when the last exploration ends, remove) the refusal of anyio's worker threads
    on asyncio: they start real threads that call back into the loop from outside."""
    global _anyio_depth, _anyio_original
    try:
        from anyio._backends._asyncio import AsyncIOBackend
    except ImportError:  # anyio is optional for asyncio scenarios
        return
    if install:
        if _anyio_depth == 0:
            _anyio_original = AsyncIOBackend.__dict__["run_sync_in_worker_thread"]
            AsyncIOBackend.run_sync_in_worker_thread = classmethod(  # type: ignore[method-assign,assignment]
                _refuse_worker_thread
            )
        _anyio_depth += 1
    else:
        _anyio_depth -= 1
        if _anyio_depth == 0:
            AsyncIOBackend.run_sync_in_worker_thread = _anyio_original  # type: ignore[method-assign]
            _anyio_original = None


# -- code of the other backend ------------------------------------------------------------------


def _leaves(error: BaseException) -> Iterator[BaseException]:
    if isinstance(error, BaseExceptionGroup):
        for inner in error.exceptions:
            yield from _leaves(inner)
    else:
        yield error


def _package(filename: str) -> str | None:
    for name in ("trio", "asyncio"):
        module = sys.modules.get(name)
        module_file = getattr(module, "__file__", None)
        if module_file and filename.startswith(os.path.join(os.path.dirname(module_file), "")):
            return name
    return None


def _where(filename: str, line: int | None) -> str:
    return f"{short_path(filename)}:{line}"


def _foreign_leaf(error: BaseException, backend: str) -> tuple[str, str] | None:
    """(call, user file:line) when ``error`` shows code of the other backend, else None."""
    text = str(error)
    frames = [frame for frame, _ in traceback.walk_tb(error.__traceback__)]
    if not frames:
        return None
    innermost = _package(frames[-1].f_code.co_filename)
    if backend == "asyncio":
        foreign = innermost == "trio" or (
            isinstance(error, RuntimeError)
            and text.startswith("Task got bad yield")
            and "trio" in text
        )
        package = "trio"
    else:
        foreign = (
            isinstance(error, TypeError) and text.startswith("trio.run received unrecognized yield")
        ) or (innermost == "asyncio" and isinstance(error, RuntimeError) and "event loop" in text)
        package = "asyncio"
    if not foreign:
        return None
    call = f"{package} code"
    where = "?"
    for index, frame in enumerate(frames):
        if is_library(frame.f_code.co_filename):
            continue
        where = _where(frame.f_code.co_filename, frame.f_lineno)
        inner = frames[index + 1] if index + 1 < len(frames) else None
        if inner is not None and _package(inner.f_code.co_filename) == package:
            call = _public_name(inner)
    return call, where


def foreign_backend(error: BaseException | None, backend: str) -> UnsupportedScenario | None:
    """An UnsupportedScenario when a schedule died of running one backend's code on the other."""
    if error is None:
        return None
    for leaf in _leaves(error):
        found = _foreign_leaf(leaf, backend)
        if found is None:
            continue
        call, where = found
        other = "trio" if backend == "asyncio" else "asyncio"
        return UnsupportedScenario(
            f"{call} at {where} is not supported inside an exploration on {backend}: the "
            f"scenario is {other} code (it failed with {type(leaf).__name__}: "
            f"{_one_line(str(leaf), 120)}). Explore it with backend={other!r} "
            f"(--backend {other}), or write it with anyio to run on both"
        )
    return None


def interruption(error: BaseException | None) -> BaseException | None:
    """What stopped a schedule from outside the scenario, when anything did: the first leaf of
    ``error`` that is a ``BaseException`` but neither an ``Exception`` nor a cancellation.

    ``KeyboardInterrupt`` and ``SystemExit`` (as ``asyncio.run`` re-raises them), a test
    runner's own outcomes raised into the run (pytest's ``fail()``, a per-test timeout) and any
    other such exception end the search and propagate: they are not a failure the schedule
    found, and shrinking one would replay schedules that never raise it again.
    """
    if error is None:
        return None
    trio = sys.modules.get("trio")
    cancelled = trio.Cancelled if trio is not None else asyncio.CancelledError
    for leaf in _leaves(error):
        if isinstance(leaf, Exception | asyncio.CancelledError | GeneratorExit | cancelled):
            continue
        return leaf
    return None


def _one_line(text: str, limit: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."

"""``serve --workers N``: N processes serving one port, and the supervisor that runs them.

How the port is shared: every worker binds it with ``SO_REUSEPORT``, and the kernel spreads
incoming connections over them (by a hash of the client's address and port). The supervisor
binds the port first with the same option, without listening, to pick it (``--port 0``) and to
hold it until every worker listens, so the port cannot be taken in between.

Lifecycle, all on the standard library (``multiprocessing`` with the ``spawn`` start method):

- the supervisor starts N workers and waits until each reports that it listens, then prints
  ``listening on http://HOST:PORT`` (one line, as a single ``serve`` does) and the workers' pids
  on stderr;
- SIGINT or SIGTERM to the supervisor: it sends SIGTERM to every worker, each drains its requests
  and closes its store, and the supervisor exits 0 once all did (SIGKILL after a grace period,
  and exit 1, for a worker that hangs);
- a worker that exits on its own (crash, killed, failed to start) is never restarted silently:
  the supervisor reports which one and how it ended, stops the others and exits 1;
- workers run in their own process group, so a Ctrl-C in the terminal reaches the supervisor
  only and the shutdown is its decision; and each worker stops by itself if the supervisor
  disappears (its pipe to the supervisor closes), so none is ever left behind.

An in-process lock (lock modes ``global`` and ``account``) only orders the requests of the
process holding it; with several workers only lock mode ``db`` keeps the books right.
"""

from __future__ import annotations

import gc
import multiprocessing
import os
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import replace
from multiprocessing.connection import Connection, wait
from types import FrameType
from typing import Final, TextIO

from .config import BankConfig
from .preflight import StoreUnavailable, check_store, check_store_path
from .server import LoopKind, format_url, run, serve, tune_collector

__all__ = ["DEFAULT_GRACE", "serve_forever", "supervise"]

#: Seconds a worker gets to stop after SIGTERM beyond its own drain (``config.drain_timeout``)
#: before it is killed: closing the store and the process.
DEFAULT_GRACE: Final = 5.0
#: Seconds every worker gets to start listening.
START_TIMEOUT: Final = 60.0

_LISTENING: Final = "listening on "


def _reserve_port(host: str, port: int) -> socket.socket:
    """Bind (not listen) ``host:port`` with SO_REUSEPORT; the workers bind it after us."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    family, kind, proto, _, address = infos[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind(address)
    except BaseException:
        sock.close()
        raise
    return sock


def _worker_main(config: BankConfig, loop: LoopKind, pipe: Connection) -> None:
    """One worker: serve until SIGTERM/SIGINT, reporting readiness through ``pipe``."""
    # Out of the terminal's process group: Ctrl-C goes to the supervisor, which decides.
    os.setpgrp()

    def orphan_watch() -> None:
        # recv() fails once the supervisor is gone (its end of the pipe closes): stop then.
        try:
            pipe.recv()
        except (EOFError, OSError):
            pass
        os.kill(os.getpid(), signal.SIGTERM)

    def announce(line: str) -> None:
        pipe.send(line)
        threading.Thread(target=orphan_watch, name="supervisor-watch", daemon=True).start()

    run(
        serve(config, announce=announce, reuse_port=True, before_listening=tune_collector),
        loop=loop,
    )


def _describe_exit(process: multiprocessing.process.BaseProcess) -> str:
    # The sentinel fires as the process ends; join() collects its exit code.
    process.join(5)
    code = process.exitcode
    if code is None:
        return "is still running"
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        return f"was killed by {name}"
    return f"exited with code {code}"


def supervise(
    config: BankConfig,
    *,
    loop: LoopKind = "auto",
    announce: Callable[[str], None] | None = None,
    log: TextIO | None = None,
    grace: float = DEFAULT_GRACE,
) -> int:
    """Run ``config.workers`` worker processes on one port until SIGINT/SIGTERM or a failure.

    Must be called from the main thread (it installs signal handlers, restored on return).

    Args:
        config: The settings every worker serves with; ``config.port`` 0 picks a free port.
        loop: The workers' event loop.
        announce: Receives ``listening on http://HOST:PORT`` once every worker listens
            (default: print it, flushed).
        log: Where the supervisor reports workers starting and stopping (default: stderr).
        grace: Seconds a worker gets to stop, on top of ``config.drain_timeout``, before it
            is killed.

    Returns:
        The exit code: 0 after a clean shutdown on a signal, 1 when a worker failed to start,
        died, or had to be killed.
    """
    out = log if log is not None else sys.stderr

    def say(message: str) -> None:
        print(f"supervisor: {message}", file=out, flush=True)

    def default_announce(line: str) -> None:
        print(line, flush=True)

    tell = announce or default_announce
    try:
        placeholder = _reserve_port(config.host, config.port)
    except OSError as exc:
        say(f"cannot listen on {config.host}:{config.port}: {exc}")
        return 1
    port = placeholder.getsockname()[1]
    worker_config = replace(config, port=port)

    wake_reader, wake_writer = socket.socketpair()
    wake_writer.setblocking(False)
    stop_signal: list[int] = []

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop_signal.append(signum)
        try:
            wake_writer.send(b"\0")
        except OSError:
            pass

    previous = {
        signum: signal.signal(signum, on_signal) for signum in (signal.SIGINT, signal.SIGTERM)
    }
    context = multiprocessing.get_context("spawn")
    workers: list[multiprocessing.process.BaseProcess] = []
    pipes: list[Connection] = []
    failed = False
    try:
        for index in range(config.workers):
            ours, theirs = context.Pipe()
            process = context.Process(
                target=_worker_main,
                args=(worker_config, loop, theirs),
                name=f"bank-worker-{index + 1}",
            )
            process.start()
            theirs.close()
            workers.append(process)
            pipes.append(ours)

        # Wait for every worker to listen, a worker to die, or a signal.
        waiting = dict(zip(pipes, range(len(pipes)), strict=True))
        deaths = {process.sentinel: index for index, process in enumerate(workers)}
        while waiting and not stop_signal:
            ready = wait([*waiting, *deaths, wake_reader], timeout=START_TIMEOUT)
            if not ready:
                say(f"workers did not start within {START_TIMEOUT:g} s; stopping")
                failed = True
                break
            dead = [deaths[item] for item in ready if item in deaths]
            if dead and not stop_signal:
                for index in dead:
                    say(
                        f"worker {index + 1} (pid {workers[index].pid}) "
                        f"{_describe_exit(workers[index])} before listening; stopping"
                    )
                failed = True
                break
            for item in ready:
                if item in waiting:
                    try:
                        line = item.recv()
                    except (EOFError, OSError):
                        continue  # its death shows on its sentinel
                    if not str(line).startswith(_LISTENING):
                        say(f"worker {waiting[item] + 1} said {line!r}; stopping")
                        failed = True
                    del waiting[item]
            if failed:
                break
        placeholder.close()
        if not failed and not stop_signal:
            tell(f"{_LISTENING}{format_url(config.host, port)}")
            pids = ", ".join(str(process.pid) for process in workers)
            say(f"{len(workers)} workers share port {port} (pids {pids})")
            # Serve until a signal or a worker's death.
            ready = wait([*deaths, wake_reader])
            if not stop_signal:
                for item in ready:
                    if item in deaths:
                        index = deaths[item]
                        say(
                            f"worker {index + 1} (pid {workers[index].pid}) "
                            f"{_describe_exit(workers[index])}; it is not restarted, "
                            "stopping the others"
                        )
                        failed = True
        if stop_signal:
            say(f"{signal.Signals(stop_signal[0]).name} received; stopping {len(workers)} workers")
    finally:
        placeholder.close()
        unclean = _stop_all(workers, config.drain_timeout + grace, say)
        for pipe in pipes:
            pipe.close()
        wake_reader.close()
        wake_writer.close()
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    return 1 if failed or unclean else 0


def _stop_all(
    workers: list[multiprocessing.process.BaseProcess],
    grace: float,
    say: Callable[[str], None],
) -> bool:
    """SIGTERM every live worker, wait ``grace`` seconds, SIGKILL the rest.

    Returns:
        True if a worker had to be killed or did not exit with code 0.
    """
    for process in workers:
        if process.is_alive() and process.pid is not None:
            try:
                os.kill(process.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
    start = time.monotonic()
    for process in workers:
        process.join(max(0.0, grace - (time.monotonic() - start)))
    unclean = False
    for index, process in enumerate(workers):
        if process.is_alive():
            say(f"worker {index + 1} (pid {process.pid}) did not stop in {grace:g} s; killing it")
            process.kill()
            process.join()
            unclean = True
        elif process.exitcode not in (0, None):
            unclean = True
    return unclean


def serve_forever(config: BankConfig, *, loop: LoopKind = "auto") -> int:
    """The ``serve`` command: one process, or ``config.workers`` of them; returns the exit code.

    A store that cannot be opened is one line and exit code 2 before anything listens: with
    several workers the supervisor opens it once first (rather than every worker failing to
    start); one process opens it once, as it starts, before it binds the port. A configuration
    that loses money on purpose (lock mode ``none``, or an in-process lock mode over several
    workers) then says so on stderr, before anything listens.
    """

    def warn() -> None:
        unsafe = config.unsafe_reason()
        if unsafe is not None:
            print(f"warning: {unsafe}", file=sys.stderr, flush=True)

    def ready() -> None:
        warn()
        tune_collector()

    thresholds = gc.get_threshold()
    try:
        if config.workers > 1:
            run(check_store(config.store), loop=loop)
            warn()
            return supervise(config, loop=loop)
        check_store_path(config.store)
        run(serve(config, before_listening=ready), loop=loop)
    except StoreUnavailable as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"error: cannot listen on {config.host}:{config.port}: {exc}", file=sys.stderr)
        return 1
    finally:
        # The collector as it was before serving: nothing kept for good when the caller goes
        # on (a test calling this in its own process).
        gc.unfreeze()
        gc.set_threshold(*thresholds)
    return 0

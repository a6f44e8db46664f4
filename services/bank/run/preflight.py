"""What the command line checks before any long work starts: that the store opens, and that
the files it was asked to write can be written. Each failure is one sentence, for one line.

A store that cannot be opened would otherwise show as a traceback from deep inside the driver
(or, for an unreachable PostgreSQL, as ``cannot listen on ...``: the connection error is an
``OSError`` too), and an output path that cannot be written would fail only after the whole
load had run.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Final
from urllib.parse import urlsplit

__all__ = [
    "STORE_CHECK_TIMEOUT",
    "StoreUnavailable",
    "check_output_path",
    "check_store",
    "check_store_path",
    "describe_store",
    "store_failure",
]

#: Seconds the store gets to open before the check gives up on it.
STORE_CHECK_TIMEOUT: Final = 10.0


class StoreUnavailable(Exception):
    """The store cannot be opened; the message names it and says why, in one line."""


def describe_store(url: str) -> str:
    """The store of ``url`` for a message, without its password.

    ``the SQLite database bank.db``, ``the PostgreSQL database test at 127.0.0.1:5432 as
    postgres``.
    """
    if url == "memory":
        return "the memory store"
    if url.startswith("sqlite:"):
        from ..stores.sqlite import sqlite_path

        return f"the SQLite database {sqlite_path(url)}"
    parts = urlsplit(url)
    database = parts.path.lstrip("/") or "(default)"
    where = parts.hostname or "localhost"
    if parts.port:
        where += f":{parts.port}"
    user = f" as {parts.username}" if parts.username else ""
    return f"the PostgreSQL database {database} at {where}{user}"


def _reason(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError):
        return f"no answer within {STORE_CHECK_TIMEOUT:g} s"
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused (is the server running, on that port?)"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= 300 else text[:297] + "..."


def store_failure(url: str, exc: BaseException) -> StoreUnavailable:
    """The one-line error for ``exc``, raised while opening the store of ``url``."""
    return StoreUnavailable(f"cannot open {describe_store(url)}: {_reason(exc)}")


def check_store_path(url: str) -> None:
    """Check, without opening it, what can be known of the store of ``url`` from its URL: a
    SQLite file's directory exists and the file is not a directory.

    Raises:
        StoreUnavailable: The SQLite file cannot be where the URL says.
    """
    if not url.startswith("sqlite:"):
        return
    from ..stores.sqlite import sqlite_path

    path = Path(sqlite_path(url))
    directory = path.parent
    # aiosqlite reports a missing directory only as "unable to open database file", from its
    # thread (with a traceback of that thread as the loop closes): say what is wrong first.
    if not directory.is_dir():
        problem = "is not a directory" if directory.exists() else "does not exist"
        raise StoreUnavailable(
            f"cannot open {describe_store(url)}: directory {directory} {problem}"
        )
    if path.is_dir():
        raise StoreUnavailable(f"cannot open {describe_store(url)}: it is a directory")


async def check_store(url: str) -> None:
    """Open the store of ``url`` once and close it again.

    Raises:
        StoreUnavailable: It cannot be opened: a missing directory, an unreachable server, an
            unknown role or database, no answer within 10 s.
    """
    from ..stores import open_store

    if url == "memory":
        return
    check_store_path(url)
    store = open_store(url)
    try:
        async with asyncio.timeout(STORE_CHECK_TIMEOUT):
            await store.open()
    except Exception as exc:
        raise store_failure(url, exc) from exc
    await store.close()


def check_output_path(path: Path) -> str | None:
    """Why ``path`` cannot be written, or ``None`` if it can.

    Tried for real (opened for appending, and removed again if it did not exist), since
    permission bits say little to a process running as root.
    """
    if path.is_dir():
        return f"{path} is a directory"
    directory = path.parent
    if not directory.is_dir():
        problem = "is not a directory" if directory.exists() else "does not exist"
        return f"cannot write {path}: directory {directory} {problem}"
    existed = path.exists()
    try:
        with path.open("ab"):
            pass
    except OSError as exc:
        return f"cannot write {path}: {exc.strerror or exc}"
    if not existed:
        os.unlink(path)
    return None

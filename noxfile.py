"""The library's tests on the other supported Pythons: ``make test-versions`` (or ``nox``).

The full suite (services, PostgreSQL, lint, types) runs on 3.11 with ``make test``; these sessions
run what depends on the interpreter (the explorer reads bytecode and drives the event loops'
internals): ``tests/asynclocks`` and the examples, on each other version the package supports.
Interpreters are found on PATH as ``python3.12`` / ``python3.13`` (with pyenv, export
``PYENV_VERSION=3.11.7:3.12.1:3.13.0`` first; ``make test-versions`` does).
"""

from __future__ import annotations

import nox

#: The versions besides 3.11 (``make test``) that pyproject's classifiers claim.
PYTHONS = ["3.12", "3.13"]
#: What the sessions' tests import: the trio backend, rich (the demo CLI) and the web checks; the
#: HTTP stacks the explorer runs over its simulated network (aiohttp, httpx, h11, hypercorn) and
#: FastAPI (the web examples); the test tools; uvloop so that the KeyedLock-on-uvloop tests run
#: rather than skip; and playwright, for the explorer's HTML report in a real browser.
REQUIREMENTS = [
    "-e",
    ".[trio,cli,web]",
    "aiohttp",
    "httpx",
    "h11",
    "hypercorn",
    "fastapi",
    "pytest",
    "pytest-timeout",
    "hypothesis",
    "uvloop; sys_platform != 'win32'",
    # The HTML report's browser test (Debian's chromium; no browser download).
    "playwright",
]

nox.options.sessions = ["tests"]
nox.options.default_venv_backend = "venv"
nox.options.reuse_venv = "yes"
nox.options.error_on_missing_interpreters = True


@nox.session(python=PYTHONS)
def tests(session: nox.Session) -> None:
    """tests/asynclocks and tests/test_examples.py; arguments after ``--`` replace those paths."""
    session.install("-c", "constraints.txt", *REQUIREMENTS)
    arguments = session.posargs or ["tests/asynclocks", "tests/test_examples.py"]
    session.run("python", "-m", "pytest", *arguments)

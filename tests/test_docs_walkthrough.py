"""The bank's ``curl`` walk-through in docs/bank.md is real output of a real server.

The block needs a server running beside the commands, which the one-command-at-a-time check of
``test_docs.py`` cannot give it, so it is marked ``skip`` there and run here instead: the server
starts with the documented command (on a free port instead of 8080), every ``curl`` line runs
in a shell against it, and its output must be the documented one. Two things are allowed to
differ, and only those: the port, and the API keys, which are random per server (each key the
server hands out is mapped to the documented one, so the documented ``ALICE=... BOB=...`` line
sets the real keys).
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
from pathlib import Path

from services.bank.tools.showdown import start_server

ROOT = Path(__file__).resolve().parents[1]
DOCUMENT = ROOT / "docs" / "bank.md"
_SERVE = "$ BANK_ADMIN_TOKEN=s3cret python -m services.bank serve "
_KEY = re.compile(r"bank_[A-Za-z0-9_-]{20,}")
_ASSIGNMENT = re.compile(r"^(?:[A-Z]+=\S+ ?)+$")
DOCUMENTED_PORT = "8080"


def _walkthrough() -> list[str]:
    """The lines of the console block that starts the server (the line after its fence on)."""
    lines = DOCUMENT.read_text().splitlines()
    start = next(index for index, line in enumerate(lines) if line.startswith(_SERVE))
    end = lines.index("```", start)
    return lines[start:end]


def _commands(block: list[str]) -> list[tuple[str, list[str]]]:
    commands: list[tuple[str, list[str]]] = []
    for line in block:
        if line.startswith("$ "):
            commands.append((line[2:], []))
        else:
            commands[-1][1].append(line)
    return commands


def test_the_walkthrough_is_found_and_skipped_by_the_generic_check() -> None:
    lines = DOCUMENT.read_text().splitlines()
    block = _walkthrough()
    fence = lines.index(block[0]) - 1
    assert lines[fence] == "```console"
    assert lines[fence - 1].startswith("<!-- check: skip ")
    assert len(_commands(block)) >= 10
    assert any("Authorization: Bearer $ALICE" in command for command, _ in _commands(block))


def test_the_curl_walkthrough_is_real_output() -> None:
    (serve, serve_output), *rest = _commands(_walkthrough())
    words = shlex.split(serve.partition("#")[0])
    args = words[words.index("serve") + 1 :]
    env = {**os.environ, "BANK_ADMIN_TOKEN": "s3cret"}
    env.pop("BANK_API_KEY", None)
    keys: dict[str, str] = {}  # documented key -> this server's
    with start_server(args, env=env) as server:
        port = server.url.rpartition(":")[2]
        assert serve_output[-1] == f"listening on {server.url}".replace(port, DOCUMENTED_PORT)
        for command, expected in rest:
            if _ASSIGNMENT.match(command):
                for assignment in command.split():
                    name, _, value = assignment.partition("=")
                    env[name] = keys.get(value, value)
                continue
            assert command.startswith("curl "), command
            live = command.replace(f"localhost:{DOCUMENTED_PORT}", f"localhost:{port}")
            done = subprocess.run(
                ["bash", "-c", live],
                env=env,
                capture_output=True,
                text=True,
                timeout=30,
                check=False,
            )
            actual = done.stdout.splitlines()
            for documented, real in zip(
                _KEY.findall("\n".join(expected)), _KEY.findall(done.stdout), strict=True
            ):
                keys[documented] = real
            masked = [_KEY.sub("bank_<key>", line) for line in actual]
            assert masked == [_KEY.sub("bank_<key>", line) for line in expected], command
        server.stop()
        assert server.process.stderr is not None
        stderr = server.process.stderr.read()
    for line in serve_output[:-1]:
        assert line in stderr.splitlines(), line

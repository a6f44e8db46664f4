"""Every console example in README.md and docs/ is real output of the current code.

A fenced block is checked according to the HTML comment on the line just above it (invisible once
rendered):

- ``<!-- check: run -->`` above a ``console`` block: each ``$ command`` line runs in a shell from
  the repository root, with this interpreter's ``bin`` first on ``PATH`` (so ``python`` is the
  venv's); the lines after it, up to the next ``$``, are its output (stdout and stderr, in the
  order they came). ``$ echo $?`` prints the previous command's exit status. A line ``...``
  matches any number of lines; timings (``0.028 s``, ``12 ms``) are masked on both sides, since
  they are measured, not promised.
- ``<!-- check: file PATH -->`` above a ``python`` block: the block is that file's text, whole.
- ``<!-- check: skip REASON -->`` above any block that is not run here (load figures of a noisy
  machine, a command that needs a long load); the reason is required.

Every ``console`` block must carry one of these markers, so a new example cannot slip in unchecked.
Run with ``ASYNCLOCKS_UPDATE_DOCS=1`` to rewrite the ``run`` blocks with the output the code gives
now and the ``file`` blocks with the files' text (then read the diff: it is the documentation
changing).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCUMENTS = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
_MARKER = re.compile(r"^\s*<!-- check: (run|file|skip)(?: (.+?))? -->$")
_FENCE = re.compile(r"^(\s*)```(\w+)\s*$")
_TIMING = re.compile(r"\b\d+(?:[.,]\d+)? ?(s|ms|us|µs)\b")
UPDATE = os.environ.get("ASYNCLOCKS_UPDATE_DOCS") == "1"


@dataclass
class Block:
    """One fenced block of a document and the marker above it."""

    document: Path
    line: int  # 1-based line of the opening fence
    language: str
    body: list[str]
    marker: str | None
    argument: str | None
    indent: str = ""

    @property
    def where(self) -> str:
        return f"{self.document.relative_to(ROOT)}:{self.line}"


def blocks(document: Path) -> list[Block]:
    found: list[Block] = []
    lines = document.read_text().splitlines()
    index = 0
    while index < len(lines):
        fence = _FENCE.match(lines[index])
        if fence:
            indent, language = fence.groups()
            start = index
            index += 1
            while index < len(lines) and lines[index].strip() != "```":
                index += 1
            marker = argument = None
            if start > 0:
                match = _MARKER.match(lines[start - 1])
                if match:
                    marker, argument = match.group(1), match.group(2)
            body = [line.removeprefix(indent) for line in lines[start + 1 : index]]
            found.append(Block(document, start + 1, language, body, marker, argument, indent))
        index += 1
    return found


ALL_BLOCKS = [block for document in DOCUMENTS if document.exists() for block in blocks(document)]
RUN_BLOCKS = [b for b in ALL_BLOCKS if b.marker == "run"]
FILE_BLOCKS = [b for b in ALL_BLOCKS if b.marker == "file"]


def _mask(text: str) -> str:
    return _TIMING.sub(r"<t> \1", text)


def _matches(expected: list[str], actual: list[str]) -> bool:
    """Whether ``actual`` fits ``expected``, where a ``...`` line stands for any lines."""
    if not expected:
        return not actual
    head, *rest = expected
    if head == "...":
        return any(_matches(rest, actual[cut:]) for cut in range(len(actual) + 1))
    return bool(actual) and _mask(head) == _mask(actual[0]) and _matches(rest, actual[1:])


def _commands(body: list[str]) -> list[tuple[str, list[str]]]:
    commands: list[tuple[str, list[str]]] = []
    for line in body:
        if line.startswith("$ "):
            commands.append((line[2:], []))
        elif commands:
            commands[-1][1].append(line)
        else:
            raise AssertionError(f"output line before any '$ command': {line!r}")
    for _, output in commands:
        while output and output[-1] == "":
            output.pop()  # a blank line separates commands; it is not output
    return commands


def run(command: str, previous_status: int) -> tuple[list[str], int]:
    """Run one documented command the way a reader would, from the repository root."""
    if command == "echo $?":
        return [str(previous_status)], 0
    env = dict(os.environ)
    # A reader's terminal is not CI: under CI=true pytest, for one, stops shortening its summary.
    for marker in ("CI", "BUILD_NUMBER"):
        env.pop(marker, None)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env.update({"COLUMNS": "120", "NO_COLOR": "1", "TERM": "dumb", "PYTHONHASHSEED": "0"})
    completed = subprocess.run(
        ["bash", "-c", command],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=50,
        check=False,
    )
    # Trailing spaces (rich pads its table titles) are invisible in a rendered page.
    return [line.rstrip() for line in completed.stdout.rstrip("\n").splitlines()], (
        completed.returncode
    )


def test_every_console_block_is_checked_or_says_why_not() -> None:
    unmarked = [b.where for b in ALL_BLOCKS if b.language == "console" and b.marker is None]
    assert not unmarked, f"console blocks without a '<!-- check: ... -->' marker: {unmarked}"
    unexplained = [b.where for b in ALL_BLOCKS if b.marker == "skip" and not b.argument]
    assert not unexplained, f"'check: skip' needs a reason: {unexplained}"


@pytest.mark.parametrize("block", FILE_BLOCKS, ids=[b.where for b in FILE_BLOCKS])
def test_listing_is_the_file_it_names(block: Block) -> None:
    assert block.argument is not None
    path = ROOT / block.argument
    assert path.is_file(), f"{block.where} shows {block.argument}, which does not exist"
    if UPDATE:
        _rewrite(block, path.read_text().splitlines())
        return
    assert block.body == path.read_text().splitlines(), (
        f"{block.where} differs from {block.argument}"
    )


@pytest.mark.parametrize("block", RUN_BLOCKS, ids=[b.where for b in RUN_BLOCKS])
def test_console_example_is_real_output(block: Block) -> None:
    assert block.language == "console", f"{block.where}: 'check: run' is for console blocks"
    status = 0
    rewritten: list[str] = []
    for command, expected in _commands(block.body):
        actual, status = run(command, status)
        if UPDATE:
            rewritten += [f"$ {command}", *actual, ""]
            continue
        printed = "\n".join(actual)
        assert _matches(expected, actual), f"{block.where}: `{command}` printed\n{printed}"
    if UPDATE:
        _rewrite(block, rewritten[:-1])


def _rewrite(block: Block, body: list[str]) -> None:
    # Found again by its text: an earlier rewrite of the same document may have moved it.
    for current in blocks(block.document):
        if current.marker == block.marker and current.body == block.body:
            lines = block.document.read_text().splitlines()
            indented = [f"{current.indent}{line}" if line else line for line in body]
            lines[current.line : current.line + len(current.body)] = indented
            block.document.write_text("\n".join(lines) + "\n")
            return
    raise AssertionError(f"{block.where}: block changed while it ran")

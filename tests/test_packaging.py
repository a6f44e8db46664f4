"""The README's table of extras is the one pyproject.toml defines: every extra is listed, with
every package it adds, so ``pip install 'asynclocks[NAME]'`` installs what the table says."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
_ROW = re.compile(r"^\| `([a-z]+)` \| (.+?) \| (.+?) \|$")
_NAME = re.compile(r"^[A-Za-z0-9._-]+")


def _extras() -> dict[str, list[str]]:
    with (ROOT / "pyproject.toml").open("rb") as file:
        extras: dict[str, list[str]] = tomllib.load(file)["project"]["optional-dependencies"]
    return extras


def _table() -> dict[str, str]:
    """The README's extras table: each extra's name and its "adds" cell, in order."""
    rows: dict[str, str] = {}
    in_table = False
    for line in (ROOT / "README.md").read_text().splitlines():
        if line.startswith("| extra | adds | for |"):
            in_table = True
        elif in_table and line.startswith("|---"):
            continue
        elif in_table:
            match = _ROW.match(line)
            if match is None:
                break
            rows[match.group(1)] = match.group(2)
    return rows


def _missing(cell: str, requirement: str, listed_before: list[str]) -> list[str]:
    """What of ``requirement`` the ``cell`` does not name (case-insensitively)."""
    text = cell.lower()
    if requirement.startswith("asynclocks["):
        wanted = requirement.removeprefix("asynclocks[").removesuffix("]").split(",")
        if "all of the above" in text and set(wanted) == set(listed_before):
            return []
        return [name for name in wanted if f"`{name}`" not in cell]
    match = _NAME.match(requirement)
    assert match, requirement
    name = match.group(0)
    return [] if name.lower() in text else [name]


def test_the_table_reader_reads_the_table() -> None:
    # Guards the reader: an empty table would make the checks below pass vacuously.
    table = _table()
    assert list(table)[:2] == ["trio", "cli"]
    assert "aiohttp" in table["service"]


def test_the_readme_lists_every_extra_and_nothing_else() -> None:
    assert sorted(_table()) == sorted(_extras())


def test_each_extra_row_names_every_package_it_adds() -> None:
    table = _table()
    names = list(table)
    for extra, requirements in _extras().items():
        before = names[: names.index(extra)]
        missing = [name for req in requirements for name in _missing(table[extra], req, before)]
        assert missing == [], f"README's row for `{extra}` does not name {missing}"

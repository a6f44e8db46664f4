"""docs/architecture.md lists every module of the library and the service, and only those."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("asynclocks", "services")


def listed_modules() -> list[str]:
    text = (ROOT / "docs" / "architecture.md").read_text()
    block = re.search(r"## Modules\n\n```text\n(.*?)\n```", text, re.S)
    assert block, "docs/architecture.md has no '## Modules' block"
    return [line.split()[0] for line in block.group(1).splitlines() if line.strip()]


def test_every_listed_module_exists() -> None:
    missing = [path for path in listed_modules() if not (ROOT / path).is_file()]
    assert not missing, f"docs/architecture.md lists modules that do not exist: {missing}"


def test_every_module_is_listed_once() -> None:
    listed = listed_modules()
    assert len(listed) == len(set(listed)), "a module is listed twice"
    present = {
        str(path.relative_to(ROOT))
        for package in PACKAGES
        for path in (ROOT / package).rglob("*.py")
        if "__pycache__" not in path.parts
    }
    unlisted = sorted(present - set(listed))
    assert not unlisted, f"modules missing from docs/architecture.md: {unlisted}"

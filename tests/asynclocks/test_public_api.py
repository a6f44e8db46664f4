from __future__ import annotations

import importlib
import types

import asynclocks


def test_all_names_exist_and_are_public() -> None:
    for name in asynclocks.__all__:
        assert not name.startswith("_"), name
        assert hasattr(asynclocks, name), f"asynclocks.__all__ lists missing name {name!r}"


def test_all_lists_every_public_attribute() -> None:
    public = {
        name
        for name, value in vars(asynclocks).items()
        if not name.startswith("_") and not isinstance(value, types.ModuleType)
    }
    assert public == set(asynclocks.__all__)


def test_all_is_sorted_and_unique() -> None:
    assert list(asynclocks.__all__) == sorted(set(asynclocks.__all__))


def test_public_objects_are_importable_from_the_top_level() -> None:
    module = importlib.import_module("asynclocks")
    for name in module.__all__:
        obj = getattr(module, name)
        # Private module paths must not leak into the public surface for our own objects.
        owner = getattr(obj, "__module__", "asynclocks")
        if owner.startswith("asynclocks"):
            assert owner == "asynclocks" or owner.startswith("asynclocks._"), owner


def test_package_ships_py_typed() -> None:
    from importlib.resources import files

    assert files("asynclocks").joinpath("py.typed").is_file()


def test_version_comes_from_the_package_metadata() -> None:
    from importlib.metadata import version

    assert asynclocks.__version__ == version("asynclocks")


def test_command_line_prints_the_version() -> None:
    import subprocess
    import sys

    completed = subprocess.run(
        [sys.executable, "-m", "asynclocks", "--version"],
        capture_output=True,
        text=True,
        check=False,
        timeout=30,
    )
    assert completed.returncode == 0, completed.stderr
    assert completed.stdout == f"asynclocks {asynclocks.__version__}\n"

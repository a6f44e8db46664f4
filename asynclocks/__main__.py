"""Command line: ``python -m asynclocks COMMAND``.

Each command lives in its own private module exposing ``register(subparsers)``, which adds a
sub-parser whose ``handler`` default takes the parsed namespace and returns the exit code.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence

Registrar = Callable[["argparse._SubParsersAction[argparse.ArgumentParser]"], None]


def _registrars() -> list[Registrar]:
    # Imported here so `python -m asynclocks --help` stays fast and each command's heavy imports
    # happen only when the parser is built.
    from ._demo_cli import register as register_demo
    from ._explore._cli import register as register_explore
    from ._web._cli import register as register_web

    registrars: list[Registrar] = [register_demo, register_explore, register_web]
    return registrars


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m asynclocks",
        description="Show race conditions at await points and the locks that fix them.",
    )
    from . import __version__

    parser.add_argument("--version", action="version", version=f"asynclocks {__version__}")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for register in _registrars():
        register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    handler: Callable[[argparse.Namespace], int] = args.handler
    return handler(args)


if __name__ == "__main__":
    sys.exit(main())

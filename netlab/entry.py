"""The `netlab` command's entry point: `status` without Typer (see view/status.py), the rest
through the Typer app in cli/."""

from __future__ import annotations

import sys
from typing import Optional


def main(argv: Optional[list[str]] = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if args in (["status"], ["status", "--json"]):
        from .view.status import status
        status(args[1:] == ["--json"])
        return 0
    from .cli import main as cli_main
    return cli_main(argv)


def run() -> None:
    sys.exit(main())

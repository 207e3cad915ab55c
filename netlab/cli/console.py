"""The console: where the CLI's output goes, its tables, and the one exit-code policy.

Every command prints through `out`; tables are not cut to 80 columns when piped (a learner's
`| less` or a test reads them whole). Errors leave through cli.main() only: a NetlabError's message
on stderr and its code (errors.EXIT_USAGE 2 for bad input, usage, a lab that is not up, missing
root; errors.EXIT_FAILED 1 for a failed step or check).
"""

from __future__ import annotations

import os
import sys
from contextlib import contextmanager
from typing import Callable, Iterator, Optional

from rich.console import Console

from ..core.errors import NetlabError

out = Console(highlight=False, soft_wrap=True, width=None if sys.stdout.isatty() else 200)


def need_root(command: str) -> None:
    if os.geteuid() != 0:
        raise NetlabError(f"netlab {command} changes or reads network namespaces and needs root: "
                          f"run it with sudo (sudo netlab {command} ...)")


def table(*columns: str):
    from rich.table import Table
    t = Table(box=None, pad_edge=False, show_edge=False, header_style="bold")
    for c in columns:
        t.add_column(c)
    return t


@contextmanager
def progress(what: str, wanted: bool = True) -> Iterator[Optional[Callable[[int, int], None]]]:
    """A progress bar on stderr while a long step runs, only on a terminal (nothing on a pipe):
    yields `tick(done, total)`, or None when there is no bar."""
    if not wanted or not sys.stderr.isatty():
        yield None
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, \
        TimeElapsedColumn
    bar = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                   TimeElapsedColumn(), console=Console(stderr=True), transient=True)
    with bar:
        task = bar.add_task(what, total=None)

        def tick(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total)
        yield tick

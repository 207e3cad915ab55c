"""`netlab clean`: remove the leftovers of every lab, recorded or not, found by netlab's marks.

Leftovers are what an interrupted or killed `up` (or a lost state directory) leaves: labs whose
record is not complete or whose namespaces are gone, namespaces whose `lo` bears the alias
`netlab:<lab>` (plan.MARK), processes that carry NETLAB_LAB=<lab> in their environment, state
directories and lock files of labs that are not up. A namespace without netlab's mark is never
touched, whatever its name. A lab that is fully up is kept (`netlab down` takes it down), and a lab
that another netlab command holds (its lock) is skipped: clean never races an `up` or a `down`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from .. import model
from ..core.errors import NetlabError
from . import kernel as K
from . import lifecycle, state, workloads


@dataclass
class CleanResult:
    removed: dict[str, lifecycle.DownResult] = field(default_factory=dict)
    kept: list[str] = field(default_factory=list)      # labs that are up
    busy: list[str] = field(default_factory=list)      # labs another netlab command holds


def _valid(name: str) -> bool:
    try:
        model.check_lab_name(name)
        return True
    except ValueError:
        return False


def candidates() -> set[str]:
    """Every lab name that has a trace on this machine: a state dir, a lock file, a mark."""
    names: set[str] = set()
    for sub in ("labs", "locks"):
        try:
            names |= {p.name.removesuffix(".lock") for p in (state.ROOT / sub).iterdir()}
        except FileNotFoundError:
            pass
    names |= {m for m in (K.mark(ns) for ns in K.list_netns()) if m}
    names |= set(workloads.all_marked())
    # A mark is just text somebody could have set: only names netlab could have made are used
    # (no '/' or '..' ever reaches a path).
    return {n for n in names if _valid(n)}


def is_up(lab_state: state.LabState) -> bool:
    """A lab is up when its `up` completed and every namespace it recorded is there with its mark.

    Judged from the journal alone, not by parsing the scenario again, so a lab made by another
    netlab version (with fields this one does not know) is never taken for a leftover.
    """
    journal = lab_state.journal()
    if not lab_state.info() or not journal.complete or not journal.namespaces:
        return False
    return all(K.mark(ns) == lab_state.lab for ns in journal.namespaces)


def clean() -> CleanResult:
    result = CleanResult()
    for name in sorted(candidates()):
        lab_state = state.LabState(name)
        try:
            lock = lab_state.lock()
        except NetlabError:
            result.busy.append(name)
            continue
        with lock:
            if is_up(lab_state):
                result.kept.append(name)
                continue
            down = lifecycle.teardown(lab_state)
            if down.namespaces or down.processes:
                result.removed[name] = down
            # Unlinked while held: state.lock() notices and retakes a fresh file.
            try:
                os.unlink(lab_state.lock_path())
            except FileNotFoundError:
                pass
    return result

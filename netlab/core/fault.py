"""The fault interface of the break-it exercises: a classic cause of a real outage that netlab can
apply to a lab on purpose (`netlab break`), as a few plan operations, with their inverse.

A fault is a plain object (one per kind of fault) that every feature may contribute through
`Feature.faults()`; they are collected once in features.FAULTS. Pure: a fault only says what to
do (operations from core.ops) and what it breaks (which verify checks must fail, and which may,
from the model);
netlab.exercises applies it, records it in the lab's journal and undoes it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional


@dataclass(frozen=True)
class Broken:
    """One fault made concrete for a lab and a target: what to do, what undoes it, and what a
    learner (or verify) must find."""
    ops: tuple            # the operations that break the lab
    undo: tuple           # the operations that restore it as the plan built it
    ns: str               # the namespace of the object changed: where the packet stops
    obj: str              # the object changed there (a route, an interface, a table, a sysctl)
    look: str             # the command an engineer would look with
    fix: str              # a command that repairs it by hand (for the workshop's answers)


class Fault:
    """The defaults; a fault overrides what it has. `on` says what `--on` names."""
    name = ""
    summary = ""          # one line for `netlab break --list`
    on = "node"           # node, pod or container
    lesson = ""           # the workshop lesson it belongs to (docs/troubleshooting.md)

    def targets(self, lab: Any) -> list[str]:
        """The names it can be applied to in this lab, the default first; [] when it does not
        apply (a vxlan fault on a host-gw lab)."""
        return []

    def make(self, lab: Any, target: str) -> Broken:
        raise NotImplementedError

    def breaks(self, lab: Any, target: str, check: Any) -> bool:
        """Whether this verify check must fail once the fault is applied (from the model)."""
        return False

    def outcome(self, lab: Any, target: str, check: Any) -> Optional[bool]:
        """True: the check must fail once the fault is applied; False: it must pass; None: it
        may fail or pass (kube-proxy picks each connection's endpoint at random, and only some
        endpoints are broken). A fault applies only where some check must fail."""
        return self.breaks(lab, target, check)

"""netlab as a library, for notebooks and tests: the same steps as the CLI, without the CLI.

    from netlab import api
    lab = api.load("scenarios/three-node.yaml", name="nb-lab")   # or api.parse(text, path)
    api.up(lab)                       # root: builds it (a transaction: all or nothing)
    report = api.verify(lab)          # real ping and curl; report.failed lists what did not hold
    print(report.summary())
    api.down(lab.name)

Errors are netlab.core.errors.NetlabError (ScenarioError for bad input), with `.code` the exit
code the CLI would give.
"""

from __future__ import annotations

from typing import Iterable, Optional

from .core.lab import Lab
from .model import load, parse

__all__ = ["load", "parse", "up", "down", "verify", "plan_script"]


def up(lab: Lab):
    """Check what the lab needs on this machine, then build it; returns lifecycle.UpResult."""
    from .runtime import lifecycle, preflight
    preflight.check(lab)
    return lifecycle.up(lab)


def down(name: str):
    """Stop a lab's processes and remove everything it made; returns lifecycle.DownResult."""
    from .runtime import lifecycle
    return lifecycle.down(name)


def verify(lab: Lab, only: Iterable[str] = (), source: Optional[str] = None):
    """Derive the lab's checks (every rule, or `only` these) and prove them; returns a Report."""
    from .verify import engine
    return engine.run(lab, engine.derive(lab, only, source))


def plan_script(lab: Lab) -> str:
    """The plan as the shell script `netlab plan` prints."""
    from . import plan
    return plan.script(lab, plan.build(lab))

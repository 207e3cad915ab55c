"""Verify: prove a lab's rules with real packets, in four steps, one module each:
checks (derived from the Lab, pure) -> probes (ping, curl, socat in the lab's namespaces) ->
judge (each outcome, and where a lost packet stopped) -> report (table, JSON, JUnit).
engine runs them: `netlab.verify.derive(lab)` and `netlab.verify.run(lab, checks)`.

Names are looked up lazily in those modules, so that a feature may import verify.checks while
verify.engine imports the features.
"""

from __future__ import annotations

import importlib
from typing import Any

_MODULES = ("checks", "probes", "judging", "report", "engine")


def __getattr__(name: str) -> Any:
    for module in _MODULES:
        mod = importlib.import_module(f"{__name__}.{module}")
        if hasattr(mod, name):
            return getattr(mod, name)
    raise AttributeError(f"module {__name__} has no attribute {name!r}")

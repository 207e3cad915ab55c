"""Every check a lab implies: each feature's rules in their order (features.RULES), in a coverage
mode (verify.coverage), then each feature's changes to the others' expectations (Feature.refine,
as policies drop what pod-to-pod rules would expect). Pure: verify.engine probes what it returns,
and a fault that must know every check's fate (netpol's policy-blocks-dns) asks here too.
"""

from __future__ import annotations

import inspect
from typing import Iterable, Optional

from ..core.lab import Lab
from ..verify import coverage
from ..verify.coverage import Cover


def derive(lab: Lab, only: Iterable[str] = (), cover: Optional[Cover] = None) -> list:
    """Every check of the lab (in the mode `cover`, else the lab's default), or of some rules."""
    from . import FEATURES, RULES       # this package's registry, built when it is imported
    cover = cover or coverage.choose(len(lab.pods))
    checks = [c for r in (list(only) or list(RULES)) for c in _derive_rule(RULES[r], lab, cover)]
    for feature in FEATURES:
        checks = feature.refine(lab, checks)
    return checks


def _derive_rule(rule, lab: Lab, cover: Cover) -> list:
    # Rules that choose pairs (features/pods.py) take the mode as `cover`; the others check all.
    return rule(lab, cover=cover) if "cover" in inspect.signature(rule).parameters else rule(lab)

"""The features, registered once: each is one module behind the interface of core.feature.

The order is the order of everything: the sections a scenario is checked in, the operations of
each phase of `up`, and the rules of `netlab verify` as it reports them.
"""

from __future__ import annotations

from .checks import ScenarioChecks
from .docker import Docker
from .hostgw import HostGw
from .neighbours import Neighbours
from .outside import OutsideWorld
from .pods import Pods
from .underlay import Underlay
from .vxlan import Vxlan

FEATURES = (Underlay(), Pods(), ScenarioChecks(), Docker(), HostGw(), Vxlan(), OutsideWorld(),
            Neighbours())

# Every verify rule, in report order, and the probes of the features' own check methods.
RULES = {name: derive for f in FEATURES for name, derive in f.rules().items()}
PROBES = {method: probe for f in FEATURES for method, probe in f.probes().items()}

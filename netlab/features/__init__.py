"""The features, registered once: each is one module behind the interface of core.feature.

The order is the order of everything: the sections a scenario is checked in, the operations of
each phase of `up`, and the rules of `netlab verify` as it reports them. (Cluster DNS adds a pod
and a Service: after Pods, before Services.)
"""

from __future__ import annotations

from .checks import ScenarioChecks
from .cni import Cni
from .dns import Dns
from .docker import Docker
from .hostgw import HostGw
from .ingress import Ingress
from .netpol import NetworkPolicies
from .neighbours import Neighbours
from .outside import OutsideWorld
from .pods import Pods
from .services import Services
from .underlay import Underlay
from .vxlan import Vxlan

FEATURES = (Underlay(), Pods(), Dns(), Cni(), ScenarioChecks(), Docker(), HostGw(), Vxlan(),
            OutsideWorld(), Ingress(), Services(), NetworkPolicies(), Neighbours())

# Every verify rule, in report order, and the probes of the features' own check methods.
RULES = {name: derive for f in FEATURES for name, derive in f.rules().items()}
PROBES = {method: probe for f in FEATURES for method, probe in f.probes().items()}

# The faults of the break-it exercises (netlab break --list): the base ones, then each feature's.
from .faults import BASE_FAULTS  # noqa: E402
FAULTS = {fault.name: fault for fault in BASE_FAULTS + [x for f in FEATURES for x in f.faults()]}

"""host-gw: pods on different nodes meet through plain routes, each node routing every other node's
pod subnet via that node's IP (`ip route add 10.244.2.0/24 via 192.168.1.12`), as flannel's
host-gw backend does. It needs every node on one segment: the next hop must be on the link.
"""

from __future__ import annotations

from typing import Any

from ..core.feature import Feature
from ..core.lab import Lab, Node
from ..core.ops import HERE, RouteAdd
from ..core.schema import Build


class HostGw(Feature):
    name = "host-gw"

    def build(self, spec: Any, b: Build) -> None:
        if b.fields["backend"] == "host-gw":
            _check_one_segment(b.fields["nodes"], b.scratch["segments"], b.where)

    def ops(self, lab: Lab, phase: str) -> list:
        if phase != "routes" or lab.backend != "host-gw":
            return []
        return [RouteAdd(node.ns, other.pod_cidr, other.ip, "eth0")
                for node in lab.nodes for other in lab.nodes if other is not node]

    def node_ops(self, lab: Lab, node: Node, underlay: str, phase: str) -> list:
        if phase != "routes" or lab.backend != "host-gw":
            return []
        return [RouteAdd(HERE, o.pod_cidr, o.ip, underlay) for o in lab.nodes if o is not node]


def _check_one_segment(nodes, segments: list, where) -> None:
    """host-gw routes a pod subnet via the node's own IP, so that IP must be on the same switch."""
    used = sorted({n.segment for n in nodes})
    if len(used) < 2:
        return
    groups = [f"{', '.join(n.name for n in nodes if n.segment == k)} ({segments[k]})" for k in used]
    loc = ("network", "backend")
    if loc not in where.lines:   # backend left out: host-gw by default
        loc = ("network", "underlay")
    where.fail(loc, f"backend host-gw routes a pod subnet via the node's IP, which only works "
                     f"between nodes on one segment, but nodes {' and '.join(groups)} share no "
                     f"segment: use backend: vxlan or put them on one segment")



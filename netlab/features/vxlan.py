"""vxlan: pods on different nodes meet through an overlay, flannel's vxlan backend built statically:
on each node a `flannel.1` (VNI 1, UDP 4789, learning off) with address <podCIDR>.0/32, and for
every other node a route via its VTEP address `onlink`, a permanent neighbour entry for that
address (its VTEP MAC) and an fdb entry sending that MAC to the node's IP. Pods get MTU 1450.

Its verify rule `mtu` (run on every lab) proves that the pods' MTU fits the path between nodes:
a pod left at 1500 on the overlay is a black hole for large packets.
"""

from __future__ import annotations

from ..core.feature import Feature, Needs
from ..core.lab import Lab, Node
from ..core.ops import HERE, AddrAdd, FdbAppend, LinkUp, NeighAdd, OnlinkRouteAdd, VxlanAdd
from ..verify.checks import Check, hops, pod_end

VXLAN_OVERHEAD = 50   # outer Ethernet 14 + IPv4 20 + UDP 8 + VXLAN 8, as flannel subtracts
VXLAN_VNI = 1         # flannel's default VNI (its device is flannel.<VNI>)
VXLAN_PORT = 4789     # the IANA VXLAN port (the kernel's own default is 8472)
VXLAN_DEV = "flannel.1"


class Vxlan(Feature):
    name = "vxlan"

    def ops(self, lab: Lab, phase: str) -> list:
        if phase != "routes" or lab.backend != "vxlan":
            return []
        return [op for node in lab.nodes for op in _vxlan_node(lab, node, node.ns, "eth0")]

    def node_ops(self, lab: Lab, node: Node, underlay: str, phase: str) -> list:
        if phase != "routes" or lab.backend != "vxlan":
            return []
        return _vxlan_node(lab, node, HERE, underlay)

    def rules(self) -> dict:
        return {"mtu": rule_mtu}

    def needs(self, lab: Lab) -> Needs:
        return Needs(kinds=["vxlan"] * (lab.backend == "vxlan"))


def _vxlan_node(lab: Lab, node: Node, ns: str, dev: str) -> list:
    """One node's flannel.1 on its underlay device `dev`, and its entries for every other node."""
    ops: list = [
        VxlanAdd(ns, VXLAN_DEV, VXLAN_VNI, node.ip, dev, VXLAN_PORT, node.vtep_mac, lab.mtu),
        AddrAdd(ns, VXLAN_DEV, node.vtep, 32),
        LinkUp(ns, VXLAN_DEV),
    ]
    for other in lab.nodes:
        if other is not node:
            ops += [
                NeighAdd(ns, VXLAN_DEV, other.vtep, other.vtep_mac),
                FdbAppend(ns, VXLAN_DEV, other.vtep_mac, other.ip),
                OnlinkRouteAdd(ns, other.pod_cidr, other.vtep, VXLAN_DEV),
            ]
    return ops


def rule_mtu(lab: Lab) -> list[Check]:
    """From one pod on each node, a ping with DF set and the largest payload its eth0 MTU allows
    crosses to one pod on every other node: a pod MTU too large for the overlay shows here."""
    first = {}
    for p in lab.pods:
        if not p.host_network:
            first.setdefault(p.node, p)
    return [Check("mtu", src.name, dst.name, "mtu", src.ns, dst.ip, size=src.mtu - 28,
                  hops=hops(pod_end(lab, src), pod_end(lab, dst)),
                  why="the pods' MTU must fit the path between the nodes" +
                  (", less VXLAN's 50 bytes" if lab.backend == "vxlan" else ""))
            for src in first.values() for dst in first.values() if dst.node != src.node]



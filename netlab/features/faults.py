"""The base faults of the break-it exercises: the classic causes of outages between pods, nodes
and Docker containers, each a few operations on a lab that is up, with their inverse (core.fault).

Each says from the model which verify checks it breaks: a check's `hops` are the namespaces its
packet and its reply cross, each with the address it must be routed to there, so "node1 has no
route to node2's pod subnet" breaks exactly the checks with a hop (node1, an address in
10.244.2.0/24). Later features add their own faults in their own modules (Feature.faults()).
"""

from __future__ import annotations

import ipaddress
from dataclasses import replace

from ..core.fault import Broken, Fault
from ..core.lab import Lab, Node, Pod
from ..core.ops import (AddrAdd, AddrDel, FdbAppend, FdbDel, LinkDown, LinkMtu, LinkUp, NeighDel,
                        NeighReplace, NftApply, RouteAdd, RouteDel, Sysctl)
from .docker import DOCKER_TABLE, containers_on, docker_ruleset
from .vxlan import VXLAN_DEV

PROBED = ("ping", "http", "udp", "mtu")    # the methods that send packets (addr reads addresses)


def _in(address: str, cidr: str) -> bool:
    try:
        return ipaddress.IPv4Address(address) in ipaddress.IPv4Network(cidr)
    except ValueError:       # "localhost" and the like
        return False


def _pods(lab: Lab, node: str = "") -> list[Pod]:
    """Pods with a namespace of their own (on one node)."""
    return [p for p in lab.pods if not p.host_network and (not node or p.node == node)]


def _node_of(lab: Lab, name: str) -> str:
    """The node a check's end lives on: a node itself, a pod's node, else ""."""
    for n in lab.nodes:
        if n.name == name:
            return n.name
    for p in lab.pods:
        if p.name == name:
            return p.node
    return ""


def _own_pod_on(lab: Lab, name: str, node: str) -> bool:
    """Whether `name` is a pod with its own namespace behind node's cni0."""
    return any(p.name == name for p in _pods(lab, node))


def _ns_of(lab: Lab, name: str) -> str:
    for p in lab.pods:
        if p.name == name:
            return p.ns
    for n in lab.nodes:
        if n.name == name:
            return n.ns
    return ""


def _peer(lab: Lab, node: Node) -> Node:
    """The next node in the scenario's order (the last one's is the first)."""
    i = lab.nodes.index(node)
    return lab.nodes[(i + 1) % len(lab.nodes)]


def _sends_into(check, ns: str, cidr: str) -> bool:
    """Whether the check's packet or reply must be routed, in namespace ns, into cidr."""
    return check.method in PROBED and any(h[0] == ns and _in(h[1], cidr) for h in check.hops)


def _transits(lab: Lab, check, node: Node, bridged: bool) -> bool:
    """Whether the check's packets pass through the node without being for it: forwarded from
    one interface to another, or (with `bridged`) switched across its cni0 between its pods."""
    if check.method not in PROBED or not any(h[0] == node.ns for h in check.hops):
        return False
    ends = (check.ns, _ns_of(lab, check.dst))
    if node.ns in ends:
        return False
    if _own_pod_on(lab, check.src, node.name) and _own_pod_on(lab, check.dst, node.name):
        return bridged
    return True


def bridge_netfilter() -> bool:
    """Whether bridged IPv4 traffic passes the IP hooks (br_netfilter loaded, so a node's FORWARD
    chain also sees traffic between two of its pods). New namespaces start with the module's
    default, which the root namespace shows (read only)."""
    try:
        with open("/proc/sys/net/bridge/bridge-nf-call-iptables") as f:
            return f.read().strip() == "1"
    except OSError:
        return False


class NodeFault(Fault):
    on = "node"

    def targets(self, lab: Lab) -> list[str]:
        return [n.name for n in lab.nodes] if _pods(lab) else []


class RouteDeleted(NodeFault):
    name = "route-deleted"
    summary = "host-gw: a node loses its route to the next node's pod subnet"
    lesson = "host-gw"

    def targets(self, lab: Lab) -> list[str]:
        return super().targets(lab) if lab.backend == "host-gw" and len(lab.nodes) > 1 else []

    def make(self, lab: Lab, target: str) -> Broken:
        node = lab.node(target)
        peer = _peer(lab, node)
        route = RouteAdd(node.ns, peer.pod_cidr, peer.ip, "eth0")
        return Broken((RouteDel(node.ns, peer.pod_cidr, peer.ip, "eth0"),), (route,), node.ns,
                      peer.pod_cidr, f"ip -n {node.ns} route get {_first_ip(lab, peer)}",
                      route.ip())

    def breaks(self, lab: Lab, target: str, check) -> bool:
        node = lab.node(target)
        return _sends_into(check, node.ns, _peer(lab, node).pod_cidr)


def _first_ip(lab: Lab, node: Node) -> str:
    pods = _pods(lab, node.name)
    return pods[0].ip if pods else node.gateway


class IpForwardOff(NodeFault):
    name = "ip-forward-off"
    summary = "a node stops forwarding (net.ipv4.ip_forward=0): it is no router for its pods"
    lesson = "pods and veth"

    def make(self, lab: Lab, target: str) -> Broken:
        node = lab.node(target)
        return Broken((Sysctl(node.ns, "net.ipv4.ip_forward", "0"),),
                      (Sysctl(node.ns, "net.ipv4.ip_forward", "1"),), node.ns,
                      "net.ipv4.ip_forward", f"ip netns exec {node.ns} sysctl net.ipv4.ip_forward",
                      f"ip netns exec {node.ns} sysctl -w net.ipv4.ip_forward=1")

    def breaks(self, lab: Lab, target: str, check) -> bool:
        return _transits(lab, check, lab.node(target), bridged=False)


class ForwardDrop(NodeFault):
    name = "forward-drop"
    summary = "a firewall in a node: nft filter forward chain with policy drop"
    lesson = "pods and veth"
    TABLE = "filter"

    def make(self, lab: Lab, target: str) -> Broken:
        node = lab.node(target)
        rules = (f"table inet {self.TABLE} {{\n\tchain forward {{\n\t\ttype filter hook forward "
                 f"priority filter; policy drop;\n\t}}\n}}\n")
        return Broken((NftApply(node.ns, rules),), (_drop_table(node.ns, "inet", self.TABLE),),
                      node.ns, "forward", f"ip netns exec {node.ns} nft list ruleset",
                      f"ip netns exec {node.ns} nft 'chain inet filter forward {{ policy accept; }}'")

    def breaks(self, lab: Lab, target: str, check) -> bool:
        return _transits(lab, check, lab.node(target), bridged=bridge_netfilter())


def _drop_table(ns: str, family: str, table: str) -> NftApply:
    # Declaring the table first makes the delete succeed whether or not it is still there.
    return NftApply(ns, f"table {family} {table} {{}}\ndelete table {family} {table}\n")


class Masquerade(NodeFault):
    name = "masquerade"
    summary = "ipMasq mistake: a node masquerades its pods' traffic to other pods and nodes"
    lesson = "host-gw"
    TABLE = "flannel-ipmasq"

    def make(self, lab: Lab, target: str) -> Broken:
        node = lab.node(target)
        cidr = node.pod_cidr
        rules = (f"table ip {self.TABLE} {{\n\tchain postrouting {{\n\t\ttype nat hook postrouting "
                 f"priority srcnat; policy accept;\n\t\tip saddr {cidr} ip daddr != {cidr} "
                 f"masquerade\n\t}}\n}}\n")
        return Broken((NftApply(node.ns, rules),), (_drop_table(node.ns, "ip", self.TABLE),),
                      node.ns, self.TABLE, f"ip netns exec {node.ns} nft list ruleset",
                      f"ip netns exec {node.ns} nft delete table ip {self.TABLE}")

    def breaks(self, lab: Lab, target: str, check) -> bool:
        node = lab.node(target)
        return (check.method == "http" and check.nat is False
                and _own_pod_on(lab, check.src, node.name)
                and _node_of(lab, check.dst) not in ("", node.name))


class PodFault(Fault):
    on = "pod"

    def targets(self, lab: Lab) -> list[str]:
        return [p.name for p in _pods(lab)]


class PodRouteWrong(PodFault):
    name = "pod-route-wrong"
    summary = "a pod's default route points at an address nobody has, not cni0"
    lesson = "pods and veth"

    def make(self, lab: Lab, target: str) -> Broken:
        pod = lab.pod(target)
        node = lab.node(pod.node)
        wrong = _wrong_gateway(lab, node)
        right = RouteAdd(pod.ns, "default", node.gateway, "eth0")
        return Broken((RouteDel(pod.ns, "default", node.gateway, "eth0"),
                       RouteAdd(pod.ns, "default", wrong, "eth0")),
                      (RouteDel(pod.ns, "default", wrong, "eth0"), right), pod.ns, "default",
                      f"ip -n {pod.ns} route", f"ip -n {pod.ns} route replace default via "
                                               f"{node.gateway} dev eth0")

    def breaks(self, lab: Lab, target: str, check) -> bool:
        pod = lab.pod(target)
        cidr = lab.node(pod.node).pod_cidr
        return check.method in PROBED and any(
            h[0] == pod.ns and not _in(h[1], cidr) and h[1] not in ("localhost", "127.0.0.1")
            for h in check.hops)


def _wrong_gateway(lab: Lab, node: Node) -> str:
    """The last host of the node's pod subnet that no pod has (a typo'd gateway)."""
    taken = {p.ip for p in lab.pods} | {node.gateway}
    hosts = list(ipaddress.IPv4Network(node.pod_cidr).hosts())
    return str(next(h for h in reversed(hosts) if str(h) not in taken))


class VethDown(PodFault):
    name = "veth-down"
    summary = "the node's end of a pod's veth is down: the pod is cut off"
    lesson = "pods and veth"

    def make(self, lab: Lab, target: str) -> Broken:
        pod = lab.pod(target)
        node = lab.node(pod.node)
        return Broken((LinkDown(node.ns, pod.host_veth),),
                      (LinkUp(node.ns, pod.host_veth, master="cni0"),), node.ns, pod.host_veth,
                      f"ip -n {node.ns} link show master cni0",
                      f"ip -n {node.ns} link set {pod.host_veth} up")

    def breaks(self, lab: Lab, target: str, check) -> bool:
        return (check.method in PROBED and target in (check.src, check.dst)
                and check.target not in ("localhost", "127.0.0.1"))


class Cni0NoAddress(NodeFault):
    name = "cni0-no-address"
    summary = "cni0 without its address: the pods' gateway is gone, and the node's route to them"
    lesson = "pods and veth"

    def make(self, lab: Lab, target: str) -> Broken:
        node = lab.node(target)
        plen = int(node.pod_cidr.split("/")[1])
        add = AddrAdd(node.ns, "cni0", node.gateway, plen)
        return Broken((AddrDel(node.ns, "cni0", node.gateway, plen),), (add,), node.ns, "cni0",
                      f"ip -n {node.ns} addr show cni0", add.ip())

    def breaks(self, lab: Lab, target: str, check) -> bool:
        if check.method not in PROBED or check.target in ("localhost", "127.0.0.1"):
            return False
        ends = [_own_pod_on(lab, name, target) for name in (check.src, check.dst)]
        return ends[0] != ends[1]


class MtuLeft(PodFault):
    name = "mtu-1500"
    summary = "vxlan: one pod's veth left at MTU 1500, above the overlay's 1450"
    lesson = "host-gw and VXLAN"

    def targets(self, lab: Lab) -> list[str]:
        if lab.backend != "vxlan":
            return []
        first: dict[str, str] = {}
        for p in _pods(lab):
            first.setdefault(p.node, p.name)     # the pods the mtu rule sends from
        return list(first.values()) if len(first) > 1 else []

    def make(self, lab: Lab, target: str) -> Broken:
        pod = lab.pod(target)
        node = lab.node(pod.node)
        return Broken((LinkMtu(pod.ns, "eth0", 1500), LinkMtu(node.ns, pod.host_veth, 1500)),
                      (LinkMtu(pod.ns, "eth0", pod.mtu), LinkMtu(node.ns, pod.host_veth, pod.mtu)),
                      pod.ns, "eth0", f"ip -n {pod.ns} link show eth0",
                      f"ip -n {pod.ns} link set eth0 mtu {pod.mtu}; "
                      f"ip -n {node.ns} link set {pod.host_veth} mtu {pod.mtu}")

    def breaks(self, lab: Lab, target: str, check) -> bool:
        return check.method == "mtu" and check.src == target


class _OverlayFault(NodeFault):
    lesson = "host-gw and VXLAN"

    def targets(self, lab: Lab) -> list[str]:
        return super().targets(lab) if lab.backend == "vxlan" and len(lab.nodes) > 1 else []

    def breaks(self, lab: Lab, target: str, check) -> bool:
        node = lab.node(target)
        return _sends_into(check, node.ns, _peer(lab, node).pod_cidr)


class NeighMissing(_OverlayFault):
    name = "neigh-missing"
    summary = "vxlan: a node's flannel.1 lost the neighbour entry of the next node's VTEP"

    def make(self, lab: Lab, target: str) -> Broken:
        node = lab.node(target)
        peer = _peer(lab, node)
        back = NeighReplace(node.ns, VXLAN_DEV, peer.vtep, peer.vtep_mac)
        return Broken((NeighDel(node.ns, VXLAN_DEV, peer.vtep),), (back,), node.ns, peer.vtep,
                      f"ip -n {node.ns} neigh show dev {VXLAN_DEV}", back.ip())


class FdbMissing(_OverlayFault):
    name = "fdb-missing"
    summary = "vxlan: a node's flannel.1 lost the fdb entry that sends to the next node"

    def make(self, lab: Lab, target: str) -> Broken:
        node = lab.node(target)
        peer = _peer(lab, node)
        back = FdbAppend(node.ns, VXLAN_DEV, peer.vtep_mac, peer.ip)
        return Broken((FdbDel(node.ns, VXLAN_DEV, peer.vtep_mac, peer.ip),), (back,), node.ns,
                      peer.vtep_mac, f"bridge -n {node.ns} fdb show dev {VXLAN_DEV}", back.ip())


class DnatMissing(Fault):
    name = "dnat-missing"
    summary = "Docker: a bridge container's published port without its DNAT rule"
    on = "container"
    lesson = "Docker modes"

    def targets(self, lab: Lab) -> list[str]:
        return [c.name for c in getattr(lab, "containers", ()) if c.published]

    def make(self, lab: Lab, target: str) -> Broken:
        c = next(x for x in lab.containers if x.name == target)
        node = lab.node(c.node)
        others = containers_on(lab, node.name)
        without = tuple(replace(x, ports=()) if x is c else x for x in others)
        table = f"table ip {DOCKER_TABLE} {{}}\ndelete table ip {DOCKER_TABLE}\n"
        # One nft transaction each way: the whole table again, with or without its DNAT rules.
        return Broken((NftApply(node.ns, table + docker_ruleset(node, without)),),
                      (NftApply(node.ns, table + docker_ruleset(node, others)),), node.ns,
                      f"dport {c.published[0].host_port}",
                      f"ip netns exec {node.ns} nft list table ip {DOCKER_TABLE}",
                      f"ip netns exec {node.ns} nft add rule ip {DOCKER_TABLE} docker "
                      f"{c.published[0].proto} dport {c.published[0].host_port} dnat to "
                      f"{c.ip}:{c.published[0].container_port}")

    def breaks(self, lab: Lab, target: str, check) -> bool:
        c = next(x for x in lab.containers if x.name == target)
        node = lab.node(c.node)
        return (check.label == "bridge-published-port" and check.target == node.ip
                and check.port in {p.host_port for p in c.published})


BASE_FAULTS = [RouteDeleted(), IpForwardOff(), PodRouteWrong(), VethDown(), Cni0NoAddress(),
               MtuLeft(), NeighMissing(), FdbMissing(), Masquerade(), ForwardDrop(), DnatMissing()]

"""The plan: from a Lab to the ordered operations that build it. Pure: no kernel, no files.

Each operation is a small frozen dataclass that knows its iproute2 equivalent (`ip()`), so the
whole plan renders as a shell script that builds the same lab (`netlab plan`). The kernel module
applies the same operations through netlink; `Spawn` operations start the lab's workloads.
"""

from __future__ import annotations

import shlex
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Union

from .model import (NETEXEC, NODE_PORT, UNDERLAY_MTU, VXLAN_DEV, VXLAN_PORT, VXLAN_VNI,
                    Container, DockerContainer, Lab, Node, bridge_name, netexec_argv)

MARK = "netlab:"  # the alias put on `lo` of every namespace netlab creates: "netlab:<lab>"


def _q(*words: str) -> str:
    return " ".join(shlex.quote(w) for w in words)


HERE = ""  # an op's ns: the namespace netlab runs in (a real host, `up --node`), not a named one


def _n(ns: str) -> str:
    return f"-n {_q(ns)} " if ns != HERE else ""


def _x(ns: str) -> str:
    return f"ip netns exec {_q(ns)} " if ns != HERE else ""


@dataclass(frozen=True)
class NetnsAdd:
    """Create a named network namespace, bring its `lo` up and mark it as the lab's."""
    ns: str
    lab: str

    def ip(self) -> str:
        return (f"ip netns add {_q(self.ns)}\n"
                f"ip {_n(self.ns)}link set lo up alias {_q(MARK + self.lab)}")


@dataclass(frozen=True)
class BridgeAdd:
    ns: str
    ifname: str

    def ip(self) -> str:
        return f"ip {_n(self.ns)}link add {_q(self.ifname)} type bridge"


@dataclass(frozen=True)
class VethAdd:
    """A veth pair made in `ns` whose peer is created straight inside `peer_ns`."""
    ns: str
    ifname: str
    peer_ns: str
    peer: str

    def ip(self) -> str:
        return (f"ip {_n(self.ns)}link add {_q(self.ifname)} type veth "
                f"peer name {_q(self.peer)} netns {_q(self.peer_ns)}")


@dataclass(frozen=True)
class LinkUp:
    ns: str
    ifname: str
    master: Optional[str] = None

    def ip(self) -> str:
        master = f" master {_q(self.master)}" if self.master else ""
        return f"ip {_n(self.ns)}link set {_q(self.ifname)}{master} up"


@dataclass(frozen=True)
class AddrAdd:
    ns: str
    ifname: str
    address: str
    prefixlen: int

    def ip(self) -> str:
        return f"ip {_n(self.ns)}addr add {self.address}/{self.prefixlen} dev {_q(self.ifname)}"


@dataclass(frozen=True)
class RouteAdd:
    ns: str
    dst: str          # "default" or a CIDR
    via: str
    dev: str

    def ip(self) -> str:
        return f"ip {_n(self.ns)}route add {self.dst} via {self.via} dev {_q(self.dev)}"


@dataclass(frozen=True)
class Sysctl:
    """A sysctl under /proc/sys/net, set inside a namespace (never the root one)."""
    ns: str
    key: str          # dotted, e.g. net.ipv4.ip_forward
    value: str

    def ip(self) -> str:
        return f"{_x(self.ns)}sysctl -qw {self.key}={self.value}"


@dataclass(frozen=True)
class Spawn:
    """Start a workload process inside a namespace, detached, its output to a log."""
    ns: str
    owner: str        # pod (or node) name
    name: str         # container name
    argv: tuple[str, ...]

    def ip(self) -> str:
        return f"{_x(self.ns)}setsid -f {_q(*self.argv)} </dev/null >/dev/null 2>&1"


@dataclass(frozen=True)
class NftApply:
    """Load an nftables ruleset inside a namespace with `nft -f -` (never in the root one)."""
    ns: str
    ruleset: str

    def ip(self) -> str:
        return f"{_x(self.ns)}nft -f - <<'EOF'\n{self.ruleset.rstrip()}\nEOF"




@dataclass(frozen=True)
class LinkMtu:
    ns: str
    ifname: str
    mtu: int

    def ip(self) -> str:
        return f"ip {_n(self.ns)}link set dev {_q(self.ifname)} mtu {self.mtu}"


@dataclass(frozen=True)
class VxlanAdd:
    """A VXLAN device (flannel.1): unicast to the peers in its fdb, learning off, no multicast."""
    ns: str
    ifname: str
    vni: int
    local: str        # this node's underlay IP, the outer source address
    dev: str          # the underlay link the outer packets leave by
    port: int         # UDP destination port
    mac: str
    mtu: int

    def ip(self) -> str:
        return (f"ip {_n(self.ns)}link add {_q(self.ifname)} address {self.mac} mtu {self.mtu} "
                f"type vxlan id {self.vni} local {self.local} dev {_q(self.dev)} "
                f"dstport {self.port} nolearning")


@dataclass(frozen=True)
class NeighAdd:
    """A permanent neighbour entry: the peer VTEP's address -> its MAC (no ARP over the overlay)."""
    ns: str
    dev: str
    address: str
    mac: str

    def ip(self) -> str:
        return (f"ip {_n(self.ns)}neigh add {self.address} lladdr {self.mac} "
                f"dev {_q(self.dev)} nud permanent")


@dataclass(frozen=True)
class FdbAppend:
    """A VXLAN forwarding entry: frames to `mac` go in UDP to the node at `dst`."""
    ns: str
    dev: str
    mac: str
    dst: str

    def ip(self) -> str:
        return (f"bridge {_n(self.ns)}fdb append {self.mac} dev {_q(self.dev)} dst {self.dst} "
                f"self permanent")


@dataclass(frozen=True)
class OnlinkRouteAdd:
    """A route whose gateway is on no subnet of the device (flannel's `via 10.244.2.0 onlink`)."""
    ns: str
    dst: str
    via: str
    dev: str

    def ip(self) -> str:
        return f"ip {_n(self.ns)}route add {self.dst} via {self.via} dev {_q(self.dev)} onlink"


Op = Union[NetnsAdd, BridgeAdd, VethAdd, LinkUp, AddrAdd, RouteAdd, Sysctl, Spawn, NftApply,
           LinkMtu, VxlanAdd, NeighAdd, FdbAppend, OnlinkRouteAdd]


NETEXEC_PY = str(Path(__file__).with_name("netexec.py"))


def argv_of(container: Container) -> tuple[str, ...]:
    """The command line that runs a container; the built-in server is a standalone script that
    runs under this Python without site-packages (-I -S: fast to start, small in memory)."""
    if container.image == NETEXEC:
        return (sys.executable, "-I", "-S", NETEXEC_PY) + container.argv[1:]
    return container.argv


def build(lab: Lab) -> list[Op]:
    """Every operation that brings `lab` up, in an order the kernel accepts."""
    ops: list[Op] = [NetnsAdd(ns, lab.name) for ns in lab.namespaces]
    under = lab.underlay_ns
    for k in range(max(len(lab.segments), 1)):
        ops += [BridgeAdd(under, bridge_name(k)), LinkUp(under, bridge_name(k))]
    for node in lab.nodes:
        ops += [
            VethAdd(under, node.uplink, node.ns, "eth0"),
            LinkUp(under, node.uplink, master=bridge_name(node.segment)),
            AddrAdd(node.ns, "eth0", node.ip, node.prefixlen),
            LinkUp(node.ns, "eth0"),
            Sysctl(node.ns, "net.ipv4.ip_forward", "1"),
            BridgeAdd(node.ns, "cni0"),
            AddrAdd(node.ns, "cni0", node.gateway, int(node.pod_cidr.split("/")[1])),
            LinkUp(node.ns, "cni0"),
        ]
    for pod in lab.pods:
        if not pod.host_network:  # hostNetwork: the pod's processes run in the node's namespace
            ops += _pod_link(pod, lab.node(pod.node), lab.node(pod.node).ns)
    ops += docker_ops(lab)
    ops += _router(lab) + _pod_mtu(lab)
    ops += _routes(lab) if lab.backend == "host-gw" else _vxlan(lab)
    ops += outside_ops(lab)
    for pod in lab.pods:
        ops += _pod_spawns(pod, pod.ns)
    ops += spawn_ops(lab)
    ops += node_servers(lab)
    return ops


def node_servers(lab: Lab) -> list[Op]:
    """netlab's server on every node, port 8000 (the classic `nc -l 8000` on the host), so that
    verify proves a pod reaches each node directly and sees who connected."""
    return [_netexec(node.ns, node.name, NETEXEC, NODE_PORT) for node in lab.nodes]


def _netexec(ns: str, owner: str, name: str, port: int) -> Spawn:
    """netlab's own server, answering as `owner`, started in `ns`."""
    return Spawn(ns, owner, name, argv_of(Container(name=name, argv=netexec_argv(owner, port),
                                                    port=port, image=NETEXEC)))


def _pod_link(pod, node: Node, node_ns: str) -> list[Op]:
    """A pod's veth: eth0 in the pod, its peer on the node's cni0, address and default route."""
    return [
        VethAdd(node_ns, pod.host_veth, pod.ns, "eth0"),
        LinkUp(node_ns, pod.host_veth, master="cni0"),
        AddrAdd(pod.ns, "eth0", pod.ip, int(node.pod_cidr.split("/")[1])),
        LinkUp(pod.ns, "eth0"),
        RouteAdd(pod.ns, "default", node.gateway, "eth0"),
    ]


def _pod_veth_mtu(pod, node_ns: str) -> list[Op]:
    """Both ends of a pod's veth at the pod's MTU, when it is below the underlay's (vxlan)."""
    if pod.mtu >= UNDERLAY_MTU:
        return []
    return [LinkMtu(node_ns, pod.host_veth, pod.mtu), LinkMtu(pod.ns, "eth0", pod.mtu)]


def _pod_spawns(pod, ns: str) -> list[Op]:
    return [Spawn(ns, pod.name, c.name, argv_of(c)) for c in pod.containers]


def _routes(lab: Lab) -> list[Op]:
    """host-gw: every node routes every other node's pod subnet via that node's IP."""
    return [RouteAdd(node.ns, other.pod_cidr, other.ip, "eth0")
            for node in lab.nodes for other in lab.nodes if other is not node]


def _router(lab: Lab) -> list[Op]:
    """A routed underlay: `<lab>-router` has a port on each segment's bridge and forwards between
    them; every node routes the other segments via the router's address on its own segment."""
    if not lab.router_ns:
        return []
    ops: list[Op] = [Sysctl(lab.router_ns, "net.ipv4.ip_forward", "1")]
    for k, (segment, address) in enumerate(zip(lab.segments, lab.router_ips)):
        port = f"router_{k}"   # '_' is in no node name, so no clash with a node's uplink
        ops += [
            VethAdd(lab.underlay_ns, port, lab.router_ns, f"eth{k}"),
            LinkUp(lab.underlay_ns, port, master=bridge_name(k)),
            AddrAdd(lab.router_ns, f"eth{k}", address, int(segment.split("/")[1])),
            LinkUp(lab.router_ns, f"eth{k}"),
        ]
    for node in lab.nodes:
        ops += [RouteAdd(node.ns, segment, lab.router_ips[node.segment], "eth0")
                for k, segment in enumerate(lab.segments) if k != node.segment]
    return ops


def _pod_mtu(lab: Lab) -> list[Op]:
    """Below the underlay's MTU (vxlan), cni0 and both ends of every pod's veth get the pods' MTU,
    as flannel's CNI plugin does; at the underlay's MTU nothing needs setting."""
    ops: list[Op] = []
    for node in lab.nodes:
        if lab.mtu < UNDERLAY_MTU:
            ops.append(LinkMtu(node.ns, "cni0", lab.mtu))
    for pod in lab.pods:
        if not pod.host_network:
            ops += _pod_veth_mtu(pod, lab.node(pod.node).ns)
    return ops


def _vxlan(lab: Lab) -> list[Op]:
    """flannel's vxlan backend, statically: on each node a flannel.1 with address <podCIDR>.0/32,
    and for every other node a route via its VTEP address `onlink`, a permanent neighbour entry
    for that address (its VTEP MAC), and an fdb entry sending that MAC to the node's IP."""
    return [op for node in lab.nodes for op in _vxlan_node(lab, node, node.ns, "eth0")]


def _vxlan_node(lab: Lab, node: Node, ns: str, dev: str) -> list[Op]:
    """One node's flannel.1 on its underlay device `dev`, and its entries for every other node."""
    ops: list[Op] = [
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


def script(lab: Lab, ops: list[Op], node: Optional[str] = None) -> str:
    """The plan as a shell script that builds the same lab (or, with `node`, that node's part on
    this host) with iproute2."""
    if node is None:
        undo = (f"# Run as root. Its namespaces carry netlab's mark, so `netlab down {lab.name}` "
                f"removes this lab too.")
    else:
        undo = ("# Run as root on the node's host. It changes this host's own network stack, "
                "and netlab keeps no record of it: undo it by hand.")
    head = ["#!/bin/sh",
            f"# netlab plan for lab '{lab.name}'{f' (node {node})' if node else ''} from "
            f"{lab.source}: {len(ops)} operations.", undo, "set -e"]
    return "\n".join(head + [op.ip() for op in ops]) + "\n"


# ---------------------------------------------------------------- Docker modes and the outside world

DOCKER_TABLE = "docker-nat"


def docker_ops(lab: Lab) -> list[Op]:
    """docker0 on every node that runs docker containers, a veth per bridge-mode container, and
    the node's NAT rules; none-mode containers get only their namespace, host-mode ones nothing."""
    ops: list[Op] = []
    for node in lab.nodes:
        containers = lab.containers_on(node.name)
        if not containers:
            continue
        plen = int(node.docker_cidr.split("/")[1])
        ops += [BridgeAdd(node.ns, "docker0"), AddrAdd(node.ns, "docker0", node.docker_gw, plen),
                LinkUp(node.ns, "docker0")]
        for c in containers:
            if c.mode != "bridge":
                continue
            ops += [
                VethAdd(node.ns, c.host_veth, c.ns, "eth0"),
                LinkUp(node.ns, c.host_veth, master="docker0"),
                AddrAdd(c.ns, "eth0", c.ip, plen),
                LinkUp(c.ns, "eth0"),
                RouteAdd(c.ns, "default", node.docker_gw, "eth0"),
            ]
        ops.append(NftApply(node.ns, docker_ruleset(node, containers)))
    return ops


def docker_ruleset(node: Node, containers: tuple[DockerContainer, ...]) -> str:
    """The node's Docker NAT rules, as nft text: what Docker's iptables rules do, in one table.

    Traffic to the node's address enters the `docker` chain from prerouting (other nodes, pods)
    and from output (the node itself); there each published port is DNAT'd to its container.
    Traffic from the docker subnet that leaves the node (not back into docker0) is masqueraded
    to the address of the interface it leaves by.
    """
    dnat = [f"\t\t{p.proto} dport {p.host_port} dnat to {c.ip}:{p.container_port} "
            f"comment \"{c.name} {p}\""
            for c in containers for p in c.published]
    lines = [
        f"table ip {DOCKER_TABLE} {{",
        "\tchain prerouting {",
        "\t\ttype nat hook prerouting priority dstnat; policy accept;",
        f"\t\tip daddr {node.ip} jump docker",
        "\t}",
        "\tchain output {",
        "\t\ttype nat hook output priority -100; policy accept;",
        f"\t\tip daddr {node.ip} jump docker",
        "\t}",
        "\tchain postrouting {",
        "\t\ttype nat hook postrouting priority srcnat; policy accept;",
        f"\t\tip saddr {node.docker_cidr} oifname != \"docker0\" masquerade",
        "\t}",
        "\tchain docker {",
        *dnat,
        "\t}",
        "}",
    ]
    return "\n".join(lines) + "\n"


def outside_ops(lab: Lab) -> list[Op]:
    """The outside world: a namespace on the underlay (the router) with the web server's address
    on its lo; every node's default route points at it, so nothing a lab sends leaves the lab."""
    out = lab.outside
    if out is None:
        return []
    ops: list[Op] = [
        VethAdd(lab.underlay_ns, out.uplink, out.ns, "eth0"),
        LinkUp(lab.underlay_ns, out.uplink, master="br0"),
        AddrAdd(out.ns, "eth0", out.router, out.prefixlen),
        LinkUp(out.ns, "eth0"),
        AddrAdd(out.ns, "lo", out.ip, 32),
    ]
    ops += [RouteAdd(node.ns, "default", out.router, "eth0") for node in lab.nodes]
    return ops


def spawn_ops(lab: Lab) -> list[Op]:
    """Start the docker containers' processes (host mode: in the node's namespace) and the
    outside world's web server."""
    ops: list[Op] = [Spawn(c.ns, c.name, c.name, argv_of(c.process)) for c in lab.containers]
    if lab.outside is not None:
        ops.append(_netexec(lab.outside.ns, "outside", "server", lab.outside.port))
    return ops


# ---------------------------------------------------------------- one node on a real host

def node_key(lab: str, node: str) -> str:
    """The name of one node of a lab on a host: its state directory and its namespaces' mark."""
    return f"{lab}@{node}"


def build_node(lab: Lab, name: str, underlay: str) -> list[Op]:
    """The part of `lab` that node `name` holds, built on this host (`netlab up --node`): cni0,
    forwarding, the routes or the overlay to the other nodes live in the host's own namespace
    (HERE), reached over its `underlay` device; the node's pods get their own namespaces as usual.
    Between underlay segments the real network routes (no router namespace here)."""
    node = lab.node(name)
    pods = [p for p in lab.pods_on(name) if not p.host_network]
    plen = int(node.pod_cidr.split("/")[1])
    # Marked "<lab>@<node>", not "<lab>": a whole-lab `down`/clean of <lab> never takes them.
    ops: list[Op] = [NetnsAdd(p.ns, node_key(lab.name, name)) for p in pods]
    ops += [Sysctl(HERE, "net.ipv4.ip_forward", "1"), BridgeAdd(HERE, "cni0"),
            AddrAdd(HERE, "cni0", node.gateway, plen), LinkUp(HERE, "cni0")]
    for pod in pods:
        ops += _pod_link(pod, node, HERE) + _pod_veth_mtu(pod, HERE)
    if lab.mtu < UNDERLAY_MTU:
        ops.append(LinkMtu(HERE, "cni0", lab.mtu))
    others = [o for o in lab.nodes if o is not node]
    if lab.backend == "host-gw":
        ops += [RouteAdd(HERE, o.pod_cidr, o.ip, underlay) for o in others]
    else:
        ops += _vxlan_node(lab, node, HERE, underlay)
    for pod in lab.pods_on(name):
        ops += _pod_spawns(pod, HERE if pod.host_network else pod.ns)
    ops += [Spawn(HERE, op.owner, op.name, op.argv) for op in node_servers(lab)
            if op.owner == name]
    return ops

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

from .model import NETEXEC, NODE_PORT, Container, Lab, netexec_argv

MARK = "netlab:"  # the alias put on `lo` of every namespace netlab creates: "netlab:<lab>"


def _q(*words: str) -> str:
    return " ".join(shlex.quote(w) for w in words)


@dataclass(frozen=True)
class NetnsAdd:
    """Create a named network namespace, bring its `lo` up and mark it as the lab's."""
    ns: str
    lab: str

    def ip(self) -> str:
        return (f"ip netns add {_q(self.ns)}\n"
                f"ip -n {_q(self.ns)} link set lo up alias {_q(MARK + self.lab)}")


@dataclass(frozen=True)
class BridgeAdd:
    ns: str
    ifname: str

    def ip(self) -> str:
        return f"ip -n {_q(self.ns)} link add {_q(self.ifname)} type bridge"


@dataclass(frozen=True)
class VethAdd:
    """A veth pair made in `ns` whose peer is created straight inside `peer_ns`."""
    ns: str
    ifname: str
    peer_ns: str
    peer: str

    def ip(self) -> str:
        return (f"ip -n {_q(self.ns)} link add {_q(self.ifname)} type veth "
                f"peer name {_q(self.peer)} netns {_q(self.peer_ns)}")


@dataclass(frozen=True)
class LinkUp:
    ns: str
    ifname: str
    master: Optional[str] = None

    def ip(self) -> str:
        master = f" master {_q(self.master)}" if self.master else ""
        return f"ip -n {_q(self.ns)} link set {_q(self.ifname)}{master} up"


@dataclass(frozen=True)
class AddrAdd:
    ns: str
    ifname: str
    address: str
    prefixlen: int

    def ip(self) -> str:
        return f"ip -n {_q(self.ns)} addr add {self.address}/{self.prefixlen} dev {_q(self.ifname)}"


@dataclass(frozen=True)
class RouteAdd:
    ns: str
    dst: str          # "default" or a CIDR
    via: str
    dev: str

    def ip(self) -> str:
        return f"ip -n {_q(self.ns)} route add {self.dst} via {self.via} dev {_q(self.dev)}"


@dataclass(frozen=True)
class Sysctl:
    """A sysctl under /proc/sys/net, set inside a namespace (never the root one)."""
    ns: str
    key: str          # dotted, e.g. net.ipv4.ip_forward
    value: str

    def ip(self) -> str:
        return f"ip netns exec {_q(self.ns)} sysctl -qw {self.key}={self.value}"


@dataclass(frozen=True)
class Spawn:
    """Start a workload process inside a namespace, detached, its output to a log."""
    ns: str
    owner: str        # pod (or node) name
    name: str         # container name
    argv: tuple[str, ...]

    def ip(self) -> str:
        return f"ip netns exec {_q(self.ns)} setsid -f {_q(*self.argv)} </dev/null >/dev/null 2>&1"


Op = Union[NetnsAdd, BridgeAdd, VethAdd, LinkUp, AddrAdd, RouteAdd, Sysctl, Spawn]


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
    ops += [BridgeAdd(under, "br0"), LinkUp(under, "br0")]
    for node in lab.nodes:
        ops += [
            VethAdd(under, node.uplink, node.ns, "eth0"),
            LinkUp(under, node.uplink, master="br0"),
            AddrAdd(node.ns, "eth0", node.ip, node.prefixlen),
            LinkUp(node.ns, "eth0"),
            Sysctl(node.ns, "net.ipv4.ip_forward", "1"),
            BridgeAdd(node.ns, "cni0"),
            AddrAdd(node.ns, "cni0", node.gateway, int(node.pod_cidr.split("/")[1])),
            LinkUp(node.ns, "cni0"),
        ]
    for pod in lab.pods:
        node = lab.node(pod.node)
        ops += [
            VethAdd(node.ns, pod.host_veth, pod.ns, "eth0"),
            LinkUp(node.ns, pod.host_veth, master="cni0"),
            AddrAdd(pod.ns, "eth0", pod.ip, int(node.pod_cidr.split("/")[1])),
            LinkUp(pod.ns, "eth0"),
            RouteAdd(pod.ns, "default", node.gateway, "eth0"),
        ]
    ops += _routes(lab)
    for pod in lab.pods:
        ops += [Spawn(pod.ns, pod.name, c.name, argv_of(c)) for c in pod.containers]
    ops += node_servers(lab)
    return ops


def node_servers(lab: Lab) -> list[Op]:
    """netlab's server on every node, port 8000 (the classic `nc -l 8000` on the host), so that
    verify proves a pod reaches each node directly and sees who connected."""
    return [Spawn(node.ns, node.name, NETEXEC, argv_of(Container(
        name=NETEXEC, argv=netexec_argv(node.name, NODE_PORT), port=NODE_PORT, image=NETEXEC)))
        for node in lab.nodes]


def _routes(lab: Lab) -> list[Op]:
    """host-gw: every node routes every other node's pod subnet via that node's IP."""
    return [RouteAdd(node.ns, other.pod_cidr, other.ip, "eth0")
            for node in lab.nodes for other in lab.nodes if other is not node]


def script(lab: Lab, ops: list[Op]) -> str:
    """The plan as a shell script that builds the same lab with iproute2."""
    head = [
        "#!/bin/sh",
        f"# netlab plan for lab '{lab.name}' from {lab.source}: {len(ops)} operations.",
        "# Run as root; `netlab down` does not know a lab made this way: remove it with",
        f"#   for ns in {' '.join(lab.namespaces)}; do",
        "#     ip netns pids $ns | xargs -r kill; ip netns del $ns; done",
        "set -e",
    ]
    return "\n".join(head + [op.ip() for op in ops]) + "\n"

"""A snapshot of a lab's network state: per namespace its links, addresses, routes, nft rules.

One structure for two sources, so the picture and the trace never depend on where it came from:
`from_plan` simulates the plan's operations (pure: what `up` will build), and kernel.observe reads
the same fields from the live namespaces (what the kernel really holds). Route lookup here is the
kernel's rule (longest prefix wins) over a snapshot's routes, for pure tests and for pictures.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field, replace
from typing import Iterable, Optional

from ..core import ops as P
from ..core.lab import Lab
from .nft import Ruleset

NAT_WORDS = re.compile(r"\b(masquerade|snat|dnat|redirect)\b")


@dataclass(frozen=True)
class Iface:
    name: str
    kind: str                          # veth, bridge, vxlan, loopback, or the kernel's kind
    up: bool = True
    master: Optional[str] = None       # the bridge it is enslaved to
    peer: Optional[tuple[str, str]] = None   # a veth's other end: (namespace, ifname)
    addrs: tuple[str, ...] = ()        # "10.244.1.1/24"
    vni: Optional[int] = None          # a vxlan device's VNI
    # A bridge whose bridged IPv4 frames meet its namespace's nft hooks (bridge netfilter: the
    # namespace's net.bridge.bridge-nf-call-iptables, or the bridge's own nf_call_iptables).
    nf_call: bool = field(default=False, compare=False)

    @property
    def ips(self) -> tuple[str, ...]:
        return tuple(a.split("/")[0] for a in self.addrs)


@dataclass(frozen=True)
class Route:
    dst: str                           # "default" or a CIDR
    via: Optional[str] = None
    dev: Optional[str] = None
    type: str = "unicast"              # unicast, unreachable, blackhole, prohibit
    src: Optional[str] = None

    def network(self) -> ipaddress.IPv4Network:
        return ipaddress.IPv4Network("0.0.0.0/0" if self.dst == "default" else self.dst)

    def text(self) -> str:
        """As `ip route` shows it."""
        head = self.dst if self.type == "unicast" else f"{self.type} {self.dst}"
        via = f" via {self.via}" if self.via else ""
        dev = f" dev {self.dev}" if self.dev else ""
        src = f" src {self.src}" if self.src and not self.via else ""
        return f"{head}{via}{dev}{src}"


@dataclass(frozen=True)
class Namespace:
    name: str
    ifaces: tuple[Iface, ...] = ()
    routes: tuple[Route, ...] = ()
    forwarding: bool = False
    nat: tuple[str, ...] = ()          # nft rules that rewrite addresses, "chain NAME: rule"
    # The namespace's whole ruleset, evaluated by trace (view/nft.py): read from the kernel;
    # None in a plan's snapshot (its rulesets are text, not evaluated) or when nft is missing.
    nft: Optional[Ruleset] = field(default=None, compare=False, repr=False)

    def iface(self, name: Optional[str]) -> Optional[Iface]:
        return next((i for i in self.ifaces if i.name == name), None)

    def owns(self, ip: str) -> Optional[Iface]:
        """The interface holding address `ip` here (lo answers for 127.0.0.0/8)."""
        for i in self.ifaces:
            if ip in i.ips:
                return i
        if ipaddress.IPv4Address(ip).is_loopback:
            return self.iface("lo")
        return None


@dataclass(frozen=True)
class Snapshot:
    namespaces: tuple[Namespace, ...]
    lab: str = ""

    def ns(self, name: str) -> Optional[Namespace]:
        return next((n for n in self.namespaces if n.name == name), None)

    def owner(self, ip: str) -> Optional[tuple[Namespace, Iface]]:
        """The namespace and interface holding address `ip` (not counting loopback)."""
        for n in self.namespaces:
            for i in n.ifaces:
                if ip in i.ips:
                    return n, i
        return None


@dataclass(frozen=True)
class Lookup:
    """The answer of `ip route get`: the matched route, or why there is none."""
    route: Optional[Route]
    dev: Optional[str] = None
    gateway: Optional[str] = None
    src: Optional[str] = None
    error: Optional[str] = None


def lookup(ns: Namespace, dst: str) -> Lookup:
    """Longest-prefix match over a namespace's main table, as the kernel does."""
    addr = ipaddress.IPv4Address(dst)
    best = None
    for r in ns.routes:
        net = r.network()
        if addr in net and (best is None or net.prefixlen > best.network().prefixlen):
            best = r
    if best is None:
        return Lookup(None, error="Network is unreachable")
    if best.type != "unicast":
        return Lookup(best, error={"unreachable": "No route to host", "prohibit": "Permission "
                                   "denied", "blackhole": "Invalid argument"}.get(best.type, best.type))
    iface = ns.iface(best.dev)
    src = best.src or (iface.ips[0] if iface and iface.ips else None)
    return Lookup(best, best.dev, best.via, src)


def nat_lines(ruleset: str) -> tuple[str, ...]:
    """The rules of an `nft list ruleset` text that rewrite addresses, each with its chain."""
    out, chain = [], ""
    for line in ruleset.splitlines():
        words = line.split()
        if words[:1] == ["chain"] and len(words) >= 2:
            chain = words[1]
        elif NAT_WORDS.search(line):
            out.append(f"chain {chain}: {line.strip()}" if chain else line.strip())
    return tuple(out)


# ---------------------------------------------------------------- from the plan (pure)


@dataclass
class _Ns:
    ifaces: dict = field(default_factory=dict)
    routes: list = field(default_factory=list)
    forwarding: bool = False
    nat: tuple = ()


def from_plan(lab: Lab, ops: Iterable[P.Op]) -> Snapshot:
    """What the kernel will hold once `ops` are applied: the plan played on paper.

    Operations added later by other features are read by their fields (an op with `ns`,
    `ifname` and a name ending in Add makes a link; one with `dst`, `via`, `dev` a route; one with
    a `ruleset` nft rules), so new kinds of links show without changing this function.
    """
    spaces: dict[str, _Ns] = {}

    def ns(name: str) -> _Ns:
        return spaces.setdefault(name, _Ns())

    for op in ops:
        if isinstance(op, P.NetnsAdd):
            ns(op.ns).ifaces["lo"] = Iface("lo", "loopback", addrs=("127.0.0.1/8",))
        elif isinstance(op, P.BridgeAdd):
            ns(op.ns).ifaces[op.ifname] = Iface(op.ifname, "bridge", up=False)
        elif isinstance(op, P.VethAdd):
            ns(op.ns).ifaces[op.ifname] = Iface(op.ifname, "veth", up=False,
                                                peer=(op.peer_ns, op.peer))
            ns(op.peer_ns).ifaces[op.peer] = Iface(op.peer, "veth", up=False,
                                                   peer=(op.ns, op.ifname))
        elif isinstance(op, P.LinkUp):
            old = ns(op.ns).ifaces[op.ifname]
            ns(op.ns).ifaces[op.ifname] = replace(old, up=True, master=op.master or old.master)
        elif isinstance(op, P.AddrAdd):
            old = ns(op.ns).ifaces[op.ifname]
            ns(op.ns).ifaces[op.ifname] = replace(
                old, addrs=old.addrs + (f"{op.address}/{op.prefixlen}",))
            # The kernel adds the connected route of an address itself (proto kernel).
            net = ipaddress.IPv4Network(f"{op.address}/{op.prefixlen}", strict=False)
            if op.prefixlen < 32:
                ns(op.ns).routes.append(Route(str(net), None, op.ifname, src=op.address))
        elif isinstance(op, P.Sysctl):
            if op.key == "net.ipv4.ip_forward":
                ns(op.ns).forwarding = op.value == "1"
        elif isinstance(op, P.Spawn):
            pass
        elif isinstance(op, P.CniAdd):
            # What the plugin chain will make: the pod's eth0 with its address and default route,
            # its peer on the node's cni0 (a name the plugin chooses: shown by the pod's).
            peer = f"veth@{op.owner}"
            ns(op.ns).ifaces[op.ifname] = Iface(op.ifname, "veth", up=True, peer=(op.node_ns, peer),
                                                addrs=(op.address,))
            ns(op.node_ns).ifaces[peer] = Iface(peer, "veth", up=True, master="cni0",
                                                peer=(op.ns, op.ifname))
            net = ipaddress.IPv4Network(op.address, strict=False)
            ns(op.ns).routes.append(Route(str(net), None, op.ifname, src=op.address.split("/")[0]))
            ns(op.ns).routes.append(Route("default", op.gateway, op.ifname))
        elif all(hasattr(op, a) for a in ("ns", "dst", "via", "dev")):
            dst = "default" if op.dst in ("default", "0.0.0.0/0") else op.dst
            ns(op.ns).routes.append(Route(dst, op.via, op.dev))
        elif isinstance(getattr(op, "ruleset", None), str) and hasattr(op, "ns"):
            ns(op.ns).nat = ns(op.ns).nat + nat_lines(op.ruleset)
        elif hasattr(op, "ns") and hasattr(op, "ifname") and type(op).__name__.endswith("Add"):
            kind = getattr(op, "kind", None) or type(op).__name__[:-3].lower()
            ns(op.ns).ifaces[op.ifname] = Iface(op.ifname, kind, up=False, vni=getattr(op, "vni", None))
    return Snapshot(tuple(
        Namespace(name, tuple(s.ifaces.values()), tuple(s.routes), s.forwarding, s.nat)
        for name, s in spaces.items()), lab.name)


def of_plan(lab: Lab) -> Snapshot:
    from .. import plan   # the plan of the whole lab: every feature's operations
    return from_plan(lab, plan.build(lab))

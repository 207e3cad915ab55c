"""The path of a packet through a lab, hop by hop, walked over a snapshot of its network state.

Pure: `walk` takes a Snapshot and a route lookup (the kernel's `ip route get` for a live lab, the
snapshot's own longest-prefix match in tests) and follows the packet: in each namespace the route
that matched and the interface it leaves by, then across veth pairs, bridges and VXLAN tunnels to
the namespace that owns the next hop, until the namespace that owns the destination, or to where
it stops and why (no route, nobody owns the next hop, an interface down, forwarding off).
"""

from __future__ import annotations

import ipaddress
import re
from collections import deque
from dataclasses import asdict, dataclass
from typing import Callable, Optional

from .snapshot import Lookup, Namespace, Snapshot, lookup as table_lookup

MAX_HOPS = 32
End = tuple[str, str]   # (namespace, ifname)


@dataclass(frozen=True)
class Hop:
    ns: str
    route: Optional[str] = None        # the matched route as `ip route` shows it
    dev: Optional[str] = None          # the interface the packet leaves by
    nexthop: Optional[str] = None
    crossed: tuple[str, ...] = ()      # "ns:ifname" links on the way to the next namespace
    nat: tuple[str, ...] = ()          # nft rules here that would rewrite the packet
    note: str = ""


@dataclass(frozen=True)
class Trace:
    src: str                           # namespace the packet starts in
    dst: str                           # destination address
    hops: tuple[Hop, ...]
    arrived: bool
    reason: str = ""                   # why it stopped, when it did not arrive

    def to_dict(self) -> dict:
        return asdict(self)


Lookuper = Callable[[Namespace, str], Lookup]


def walk(snap: Snapshot, src_ns: str, dst: str, find: Lookuper = table_lookup,
         expected: Optional[Snapshot] = None) -> Trace:
    """Follow a packet from namespace src_ns to address dst.

    `expected` (the plan's snapshot) explains a missing route: the route the plan has there."""
    hops: list[Hop] = []
    ns_name, src_ip, seen = src_ns, None, set()

    def stop(hop: Hop, reason: str) -> Trace:
        hops.append(hop)
        return Trace(src_ns, dst, tuple(hops), False, reason)

    for _ in range(MAX_HOPS):
        here = snap.ns(ns_name)
        if here is None:
            return stop(Hop(ns_name), f"namespace {ns_name} does not exist")
        owner = here.owns(dst)
        if owner is not None:
            hops.append(Hop(ns_name, nat=_relevant(here.nat, src_ip, dst),
                            note=f"arrived: {dst} is the address of {owner.name} here"))
            return Trace(src_ns, dst, tuple(hops), True)
        if hops and not here.forwarding:
            return stop(Hop(ns_name), f"{ns_name} does not forward packets that are not for it "
                                      f"(net.ipv4.ip_forward=0), and {dst} is not its address")
        if ns_name in seen:
            return stop(Hop(ns_name), f"routing loop: the packet came back to {ns_name}")
        seen.add(ns_name)
        found = find(here, dst)
        nat = _relevant(here.nat, src_ip or found.src, dst)
        if found.error:
            return stop(Hop(ns_name, found.route.text() if found.route else None, nat=nat),
                        _no_route(ns_name, dst, found, expected))
        src_ip = src_ip or found.src
        route = found.route.text() if found.route else f"{dst} dev {found.dev}"
        iface = here.iface(found.dev)
        if iface is None or not iface.up:
            return stop(Hop(ns_name, route, found.dev, nat=nat),
                        f"{ns_name}: interface {found.dev} is down (ip -n {ns_name} link set "
                        f"{found.dev} up)")
        nexthop = found.gateway or dst
        path, dest = _segment(snap, (ns_name, iface.name), nexthop)
        crossed = tuple(_link_text(snap, end) for end in path)
        hop = Hop(ns_name, route, iface.name, nexthop, crossed, nat)
        if dest is None:
            return stop(hop, f"{ns_name}: no namespace behind {iface.name} has the address "
                             f"{nexthop} (the neighbour is unreachable: ARP gets no answer)")
        down = [f"{n}:{i}" for n, i in path if not snap.ns(n).iface(i).up]
        if down:
            return stop(hop, f"interface {down[0].replace(':', ' ')} on the way is down, so "
                             f"{nexthop} is unreachable")
        hops.append(hop)
        ns_name = dest
    return Trace(src_ns, dst, tuple(hops), False, f"more than {MAX_HOPS} hops: a routing loop")


def _link_text(snap: Snapshot, end: End) -> str:
    kind = snap.ns(end[0]).iface(end[1]).kind
    extra = f" ({kind})" if kind in ("bridge", "vxlan") else ""
    return f"{end[0]}:{end[1]}{extra}"


def from_route_get(ns: Namespace, dst: str, got: dict) -> Lookup:
    """A Lookup from the kernel's `ip route get` answer, naming the table entry it used."""
    if got.get("error"):
        return Lookup(table_lookup(ns, dst).route, error=got["error"])
    table = table_lookup(ns, dst)
    route = table.route if table.route and table.route.dev == got.get("dev") else None
    return Lookup(route, got.get("dev"), got.get("gateway"), got.get("src"))


def _no_route(ns: str, dst: str, found: Lookup, expected: Optional[Snapshot]) -> str:
    reason = f"{ns}: no route to {dst} ({found.error})"
    if found.route is not None:
        reason = f"{ns}: route `{found.route.text()}` rejects {dst} ({found.error})"
    plan_ns = expected.ns(ns) if expected else None
    if plan_ns is not None:
        want = table_lookup(plan_ns, dst)
        if want.route is not None and not want.error:
            reason += f"; the plan has `{want.route.text()}` here, missing from the kernel " \
                      f"(ip -n {ns} route add {want.route.text()})"
    return reason


def _neighbours(snap: Snapshot, end: End) -> list[End]:
    """Links one layer-2 step away: a veth's peer, a bridge's ports and a port's bridge,
    and the other ends of a VXLAN tunnel (devices with the same VNI)."""
    ns = snap.ns(end[0])
    iface = ns.iface(end[1]) if ns else None
    if iface is None:
        return []
    out: list[End] = []
    if iface.peer:
        out.append(iface.peer)
    if iface.master:
        out.append((ns.name, iface.master))
    if iface.kind == "bridge":
        out += [(ns.name, i.name) for i in ns.ifaces if i.master == iface.name]
    if iface.kind == "vxlan":
        out += [(n.name, i.name) for n in snap.namespaces if n is not ns
                for i in n.ifaces if i.kind == "vxlan" and i.vni == iface.vni]
    return out


def _segment(snap: Snapshot, start: End, ip: str) -> tuple[list[End], Optional[str]]:
    """Breadth-first over the layer-2 segment of `start` to the link that holds `ip`.

    Returns the links crossed (start first) and the namespace that owns the address."""
    parent: dict[End, Optional[End]] = {start: None}
    queue = deque([start])
    while queue:
        end = queue.popleft()
        iface = snap.ns(end[0]).iface(end[1])
        if end != start and ip in iface.ips:
            path = []
            while end is not None:
                path.append(end)
                end = parent[end]
            return path[::-1], path[0][0]
        for nxt in _neighbours(snap, end):
            if nxt not in parent and snap.ns(nxt[0]) and snap.ns(nxt[0]).iface(nxt[1]):
                parent[nxt] = end
                queue.append(nxt)
    return [start], None


_ADDR = re.compile(r"\bip (saddr|daddr) (!= )?(\d+\.\d+\.\d+\.\d+(?:/\d+)?)")


def _relevant(rules: tuple[str, ...], src: Optional[str], dst: str) -> tuple[str, ...]:
    """The NAT rules whose address matches (ip saddr/daddr) do not exclude this packet."""
    out = []
    for rule in rules:
        ok = True
        for field, negated, net in _ADDR.findall(rule):
            addr = src if field == "saddr" else dst
            if addr is not None and (ipaddress.IPv4Address(addr) in
                                     ipaddress.IPv4Network(net, strict=False)) == bool(negated):
                ok = False
        if ok:
            out.append(rule)
    return tuple(out)


# ---------------------------------------------------------------- rendering


def render(trace: Trace, names: Optional[dict[str, str]] = None) -> str:
    """The trace as text: one numbered block per namespace. `names` labels namespaces."""
    names = names or {}
    lines = []
    for n, hop in enumerate(trace.hops, 1):
        label = f" ({names[hop.ns]})" if hop.ns in names else ""
        lines.append(f"{n}. {hop.ns}{label}")
        if hop.route:
            lines.append(f"   route    {hop.route}    (ip -n {hop.ns} route get {trace.dst})")
        if hop.crossed:
            lines.append(f"   leaves   by {hop.dev} to {hop.nexthop}: {' -> '.join(hop.crossed)}")
        for rule in hop.nat:
            lines.append(f"   nat      {rule}")
        if hop.note:
            lines.append(f"   {hop.note}")
    if trace.arrived:
        lines.append(f"arrived at {trace.dst} in {len(trace.hops)} namespaces")
    else:
        lines.append(f"STOPPED: {trace.reason}")
    return "\n".join(lines)

"""The path of a packet through a lab, hop by hop, walked over a snapshot of its network state.

Pure: `walk` takes a Snapshot and a route lookup (the kernel's `ip route get` for a live lab, the
snapshot's own longest-prefix match in tests) and follows the packet: in each namespace the route
that matched and the interface it leaves by, then across veth pairs, bridges and VXLAN tunnels to
the namespace that owns the next hop, until the namespace that owns the destination, or to where
it stops and why (no route, nobody owns the next hop, an interface down, forwarding off, a rule
that drops it). Where the snapshot holds a namespace's nft ruleset (read from the kernel), the
packet goes through its hooks (view/nft.py): a DNAT changes where it goes and the walk follows,
SNAT and masquerade change its source, a drop or reject stops it naming the rule.
"""

from __future__ import annotations

import ipaddress
import re
from collections import deque
from dataclasses import asdict, dataclass, replace
from typing import Callable, Optional

from . import nft
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
    nat: tuple[str, ...] = ()          # nft rules here that may rewrite it (not evaluated: plan)
    note: str = ""
    dst: str = ""                      # the destination as routed here (after a DNAT here)
    rewrites: tuple[str, ...] = ()     # "dnat A -> B by `rule` (chain, table)", "snat ..."
    candidates: tuple[str, ...] = ()   # a random choice's every destination; the first followed
    unknown: tuple[str, ...] = ()      # nft expressions not evaluated, assumed to match


@dataclass(frozen=True)
class Trace:
    src: str                           # namespace the packet starts in
    dst: str                           # destination address
    hops: tuple[Hop, ...]
    arrived: bool
    reason: str = ""                   # why it stopped, when it did not arrive
    proto: str = "icmp"                # icmp (a ping), tcp or udp
    port: Optional[int] = None         # the destination port sent to
    final: str = ""                    # where it went at last, "addr[:port]" (after DNAT)

    def to_dict(self) -> dict:
        return asdict(self)


Lookuper = Callable[[Namespace, str], Lookup]


class _Here:
    """The nft verdicts of one namespace on the packet, collected for its Hop."""

    def __init__(self, ns: Namespace):
        self.ns = ns
        self.addrs = {i.name: i.ips for i in ns.ifaces}
        self.rewrites: list[str] = []
        self.candidates: tuple[str, ...] = ()
        self.unknown: list[str] = []
        self.dropped: Optional[nft.Outcome] = None

    def hook(self, name: str, pkt: nft.Packet) -> nft.Packet:
        """The packet after hook `name`; self.dropped when a rule drops or rejects it."""
        if self.ns.nft is None or self.dropped is not None:
            return pkt
        try:
            outs = nft.evaluate(self.ns.nft, name, pkt, self.addrs)
        except (KeyError, TypeError, ValueError, AttributeError) as e:
            # a JSON shape the evaluator does not know: say so, never fail the trace for it
            self.unknown.append(f"the {name} hook ({type(e).__name__}: {e})")
            return pkt
        if not outs:
            return pkt
        if len(outs) > 1:
            self.candidates = tuple(_candidate(o, n == 0) for n, o in enumerate(outs))
        out = outs[0]
        self.unknown += [u for u in out.unknown if u not in self.unknown]
        if out.dnat is not None:
            self.rewrites.append(f"dnat {pkt.where()} -> {out.packet.where()} by "
                                 f"`{out.dnat.text}` ({out.dnat.where()})")
        if out.snat is not None:
            self.rewrites.append(f"snat {pkt.saddr} -> {out.packet.saddr} by "
                                 f"`{out.snat.text}` ({out.snat.where()})")
        if out.verdict != "accept":
            self.dropped = out
        return out.packet

    def hop(self, route: Optional[str] = None, dev: Optional[str] = None,
            nexthop: Optional[str] = None, crossed: tuple[str, ...] = (),
            nat: tuple[str, ...] = (), note: str = "", dst: str = "") -> Hop:
        return Hop(self.ns.name, route, dev, nexthop, crossed, nat, note, dst,
                   tuple(self.rewrites), self.candidates, tuple(self.unknown))

    def reason(self) -> str:
        out = self.dropped
        what = "dropped" if out.verdict == "drop" else "rejected"
        where = f" ({out.rule.where()})" if out.rule else ""
        guess = "; ".join(u.removesuffix(where) for u in out.unknown)
        guess = f" (assuming `{guess}` matches: not evaluated)" if guess else ""
        return f"{what} in {self.ns.name} by {out.reason()}{guess}"


def _candidate(o: nft.Outcome, followed: bool) -> str:
    how = f"{o.verdict}, {o.branch}" if o.branch else o.verdict
    return f"{o.packet.where()} ({how}{', followed' if followed else ''})"


def walk(snap: Snapshot, src_ns: str, dst: str, find: Lookuper = table_lookup,
         expected: Optional[Snapshot] = None, port: Optional[int] = None,
         proto: Optional[str] = None) -> Trace:
    """Follow a packet from namespace src_ns to address dst (a ping; to `port` a TCP packet, or
    UDP with proto="udp").

    In a namespace whose nft ruleset the snapshot holds (a live lab), the packet goes through
    its hooks as the kernel's: prerouting where it comes in (a DNAT there changes where it goes),
    output where it starts, input where it arrives, forward and postrouting (SNAT, masquerade)
    where it passes; a drop or reject stops it, naming the rule. A random choice (kube-proxy's
    numgen) lists every candidate (Hop.candidates) and follows the first that is accepted, in
    the map's order. Elsewhere (a plan) the NAT rules that may apply are listed, not evaluated.
    `expected` (the plan's snapshot) explains a missing route: the route the plan has there."""
    proto = proto or ("tcp" if port is not None else "icmp")
    hops: list[Hop] = []
    pkt = nft.Packet("", dst, proto, port, 40000 if port is not None else None)
    ns_name, came_in, seen = src_ns, "", set()
    bridged: Optional[tuple[list[End], Optional[str], str]] = None   # (links, dest, nexthop)

    def done(arrived: bool, reason: str = "") -> Trace:
        return Trace(src_ns, dst, tuple(hops), arrived, reason, proto, port, pkt.where())

    def stop(hop: Hop, reason: str) -> Trace:
        hops.append(hop)
        return done(False, reason)

    for _ in range(MAX_HOPS):
        here = snap.ns(ns_name)
        if here is None:
            return stop(Hop(ns_name), f"namespace {ns_name} does not exist")
        at = _Here(here)
        first = not hops

        def arrive(owner) -> Trace:
            nonlocal pkt
            pkt = at.hook("input", replace(pkt, iif=came_in or "lo"))
            if at.dropped:
                return stop(at.hop(dst=pkt.daddr), at.reason())
            hops.append(at.hop(nat=_relevant(here.nat, pkt.saddr or None, pkt.daddr)
                               if here.nft is None else (), dst=pkt.daddr,
                               note=f"arrived: {pkt.daddr} is the address of {owner.name} here"))
            return done(True)

        sent = pkt.daddr
        if bridged is not None:
            # Bridged through this namespace's bridge with bridge netfilter on: the frame meets
            # its prerouting, forward and postrouting hooks, in and out by the bridge itself.
            rest, after, nexthop = bridged
            bridged, br = None, rest[0][1]
            pkt = at.hook("prerouting", replace(pkt, iif=br, oif="", mark=0))
            if at.dropped:
                return stop(at.hop(dev=br, dst=pkt.daddr), at.reason())
            if pkt.daddr == sent:
                pkt = at.hook("forward", replace(pkt, oif=br))
                pkt = at.hook("postrouting", replace(pkt, oif=br))
                note = f"bridged by {br}: bridge netfilter runs {ns_name}'s nft hooks on it"
                if at.dropped:
                    return stop(at.hop(dev=br, dst=pkt.daddr, note=note), at.reason())
                hops.append(at.hop(dev=br, nexthop=nexthop, dst=pkt.daddr, note=note,
                                   crossed=tuple(_link_text(snap, end) for end in rest)))
                ns_name, came_in = after, rest[-1][1]
                continue
            came_in = br          # rewritten on the bridge: the kernel routes it here instead
        elif not first:
            # A veth into another namespace scrubs the packet's mark.
            pkt = at.hook("prerouting", replace(pkt, iif=came_in, oif="", mark=0))
        elif here.owns(pkt.daddr) is not None:
            # Locally delivered: output, through lo (the kernel routes it by its local table).
            pkt = at.hook("output", replace(pkt, saddr=pkt.daddr, oif="lo"))
        if at.dropped:
            return stop(at.hop(dst=pkt.daddr), at.reason())
        owner = here.owns(pkt.daddr)
        if owner is not None:
            return arrive(owner)
        if not first and not here.forwarding:
            return stop(at.hop(dst=pkt.daddr),
                        f"{ns_name} does not forward packets that are not for it "
                        f"(net.ipv4.ip_forward=0), and {pkt.daddr} is not its address")
        if (ns_name, pkt.daddr) in seen:
            return stop(at.hop(dst=pkt.daddr), f"routing loop: the packet came back to {ns_name}")
        seen.add((ns_name, pkt.daddr))
        found = find(here, pkt.daddr)
        if first and pkt.daddr == sent and not found.error:
            # Made here: routed first, then the output hook (a DNAT there reroutes it).
            pkt = at.hook("output", replace(pkt, saddr=found.src or "", oif=found.dev or ""))
            if at.dropped:
                return stop(at.hop(dst=pkt.daddr), at.reason())
            if pkt.daddr != sent:
                owner = here.owns(pkt.daddr)
                if owner is not None:
                    return arrive(owner)
                found = find(here, pkt.daddr)
        nat = _relevant(here.nat, pkt.saddr or found.src, pkt.daddr) if here.nft is None else ()
        if found.error:
            return stop(at.hop(route=found.route.text() if found.route else None, nat=nat,
                               dst=pkt.daddr),
                        _no_route(ns_name, pkt.daddr, found, expected))
        pkt = replace(pkt, saddr=pkt.saddr or found.src or "")
        route = found.route.text() if found.route else f"{pkt.daddr} dev {found.dev}"
        iface = here.iface(found.dev)
        if iface is None or not iface.up:
            return stop(at.hop(route=route, dev=found.dev, nat=nat, dst=pkt.daddr),
                        f"{ns_name}: interface {found.dev} is down (ip -n {ns_name} link set "
                        f"{found.dev} up)")
        if not first:
            pkt = at.hook("forward", replace(pkt, oif=iface.name))
        pkt = at.hook("postrouting", replace(pkt, oif=iface.name))
        if at.dropped:
            return stop(at.hop(route=route, dev=iface.name, dst=pkt.daddr), at.reason())
        nexthop = found.gateway or pkt.daddr
        path, dest = _segment(snap, (ns_name, iface.name), nexthop)
        crossed = tuple(_link_text(snap, end) for end in path)
        hop = at.hop(route=route, dev=iface.name, nexthop=nexthop, crossed=crossed, nat=nat,
                     dst=pkt.daddr)
        if dest is None:
            return stop(hop, f"{ns_name}: no namespace behind {iface.name} has the address "
                             f"{nexthop} (the neighbour is unreachable: ARP gets no answer)")
        down = [f"{n}:{i}" for n, i in path if not snap.ns(n).iface(i).up]
        if down:
            return stop(hop, f"interface {down[0].replace(':', ' ')} on the way is down, so "
                             f"{nexthop} is unreachable")
        k = _filtering_bridge(snap, path)
        if k is not None:      # the frame is bridged on through another namespace's nft hooks
            hop = replace(hop, crossed=crossed[:k + 1])
            bridged = (path[k:], dest, nexthop)
            dest = path[k][0]
        hops.append(hop)
        ns_name, came_in = dest, path[-1][1]
    return done(False, f"more than {MAX_HOPS} hops: a routing loop")


def _filtering_bridge(snap: Snapshot, path: list[End]) -> Optional[int]:
    """The first bridge the frame is bridged through (entered and left by its ports) whose
    namespace's nft rules see bridged frames (bridge netfilter on, rules on the hooks)."""
    for k in range(1, len(path) - 1):
        ns = snap.ns(path[k][0])
        iface = ns.iface(path[k][1])
        if iface.kind == "bridge" and iface.nf_call and ns.nft is not None and any(
                ns.nft.base_chains(h) for h in ("prerouting", "forward", "postrouting")):
            return k
    return None


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
        # In the kernel's order: DNAT (prerouting, output), the route, then SNAT (postrouting).
        rewrites = [w.split(" ", 1) for w in hop.rewrites]
        lines += [f"   {kind:<8} {rest}" for kind, rest in rewrites if kind == "dnat"]
        if len(hop.candidates) > 1:
            lines.append(f"   choice   {len(hop.candidates)} candidates: "
                         f"{'; '.join(hop.candidates)}")
        if hop.route:
            lines.append(f"   route    {hop.route}    (ip -n {hop.ns} route get "
                         f"{hop.dst or trace.dst})")
        lines += [f"   {kind:<8} {rest}" for kind, rest in rewrites if kind != "dnat"]
        if hop.crossed:
            lines.append(f"   leaves   by {hop.dev} to {hop.nexthop}: {' -> '.join(hop.crossed)}")
        for rule in hop.nat:
            lines.append(f"   nat      {rule}")
        for what in hop.unknown:
            lines.append(f"   assumed  {what} matches (not evaluated)")
        if hop.note:
            lines.append(f"   {hop.note}")
    sent = trace.dst if trace.port is None else f"{trace.dst}:{trace.port}"
    if trace.arrived:
        moved = f" (sent to {sent})" if trace.final and trace.final != sent else ""
        lines.append(f"arrived at {trace.final or trace.dst}{moved} in {len(trace.hops)} "
                     f"namespaces")
    else:
        lines.append(f"STOPPED: {trace.reason}")
    return "\n".join(lines)

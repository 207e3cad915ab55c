"""Neighbours: permanent ARP entries for a lab's own addresses when its dynamic ones would not fit
the kernel's neighbour table, which every network namespace on the host shares.

The kernel keeps one IPv4 neighbour table (arp_tbl) for all namespaces; its limits are the host's
`net.ipv4.neigh.default.gc_thresh1/2/3` (128/512/1024 by default), settable only in the root
namespace, which netlab never changes. Past gc_thresh3 a new entry cannot be made ("neighbour:
arp_cache: neighbor table overflow!" in the kernel log, `table_fulls` in
/proc/net/stat/arp_cache) and the packet that needed it is dropped: a healthy lab of 100 pods then
fails verify at random, depending on what else holds entries at that moment. Permanent entries
(`ip neigh replace ... nud permanent`) are not counted against the thresholds (the kernel keeps them
off its gc list; measured: 100,000 of them in one namespace and dynamic ARP still works elsewhere),
which is what Mininet's `--arp` does for the same reason.

The estimate, for every pair talking (verify --mesh), each entry in the namespace that sends:
- a pod on a node with k pods: one entry per other pod there plus its gateway (cni0): k;
- a node's cni0: one per pod on the node: k;
- a node's eth0: one per other node on its underlay segment, plus the router's address if the
  underlay is routed; the router: one per node.
So sum over nodes of (k*k + k) plus about nodes*nodes: 1,190 for 10 nodes of 10 pods, 101,090 for
10 of 100. Docker's containers and the outside world add a handful and stay dynamic.

`network.staticNeighbours`:
- `auto` (default): permanent entries when the estimate is more than half the host's gc_thresh3
  (the other half is left to the host and the other labs on it); small labs keep ARP.
- `always`: permanent entries whatever the size; `never`: ARP only, to watch it at work.
With permanent entries, each pod's eth0, each node's cni0 and eth0 (and the router's ports) get a
MAC derived from their IPv4 address (0a:58:<ip> as the bridge CNI plugin does for pods, 0a:5a:<ip>
on the underlay), so the plan stays pure. On a real host (`up --node`) the host's own table is
used as it is: nothing is added there.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal, Optional

from ..core.feature import Feature
from ..core.lab import Lab
from ..core.ops import LinkAddress, NeighPermanent

GC_THRESH3 = "/proc/sys/net/ipv4/neigh/default/gc_thresh3"
ARP_STAT = "/proc/net/stat/arp_cache"
DEFAULT_GC_THRESH3 = 1024


@dataclass(frozen=True)
class NeighbourPlan:
    """What a lab does about the shared neighbour table (lab.neighbours)."""
    mode: str           # auto, always, never
    estimate: int       # dynamic entries the lab would need with every pair talking
    limit: int          # the host's gc_thresh3 when the lab was parsed
    static: bool        # permanent entries for the lab's own addresses
    entries: int = 0    # how many permanent entries that is

    def summary(self) -> str:
        """The line `up` and `show` print, or "" when nothing needs saying."""
        if self.static and self.mode == "auto":
            return (f"neighbours: {self.entries} permanent ARP entries for the lab's own addresses, "
                    f"because it would need about {self.estimate} dynamic ones and the kernel's "
                    f"table, shared by every namespace, holds {self.limit} "
                    f"(net.ipv4.neigh.default.gc_thresh3). To see ARP at work instead, set "
                    f"`network: {{staticNeighbours: never}}` or use a smaller lab.")
        if self.static:
            return (f"neighbours: {self.entries} permanent ARP entries (staticNeighbours: always); "
                    f"see them with `ip -n NS neigh`.")
        if self.estimate > self.limit // 2:
            return (f"neighbours: about {self.estimate} dynamic ARP entries, more than half the "
                    f"kernel's shared table (gc_thresh3 {self.limit}): verify may lose packets to "
                    f"a full table (staticNeighbours: never).")
        return ""


def host_gc_thresh3(path: str = GC_THRESH3) -> int:
    """The host's gc_thresh3 (read only; the same in every namespace)."""
    try:
        with open(path) as f:
            return int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return DEFAULT_GC_THRESH3


def table_fulls(path: str = ARP_STAT) -> Optional[int]:
    """How many times the kernel found the neighbour table full (all CPUs), or None if unknown.

    /proc/net/stat/arp_cache has a header line and one line of hex counters per CPU; the last
    column, table_fulls, counts neighbour entries that could not be made (the same event as the
    kernel log's "neighbor table overflow!")."""
    try:
        with open(path) as f:
            lines = f.read().split("\n")
    except OSError:
        return None
    head = lines[0].split()
    if "table_fulls" not in head:
        return None
    col = head.index("table_fulls")
    return sum(int(words[col], 16) for words in (l.split() for l in lines[1:]) if len(words) > col)


def mac_of(address: str, prefix: str = "0a:58") -> str:
    return prefix + ":" + ":".join(f"{int(b):02x}" for b in address.split("."))


UNDERLAY_PREFIX = "0a:5a"


def estimate(lab_nodes, lab_pods, routed: bool) -> int:
    """Dynamic entries for every pair talking: see the module's docstring."""
    per_node: dict[str, int] = {}
    for p in lab_pods:
        if not p.host_network:
            per_node[p.node] = per_node.get(p.node, 0) + 1
    segments: dict[int, int] = {}
    for n in lab_nodes:
        segments[n.segment] = segments.get(n.segment, 0) + 1
    pods = sum(k * k + k for k in per_node.values())
    underlay = sum(segments[n.segment] - 1 + routed for n in lab_nodes) + routed * len(lab_nodes)
    return pods + underlay


def choose(mode: str, dynamic: int, limit: int) -> bool:
    """Whether a lab uses permanent entries: see `network.staticNeighbours`."""
    return mode == "always" or (mode == "auto" and dynamic > limit // 2)


class Neighbours(Feature):
    name = "neighbours"
    schema = {"network.staticNeighbours": (Literal["auto", "always", "never"], "auto")}

    def build(self, spec: Any, b: Any) -> None:
        mode = spec.network.staticNeighbours
        nodes, pods = b.fields["nodes"], b.fields["pods"]
        routed = bool(b.fields.get("router_ns"))
        dynamic = estimate(nodes, pods, routed)
        limit = host_gc_thresh3() if mode == "auto" else DEFAULT_GC_THRESH3
        plan = NeighbourPlan(mode, dynamic, limit, choose(mode, dynamic, limit))
        if plan.static:
            plan = NeighbourPlan(mode, dynamic, limit, True, dynamic)
        b.parts["neighbours"] = plan

    def ops(self, lab: Lab, phase: str) -> list:
        if phase != "links" or not lab.neighbours.static:
            return []
        return static_ops(lab)

    def show(self, lab: Lab, status: Any) -> dict:
        n = lab.neighbours
        return {"neighbours": {"mode": n.mode, "estimate": n.estimate, "gc_thresh3": n.limit,
                               "static": n.static, "entries": n.entries}}

    def render(self, data: dict) -> list:
        n = data.get("neighbours")
        if not n:
            return []
        line = NeighbourPlan(n["mode"], n["estimate"], n["gc_thresh3"], n["static"],
                             n["entries"]).summary()
        return [f"\n{line}"] if line else []


def static_ops(lab: Lab) -> list:
    """Fixed MACs on the lab's own links, then a permanent entry for every address a namespace
    of the lab sends to directly (its on-link neighbours)."""
    pods = [p for p in lab.pods if not p.host_network]
    ops: list = []
    for n in lab.nodes:
        ops += [LinkAddress(n.ns, "cni0", mac_of(n.gateway)),
                LinkAddress(n.ns, "eth0", mac_of(n.ip, UNDERLAY_PREFIX))]
    for k, address in enumerate(lab.router_ips):
        ops.append(LinkAddress(lab.router_ns, f"eth{k}", mac_of(address, UNDERLAY_PREFIX)))
    ops += [LinkAddress(p.ns, "eth0", mac_of(p.ip)) for p in pods]
    on_node: dict[str, list] = {}
    for p in pods:
        on_node.setdefault(p.node, []).append(p)
    entries: dict[str, list] = {}
    for n in lab.nodes:
        mine = entries.setdefault(n.ns, [])
        mine += [("cni0", p.ip, mac_of(p.ip)) for p in on_node.get(n.name, [])]
        mine += [("eth0", m.ip, mac_of(m.ip, UNDERLAY_PREFIX))
                 for m in lab.nodes if m is not n and m.segment == n.segment]
        if lab.router_ns:
            router = lab.router_ips[n.segment]
            mine.append(("eth0", router, mac_of(router, UNDERLAY_PREFIX)))
            entries.setdefault(lab.router_ns, []).append(
                (f"eth{n.segment}", n.ip, mac_of(n.ip, UNDERLAY_PREFIX)))
    for p in pods:
        gw = lab.node(p.node).gateway
        entries[p.ns] = [("eth0", gw, mac_of(gw))] + [("eth0", q.ip, mac_of(q.ip))
                                                     for q in on_node[p.node] if q is not p]
    return ops + [NeighPermanent(ns, tuple(e)) for ns, e in entries.items() if e]

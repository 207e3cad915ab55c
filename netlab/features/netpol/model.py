"""NetworkPolicy's evaluator and truth table, pure: `verdict()` says whether a source may reach a
pod on a port and protocol and which policy rule says so (the reference the kernel is compared
with); `matrix()` is every ordered pair of pods, `render_matrix()` prints it as the upstream
"Netpol" e2e suite and cyclonus do (rows sources, columns targets, `.` allowed, `X` denied, `!`
where the observed verdict differs from the expected one).

Kubernetes semantics kept exactly (they are what learners guess wrong):
- `policyTypes` absent means [Ingress], plus Egress when the policy has egress rules;
- a pod no policy selects for a direction is not isolated in that direction;
- allowed traffic is the union of the rules of every policy that selects the pod; egress (at the
  source) and ingress (at the destination) must both allow;
- `ingress: []` allows nothing, `ingress: [{}]` allows everything; inside a rule an absent
  `from`/`to`/`ports` and an empty list mean the same: all sources / destinations / ports;
- a peer with podSelector and namespaceSelector selects pods matching both (AND); two peers are
  OR; podSelector alone means pods in the policy's own namespace; namespaceSelector {} means
  every namespace;
- ipBlock matches by address, also pod addresses (as Calico, Cilium and kube-network-policies
  do); named ports are resolved on the destination pod, by name and protocol;
- traffic from the destination pod's own node IP is always allowed (kubelet probes);
- a pod reaching itself never leaves its namespace: always allowed (upstream ignores loopback).
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from typing import Optional, Union

from .specs import NetworkPolicy, Namespace, Peer, PolicyPort, Pod

# ---------------------------------------------------------------------------------------------
# evaluator

class _Cluster:
    def __init__(self, namespaces, pods, nodes):
        self.ns = {n.name: n for n in namespaces}
        self.pods = {p.id: p for p in pods}
        self.by_ip = {p.ip: p for p in pods}
        self.nodes = dict(nodes or {})
        self.isolating: dict = {}      # (kind, pod id) -> policies selecting it; one policy list

    def selecting(self, kind: str, pod: Pod, policies) -> list:
        key = (kind, pod.id)
        if key not in self.isolating:
            self.isolating[key] = [p for p in policies if kind in p.types and selects(p, pod)]
        return self.isolating[key]

    def pod(self, ref: Union[str, Pod, None]) -> Optional[Pod]:
        if isinstance(ref, Pod):
            return ref
        return self.pods.get(ref) or self.by_ip.get(ref)

    def ip(self, ref) -> str:
        pod = self.pod(ref)
        return pod.ip if pod else str(ipaddress.ip_address(ref))

    def ns_labels(self, name: str) -> dict[str, str]:
        n = self.ns.get(name) or Namespace(name)
        return n.all_labels


def selects(pol: NetworkPolicy, pod: Pod) -> bool:
    return pol.namespace == pod.namespace and pol.podSelector.matches(pod.labels)


def _peer_matches(peer: Peer, pol: NetworkPolicy, ip: str, pod: Optional[Pod], c: _Cluster) -> bool:
    if peer.ipBlock is not None:
        return peer.ipBlock.matches(ip)
    if pod is None:
        return False                       # selectors select pods only, never other addresses
    if peer.namespaceSelector is None:
        ns_ok = pod.namespace == pol.namespace
    else:
        ns_ok = peer.namespaceSelector.matches(c.ns_labels(pod.namespace))
    pod_ok = peer.podSelector is None or peer.podSelector.matches(pod.labels)
    return ns_ok and pod_ok


def _port_matches(pp: PolicyPort, dst: Optional[Pod], port: int, proto: str) -> bool:
    if pp.protocol != proto:
        return False
    if pp.port is None:
        return True
    if isinstance(pp.port, str):
        return dst is not None and dst.named_port(pp.port, proto) == port
    return pp.port <= port <= (pp.endPort or pp.port)


def _rule_matches(rule, pol, peer_ip, peer_pod, dst_pod, port, proto, c) -> bool:
    if rule.peers and not any(_peer_matches(p, pol, peer_ip, peer_pod, c) for p in rule.peers):
        return False
    return not rule.ports or any(_port_matches(pp, dst_pod, port, proto) for pp in rule.ports)


def _direction(kind, pod, policies, peer_ip, peer_pod, dst_pod, port, proto, c):
    """(allowed, reason) of one side: `kind` is Ingress (pod is the destination) or Egress."""
    mine = c.selecting(kind, pod, policies)
    if not mine:
        return True, f"{pod.id} is not isolated for {kind}"
    for pol in mine:
        rules = pol.ingress if kind == "Ingress" else pol.egress
        for i, rule in enumerate(rules, 1):
            if _rule_matches(rule, pol, peer_ip, peer_pod, dst_pod, port, proto, c):
                return True, f"allowed by {pol.id} {kind.lower()} rule {i}"
    peer = peer_pod.id if peer_pod else peer_ip
    names = ", ".join(p.id for p in mine)
    return False, (f"denied: {names} select{'s' if len(mine) == 1 else ''} {pod.id} for {kind} "
                   f"and no rule allows {peer} on {proto}/{port}")


def verdict(policies, namespaces, pods, src, dst, port: int, proto: str = "TCP",
            nodes: Optional[dict[str, str]] = None) -> tuple[bool, str]:
    """May `src` open a connection to pod `dst` on port/proto? -> (allowed, reason).

    src: a pod ("ns/name", its IP, or a Pod) or any IP address (a node, the outside world);
    dst: a pod. nodes: node name -> node IP (for the own-node rule). The reason names the policy
    and rule that allowed, or the policies that isolate the pod when nothing allowed."""
    return _verdict(_Cluster(namespaces, pods, nodes), policies, src, dst, port, proto)


def _verdict(c: _Cluster, policies, src, dst, port: int, proto: str) -> tuple[bool, str]:
    dpod = c.pod(dst)
    if dpod is None:
        raise ValueError(f"destination {dst!r} is not a pod")
    spod, sip = c.pod(src), c.ip(src)
    proto = proto.upper()
    if spod is not None and spod.id == dpod.id:
        return True, f"{dpod.id} reaching itself never leaves the pod"
    if c.nodes.get(dpod.node) == sip:
        return True, f"allowed: from {dpod.id}'s own node {dpod.node} (kubelet probes)"
    reasons = []
    if spod is not None:
        ok, why = _direction("Egress", spod, policies, dpod.ip, dpod, dpod, port, proto, c)
        if not ok:
            return False, why
        reasons.append(why)
    ok, why = _direction("Ingress", dpod, policies, sip, spod, dpod, port, proto, c)
    if not ok:
        return False, why
    reasons.append(why)
    said = [r for r in reasons if r.startswith("allowed")]
    if not said:
        return True, (f"allowed: no policy isolates {spod.id + ' for Egress nor ' if spod else ''}"
                      f"{dpod.id} for Ingress")
    return True, "; ".join(said)


# ---------------------------------------------------------------------------------------------
# truth table

@dataclass(frozen=True)
class Matrix:
    """Verdicts for every ordered pair of pods on one port and protocol."""
    pods: tuple[str, ...]                   # "ns/name", rows and columns in this order
    port: int
    proto: str
    allowed: dict                           # (src, dst) -> bool
    reasons: dict = field(default_factory=dict)   # (src, dst) -> str

    def denied_pairs(self) -> set[tuple[str, str]]:
        return {k for k, v in self.allowed.items() if not v}


def matrix(policies, namespaces, pods, port: int, proto: str = "TCP",
           nodes: Optional[dict[str, str]] = None) -> Matrix:
    c = _Cluster(namespaces, pods, nodes)
    ids = tuple(sorted(p.id for p in pods))
    allowed, reasons = {}, {}
    for s in ids:
        for d in ids:
            allowed[s, d], reasons[s, d] = _verdict(c, policies, s, d, port, proto)
    return Matrix(ids, port, proto.upper(), allowed, reasons)


def render_matrix(expected: Matrix, observed: Optional[Matrix] = None) -> str:
    """The truth table: `.` allowed, `X` denied; with `observed`, `!` where it differs."""
    ids = expected.pods
    w = max(len(i) for i in ids)
    lines = [f"{expected.proto}/{expected.port}".ljust(w) + "  " + " ".join(
        i.ljust(w) for i in ids).rstrip()]
    for s in ids:
        cells = []
        for d in ids:
            e = expected.allowed[s, d]
            if observed is not None and observed.allowed.get((s, d)) != e:
                cells.append("!")
            else:
                cells.append("." if e else "X")
        lines.append(s.ljust(w) + "  " + " ".join(ch.ljust(w) for ch in cells).rstrip())
    return "\n".join(lines) + "\n"


def egress_verdict(policies, namespaces, pods, src, ip: str, port: int,
                   proto: str = "TCP") -> tuple[bool, str]:
    """May pod `src` send to an address that is no pod (a node, the outside world)? Only its own
    egress policies decide: nothing isolates the other end."""
    c = _Cluster(namespaces, pods, None)
    spod = c.pod(src)
    if spod is None:
        raise ValueError(f"source {src!r} is not a pod")
    return _direction("Egress", spod, policies, ip, None, None, port, proto.upper(), c)

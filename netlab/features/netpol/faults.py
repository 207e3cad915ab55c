"""NetworkPolicy's fault of the break-it exercises (core.fault): policy-blocks-dns, the classic
outage of a default-deny egress policy. Someone isolates a namespace's pods for egress and allows
the app's own traffic (to the pods of the same namespace) but forgets DNS: UDP/TCP 53 to
kube-system's DNS pod. Every name lookup of those pods times out.

The fault's policy is one more NetworkPolicy; applying it is the feature's own nft rendering
(nft.py) of the lab's policies plus that one, loaded in every node's namespace in one transaction
each; undoing it loads what the plan had (or deletes the table when the plan had no policies).

Which checks it breaks is the policy model's (model.py) verdict on each check's packet, with and
without the fault's policy, for every check verify derives (DNS, pod to pod, Services, the policy
matrix...). A DNS query goes to the kube-dns ClusterIP, DNAT'd by kube-proxy before the forward
hook: the policy sees the DNS pod's address. A check whose outcome the model cannot tell (a
Service whose endpoints kube-proxy picks at random among allowed and denied, another feature's
probe) leaves the namespace out of the targets, as do namespaces already isolated for egress
(there a new policy would also allow) and namespaces with pods on several nodes (the drops would
be in several node namespaces; a fault names one).
"""

from __future__ import annotations

from typing import Optional

from ...core.fault import Broken, Fault
from ...core.lab import Lab
from ...core.ops import NftApply
from .model import _Cluster, _verdict, egress_verdict
from .nft import ruleset
from .specs import TABLE, parse_policies

NAME = "default-deny-egress"
_PROTO = {"ping": ("ICMP", 0), "mtu": ("ICMP", 0), "http": ("TCP", None), "udp": ("UDP", None)}
_NONE = ("addr", "addrs", "localhost")


def policy(namespace: str):
    """The fault's policy: every pod of the namespace isolated for egress, allowed to the pods of
    its own namespace only (no rule for DNS)."""
    [pol] = parse_policies([{"name": NAME, "namespace": namespace, "podSelector": {},
                             "policyTypes": ["Egress"], "egress": [{"to": [{"podSelector": {}}]}]}])
    return pol


def _askers(lab: Lab, namespace: str) -> list:
    """The namespace's pods with their own network namespace (they ask the cluster DNS)."""
    return [p for p in lab.pods if p.namespace == namespace and not p.host_network
            and p.name != lab.dns.pod]


class PolicyBlocksDns(Fault):
    name = "policy-blocks-dns"
    summary = ("a default-deny egress policy that allows the namespace's own pods and forgets "
               "DNS: names stop resolving")
    on = "namespace"
    lesson = "NetworkPolicy"

    def targets(self, lab: Lab) -> list[str]:
        if getattr(lab, "dns", None) is None or not _filtered(lab):
            return []
        from ..derive import derive
        checks = derive(lab)
        dns_ns = lab.pod(lab.dns.pod).namespace
        out = []
        for ns in dict.fromkeys(p.namespace for p in lab.pods):
            pods = _askers(lab, ns)
            if ns == dns_ns or not pods or len({p.node for p in pods}) != 1 or \
                    any(p.id == f"{ns}/{NAME}" for p in lab.network_policies):
                continue
            got = [self.outcome(lab, ns, c) for c in checks]
            if None not in got and True in got:
                out.append(ns)
        return out

    def make(self, lab: Lab, target: str) -> Broken:
        from . import cluster, rulesets
        nss, pods, nodes = cluster(lab)
        pols = tuple(lab.network_policies) + (policy(target),)
        ops = tuple(NftApply(n.ns, ruleset(n.name, [p for p in pods if p.node == n.name], pods,
                                           nss, pols, nodes)) for n in lab.nodes)
        if lab.network_policies:
            undo = tuple(NftApply(lab.node(n).ns, text) for n, text in rulesets(lab).items())
        else:
            undo = tuple(NftApply(n.ns, f"table inet {TABLE}\ndelete table inet {TABLE}\n")
                         for n in lab.nodes)
        mine = _askers(lab, target)
        node = lab.node(mine[0].node)
        dns_ip = lab.pod(lab.dns.pod).ip
        fix = " && ".join(f"ip netns exec {node.ns} nft 'insert rule inet {TABLE} "
                          f"egress.{target}.{p.name} ip daddr {dns_ip} meta l4proto {{ tcp, udp }} "
                          f"th dport 53 return'" for p in mine)
        return Broken(ops, undo, node.ns, policy(target).id,
                      f"ip netns exec {node.ns} nft list table inet {TABLE}", fix)

    def breaks(self, lab: Lab, target: str, check) -> bool:
        return self.outcome(lab, target, check) is True

    def outcome(self, lab: Lab, target: str, check) -> Optional[bool]:
        """Whether the fault's policy drops the check's packet (True), leaves it as it was
        (False), or the model cannot tell (None)."""
        ctx = self._context(lab, target)
        src = ctx.askers.get(check.src)
        if src is None or check.method in _NONE:
            return False       # only the namespace's own pods are isolated; replies pass
        if check.method == "netpol":          # the policy matrix: (proto, src, dst, ...)
            return ctx.changed(src, check.dst, check.port, check.data[0])
        if check.method == "dns":             # to 10.96.0.10:53, DNAT'd to the DNS pod
            return ctx.changed(src, lab.dns.pod, 53, "UDP")
        if check.method == "svc":
            return _through_service(check, lambda *a: ctx.changed(src, *a))
        if check.method in _PROTO:
            proto, port = _PROTO[check.method]
            port = check.port if port is None else port
            if _service_address(lab, check.target):
                return None                   # a scenario's check through a Service
            dst = ctx.by_name.get(check.dst)
            if dst is not None and not dst.host_network:
                return ctx.changed(src, dst.name, port, proto)
            node = next((n for n in lab.nodes if n.name == check.dst or
                         (dst is not None and n.name == dst.node)), None)
            if node is not None and node.name == src.node:
                return False                  # its own node: input hook, never forwarded
            return ctx.changed(src, None, port, proto, ip=check.target)
        return None                           # another feature's probe: not modelled here

    def _context(self, lab: Lab, target: str) -> "_Context":
        # the last lab and target asked about: expected() and targets() ask once per check
        last = getattr(self, "_last", None)
        if last is None or last[0] is not lab or last[1] != target:
            last = self._last = (lab, target, _Context(lab, target))
        return last[2]


class _Context:
    """The policy model of one lab, without and with the fault's policy on one namespace."""

    def __init__(self, lab: Lab, target: str):
        from . import cluster
        self.nss, self.pods, nodes = cluster(lab)
        self.before = tuple(lab.network_policies)
        self.after = self.before + (policy(target),)
        self.models = (_Cluster(self.nss, self.pods, nodes), _Cluster(self.nss, self.pods, nodes))
        self.by_name = {p.name: p for p in lab.pods}
        self.askers = {p.name: p for p in _askers(lab, target)}

    def changed(self, src, dst: Optional[str], port: int, proto: str,
                ip: Optional[str] = None) -> Optional[bool]:
        """A packet from pod src to pod `dst` (or to the address `ip`, no pod): True when it was
        allowed and is dropped now, None when it is allowed now and was not."""
        sid = f"{src.namespace}/{src.name}"
        if ip is not None:
            was, now = (egress_verdict(p, self.nss, self.pods, sid, ip, port, proto)[0]
                        for p in (self.before, self.after))
        else:
            d = self.by_name[dst]
            did = f"{d.namespace}/{d.name}"
            was, now = (_verdict(c, p, sid, did, port, proto)[0]
                        for c, p in zip(self.models, (self.before, self.after)))
        if was == now:
            return False
        return True if was else None


def _through_service(check, changed) -> Optional[bool]:
    """A Service check: the connection is DNAT'd to one endpoint at random (all of them for mode
    "all"); certain only when every endpoint, or none, is dropped now."""
    mode, proto, _, eps = check.data[:4]
    if not eps:
        return False
    got = [changed(e.pod, e.port, proto) for e in eps]
    if None in got:
        return None
    hit = [g for g in got if g]
    if not hit:
        return False
    return True if mode == "all" or len(hit) == len(eps) else None


def _service_address(lab: Lab, address: str) -> bool:
    return any(address in (s.cluster_ip, s.load_balancer_ip) for s in lab.services)


def _filtered(lab: Lab) -> bool:
    """Whether same-node pod to pod reaches the nodes' forward hook (bridge netfilter): the plan
    sets it for policies, or for Services (unless masqueradeAll)."""
    kp = getattr(lab, "kube_proxy", None)
    return bool(lab.network_policies) or (bool(lab.services) and kp is not None
                                          and not kp.masquerade_all)


FAULTS = [PolicyBlocksDns()]

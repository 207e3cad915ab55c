"""The Services' faults of the break-it exercises (core.fault): bridge netfilter off in a node, and
one endpoint's chain flushed in a node's `table ip kube-proxy`.

Which checks they break follows from where each check's connection is DNAT'd and which endpoints
it may be sent to. kube-proxy picks an endpoint at random (`numgen random`), so a check to a
Service with endpoints both affected and not may pass or fail: its outcome is None ("may fail",
core.fault), certain only for a Service whose endpoints are all affected, or a check of mode
"all" that must hear from every endpoint. A fault applies where at least one check must fail.
"""

from __future__ import annotations

from typing import Optional

from ..core.fault import Broken, Fault
from ..core.lab import Lab
from ..core.ops import HairpinOff as HairpinOffOp, HairpinOn, NftApply, Sysctl
from . import kubeproxy, svcchecks
from .svcmodel import BRIDGE_NF, endpoints

SVC = "svc"
VIA_CLUSTERIP = ("svc-pod-clusterip", "svc-endpoints", "svc-clientip", "svc-affinity")


def _pod_on(lab: Lab, name: str, node: str) -> bool:
    """Whether `name` is a pod with its own namespace behind node's cni0."""
    return any(p.name == name and p.node == node and not p.host_network for p in lab.pods)


def _certain(mode: str, hit: list, eps: tuple) -> Optional[bool]:
    """Whether a check of `mode` fails when the endpoints `hit` (of `eps`) lose every answer:
    True, False, or None when kube-proxy's random choice decides."""
    if not hit:
        return False
    if mode == "all" or len(hit) == len(eps):
        return True
    return None


class _SvcFault(Fault):
    lesson = "Services"

    def outcome(self, lab: Lab, target: str, check) -> Optional[bool]:
        return False

    def breaks(self, lab: Lab, target: str, check) -> bool:
        return self.outcome(lab, target, check) is True

    def _checks(self, lab: Lab) -> list:
        # the Services' own checks: the ones whose endpoint kube-proxy picks at random
        return [c for derive in svcchecks.RULES.values() for c in derive(lab)]

    def _applies(self, lab: Lab, target: str, checks: list) -> bool:
        return any(self.outcome(lab, target, c) is True for c in checks)


# ---------------------------------------------------------------- bridge-nf-off


class BridgeNfOff(_SvcFault):
    name = "bridge-nf-off"
    summary = ("bridge netfilter off in a node: a pod calling a Service whose endpoint is on its "
               "own node loses the replies")
    on = "node"

    def targets(self, lab: Lab) -> list[str]:
        if not lab.services or lab.kube_proxy.masquerade_all:
            return []
        checks = self._checks(lab)
        return [n.name for n in lab.nodes if self._applies(lab, n.name, checks)]

    def make(self, lab: Lab, target: str) -> Broken:
        node = lab.node(target)
        return Broken((Sysctl(node.ns, BRIDGE_NF, "0"),), (Sysctl(node.ns, BRIDGE_NF, "1"),),
                      node.ns, BRIDGE_NF, f"ip netns exec {node.ns} sysctl {BRIDGE_NF}",
                      f"ip netns exec {node.ns} sysctl -w {BRIDGE_NF}=1")

    def outcome(self, lab: Lab, target: str, check) -> Optional[bool]:
        """Bridge netfilter off in `target`: a connection from one of its pods, DNAT'd by it to an
        endpoint behind the same cni0, has its reply bridged straight back, never un-DNAT'd."""
        node = lab.node(target)
        if check.method == SVC:
            mode, eps = check.data[0], check.data[3]
            if mode == "refuse" and _pod_on(lab, check.src, target):
                # The node now routes the pod's DNAT'd connections back out cni0 and sends it an
                # ICMP redirect for each; they draw on the per-host ICMP rate limit that the
                # no-endpoints reject's port unreachable needs too, which may then not be sent.
                return None
            if not eps or not _pod_on(lab, check.src, target):
                return False     # a node's own, another node's or the outside's: routed replies
            hit = [e for e in eps if e.node == target and e.pod != check.src]
            if check.rule in VIA_CLUSTERIP and check.data[4] == node.ns:
                return _certain(mode, hit, eps)
            return None if hit else False    # NodePorts, hairpin: left to chance or masquerade
        if check.method == "dns" and getattr(lab, "dns", None) is not None:
            # every pod asks kube-dns's ClusterIP: its one endpoint's replies are bridged back
            dns_pod = lab.pod(lab.dns.pod)
            return (dns_pod.node == target and check.src != dns_pod.name
                    and _pod_on(lab, check.src, target))
        if check.method in ("ping", "http", "udp") and _pod_on(lab, check.src, target) and \
                _service_address(lab, check.target):
            return None          # a scenario check through a Service: not modelled here
        return False


def _service_address(lab: Lab, address: str) -> bool:
    return any(address in (s.cluster_ip, s.load_balancer_ip) for s in lab.services)


# ---------------------------------------------------------------- endpoint-chain-missing


def _endpoint_ports(lab: Lab, pod: str) -> list:
    """The (service, port, endpoint) the pod is an endpoint of (verify's Services only)."""
    addons = set(lab.parts.get("addon_services", ()))
    return [(s, port, e) for s in lab.services if not s.headless and s.key not in addons
            for port in s.ports
            for e in endpoints(s, lab.pods) if e.port_name == port.name and e.pod == pod]


def _dnat_ns(lab: Lab, check) -> str:
    """The node namespace that DNATs a check's connection: the node a NodePort is asked on, else
    the one the check says (the client's node, or the LoadBalancer IP's announcer)."""
    for n in lab.nodes:
        if check.target == n.ip:
            return n.ns
    return check.data[4]


class EndpointChainMissing(_SvcFault):
    name = "endpoint-chain-missing"
    summary = ("one endpoint's chain flushed in its node's table ip kube-proxy: the Service's "
               "connections through that node sent to it are never DNAT'd")
    on = "pod"

    def targets(self, lab: Lab) -> list[str]:
        if not lab.services:
            return []
        checks = self._checks(lab)
        return [p.name for p in lab.pods if not p.host_network and _endpoint_ports(lab, p.name)
                and self._applies(lab, p.name, checks)]

    def _chain(self, lab: Lab, target: str) -> tuple:
        svc, port, ep = _endpoint_ports(lab, target)[0]
        return svc, port, kubeproxy.endpoint_chain(svc, port, ep)

    def make(self, lab: Lab, target: str) -> Broken:
        pod = lab.pod(target)
        node = lab.node(pod.node)
        svc, port, chain = self._chain(lab, target)
        where = f"ip {kubeproxy.TABLE}"
        undo = (NftApply(node.ns, _ruleset(lab, node.name)),)    # the feature's reload
        # the answer puts back the chain's own rules, as the feature writes them (the hairpin
        # masquerade mark first, then the DNAT)
        rules = [line.removeprefix("add ") for line in _ruleset(lab, node.name).splitlines()
                 if line.startswith(f"add rule {where} {chain} ")]
        return Broken((NftApply(node.ns, f"flush chain {where} {chain}\n"),), undo, node.ns,
                      chain, f"ip netns exec {node.ns} nft list chain {where} {chain}",
                      f"ip netns exec {node.ns} nft '" + "; ".join(f"add {r}" for r in rules)
                      + "'")

    def outcome(self, lab: Lab, target: str, check) -> Optional[bool]:
        """A connection DNAT'd in the endpoint's node and sent to its flushed chain is never
        DNAT'd: it goes on to the Service's own address, where nobody answers."""
        if check.method != SVC or not check.data[3]:
            return False
        pod = lab.pod(target)
        _, _, chain = self._chain(lab, target)
        if _dnat_ns(lab, check) != lab.node(pod.node).ns:
            return False
        eps = check.data[3]
        return _certain(check.data[0], [e for e in eps if e.chain == chain], eps)


def _ruleset(lab: Lab, node: str) -> str:
    """The node's whole kube-proxy table as Services.reload() writes it (services.rulesets)."""
    kp = lab.kube_proxy
    return kubeproxy.node_rulesets([(n.name, n.ip) for n in lab.nodes], kp.cluster_cidr,
                                   lab.services, {s.key: endpoints(s, lab.pods)
                                                  for s in lab.services},
                                   masquerade_all=kp.masquerade_all)[node]


# ---------------------------------------------------------------- hairpin-off


class HairpinOff(_SvcFault):
    name = "hairpin-off"
    summary = ("hairpin off on an endpoint's cni0 port: the endpoint no longer reaches itself "
               "through its own Service")
    on = "pod"

    def targets(self, lab: Lab) -> list[str]:
        if not lab.services or lab.kube_proxy.masquerade_all:
            return []     # bridge netfilter may be off then: hairpin traffic is routed instead
        return list(dict.fromkeys(c.src for c in self._checks(lab) if c.rule == "svc-hairpin"))

    def make(self, lab: Lab, target: str) -> Broken:
        pod = lab.pod(target)
        node = lab.node(pod.node)
        on = HairpinOn(node.ns, pod.host_veth)
        return Broken((HairpinOffOp(node.ns, pod.host_veth),), (on,), node.ns, pod.host_veth,
                      f"ip -d -n {node.ns} link show {pod.host_veth}", on.ip())

    def outcome(self, lab: Lab, target: str, check) -> Optional[bool]:
        """Only the endpoint's connections to itself leave by the port they came in: DNAT'd inside
        cni0 by bridge netfilter, they need hairpin; the check wants its own answer every time it
        asks, and never gets one."""
        return check.method == SVC and check.rule == "svc-hairpin" and check.src == target


FAULTS = [BridgeNfOff(), EndpointChainMissing(), HairpinOff()]

"""The Services' verify rules, after Kubernetes' e2e "Granular Checks: Services": pod and node to
ClusterIP (TCP, UDP), NodePort on every node IP, outside to NodePort and LoadBalancer, every
endpoint reached, client IP kept in the cluster, Local keeps the outside client's IP and only local
endpoints answer, Cluster from outside SNATs to a node address, ClientIP affinity, hairpin, and a
Service with no endpoints refuses.

One check method of its own, "svc" (svcprobe.py): a client asks several times, each on a new
connection, and the judge compares the answers with the endpoints the model says, naming why a
failure failed.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..core.lab import Lab, Pod
from ..verify.checks import REACHABLE, UNREACHABLE, Check
from . import kubeproxy
from .svcmodel import Service, ServicePort, endpoints
from .svcprobe import Probe, SvcOut, judge, parse_client  # noqa: F401  (the method's probe)

METHOD = "svc"


@dataclass(frozen=True)
class Ep:
    """An endpoint as a check needs it: who, where, and its kube-proxy chain."""
    pod: str
    ip: str
    port: int
    node: str
    ns: str
    node_ns: str
    chain: str
    veth: str = ""      # the node's end of the pod's veth: its cni0 port


class SvcCheck(Check):
    """A Check whose reproduce command is the repeated curl (or socat) the probe makes."""

    @property
    def reproduce(self) -> str:
        mode, proto, tries = self.data[:3]
        where = f"ip netns exec {self.ns} "
        if proto == "udp":
            one = f"echo {self.path} | {where}socat -t1 - UDP:{self.target}:{self.port}"
        else:
            one = f"{where}curl -s --connect-timeout 2 http://{self.target}:{self.port}{self.path}"
        return one if tries == 1 else f"for i in $(seq {tries}); do {one}; echo; done | sort | uniq -c"

    @property
    def expected(self) -> str:
        mode, eps = self.data[0], self.data[3]
        names = ", ".join(e.pod for e in eps)
        return {"any": f"answered by one of {names}", "all": f"every endpoint answers: {names}",
                "one": "one endpoint over every try", "self": f"{self.src} answers itself",
                "clientip": f"sees {', '.join(self.sees)}", "refuse": "connection refused",
                "none": "no answer"}[mode]


def _check(rule, src, dst, ns, target, port, path, mode, proto, tries, eps, dnat_ns, sees=(),
           expect=REACHABLE, why="") -> SvcCheck:
    return SvcCheck(rule, src, dst, METHOD, ns, target, port, path, expect, tuple(sees),
                    why=why, data=(mode, proto, tries, tuple(eps), dnat_ns))


# ---------------------------------------------------------------- deriving


def _eps(lab: Lab, svc: Service, port: ServicePort) -> list[Ep]:
    out = []
    for e in endpoints(svc, lab.pods):
        if e.port_name == port.name:
            pod = lab.pod(e.pod)
            out.append(Ep(e.pod, e.ip, e.port, e.node, pod.ns, lab.node(e.node).ns,
                          kubeproxy.endpoint_chain(svc, port, e), pod.host_veth))
    return out


def _ports(lab: Lab):
    """Every (service, port, endpoints) of the lab's non-headless Services."""
    # Services of netlab's add-ons that answer as their own servers (the ingress controller's
    # nginx), not as netexec: their feature's rules prove them.
    addons = set(lab.parts.get("addon_services", ()))
    return [(s, p, _eps(lab, s, p)) for s in lab.services if not s.headless
            and s.key not in addons for p in s.ports]


def _clients(lab: Lab, eps: list[Ep]) -> list[Pod]:
    """One client pod per node, none of the Service's own endpoints (hairpin is its own rule)."""
    mine = {e.pod for e in eps}
    out = []
    for n in lab.nodes:
        pod = next((p for p in lab.pods_on(n.name) if not p.host_network and p.name not in mine),
                   None)
        if pod is not None:
            out.append(pod)
    return out


def _path(proto: str, what: str) -> str:
    return what if proto == "udp" else "/" + what


def _dst(svc: Service, port: ServicePort) -> str:
    return f"svc/{svc.name}:{port.name or port.port}"


def rule_pod_clusterip(lab: Lab) -> list[Check]:
    """Every pod's node DNATs the ClusterIP (TCP and UDP) to one of the Service's endpoints."""
    out = []
    for s, p, eps in _ports(lab):
        proto = p.protocol.lower()
        for pod in _clients(lab, eps) if eps else ():
            out.append(_check("svc-pod-clusterip", pod.name, _dst(s, p), pod.ns, s.cluster_ip,
                              p.port, _path(proto, "hostname"), "any", proto, 3, eps,
                              lab.node(pod.node).ns))
    return out


def rule_node_clusterip(lab: Lab) -> list[Check]:
    """Every node reaches every ClusterIP (its own connections are DNAT'd in nat-output)."""
    return [_check("svc-node-clusterip", n.name, _dst(s, p), n.ns, s.cluster_ip, p.port,
                   _path(p.protocol.lower(), "hostname"), "any", p.protocol.lower(), 2, eps, n.ns)
            for s, p, eps in _ports(lab) if eps for n in lab.nodes]


def rule_nodeport(lab: Lab) -> list[Check]:
    """A pod and a node reach the NodePort on every node's IP; a nodePort nobody has refuses."""
    out = []
    used = {p.node_port for s in lab.services for p in s.ports if p.node_port}
    for s, p, eps in _ports(lab):
        if not p.node_port or not eps:
            continue
        proto = p.protocol.lower()
        clients = _clients(lab, eps)[:1]
        for n in lab.nodes:
            # Local policy: a pod's traffic to another node's NodePort is not masqueraded (the
            # "short-circuit pod traffic" rule), so an endpoint on the pod's own node answers it
            # directly and the pod drops the reply. Kubernetes does the same: prove it on the
            # pod's own node only.
            for pod in clients if s.external_traffic_policy == "Cluster" or \
                    pod_node(clients, n.name) else ():
                out.append(_check("svc-nodeport", pod.name, f"{n.name}:{p.node_port}", pod.ns,
                                  n.ip, p.node_port, _path(proto, "hostname"), "any", proto, 2,
                                  eps, lab.node(pod.node).ns))
            first = lab.nodes[0]
            out.append(_check("svc-nodeport", first.name, f"{n.name}:{p.node_port}", first.ns,
                              n.ip, p.node_port, _path(proto, "hostname"), "any", proto, 2, eps,
                              first.ns))
    if out and proto == "tcp":
        free = next(n for n in range(32767, 30000, -1) if n not in used)
        first = lab.nodes[0]
        out.append(_check("svc-nodeport", first.name, f"{first.name}:{free}", first.ns, first.ip,
                          free, "/hostname", "none", "tcp", 1, (), first.ns, expect=UNREACHABLE,
                          why="a nodePort no Service has is not answered"))
    return out


def pod_node(clients, node: str) -> bool:
    return any(p.node == node for p in clients)


def _outside_sees(lab: Lab) -> tuple[str, ...]:
    return (lab.outside.router,)


def rule_outside(lab: Lab) -> list[Check]:
    """The outside world reaches a Cluster-policy NodePort on every node and every LoadBalancer IP
    (Local-policy NodePorts: rule svc-local)."""
    if lab.outside is None:
        return []
    out = []
    o = lab.outside
    for s, p, eps in _ports(lab):
        if not eps:
            continue
        proto = p.protocol.lower()
        local = s.external_traffic_policy == "Local"
        if p.node_port and not local:
            out += [_check("svc-outside", "outside", f"{n.name}:{p.node_port}", o.ns, n.ip,
                           p.node_port, _path(proto, "hostname"), "any", proto, 2, eps, n.ns)
                    for n in lab.nodes]
        if s.load_balancer_ip:
            via = lab.node(s.announced_by)
            lb_eps = [e for e in eps if e.node == via.name] if local else eps
            out.append(_check("svc-outside", "outside", f"{s.load_balancer_ip}:{p.port}", o.ns,
                              s.load_balancer_ip, p.port, _path(proto, "hostname"), "any", proto,
                              2, lb_eps, via.ns))
    return out


def rule_endpoints(lab: Lab) -> list[Check]:
    """Every endpoint is reached: the set of /hostname answers through the ClusterIP equals the
    endpoint set within a bounded number of tries (a missing one is named)."""
    out = []
    for s, p, eps in _ports(lab):
        if s.session_affinity == "ClientIP":
            continue    # one client sticks to one endpoint: rule svc-affinity
        clients = _clients(lab, eps)[:1]
        proto = p.protocol.lower()
        for pod in clients if eps else ():
            out.append(_check("svc-endpoints", pod.name, _dst(s, p), pod.ns, s.cluster_ip, p.port,
                              _path(proto, "hostname"), "all", proto, 10 * len(eps) + 10, eps,
                              lab.node(pod.node).ns))
    return out


def rule_clientip(lab: Lab) -> list[Check]:
    """Inside the cluster the client's IP is kept: /clientip through the ClusterIP shows the
    client pod's own address."""
    return [_check("svc-clientip", pod.name, _dst(s, p), pod.ns, s.cluster_ip, p.port,
                   _path(p.protocol.lower(), "clientip"), "clientip", p.protocol.lower(), 3, eps,
                   lab.node(pod.node).ns, sees=(pod.ip,))
            for s, p, eps in _ports(lab) if eps and not lab.kube_proxy.masquerade_all
            for pod in _clients(lab, eps)]


def rule_local(lab: Lab) -> list[Check]:
    """externalTrafficPolicy Local from outside: a node with local endpoints keeps the client's IP
    and only they answer; a node without any drops the traffic."""
    if lab.outside is None:
        return []
    o, out = lab.outside, []
    for s, p, eps in _ports(lab):
        if s.external_traffic_policy != "Local" or not p.node_port or not eps:
            continue
        proto = p.protocol.lower()
        for n in lab.nodes:
            local = [e for e in eps if e.node == n.name]
            dst = f"{n.name}:{p.node_port}"
            if local:
                out.append(_check("svc-local", "outside", dst, o.ns, n.ip, p.node_port,
                                  _path(proto, "hostname"), "all", proto, 10 * len(local) + 10,
                                  local, n.ns, why="only the node's own endpoints answer"))
                out.append(_check("svc-local", "outside", dst, o.ns, n.ip, p.node_port,
                                  _path(proto, "clientip"), "clientip", proto, 2, local, n.ns,
                                  sees=_outside_sees(lab), why="Local keeps the client's IP"))
            else:
                out.append(_check("svc-local", "outside", dst, o.ns, n.ip, p.node_port,
                                  _path(proto, "hostname"), "none", proto, 1, (), n.ns,
                                  expect=UNREACHABLE, why="a node without local endpoints drops"))
    return out


def rule_cluster_snat(lab: Lab) -> list[Check]:
    """externalTrafficPolicy Cluster from outside: the endpoint sees the receiving node's address
    (kube-proxy masquerades), never the outside client's."""
    if lab.outside is None:
        return []
    out = []
    for s, p, eps in _ports(lab):
        if s.external_traffic_policy != "Cluster" or not p.node_port or not eps:
            continue
        proto = p.protocol.lower()
        for n in lab.nodes:
            sees = tuple(a for a in (n.ip, n.gateway, n.vtep) if a)
            out.append(_check("svc-cluster-snat", "outside", f"{n.name}:{p.node_port}",
                              lab.outside.ns, n.ip, p.node_port, _path(proto, "clientip"),
                              "clientip", proto, 3, eps, n.ns, sees=sees))
    return out


def rule_affinity(lab: Lab) -> list[Check]:
    """sessionAffinity ClientIP: one client gets one endpoint over 10 tries."""
    return [_check("svc-affinity", pod.name, _dst(s, p), pod.ns, s.cluster_ip, p.port,
                   _path(p.protocol.lower(), "hostname"), "one", p.protocol.lower(), 10, eps,
                   lab.node(pod.node).ns)
            for s, p, eps in _ports(lab) if eps and s.session_affinity == "ClientIP"
            for pod in _clients(lab, eps)[:1]]


def rule_hairpin(lab: Lab) -> list[Check]:
    """Hairpin: an endpoint reaches itself through its own Service (kube-proxy masquerades it, and
    cni0 sends the frame back out the port it came in)."""
    out = []
    for s, p, eps in _ports(lab):
        if s.session_affinity == "ClientIP":
            continue    # affinity may keep an endpoint on another one: no hairpin to prove
        firsts: dict[str, Ep] = {}
        for e in eps:
            firsts.setdefault(e.node, e)
        for e in firsts.values():
            proto = p.protocol.lower()
            out.append(_check("svc-hairpin", e.pod, _dst(s, p), e.ns, s.cluster_ip, p.port,
                              _path(proto, "hostname"), "self", proto, 10 * len(eps) + 10, eps,
                              lab.node(e.node).ns))
    return out


def rule_no_endpoints(lab: Lab) -> list[Check]:
    """A Service with no endpoints refuses at once (kube-proxy's reject), from a pod and a node,
    and at its NodePort from outside."""
    out = []
    for s, p, eps in _ports(lab):
        if eps or p.protocol != "TCP":
            continue
        for pod in _clients(lab, eps)[:1]:
            out.append(_check("svc-no-endpoints", pod.name, _dst(s, p), pod.ns, s.cluster_ip,
                              p.port, "/hostname", "refuse", "tcp", 2, (), lab.node(pod.node).ns,
                              expect=UNREACHABLE))
        n = lab.nodes[0]
        out.append(_check("svc-no-endpoints", n.name, _dst(s, p), n.ns, s.cluster_ip, p.port,
                          "/hostname", "refuse", "tcp", 2, (), n.ns, expect=UNREACHABLE))
        if p.node_port and lab.outside is not None:
            out.append(_check("svc-no-endpoints", "outside", f"{n.name}:{p.node_port}",
                              lab.outside.ns, n.ip, p.node_port, "/hostname", "refuse", "tcp", 2,
                              (), n.ns, expect=UNREACHABLE))
    return out


RULES = {"svc-pod-clusterip": rule_pod_clusterip, "svc-node-clusterip": rule_node_clusterip,
         "svc-nodeport": rule_nodeport, "svc-outside": rule_outside,
         "svc-endpoints": rule_endpoints, "svc-clientip": rule_clientip, "svc-local": rule_local,
         "svc-cluster-snat": rule_cluster_snat, "svc-affinity": rule_affinity,
         "svc-hairpin": rule_hairpin, "svc-no-endpoints": rule_no_endpoints}

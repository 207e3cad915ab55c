"""Kubernetes Services, the way kube-proxy builds them: the scenario's `services:` (Kubernetes' own
field names: clusterIP, targetPort, nodePort, externalTrafficPolicy, sessionAffinity), the
ClusterIPs, nodePorts and LoadBalancer IPs they get, the endpoints they select among the lab's pods,
and in every node's namespace kube-proxy's `table ip kube-proxy` (kubeproxy.py writes it).

Every node also gets, explicitly:
- `net.bridge.bridge-nf-call-iptables=1`: bridged traffic on cni0 goes through netfilter, so the
  reply of an endpoint on the same bridge as its client is un-DNAT'd (else the client sees the
  pod's IP answer and resets). Per namespace since Linux 5.3; kube-proxy's masqueradeAll
  (`kubeProxy: {masqueradeAll: true}`) lives without it, at the price of the client IP;
- hairpin mode on every pod's cni0 port, so an endpoint reaches itself through its Service;
- a route to the Service range when it has no default route (a node's own connections are
  DNAT'd in nat-output, after the route lookup: without a route they never get there).
LoadBalancer IPs are announced as MetalLB's BGP mode does: a route on the outside world's router
(`<lab>-outside`) to the IP via a node that has an endpoint (with Local policy: a local one).
Verify rules: svcchecks.py.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, replace
from typing import Any, Literal, Optional, Sequence, Union

from pydantic import Field, field_validator

from ..core.feature import Feature, Needs, NotOnHost
from ..core.lab import Lab, Pod
from ..core.ops import DevRouteAdd, HairpinOn, NftApply, RouteAdd, Sysctl
from ..core.schema import Build, Spec, check_cidr, name_field
from . import kubeproxy, svcchecks
# The model, here too for the feature's users (scale, the CLI, ingress).
from .svcmodel import AFFINITY_TIMEOUT, BRIDGE_NF, Endpoint, KubeProxy, Service, \
    ServicePort, endpoints, matches  # noqa: F401

SERVICE_CIDR = "10.96.0.0/12"       # kubeadm's default --service-cluster-ip-range
NODE_PORT_RANGE = (30000, 32767)    # kube-apiserver's default --service-node-port-range
RESERVED_OFFSETS = (1, 10)          # 10.96.0.1: the API Service; 10.96.0.10: kube-dns
BRIDGE_NF_PATH = "/proc/sys/net/bridge/bridge-nf-call-iptables"   # absent: br_netfilter not loaded


class ServicePortSpec(Spec):
    name: str = ""
    port: int
    targetPort: Union[int, str, None] = None
    protocol: Literal["TCP", "UDP"] = "TCP"
    nodePort: Optional[int] = None


class ClientIPSpec(Spec):
    timeoutSeconds: int = Field(default=AFFINITY_TIMEOUT, ge=1, le=86400)


class AffinityConfigSpec(Spec):
    clientIP: ClientIPSpec = ClientIPSpec()


class ServiceSpec(Spec):
    name: str
    namespace: str = "default"
    type: Literal["ClusterIP", "NodePort", "LoadBalancer"] = "ClusterIP"
    clusterIP: Optional[str] = None
    selector: dict[str, str] = {}
    ports: list[ServicePortSpec] = []
    externalTrafficPolicy: Literal["Cluster", "Local"] = "Cluster"
    sessionAffinity: Literal["None", "ClientIP"] = "None"
    sessionAffinityConfig: AffinityConfigSpec = AffinityConfigSpec()

    _name = field_validator("name")(classmethod(name_field))


class KubeProxySpec(Spec):
    """kube-proxy's own options: masqueradeAll SNATs every ClusterIP connection (the client IP is
    lost) and so needs no bridge netfilter."""
    masqueradeAll: bool = False




def all_endpoints(lab: Lab) -> dict[str, tuple[Endpoint, ...]]:
    return {s.key: endpoints(s, lab.pods) for s in lab.services}


def rulesets(lab: Lab) -> dict[str, str]:
    """Every node's kube-proxy transaction (`nft -f`), by node name, for the lab's pods now."""
    kp = lab.kube_proxy
    return kubeproxy.node_rulesets([(n.name, n.ip) for n in lab.nodes], kp.cluster_cidr,
                                   lab.services, all_endpoints(lab),
                                   masquerade_all=kp.masquerade_all)


def announcer(svc: Service, eps: Sequence[Endpoint], nodes: Sequence[str]) -> str:
    """The node the outside world routes a LoadBalancer IP to: the first (in node order) with an
    endpoint; with Local policy it must have a local one. None has: the first node."""
    have = {e.node for e in eps}
    return next((n for n in nodes if n in have), nodes[0] if nodes else "")


# ---------------------------------------------------------------- the feature


class Services(Feature):
    name = "services"
    schema = {"services": (list[ServiceSpec], []),
              "network.serviceCIDR": (str, SERVICE_CIDR),
              "network.loadBalancerPool": (Optional[str], None),
              "kubeProxy": (KubeProxySpec, KubeProxySpec())}

    def build(self, spec: Any, b: Build) -> None:
        if not spec.services and not b.scratch.get("extra_services"):   # ranges matter only to Services
            b.parts["services"] = ()
            b.parts["kube_proxy"] = None
            b.parts["addon_services"] = ()
            return
        kp, services = _build(spec, b)
        b.parts["services"] = services
        b.parts["kube_proxy"] = kp
        # netlab's own add-ons' Services (kube-dns): their verify rules are their feature's
        b.parts["addon_services"] = tuple(f"{s.namespace}/{s.name}"
                                          for s in b.scratch.get("extra_services", ()))

    def ops(self, lab: Lab, phase: str) -> list:
        if not lab.services:
            return []
        if phase == "links":
            ops: list = []
            for node in lab.nodes:
                if not lab.kube_proxy.masquerade_all:
                    ops.append(Sysctl(node.ns, BRIDGE_NF, "1"))
                ops += [HairpinOn(node.ns, p.host_veth) for p in lab.pods_on(node.name)
                        if not p.host_network]
            return ops
        if phase == "routes":
            ops = []
            if lab.outside is None:
                ops += [DevRouteAdd(n.ns, lab.kube_proxy.service_cidr, "eth0") for n in lab.nodes]
            ops += self.reload(lab)
            ops += lb_routes(lab)
            return ops
        return []

    def reload(self, lab: Lab) -> list:
        """Every node's kube-proxy table for the pods as they are now (after scale/delete)."""
        if not lab.services:
            return []
        return [NftApply(lab.node(name).ns, text) for name, text in rulesets(lab).items()]

    def node_ops(self, lab: Lab, node: Any, underlay: str, phase: str) -> list:
        if lab.services and phase == "links":
            raise NotOnHost("Services are not built on a real host yet: kube-proxy's table "
                            "would change the host's own nftables")
        return []

    def rules(self) -> dict:
        return svcchecks.RULES

    def probes(self) -> dict:
        return {svcchecks.METHOD: svcchecks.Probe()}

    def faults(self) -> list:
        from . import svcfaults     # its make() asks this module for the reload ops
        return svcfaults.FAULTS

    def needs(self, lab: Lab) -> Needs:
        if not lab.services:
            return Needs()
        checks = [] if lab.kube_proxy.masquerade_all else [bridge_netfilter_problem]
        return Needs(tools=["nft", "conntrack"], checks=checks)

    def show(self, lab: Lab, status: Any) -> dict:
        if not lab.services:
            return {}
        eps = all_endpoints(lab)
        return {"services": [service_row(s, eps[s.key]) for s in lab.services]}

    def render(self, data: dict) -> list[Any]:
        if not data.get("services"):
            return []
        rows = [(s["namespace"], s["name"], s["type"], s["clusterIP"] or "None",
                 s["externalIP"] or "<none>", s["ports"], ", ".join(s["endpoints"]) or "<none>")
                for s in data["services"]]
        lines: list[Any] = ["", (("NAMESPACE", "NAME", "TYPE", "CLUSTER-IP", "EXTERNAL-IP",
                                  "PORT(S)", "ENDPOINTS"), rows)]
        for s in data["services"]:
            if s["externalIP"]:
                lines.append(f"LoadBalancer {s['externalIP']} ({s['namespace']}/{s['name']}) is "
                             f"announced by a route on the outside world's router via node "
                             f"{s['announcedBy']} (like MetalLB's BGP mode)")
        return lines


def ports_text(svc: Service) -> str:
    """kubectl's PORT(S) column: 80/TCP, or 80:30080/TCP with a nodePort."""
    return ",".join(f"{p.port}:{p.node_port}/{p.protocol}" if p.node_port else
                    f"{p.port}/{p.protocol}" for p in svc.ports)


def service_row(s: Service, eps: Sequence[Endpoint]) -> dict:
    return {"name": s.name, "namespace": s.namespace, "type": s.type, "clusterIP": s.cluster_ip,
            "externalIP": s.load_balancer_ip, "ports": ports_text(s),
            "endpoints": list(dict.fromkeys(e.address for e in eps)),
            "externalTrafficPolicy": s.external_traffic_policy,
            "sessionAffinity": s.session_affinity, "announcedBy": s.announced_by}


def lb_routes(lab: Lab) -> list:
    """The outside world's routes to LoadBalancer IPs, each via the node that announces it."""
    return [RouteAdd(lab.outside.ns, f"{s.load_balancer_ip}/32", lab.node(s.announced_by).ip,
                     "eth0") for s in lab.services if s.load_balancer_ip]


def bridge_netfilter_problem() -> str:
    """br_netfilter is a module on many hosts (stock Debian): without it there is no
    /proc/sys/net/bridge, and a pod calling a Service whose endpoint is on its own node never
    gets the reply un-DNAT'd."""
    import os
    if os.path.exists(BRIDGE_NF_PATH):
        return ""
    return ("bridge netfilter is missing (no /proc/sys/net/bridge: the br_netfilter module is not "
            "loaded): a pod calling a Service whose endpoint sits on its own node would lose the "
            "replies; load it with `sudo modprobe br_netfilter` (setup.sh does, and persists it "
            "in /etc/modules-load.d), or set `kubeProxy: {masqueradeAll: true}` in the scenario")


# ---------------------------------------------------------------- checking and allocation


def _build(spec: Any, b: Build) -> tuple[KubeProxy, tuple[Service, ...]]:
    where, net = b.where, spec.network
    # Services of netlab's own add-ons (kube-dns, the ingress controller's): other features put
    # their ServiceSpec in b.scratch["extra_services"] before this one builds.
    specs = list(spec.services) + list(b.scratch.get("extra_services", ()))
    pods = b.fields["pods"]
    cluster = b.scratch["cluster"]
    try:
        check_cidr(net.serviceCIDR)
    except ValueError as e:
        where.fail(("network", "serviceCIDR"), f"network.serviceCIDR: {e}")
    cidr = ipaddress.IPv4Network(net.serviceCIDR)
    for other, what in [(cluster, "network.podCIDR")] + [(s, "the underlay")
                                                          for s in b.scratch["segments"]]:
        if cidr.overlaps(other):
            where.fail(("network", "serviceCIDR"), f"network.serviceCIDR {cidr} overlaps {what} "
                                                   f"{other}: pick a range apart, like 10.96.0.0/12")
    pool: list[str] = []
    if net.loadBalancerPool is not None:
        try:
            lb = ipaddress.IPv4Network(net.loadBalancerPool)
        except ValueError:
            where.fail(("network", "loadBalancerPool"), f"network.loadBalancerPool "
                                                        f"'{net.loadBalancerPool}' is not an IPv4 "
                                                        f"subnet: write it like 203.0.113.200/29")
        for other, what in [(cidr, "network.serviceCIDR"), (cluster, "network.podCIDR")] + \
                [(s, "the underlay") for s in b.scratch["segments"]]:
            if lb.overlaps(other):
                where.fail(("network", "loadBalancerPool"), f"network.loadBalancerPool {lb} "
                           f"overlaps {what} {other}: use addresses apart, like 203.0.113.200/29")
        pool = [str(a) for a in (lb.hosts() if lb.prefixlen < 31 else lb)]
    kube_ns = {n.name for n in b.parts["kube_namespaces"]}
    templates = [(d.namespace, {**d.labels}) for d in spec.deployments]
    seen: dict[tuple[str, str], int] = {}
    taken_ips: dict[str, str] = {}
    taken_ports: dict[tuple[int, str], str] = {}
    for i, s in enumerate(specs):
        loc = ("services", i)
        who = f"service '{s.namespace}/{s.name}'"
        if s.namespace not in kube_ns:
            where.fail(loc + ("namespace",), f"{who}: namespace '{s.namespace}' is not declared: "
                                             f"add it to `namespaces:`")
        if (s.namespace, s.name) in seen:
            where.fail(loc + ("name",), f"{who} is defined twice (line "
                                        f"{where.line(('services', seen[(s.namespace, s.name)]))}): "
                                        f"rename one")
        seen[(s.namespace, s.name)] = i
        if not s.selector:
            where.fail(loc, f"{who} has no selector: add `selector: {{app: ...}}` naming its pods' "
                            f"labels")
        if not any(p.namespace == s.namespace and matches(s.selector, p.labels) for p in pods) \
                and not any(ns == s.namespace and matches(s.selector, lab) for ns, lab in templates):
            where.fail(loc + ("selector",), f"{who}: selector {dict(s.selector)} matches no pod "
                                            f"or deployment in namespace '{s.namespace}': fix the "
                                            f"labels")
        if s.externalTrafficPolicy == "Local" and s.type == "ClusterIP":
            where.fail(loc + ("externalTrafficPolicy",), f"{who}: externalTrafficPolicy Local "
                                                         f"needs type NodePort or LoadBalancer")
        if s.type == "LoadBalancer" and b.parts.get("outside") is None:
            where.fail(loc + ("type",), f"{who}: type LoadBalancer needs an outside world to be "
                                        f"reached from: add `outside: true`")
        if s.type == "LoadBalancer" and not pool:
            where.fail(loc + ("type",), f"{who}: type LoadBalancer needs network.loadBalancerPool: "
                                        f"add one, like 203.0.113.200/29")
        _check_ports(s, loc, who, where, pods, taken_ports)
        if s.clusterIP == "None" and s.type != "ClusterIP":
            where.fail(loc + ("clusterIP",), f"{who}: a headless Service (clusterIP: None) is of "
                                             f"type ClusterIP")
        if s.clusterIP is not None and s.clusterIP != "None":     # "None": headless
            cloc = loc + ("clusterIP",)
            try:
                ip = ipaddress.IPv4Address(s.clusterIP)
            except ValueError:
                where.fail(cloc, f"{who}: clusterIP '{s.clusterIP}' is not an IPv4 address: use "
                                 f"one in {cidr} or leave it out")
            if ip not in cidr or ip in (cidr.network_address, cidr.broadcast_address):
                where.fail(cloc, f"{who}: clusterIP {ip} is outside serviceCIDR {cidr}: use one "
                                 f"inside it or leave it out to allocate one")
            if str(ip) in taken_ips:
                where.fail(cloc, f"{who}: clusterIP {ip} is already taken by service "
                                 f"{taken_ips[str(ip)]}: pick another or leave it out")
            taken_ips[str(ip)] = f"{s.namespace}/{s.name}"

    reserved = {str(cidr.network_address + k) for k in RESERVED_OFFSETS}
    free_ips = (str(a) for a in cidr.hosts() if str(a) not in taken_ips and str(a) not in reserved)
    used_ports = {p for p, _ in taken_ports}
    free_ports = (n for n in range(NODE_PORT_RANGE[0], NODE_PORT_RANGE[1] + 1)
                  if n not in used_ports)
    free_lb = iter(pool)
    node_names = [n.name for n in b.fields["nodes"]]
    out = []
    for i, s in enumerate(specs):
        headless = s.clusterIP == "None"
        cluster_ip = None if headless else \
            s.clusterIP and str(ipaddress.IPv4Address(s.clusterIP)) or next(free_ips, None)
        if cluster_ip is None and not headless:
            b.where.fail(("network", "serviceCIDR"), f"serviceCIDR {cidr} is full: make it larger")
        ports = []
        for p in s.ports:
            node_port = p.nodePort
            if s.type != "ClusterIP" and node_port is None:
                node_port = next(free_ports, None)
                if node_port is None:
                    where.fail(("services", i), "the nodePort range 30000-32767 is full")
            ports.append(ServicePort(p.name, p.port, p.targetPort if p.targetPort is not None
                                     else p.port, p.protocol, node_port))
        svc = Service(s.name, s.namespace, s.type, cluster_ip, tuple(sorted(s.selector.items())),
                      tuple(ports), s.externalTrafficPolicy, s.sessionAffinity,
                      s.sessionAffinityConfig.clientIP.timeoutSeconds)
        if s.type == "LoadBalancer":
            lb_ip = next(free_lb, None)
            if lb_ip is None:
                where.fail(("services", i, "type"), f"network.loadBalancerPool "
                                                    f"{net.loadBalancerPool} has no address left "
                                                    f"for service '{s.namespace}/{s.name}': make "
                                                    f"it larger")
            svc = replace(svc, load_balancer_ip=lb_ip,
                          announced_by=announcer(svc, endpoints(svc, pods), node_names))
        out.append(svc)
    kp = KubeProxy(str(cidr), str(cluster), spec.kubeProxy.masqueradeAll, net.loadBalancerPool)
    return kp, tuple(out)


def _check_ports(s: ServiceSpec, loc, who: str, where, pods, taken: dict) -> None:
    if not s.ports:
        where.fail(loc, f"{who} has no ports: add `ports: [{{port: 80, targetPort: 8080}}]`")
    if len(s.ports) > 1 and any(not p.name for p in s.ports):
        where.fail(loc + ("ports",), f"{who} has several ports: give each one a `name:`")
    names, pairs = set(), set()
    selected = [p for p in pods if p.namespace == s.namespace and matches(s.selector, p.labels)]
    for j, p in enumerate(s.ports):
        ploc = loc + ("ports", j)
        if p.name and (len(p.name) > 15 or not name_ok(p.name)):
            where.fail(ploc + ("name",), f"{who}: port name '{p.name}' must be lowercase letters, "
                                         f"digits and '-', at most 15 characters")
        if p.name in names:
            where.fail(ploc + ("name",), f"{who}: port name '{p.name}' is used twice: rename one")
        names.add(p.name)
        if not 1 <= p.port <= 65535:
            where.fail(ploc + ("port",), f"{who}: port {p.port} is out of range: use 1-65535")
        if (p.port, p.protocol) in pairs:
            where.fail(ploc + ("port",), f"{who}: {p.port}/{p.protocol} is listed twice: remove one")
        pairs.add((p.port, p.protocol))
        if isinstance(p.targetPort, int) and not 1 <= p.targetPort <= 65535:
            where.fail(ploc + ("targetPort",), f"{who}: targetPort {p.targetPort} is out of range: "
                                               f"use 1-65535")
        if isinstance(p.targetPort, str):
            known = {pp.name for pod in selected for pp in pod.ports if pp.name}
            if selected and p.targetPort not in known:
                hint = f"one of {', '.join(sorted(known))}" if known else "a number"
                where.fail(ploc + ("targetPort",), f"{who}: targetPort '{p.targetPort}' is no "
                                                   f"container port of the pods it selects: use "
                                                   f"{hint}")
        if p.nodePort is not None:
            nloc = ploc + ("nodePort",)
            if s.type == "ClusterIP":
                where.fail(nloc, f"{who}: nodePort needs `type: NodePort` or LoadBalancer: remove "
                                 f"it or change the type")
            lo, hi = NODE_PORT_RANGE
            if not lo <= p.nodePort <= hi:
                where.fail(nloc, f"{who}: nodePort {p.nodePort} is outside {lo}-{hi}: pick one in "
                                 f"range or leave it out to allocate one")
            if (p.nodePort, p.protocol) in taken:
                where.fail(nloc, f"{who}: nodePort {p.nodePort}/{p.protocol} is already used by "
                                 f"service {taken[(p.nodePort, p.protocol)]}: pick another or "
                                 f"leave it out")
            taken[(p.nodePort, p.protocol)] = f"{s.namespace}/{s.name}"


def name_ok(name: str) -> bool:
    try:
        name_field(None, name)
        return True
    except ValueError:
        return False

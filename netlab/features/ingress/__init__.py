"""Ingress and Gateway API through a real nginx: the scenario's `ingresses:`, `gateways:` and
`httproutes:` (Kubernetes' shapes) become one nginx.conf, served by Debian's nginx in a pod of
the lab, `ingress-nginx/ingress-nginx-controller-<hash>` on the first node, exposed by a Service
(`ingress-nginx/ingress-nginx-controller`: LoadBalancer when the lab has an outside world and a
loadBalancerPool, else NodePort; externalTrafficPolicy Local, as ingress-nginx's chart advises,
so the client's address reaches nginx and X-Forwarded-For carries it).

Upstreams are the backend Services' ClusterIP:port (conf.py says why), computed in ops() from
the Services the Services feature built (it builds after this one). The conf is a WriteFile in the
lab's state directory (`<state>/ingress/nginx.conf`, before the processes phase); the controller
pod's one container is nginx itself (`daemon off`), started by the pods feature, so `netlab show`
counts it and `down` stops it with the pod. Everything nginx writes stays in that directory.

Backend pods answer every path with their name: the netexec containers of the pods the backend
Services select run with --any-path (like the e2e suites' agnhost behind an ingress).

Modules: spec (sections, validate), table (attachment, routing table, route_request), conf
(nginx.conf, get rows, argv), requests (the requests that prove it), checks (verify rules
`ingress` and `gateway`, probe method "ingress"), live (the running conf read back, against the
model's), faults (the break-it exercise ingress-path-type).
"""

from __future__ import annotations

import ipaddress
import os
from dataclasses import dataclass, replace
from typing import Any, Optional

from ...core.feature import Feature, Needs
from ...core.lab import Container, ContainerPort, Lab, Pod, ifname_for, state_dir
from ...core.ops import WriteFile
from ...core.schema import Build
from .. import deployments as D
from ..services import ServicePortSpec, ServiceSpec, matches
from . import conf as C
from .spec import GatewaySpec, HTTPRouteSpec, IngressConfig, IngressSpec, validate
from .table import RoutingTable, build_table

NAMESPACE = "ingress-nginx"
SERVICE = "ingress-nginx-controller"
LABELS = (("app.kubernetes.io/name", "ingress-nginx"),)
LISTEN_PORT = 80


@dataclass(frozen=True)
class Controller:
    """The lab's ingress controller: its config, its pod, its Service, and where its files are."""
    config: IngressConfig
    pod: str
    service: str                 # namespace/name of its Service
    state: str                   # the directory nginx writes in (pid, logs, temp files)
    conf_path: str

    @property
    def service_name(self) -> str:
        return self.service.split("/", 1)[1]


def controller_name(cfg: IngressConfig) -> str:
    """ingress-nginx-controller-<hash>: the hash is the rules', so a changed config is a new pod,
    as a new ReplicaSet would make."""
    return f"{SERVICE}-{D.safe_encode(str(D._fnv32a(cfg.model_dump_json().encode())))}"


def resolver(lab: Lab):
    """resolve(namespace, service, port) -> "ClusterIP:port" | None, from the lab's Services."""
    def resolve(ns: str, name: str, port) -> Optional[str]:
        svc = next((s for s in lab.services if s.namespace == ns and s.name == name), None)
        if svc is None or svc.headless:
            return None
        p = next((p for p in svc.ports if p.protocol == "TCP"
                  and (p.port == port if isinstance(port, int) else p.name == port)), None)
        return f"{svc.cluster_ip}:{p.port}" if p else None
    return resolve


def table_of(lab: Lab) -> RoutingTable:
    return build_table(lab.ingress.config, resolver(lab), listen_port=LISTEN_PORT)


def conf_text(lab: Lab, table: Optional[RoutingTable] = None) -> str:
    """The controller's nginx.conf: the lab's routing table's, or `table`'s (a fault's)."""
    ctl = lab.ingress
    return C.nginx_conf(table or table_of(lab), ctl.state,
                        comment=f"lab {lab.name}, controller pod {NAMESPACE}/{ctl.pod}")


def service_of(lab: Lab):
    return next(s for s in lab.services if s.key == lab.ingress.service)


def address_of(lab: Lab) -> tuple[str, dict[int, int]]:
    """Where the controller is reached from outside: (LB IP, {port: port}) or (first node's IP,
    {port: nodePort}) — Local policy: the node that has the controller."""
    svc = service_of(lab)
    if svc.load_balancer_ip:
        return svc.load_balancer_ip, {p.port: p.port for p in svc.ports}
    node = lab.node(lab.pod(lab.ingress.pod).node)
    return node.ip, {p.port: p.node_port for p in svc.ports}


class Ingress(Feature):
    name = "ingress"
    schema = {"ingresses": (list[IngressSpec], []), "gateways": (list[GatewaySpec], []),
              "httproutes": (list[HTTPRouteSpec], [])}

    def build(self, spec: Any, b: Build) -> None:
        if not (spec.ingresses or spec.gateways or spec.httproutes):
            b.parts["ingress"] = None
            return
        b.parts["ingress"] = _build(spec, b)

    def ops(self, lab: Lab, phase: str) -> list:
        if lab.ingress is None or phase != "routes":
            return []
        # Before the processes phase, where the pods feature starts nginx on it.
        return [WriteFile(lab.ingress.conf_path, conf_text(lab))]

    def node_ops(self, lab: Lab, node: Any, underlay: str, phase: str) -> list:
        return []      # Services refuse --node first (NotOnHost): the controller needs them

    def rules(self) -> dict:
        from . import checks
        return {"ingress": checks.rule_ingress, "gateway": checks.rule_gateway}

    def probes(self) -> dict:
        from . import checks
        return {checks.METHOD: checks.HttpProbe()}

    def faults(self) -> list:
        from . import faults
        return faults.FAULTS

    def needs(self, lab: Lab) -> Needs:
        return Needs(tools=["curl"]) if lab.ingress is not None else Needs()

    def show(self, lab: Lab, status: Any) -> dict:
        if lab.ingress is None:
            return {}
        ctl = lab.ingress
        addr, ports = address_of(lab)
        return {"ingress": {"controller": f"{NAMESPACE}/{ctl.pod}", "service": ctl.service,
                            "address": addr, "ports": {str(k): v for k, v in ports.items()},
                            "conf": ctl.conf_path, "routes": C.describe(table_of(lab))}}

    def render(self, data: dict) -> list[Any]:
        if "ingress" not in data:
            return []
        d = data["ingress"]
        ports = ", ".join(f"{k}->{v}" if str(k) != str(v) else str(k)
                          for k, v in d["ports"].items())
        return [f"\ningress controller {d['controller']} (a real nginx, conf {d['conf']}), "
                f"reached at {d['address']} port {ports} through Service {d['service']}"] + \
            [f"  {line}" for line in d["routes"]]


def _build(spec: Any, b: Build) -> Controller:
    cfg = IngressConfig(ingresses=spec.ingresses, gateways=spec.gateways,
                        httproutes=spec.httproutes)
    ports: dict[tuple[str, str], set] = {}
    for s in spec.services:
        ports[(s.namespace, s.name)] = {p.port for p in s.ports} | {p.name for p in s.ports
                                                                     if p.name}
    problems = validate(cfg, ports)
    if problems:
        b.where.fail(problems[0].loc, problems[0].message)

    nodes = b.fields["nodes"]
    node = nodes[0]
    pods = list(b.fields["pods"])
    name = controller_name(cfg)
    b.claim(name, ("ingresses",) if spec.ingresses else ("gateways",))
    # The highest free host of the first node's pod subnet (the DNS pod, built before, may hold
    # the last one): the pods feature gives addresses from the first host up, and `scale`
    # re-parses the lab, so the controller keeps its address.
    subnet = ipaddress.IPv4Network(node.pod_cidr)
    taken = {p.ip for p in pods if p.node == node.name}
    ip = next((str(subnet.broadcast_address - k) for k in range(1, 64)
               if str(subnet.broadcast_address - k) not in taken), None)
    if ip is None:
        b.where.fail(("nodes", 0), f"node '{node.name}' has no address left near the end of its "
                                   f"pod subnet {subnet} for the ingress controller: use a larger "
                                   f"podCIDR")
    veth = ifname_for(name, "veth-")
    b.scratch["veths"][node.name].add(veth)
    sd = os.path.join(state_dir(b.lab), "ingress")
    conf_path = os.path.join(sd, "nginx.conf")
    listen = sorted({LISTEN_PORT} | {lst.port for g in cfg.gateways for lst in g.listeners})
    pod = Pod(name=name, ns=f"{b.lab}-{name}", node=node.name, ip=ip, host_veth=veth,
              containers=(Container("controller", tuple(C.nginx_argv(conf_path, sd)), None,
                                    None),),
              mtu=b.fields["mtu"], namespace=NAMESPACE, labels=LABELS,
              ports=tuple(ContainerPort(p, "http" if p == LISTEN_PORT else f"http-{p}")
                          for p in listen))
    b.fields["pods"] = tuple(_any_path(pods, spec.services, cfg)) + (pod,)
    b.namespaces.append(pod.ns)
    kube_ns = b.parts["kube_namespaces"]
    if NAMESPACE not in {n.name for n in kube_ns}:
        b.parts["kube_namespaces"] = tuple(kube_ns) + (
            D.KubeNamespace(NAMESPACE, ((D.NAME_LABEL, NAMESPACE),)),)

    lb = spec.outside is not None and spec.network.loadBalancerPool is not None
    svc = ServiceSpec(name=SERVICE, namespace=NAMESPACE,
                      type="LoadBalancer" if lb else "NodePort", selector=dict(LABELS),
                      externalTrafficPolicy="Local",
                      ports=[ServicePortSpec(name="http" if p == LISTEN_PORT else f"http-{p}",
                                             port=p, targetPort=p) for p in listen])
    b.scratch["extra_services"] = list(b.scratch.get("extra_services", ())) + [svc]
    # The Services checks ask netexec's /hostname and /clientip; nginx answers neither: the
    # ingress and gateway rules prove this Service.
    b.parts["addon_services"] = tuple(b.parts.get("addon_services", ())) + \
        (f"{NAMESPACE}/{SERVICE}",)
    return Controller(cfg, name, f"{NAMESPACE}/{SERVICE}", sd, conf_path)


def _backends(cfg: IngressConfig) -> set[tuple[str, str]]:
    out = set()
    for ing in cfg.ingresses:
        if ing.defaultBackend:
            out.add((ing.namespace, ing.defaultBackend.service.name))
        for rule in ing.rules:
            for p in rule.http.paths if rule.http else []:
                out.add((ing.namespace, p.backend.service.name))
    for rt in cfg.httproutes:
        for rule in rt.rules:
            out |= {(b.namespace or rt.namespace, b.name) for b in rule.backendRefs}
    return out


def _any_path(pods: list[Pod], services: list, cfg: IngressConfig) -> list[Pod]:
    """The pods behind an Ingress or HTTPRoute answer every path with their name (--any-path)."""
    wanted = _backends(cfg)
    selectors = [(s.namespace, s.selector) for s in services if (s.namespace, s.name) in wanted]
    out = []
    for p in pods:
        if any(ns == p.namespace and matches(sel, p.labels) for ns, sel in selectors):
            p = replace(p, containers=tuple(
                replace(c, argv=c.argv + ("--any-path",))
                if c.image == "netexec" and "--any-path" not in c.argv else c
                for c in p.containers))
        out.append(p)
    return out

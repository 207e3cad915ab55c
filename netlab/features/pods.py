"""Pods, the Kubernetes model: each pod its own namespace, `eth0` one end of a veth pair whose
other end is on the node's `cni0`, an address from the node's pod subnet and a default route via
cni0; its containers are processes in that one namespace. `hostNetwork: true` puts a pod's
processes in the node's namespace instead.

Its verify rules are the Kubernetes networking model's: every pod has its own IP, pod to pod on
one node and across nodes with no NAT, node to pod and pod to node directly, localhost in a pod.
"""

from __future__ import annotations

import ipaddress
from typing import Any, Literal, Optional

from pydantic import Field, field_validator

from ..core.feature import Feature, Needs
from ..core.lab import DEFAULT_PORT, NETEXEC, UNDERLAY_MTU, Container, ContainerPort, Lab, \
    Node, Pod, ifname_for, netexec_argv
from ..core.ops import HERE, AddrAdd, LinkMtu, LinkUp, RouteAdd, Spawn, VethAdd, argv_of
from ..core.schema import Build, Loc, Spec, Where, did_you_mean, ipv4_field, is_host, name_field
from . import deployments as D
from ..verify.checks import Check, node_end, node_server, pod_end, reach, servers_of
from ..verify.coverage import MESH, Cover, between, within


class ContainerPortSpec(Spec):
    """One of a container's `ports:` (Kubernetes' ContainerPort): a named targetPort finds it."""
    containerPort: int = Field(ge=1, le=65535)
    name: Optional[str] = None
    protocol: Literal["TCP", "UDP"] = "TCP"


class ContainerSpec(Spec):
    name: str
    image: Optional[Literal["netexec"]] = None
    command: Optional[list[str]] = None
    port: Optional[int] = Field(default=None, ge=1, le=65535)
    ports: list[ContainerPortSpec] = []

    _name = field_validator("name")(classmethod(name_field))

    @field_validator("command")
    @classmethod
    def _command(cls, v):
        if v is not None and (not v or any(not s for s in v)):
            raise ValueError("a command is a list of words, like [sleep, infinity]")
        return v


class PodSpec(Spec):
    name: str
    node: str
    ip: Optional[str] = None
    containers: list[ContainerSpec] = []
    hostNetwork: bool = False
    namespace: str = "default"
    labels: dict[str, str] = {}
    # Which resolv.conf the pod gets when the lab has cluster DNS (features/dns): kubelet's choice
    dnsPolicy: Literal["ClusterFirst", "ClusterFirstWithHostNet", "Default"] = "ClusterFirst"

    _name = field_validator("name")(classmethod(name_field))
    _ip = field_validator("ip")(classmethod(ipv4_field))


class NamespaceSpec(Spec):
    name: str
    labels: dict[str, str] = {}

    _name = field_validator("name")(classmethod(name_field))


class DeploymentSpec(Spec):
    """A deployment: `replicas` pods from one template, spread over the nodes."""
    name: str
    namespace: str = "default"
    replicas: int = Field(default=1, ge=0, le=1000)
    labels: dict[str, str] = {}
    containers: list[ContainerSpec] = Field(min_length=1)

    _name = field_validator("name")(classmethod(name_field))


def _namespaces_field(v):
    # `namespaces: [default, shop]` or `- {name: shop, labels: {...}}`
    return [{"name": x} if isinstance(x, str) else x for x in v] if isinstance(v, list) else v


class Pods(Feature):
    name = "pods"
    schema = {"pods": (list[PodSpec], []), "namespaces": (list[NamespaceSpec], []),
              "deployments": (list[DeploymentSpec], [])}
    before = {"namespaces": _namespaces_field}

    def build(self, spec: Any, b: Build) -> None:
        where, nodes, mtu = b.where, b.fields["nodes"], b.fields["mtu"]
        by_name = {n.name: n for n in nodes}
        taken: dict[str, dict[str, Loc]] = {n.name: {} for n in nodes}
        veths: dict[str, set[str]] = b.scratch["veths"]
        kube_ns = D.namespaces(spec.namespaces)
        specs = [(("pods", i), p, "") for i, p in enumerate(spec.pods)]
        specs += _replicas(spec, b, [n.name for n in nodes], {n.name for n in kube_ns})
        for loc, p, _ in specs:
            b.claim(p.name, loc + ("name",))
            if p.namespace not in {n.name for n in kube_ns}:
                where.fail(loc + ("namespace",), f"pod '{p.name}': namespace '{p.namespace}' is "
                                                 f"not declared: add it to `namespaces:`")
            if p.node not in by_name:
                fix = did_you_mean(p.node, list(by_name), f"use one of {', '.join(by_name)}")
                where.fail(loc + ("node",), f"pod '{p.name}' is on unknown node '{p.node}': {fix}")
            node = by_name[p.node]
            if p.hostNetwork:
                if p.ip is not None:
                    where.fail(loc + ("ip",), f"pod '{p.name}' has hostNetwork: true and so the node's "
                                              f"IP {node.ip}: remove `ip:`")
                _check_containers(p, loc, where)
                continue
            if p.ip is not None:
                subnet = ipaddress.IPv4Network(node.pod_cidr)
                ip = ipaddress.IPv4Address(p.ip)
                if not is_host(ip, subnet):
                    where.fail(loc + ("ip",), f"pod '{p.name}': ip {ip} is outside node '{node.name}''s "
                                              f"podCIDR {subnet}: pick a host address inside it")
                if p.ip == node.gateway:
                    where.fail(loc + ("ip",), f"pod '{p.name}': ip {ip} is cni0's own address on "
                                              f"'{node.name}': pick another")
                if p.ip in taken[node.name]:
                    where.fail(loc + ("ip",), f"pod '{p.name}': ip {ip} is already used on line "
                                              f"{where.line(taken[node.name][p.ip])}: give each pod its own")
                taken[node.name][p.ip] = loc + ("ip",)
            veth = ifname_for(p.name, "veth-")
            if veth in veths[node.name]:
                where.fail(loc + ("name",), f"pod '{p.name}' would get the same interface name "
                                            f"'{veth}' as another pod on '{node.name}': rename it")
            veths[node.name].add(veth)
            _check_containers(p, loc, where)

        pods: list[Pod] = []
        retired = set(b.scratch.get("live", {}).get("retired", ()))
        free = {n.name: _free_hosts(ipaddress.IPv4Network(n.pod_cidr), taken[n.name], retired)
                for n in nodes}
        for loc, p, deployment in specs:
            kube = dict(namespace=p.namespace, labels=tuple(sorted(p.labels.items())),
                        ports=_ports(p), deployment=deployment)
            if p.hostNetwork:
                node = by_name[p.node]
                pods.append(Pod(name=p.name, ns=node.ns, node=p.node, ip=node.ip, host_veth="",
                                containers=tuple(_container(p.name, c) for c in p.containers),
                                host_network=True, **kube))
                continue
            ip = p.ip or next(free[p.node], None)
            if ip is None:
                node = by_name[p.node]
                where.fail(loc + ("node",), f"node '{node.name}''s podCIDR {node.pod_cidr} has no "
                                            f"address left for pod '{p.name}': use a larger podCIDR")
            containers = tuple(_container(p.name, c) for c in p.containers)
            pods.append(Pod(name=p.name, ns=f"{b.lab}-{p.name}", node=p.node, ip=ip,
                            host_veth=ifname_for(p.name, "veth-"), containers=containers, mtu=mtu,
                            **kube))
        b.fields["pods"] = tuple(pods)
        b.parts["kube_namespaces"] = kube_ns
        b.parts["deployments"] = tuple(
            D.Deployment(d.name, d.namespace, sum(p.deployment == d.name and p.namespace ==
                                                  d.namespace for p in pods),
                         tuple(sorted(d.labels.items())), D.template_hash(d.labels, d.containers),
                         tuple(p.name for p in pods if p.deployment == d.name
                               and p.namespace == d.namespace))
            for d in spec.deployments)
        b.namespaces += [p.ns for p in pods if not p.host_network]

    def ops(self, lab: Lab, phase: str) -> list:
        # Wired by netlink here, unless CNI plugins wire the pods (features/cni.py).
        by_cni = getattr(getattr(lab, "cni", None), "plugins", False)
        if phase == "links":
            if by_cni:
                return []
            return [op for pod in lab.pods if not pod.host_network
                    for op in _pod_link(pod, lab.node(pod.node), lab.node(pod.node).ns)]
        if phase == "routes":
            return _pod_mtu(lab, veths=not by_cni)
        if phase == "processes":
            return [op for pod in lab.pods for op in _pod_spawns(pod, pod.ns)]
        return []

    def node_ops(self, lab: Lab, node: Node, underlay: str, phase: str) -> list:
        if phase == "links":
            ops: list = []
            for pod in lab.pods_on(node.name):
                if not pod.host_network:
                    ops += _pod_link(pod, node, HERE) + _pod_veth_mtu(pod, HERE)
            if lab.mtu < UNDERLAY_MTU:
                ops.append(LinkMtu(HERE, "cni0", lab.mtu))
            return ops
        if phase == "processes":
            return [op for pod in lab.pods_on(node.name)
                    for op in _pod_spawns(pod, HERE if pod.host_network else pod.ns)]
        return []

    def rules(self) -> dict:
        return {"pod-ip": rule_pod_ip, "pod-pod-same-node": rule_pod_pod_same_node,
                "pod-pod-cross-node": rule_pod_pod_cross_node, "node-to-pod": rule_node_to_pod,
                "pod-to-node": rule_pod_to_node, "localhost": rule_localhost}

    def needs(self, lab: Lab) -> Needs:
        return Needs(commands=[(f"pod '{pod.name}', container '{c.name}'", c.argv[0])
                               for pod in lab.pods for c in pod.containers
                               if c.image != NETEXEC and c.argv])


def _pod_link(pod, node: Node, node_ns: str) -> list:
    """A pod's veth: eth0 in the pod, its peer on the node's cni0, address and default route."""
    return [
        VethAdd(node_ns, pod.host_veth, pod.ns, "eth0"),
        LinkUp(node_ns, pod.host_veth, master="cni0"),
        AddrAdd(pod.ns, "eth0", pod.ip, int(node.pod_cidr.split("/")[1])),
        LinkUp(pod.ns, "eth0"),
        RouteAdd(pod.ns, "default", node.gateway, "eth0"),
    ]


def _pod_veth_mtu(pod, node_ns: str) -> list:
    """Both ends of a pod's veth at the pod's MTU, when it is below the underlay's (vxlan)."""
    if pod.mtu >= UNDERLAY_MTU:
        return []
    return [LinkMtu(node_ns, pod.host_veth, pod.mtu), LinkMtu(pod.ns, "eth0", pod.mtu)]


def _pod_spawns(pod, ns: str) -> list:
    return [Spawn(ns, pod.name, c.name, argv_of(c)) for c in pod.containers]


def _pod_mtu(lab: Lab, veths: bool = True) -> list:
    """Below the underlay's MTU (vxlan), cni0 and both ends of every pod's veth get the pods' MTU,
    as flannel's CNI plugin does; at the underlay's MTU nothing needs setting. (A CNI plugin
    sets its veths' MTU itself: `veths` False.)"""
    ops: list = []
    for node in lab.nodes:
        if lab.mtu < UNDERLAY_MTU:
            ops.append(LinkMtu(node.ns, "cni0", lab.mtu))
    for pod in lab.pods if veths else ():
        if not pod.host_network:
            ops += _pod_veth_mtu(pod, lab.node(pod.node).ns)
    return ops


def _free_hosts(subnet: ipaddress.IPv4Network, taken: dict, retired: set = frozenset()):
    """Pod addresses in order from the second host on (the first is cni0's), skipping taken ones;
    addresses of deleted pods (`retired`) come last, so a replacement pod gets a new address."""
    hosts = list(subnet.hosts())[1:]
    for h in hosts:
        if str(h) not in taken and str(h) not in retired:
            yield str(h)
    for h in hosts:
        if str(h) not in taken and str(h) in retired:
            yield str(h)


def _replicas(spec: Any, b: Build, nodes: list[str], known_ns: set[str]) -> list:
    """Every deployment's replicas as pod specs (with the location of their deployment), as the
    lab's state keeps them (`b.scratch["live"]`) or, at first, from `replicas:`."""
    live = b.scratch.get("live", {}).get("deployments", {})
    out = []
    for j, d in enumerate(spec.deployments):
        loc = ("deployments", j)
        if d.namespace not in known_ns:
            b.where.fail(loc + ("namespace",), f"deployment '{d.name}': namespace '{d.namespace}' "
                                               f"is not declared: add it to `namespaces:`")
        h = D.template_hash(d.labels, d.containers)
        labels = {**d.labels, "pod-template-hash": h}
        for r in D.replicas(d.name, d.namespace, d.replicas, h, nodes,
                            live.get(f"{d.namespace}/{d.name}")):
            out.append((loc, PodSpec(name=r.name, node=r.node, ip=r.ip, namespace=d.namespace,
                                     labels=labels, containers=d.containers), d.name))
    return out


def _ports(p: PodSpec) -> tuple[ContainerPort, ...]:
    """The ports a pod's containers declare: `ports:` entries and the unnamed TCP `port:`."""
    out = []
    for c in p.containers:
        if c.port is not None:
            out.append(ContainerPort(c.port))
        out += [ContainerPort(cp.containerPort, cp.name or "", cp.protocol) for cp in c.ports]
    return tuple(out)


def _check_containers(p: PodSpec, loc: Loc, where: Where):
    names: set[str] = set()
    ports: dict[int, str] = {}
    for j, c in enumerate(p.containers):
        cloc = loc + ("containers", j)
        if c.name in names:
            where.fail(cloc + ("name",), f"pod '{p.name}': container name '{c.name}' is used twice: "
                                         f"rename one")
        names.add(c.name)
        if (c.image is None) == (c.command is None):
            where.fail(cloc, f"pod '{p.name}', container '{c.name}': give either `image: netexec` "
                             f"(netlab's HTTP server) or `command: [...]`, not both or neither")
        tcp = {cp.containerPort for cp in c.ports if cp.protocol == "TCP"} | {c.port} - {None}
        udp = {cp.containerPort for cp in c.ports if cp.protocol == "UDP"}
        if c.image is not None and (len(tcp) > 1 or len(udp) > 1):
            where.fail(cloc + ("ports",), f"pod '{p.name}', container '{c.name}': netexec serves "
                                          f"one TCP and one UDP port: declare at most one of each")
        if c.image is not None or c.port is not None or tcp:
            port = c.port or min(tcp, default=DEFAULT_PORT)
            if port in ports:
                where.fail(cloc + ("port",), f"pod '{p.name}': port {port} is used by container "
                                             f"'{ports[port]}' too; containers of a pod share one "
                                             f"network namespace: use another port")
            ports[port] = c.name


def _container(pod: str, c: ContainerSpec) -> Container:
    if c.image == NETEXEC:
        tcp = [cp.containerPort for cp in c.ports if cp.protocol == "TCP"]
        udp = [cp.containerPort for cp in c.ports if cp.protocol == "UDP"]
        port = c.port or (tcp[0] if tcp else DEFAULT_PORT)
        # netexec answers UDP too on a declared UDP port (like agnhost's --udp-port).
        extra = ("--udp-port", str(udp[0])) if udp else ()
        return Container(name=c.name, argv=netexec_argv(pod, port) + extra, port=port,
                         image=NETEXEC)
    return Container(name=c.name, argv=tuple(c.command or ()), port=c.port, image=None)


def rule_pod_ip(lab: Lab) -> list[Check]:
    """Each pod's address (as the kernel has it) is inside its node's pod subnet and unique."""
    # A hostNetwork pod has the node's address, not one of the pod subnet (docker-host proves it).
    return [Check("pod-ip", p.name, p.node, "addr", p.ns, p.ip, subnet=lab.node(p.node).pod_cidr)
            for p in lab.pods if not p.host_network]


def _by_node(lab: Lab) -> list[tuple[str, list[Pod]]]:
    return [(n.name, list(lab.pods_on(n.name))) for n in lab.nodes]


def _pod_pairs(lab: Lab, rule: str, same_node: bool, cover: Cover) -> list[Check]:
    groups = _by_node(lab)
    if same_node:
        pairs = [pq for _, pods in groups for pq in within(pods, cover)]
    else:
        pairs = [pq for a, pa in groups for b, pb in groups if a != b
                 for pq in between(pa, pb, cover)]
    at = {p.name: i for i, p in enumerate(lab.pods)}
    pairs.sort(key=lambda pq: (at[pq[0].name], at[pq[1].name]))    # the lab's order
    ends = {p.name: (pod_end(lab, p), servers_of(p)) for p in lab.pods}
    return [c for src, dst in pairs
            for c in reach(rule, pod_end(lab, src, dst), ends[dst.name][0], ends[dst.name][1])]


def rule_pod_pod_same_node(lab: Lab, cover: Cover = MESH) -> list[Check]:
    """Pod to pod on one node, over cni0: ping, and /clientip sees the client pod's own IP."""
    return _pod_pairs(lab, "pod-pod-same-node", True, cover)


def rule_pod_pod_cross_node(lab: Lab, cover: Cover = MESH) -> list[Check]:
    """Pod to pod across nodes, routed by the nodes: ping, and /clientip with no NAT."""
    return _pod_pairs(lab, "pod-pod-cross-node", False, cover)


def rule_node_to_pod(lab: Lab, cover: Cover = MESH) -> list[Check]:
    """Every node reaches every pod directly."""
    pairs = [np for _, pods in _by_node(lab) for np in between(list(lab.nodes), pods, cover)]
    at = {x.name: i for i, x in enumerate(lab.nodes + lab.pods)}
    pairs.sort(key=lambda np: (at[np[0].name], at[np[1].name]))
    return [c for n, p in pairs
            for c in reach("node-to-pod", node_end(n, p, lab.backend == "vxlan"), pod_end(lab, p),
                           servers_of(p))]


def rule_pod_to_node(lab: Lab, cover: Cover = MESH) -> list[Check]:
    """Every pod reaches every node directly (the node's server on port 8000 sees the pod's IP)."""
    pairs = [pn for _, pods in _by_node(lab) for pn in between(pods, list(lab.nodes), cover)]
    at = {x.name: i for i, x in enumerate(lab.pods + lab.nodes)}
    pairs.sort(key=lambda pn: (at[pn[0].name], at[pn[1].name]))
    return [c for p, n in pairs
            for c in reach("pod-to-node", pod_end(lab, p), node_end(n), [node_server(n)])]


def rule_localhost(lab: Lab) -> list[Check]:
    """The containers of a pod share one namespace: its server answers on localhost."""
    return [Check("localhost", p.name, p.name, "http", p.ns, "localhost", s.port, "/hostname",
                  body=p.name, server=s) for p in lab.pods for s in servers_of(p)]



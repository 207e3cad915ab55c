"""The underlay and the nodes: the switch between the machines (a bridge `br0` in `<lab>-underlay`,
or several segments joined by `<lab>-router`), and each node's namespace with its `eth0` on it,
its forwarding, its `cni0` bridge and netlab's server on port 8000.
"""

from __future__ import annotations

import ipaddress
from typing import Any, Literal, Union

from pydantic import Field, field_validator

from ..core.lab import DOCKER_CIDR, NETEXEC, NODE_PORT, UNDERLAY_MTU, Node, bridge_name, \
    ifname_for, vtep_mac
from ..core.ops import HERE, AddrAdd, BridgeAdd, LinkUp, RouteAdd, Spawn, Sysctl, VethAdd, netexec
from ..core.feature import Feature, Needs
from ..core.schema import Build, Loc, Spec, Where, check_cidr, cidr_field, ipv4_field, is_host, \
    name_field
from .vxlan import VXLAN_OVERHEAD


class NodeSpec(Spec):
    name: str
    ip: Union[str, None] = None
    podCIDR: Union[str, None] = None
    dockerCIDR: Union[str, None] = None

    _name = field_validator("name")(classmethod(name_field))
    _ip = field_validator("ip")(classmethod(ipv4_field))
    _cidr = field_validator("podCIDR", "dockerCIDR")(classmethod(cidr_field))


def _check_underlay(value: Any) -> Any:
    """One subnet (a flat switch) or a list of segments joined by the lab's router."""
    if isinstance(value, str):
        return check_cidr(value)
    if isinstance(value, list) and value and all(isinstance(s, str) for s in value):
        for s in value:
            check_cidr(s)
        return value
    raise ValueError("give one subnet like 192.168.1.0/24, or a list of segments joined by a "
                     "router like [192.168.1.0/24, 192.168.2.0/24]")


class NetworkSpec(Spec):
    """`network:`; other features add their fields ("network.X" in their schema)."""
    underlay: Union[str, list[str]] = "192.168.1.0/24"
    podCIDR: str = "10.244.0.0/16"
    backend: Literal["host-gw", "vxlan"] = "host-gw"

    _cidr = field_validator("podCIDR")(classmethod(cidr_field))
    _underlay = field_validator("underlay", mode="before")(
        classmethod(lambda cls, v: _check_underlay(v)))


class Underlay(Feature):
    name = "underlay"
    schema = {"network": (NetworkSpec, NetworkSpec()), "nodes": (list[NodeSpec], Field(min_length=1))}

    def build(self, spec: Any, b: Build) -> None:
        where = b.where
        segments = _segments(spec.network.underlay, where)
        underlay = segments[0]
        cluster = ipaddress.IPv4Network(spec.network.podCIDR)
        for seg in segments:
            if seg.overlaps(cluster):
                where.fail(("network", "podCIDR"), f"podCIDR {cluster} overlaps the underlay {seg}: "
                                                   f"use separate ranges")
        routed = len(segments) > 1
        router_ips = [str(next(s.hosts())) for s in segments] if routed else []
        nodes: list[Node] = []
        used_ips: dict[str, Loc] = {}
        subnets: list[tuple[ipaddress.IPv4Network, Loc, str]] = []
        uplinks: set[str] = set()
        for i, n in enumerate(spec.nodes):
            loc = ("nodes", i)
            b.claim(n.name, loc + ("name",))
            if n.ip is None and routed:
                where.fail(loc, f"node '{n.name}' has no ip and the underlay has several segments: "
                                f"give `ip:` inside the segment it is on")
            if n.ip is None:
                ip = underlay.network_address + 11 + i
                if not is_host(ip, underlay):
                    where.fail(loc, f"node '{n.name}' has no ip and the underlay {underlay} has no room "
                                    f"left: give `ip:` or a larger underlay")
            else:
                ip = ipaddress.IPv4Address(n.ip)
                if routed:
                    _check_routed_ip(n.name, ip, segments, router_ips, loc + ("ip",), where)
                elif not is_host(ip, underlay):
                    where.fail(loc + ("ip",), f"node '{n.name}': ip {ip} is not a host address of the "
                                              f"underlay {underlay}: pick one inside it")
            seg_index = next(k for k, s in enumerate(segments) if ip in s)
            if str(ip) in used_ips:
                where.fail(loc + ("ip",), f"node '{n.name}': ip {ip} is already used on line "
                                          f"{where.line(used_ips[str(ip)])}: give each node its own")
            used_ips[str(ip)] = loc + ("ip",)
            if n.podCIDR is None:
                # Node i gets the (i+1)th /24 of the cluster range, as 10.244.1.0/24 for node1.
                fits = cluster.prefixlen <= 24 and (i + 2) * 256 <= cluster.num_addresses
                subnet = ipaddress.IPv4Network(f"{cluster.network_address + (i + 1) * 256}/24") \
                    if fits else None
                if subnet is None:
                    where.fail(loc, f"node '{n.name}' has no podCIDR and network.podCIDR {cluster} has no "
                                    f"/24 left for it: give `podCIDR:`")
            else:
                subnet = ipaddress.IPv4Network(n.podCIDR)
            sloc = loc + ("podCIDR",)
            for seg in segments:
                if subnet.overlaps(seg):
                    where.fail(sloc, f"node '{n.name}': podCIDR {subnet} overlaps the underlay {seg}: "
                                     f"use a separate range such as 10.244.{i + 1}.0/24")
            for other, oloc, oname in subnets:
                if subnet.overlaps(other):
                    where.fail(sloc, f"node '{n.name}': podCIDR {subnet} overlaps node '{oname}''s "
                                     f"{other} (line {where.line(oloc)}): give each node its own subnet")
            subnets.append((subnet, sloc, n.name))
            uplink = ifname_for(n.name)
            if uplink in uplinks:
                where.fail(loc + ("name",), f"node '{n.name}' would get the same interface name "
                                            f"'{uplink}' as another node: shorten the name")
            if uplink in {bridge_name(k) for k in range(len(segments))}:
                where.fail(loc + ("name",), f"node '{n.name}' would get the name of the underlay's "
                                            f"bridge '{uplink}': rename the node")
            uplinks.add(uplink)
            docker = ipaddress.IPv4Network(n.dockerCIDR or DOCKER_CIDR)
            nodes.append(Node(name=n.name, ns=f"{b.lab}-{n.name}", ip=str(ip),
                              prefixlen=segments[seg_index].prefixlen, pod_cidr=str(subnet),
                              gateway=str(next(subnet.hosts())), uplink=uplink,
                              segment=seg_index, vtep=str(subnet.network_address),
                              vtep_mac=vtep_mac(str(ip)),
                              docker_cidr=str(docker), docker_gw=str(next(docker.hosts()))))
        mtu = UNDERLAY_MTU - VXLAN_OVERHEAD if spec.network.backend == "vxlan" else UNDERLAY_MTU
        b.fields.update(backend=spec.network.backend, nodes=tuple(nodes), mtu=mtu,
                        underlay=", ".join(str(s) for s in segments), underlay_ns=f"{b.lab}-underlay",
                        segments=tuple(str(s) for s in segments),
                        router_ns=f"{b.lab}-router" if routed else "", router_ips=tuple(router_ips))
        b.namespaces += [f"{b.lab}-underlay"] + ([f"{b.lab}-router"] if routed else [])
        b.namespaces += [n.ns for n in nodes]
        b.scratch.update(segments=segments, cluster=cluster, veths={n.name: set() for n in nodes})

    def ops(self, lab, phase: str) -> list:
        if phase == "links":
            under = lab.underlay_ns
            ops: list = []
            for k in range(max(len(lab.segments), 1)):
                ops += [BridgeAdd(under, bridge_name(k)), LinkUp(under, bridge_name(k))]
            for node in lab.nodes:
                ops += [
                    VethAdd(under, node.uplink, node.ns, "eth0"),
                    LinkUp(under, node.uplink, master=bridge_name(node.segment)),
                    AddrAdd(node.ns, "eth0", node.ip, node.prefixlen),
                    LinkUp(node.ns, "eth0"),
                    *_node_stack(node, node.ns),
                ]
            return ops
        if phase == "routes":
            return _router(lab)
        if phase == "probes":
            return node_servers(lab)
        return []

    def node_ops(self, lab, node, underlay: str, phase: str) -> list:
        if phase == "links":
            return _node_stack(node, HERE)
        if phase == "probes":
            return [Spawn(HERE, op.owner, op.name, op.argv) for op in node_servers(lab)
                    if op.owner == node.name]
        return []

    def needs(self, lab) -> Needs:
        return Needs(tools=["ping", "curl"], kinds=["veth", "bridge"])


def _node_stack(node: Node, ns: str) -> list:
    """What makes a namespace (or a host) a node: forwarding on, and cni0 with the pods' gateway."""
    return [
        Sysctl(ns, "net.ipv4.ip_forward", "1"),
        BridgeAdd(ns, "cni0"),
        AddrAdd(ns, "cni0", node.gateway, int(node.pod_cidr.split("/")[1])),
        LinkUp(ns, "cni0"),
    ]


def node_servers(lab) -> list:
    """netlab's server on every node, port 8000 (the classic `nc -l 8000` on the host), so that
    verify proves a pod reaches each node directly and sees who connected."""
    return [netexec(node.ns, node.name, NETEXEC, NODE_PORT) for node in lab.nodes]


def _router(lab) -> list:
    """A routed underlay: `<lab>-router` has a port on each segment's bridge and forwards between
    them; every node routes the other segments via the router's address on its own segment."""
    if not lab.router_ns:
        return []
    ops: list = [Sysctl(lab.router_ns, "net.ipv4.ip_forward", "1")]
    for k, (segment, address) in enumerate(zip(lab.segments, lab.router_ips)):
        port = f"router_{k}"   # '_' is in no node name, so no clash with a node's uplink
        ops += [
            VethAdd(lab.underlay_ns, port, lab.router_ns, f"eth{k}"),
            LinkUp(lab.underlay_ns, port, master=bridge_name(k)),
            AddrAdd(lab.router_ns, f"eth{k}", address, int(segment.split("/")[1])),
            LinkUp(lab.router_ns, f"eth{k}"),
        ]
    for node in lab.nodes:
        ops += [RouteAdd(node.ns, segment, lab.router_ips[node.segment], "eth0")
                for k, segment in enumerate(lab.segments) if k != node.segment]
    return ops


def _segments(underlay: Union[str, list[str]], where: Where) -> list[ipaddress.IPv4Network]:
    """The underlay's segments: one for a flat switch, several joined by `<lab>-router`."""
    if isinstance(underlay, str):
        return [ipaddress.IPv4Network(underlay)]
    segments: list[ipaddress.IPv4Network] = []
    for k, text in enumerate(underlay):
        seg = ipaddress.IPv4Network(text)
        for j, other in enumerate(segments):
            if seg.overlaps(other):
                first = where.line(("network", "underlay", j))
                where.fail(("network", "underlay", k), f"underlay segment {seg} overlaps segment "
                                                       f"{other} (line {first}): give each segment "
                                                       f"its own subnet")
        segments.append(seg)
    return segments


def _check_routed_ip(node: str, ip: ipaddress.IPv4Address, segments: list, router_ips: list,
                     loc: Loc, where: Where) -> None:
    for seg, router in zip(segments, router_ips):
        if is_host(ip, seg):
            if str(ip) == router:
                where.fail(loc, f"node '{node}': ip {ip} is the lab router's address on {seg} "
                                f"(the segment's first host): pick another")
            return
    where.fail(loc, f"node '{node}': ip {ip} is not a host address of any underlay segment "
                    f"({', '.join(map(str, segments))}): pick one inside a segment")

"""The outside world: one more namespace (`<lab>-outside`) on the underlay, the nodes' default
gateway, with netlab's web server on a documentation address (203.0.113.10), so that what a lab
sends "to the internet" never leaves the lab.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Any, Optional

from pydantic import Field, field_validator

from ..core.feature import Feature, NotOnHost
from ..core.lab import Lab
from ..core.ops import AddrAdd, LinkUp, RouteAdd, VethAdd, netexec
from ..core.schema import Build, Spec, check_ipv4

OUTSIDE_IP = "203.0.113.10"     # the outside world's web server: a documentation address (RFC 5737)
OUTSIDE_PORT = 80


class OutsideSpec(Spec):
    """The outside world: a web server on a documentation address, behind a router on the underlay."""
    ip: str = OUTSIDE_IP
    port: int = Field(default=OUTSIDE_PORT, ge=1, le=65535)

    _ip = field_validator("ip")(classmethod(lambda cls, v: check_ipv4(v)))


def _outside_field(v):
    # `outside: true` asks for the default outside world; `outside: false` for none.
    if v is True:
        return {}
    if v is False:
        return None
    return v


@dataclass(frozen=True)
class Outside:
    """The outside world: a router on the underlay with a web server behind it."""
    ns: str
    ip: str               # the web server's address (on the router's lo)
    port: int
    router: str           # the router's address on the underlay: the nodes' default gateway
    prefixlen: int
    uplink: str = "outside"   # its port on the underlay bridge



class OutsideWorld(Feature):
    name = "outside"
    schema = {"outside": (Optional[OutsideSpec], None)}
    before = {"outside": _outside_field}

    def build(self, spec: Any, b: Build) -> None:
        if spec.outside is not None and len(b.scratch["segments"]) > 1:
            b.where.fail(("outside",), "an outside world needs a flat underlay (one subnet); this "
                                       "one has several segments: drop `outside:` or use one segment")
        out = _outside(spec, b)
        b.parts["outside"] = out
        if out is not None:
            b.namespaces.append(out.ns)

    def ops(self, lab: Lab, phase: str) -> list:
        if lab.outside is None:
            return []
        if phase == "routes":
            return outside_ops(lab)
        if phase == "processes":
            return [netexec(lab.outside.ns, "outside", "server", lab.outside.port)]
        return []

    def node_ops(self, lab: Lab, node: Any, underlay: str, phase: str) -> list:
        if lab.outside is not None:
            raise NotOnHost(f"--node: lab {lab.name} has an outside world, which only a whole lab "
                            f"on one machine builds: run it without --node")
        return []

    def show(self, lab: Lab, status: Any) -> dict:
        if not lab.outside:
            return {}
        return {"outside": {"namespace": lab.outside.ns, "ip": lab.outside.ip,
                            "port": lab.outside.port, "router": lab.outside.router}}

    def render(self, data: dict) -> list[Any]:
        if "outside" not in data:
            return []
        o = data["outside"]
        return [f"\noutside world: web server {o['ip']}:{o['port']} behind router {o['router']} "
                f"(the nodes' default gateway), namespace {o['namespace']}"]


def _outside(spec: Any, b: Build) -> Optional[Outside]:
    """The outside world sits on the underlay's last host address, routing to its web server."""
    if spec.outside is None:
        return None
    lab, nodes, where = b.lab, b.fields["nodes"], b.where
    underlay, cluster = b.scratch["segments"][0], b.scratch["cluster"]
    ip = ipaddress.IPv4Address(spec.outside.ip)
    router = underlay.broadcast_address - 1
    loc = ("outside", "ip")
    nets = [(underlay, "the underlay"), (cluster, "network.podCIDR")]
    nets += [(ipaddress.IPv4Network(n.docker_cidr), f"node '{n.name}''s dockerCIDR") for n in nodes]
    nets += [(ipaddress.IPv4Network(n.pod_cidr), f"node '{n.name}''s podCIDR") for n in nodes]
    for net, what in nets:
        if ip in net:
            where.fail(loc, f"outside ip {ip} is inside {what} {net}: use an address outside the "
                            f"lab's ranges, such as {OUTSIDE_IP}")
    for i, n in enumerate(nodes):
        if n.ip == str(router):
            where.fail(("nodes", i, "ip"), f"node '{n.name}': ip {router} is the outside world's "
                                           f"router on the underlay: pick another node ip")
    return Outside(ns=f"{lab}-outside", ip=str(ip), port=spec.outside.port, router=str(router),
                   prefixlen=underlay.prefixlen)


def outside_ops(lab: Lab) -> list:
    """The outside world: a namespace on the underlay (the router) with the web server's address
    on its lo; every node's default route points at it, so nothing a lab sends leaves the lab."""
    out = lab.outside
    if out is None:
        return []
    ops: list = [
        VethAdd(lab.underlay_ns, out.uplink, out.ns, "eth0"),
        LinkUp(lab.underlay_ns, out.uplink, master="br0"),
        AddrAdd(out.ns, "eth0", out.router, out.prefixlen),
        LinkUp(out.ns, "eth0"),
        AddrAdd(out.ns, "lo", out.ip, 32),
    ]
    ops += [RouteAdd(node.ns, "default", out.router, "eth0") for node in lab.nodes]
    return ops



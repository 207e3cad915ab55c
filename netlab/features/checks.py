"""The scenario's own checks (`checks:`): from a pod or node to a pod, node or address, reachable
or not, with or without NAT, proven by verify's rule `scenario` beside the model's rules.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, replace
from typing import Any, Literal, Optional

from pydantic import ConfigDict, Field

from ..core.feature import Feature
from ..core.lab import NETEXEC, NODE_PORT, Lab, Pod
from ..core.schema import Build, Spec, did_you_mean
from ..verify.checks import Check, Endpoint, Server, hops, node_end, node_server, pod_end, \
    servers_of


class CheckSpec(Spec):
    """A check written in the scenario: from a pod or node to a pod, node or address."""
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)
    name: Optional[str] = None
    from_: str = Field(alias="from")
    to: str
    port: Optional[int] = Field(default=None, ge=1, le=65535)
    expect: Literal["reachable", "unreachable"] = "reachable"
    nat: Optional[bool] = None


@dataclass(frozen=True)
class ScenarioCheck:
    """A check from the scenario's `checks:`; src is a pod or node, dst a pod, node or address."""
    line: Optional[int]
    name: str
    src: str
    dst: str
    dst_ip: str
    port: Optional[int]       # None: ping; else TCP/HTTP to this port
    expect: str               # "reachable" or "unreachable"
    nat: Optional[bool]       # False: the server must see the client's own address; True: not



class ScenarioChecks(Feature):
    name = "checks"
    schema = {"checks": (list[CheckSpec], [])}

    def build(self, spec: Any, b: Build) -> None:
        b.parts["checks"] = _checks(spec, b.fields["nodes"], b.fields["pods"], b.where)

    def rules(self) -> dict:
        return {"scenario": rule_scenario}


def _checks(spec: Any, nodes, pods, where) -> tuple[ScenarioCheck, ...]:
    """Check the scenario's `checks:` against the lab: known endpoints, served ports, NAT."""
    ips = {p.name: p.ip for p in pods} | {n.name: n.ip for n in nodes}
    by_ip = {ip: name for name, ip in ips.items()}
    ports: dict[str, dict[int, Optional[str]]] = {n.name: {NODE_PORT: NETEXEC} for n in nodes}
    for p in pods:
        ports[p.name] = {c.port: c.image for c in p.containers if c.port is not None}
    out = []
    for i, c in enumerate(spec.checks):
        loc = ("checks", i)
        who = f"check '{c.name}'" if c.name else f"check #{i + 1}"
        if c.from_ not in ips:
            fix = did_you_mean(c.from_, list(ips), f"use one of {', '.join(ips)}")
            where.fail(loc + ("from",), f"{who}: from: unknown pod or node '{c.from_}': {fix}")
        if c.to in ips:
            dst, dst_ip = c.to, ips[c.to]
        else:
            try:
                dst_ip = str(ipaddress.IPv4Address(c.to))
            except ValueError:
                fix = did_you_mean(c.to, list(ips),
                                    f"use a pod or node ({', '.join(ips)}) or an IPv4 address")
                where.fail(loc + ("to",), f"{who}: to: unknown pod or node '{c.to}': {fix}")
            dst = by_ip.get(dst_ip, dst_ip)
        served = ports.get(dst)
        if c.nat is not None:
            if c.port is None:
                where.fail(loc + ("nat",), f"{who}: nat needs a `port:` where netlab's server "
                                           f"reports the address it saw")
            if c.expect == "unreachable":
                where.fail(loc + ("nat",), f"{who}: nat says what a server sees, but the check "
                                           f"expects unreachable: drop `nat:` or expect reachable")
            if served is None or served.get(c.port, "") != NETEXEC:
                where.fail(loc + ("port",), f"{who}: nat needs netlab's server at {c.to}:{c.port}: "
                                            f"a pod's `image: netexec` port, or a node's port "
                                            f"{NODE_PORT}")
        if c.port is not None and c.expect == "reachable" and served is not None \
                and c.port not in served:
            listed = ", ".join(str(p) for p in served) or "none"
            where.fail(loc + ("port",), f"{who}: nothing in '{dst}' listens on port {c.port} "
                                        f"(its ports: {listed}): use one of them or expect "
                                        f"unreachable")
        target = f"{c.to}:{c.port}" if c.port else c.to
        out.append(ScenarioCheck(line=where.line(loc), name=c.name or f"{c.from_} -> {target}",
                                 src=c.from_, dst=dst, dst_ip=dst_ip, port=c.port,
                                 expect=c.expect, nat=c.nat))
    return tuple(out)


def rule_scenario(lab: Lab) -> list[Check]:
    """The scenario's own `checks:`."""
    pods = {p.name: p for p in lab.pods}
    out = []
    for sc in lab.checks:
        dst = _endpoint(lab, sc.dst) or Endpoint(sc.dst, None, sc.dst_ip)
        src = _endpoint(lab, sc.src, towards=pods.get(sc.dst))
        label = f"{sc.name} (line {sc.line})" if sc.line else sc.name
        check = Check("scenario", sc.src, sc.dst, "ping", src.ns, dst.ip, expect=sc.expect,
                      hops=hops(src, dst), label=label)
        if sc.port is not None:
            server = _server_at(lab, sc.dst, sc.port)
            check = replace(check, method="http", port=sc.port, server=server, nat=sc.nat,
                            path="/clientip" if server else "/", sees=src.sees)
        out.append(check)
    return out


def _endpoint(lab: Lab, name: str, towards: Optional[Pod] = None) -> Optional[Endpoint]:
    for p in lab.pods:
        if p.name == name:
            return pod_end(lab, p)
    for n in lab.nodes:
        if n.name == name:
            return node_end(n, towards, lab.backend == "vxlan")
    return None


def _server_at(lab: Lab, name: str, port: int) -> Optional[Server]:
    for p in lab.pods:
        if p.name == name:
            return next((s for s in servers_of(p) if s.port == port), None)
    for n in lab.nodes:
        if n.name == name and port == NODE_PORT:
            return node_server(n)
    return None



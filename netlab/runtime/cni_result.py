"""netlab-cni's results: the spec's ADD result from what ADD made (an Attachment), and CHECK's
comparison of prevResult with the kernel (expected_from, drift).

Pure, unit-tested without root; what the kernel holds is read by cni_netlink.Netlink.observe_pod.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from .cni_request import NetConf, Request, invalid, version_key


@dataclass(frozen=True)
class Attachment:
    """What ADD made, as the kernel reported it."""
    bridge: str
    bridge_mac: str
    host_veth: str
    host_mac: str
    ifname: str
    mac: str
    netns: str
    ip: str


def build_result(conf: NetConf, att: Attachment) -> dict:
    """The ADD result: interfaces (bridge, node-side veth, pod-side with sandbox), ips, routes,
    dns; merged after the prevResult's (their interface indexes shift by its interfaces)."""
    prev = conf.prev_result or {}
    interfaces = list(prev.get("interfaces", []))
    base = len(interfaces)
    pod_if = {"name": att.ifname, "mac": att.mac, "sandbox": att.netns}
    if version_key(conf.cni_version) >= (1, 1, 0):
        pod_if["mtu"] = conf.mtu
    interfaces += [{"name": att.bridge, "mac": att.bridge_mac},
                   {"name": att.host_veth, "mac": att.host_mac}, pod_if]
    ips = list(prev.get("ips", [])) + [{
        "address": f"{att.ip}/{conf.subnet.prefixlen}", "gateway": str(conf.gateway),
        "interface": base + 2}]
    routes = list(prev.get("routes", [])) + [{"dst": "0.0.0.0/0", "gw": str(conf.gateway)}]
    dns = conf.dns or prev.get("dns") or {}
    return {"cniVersion": conf.cni_version, "interfaces": interfaces, "ips": ips,
            "routes": routes, "dns": dns}


@dataclass(frozen=True)
class Expected:
    """What CHECK looks for, read from prevResult."""
    ifname: str
    mac: str
    address: str                 # "10.244.1.2/24"
    gateway: str
    default_route: bool


def expected_from(conf: NetConf, req: Request) -> Expected:
    """The interface of this request in prevResult and its address; error 7 if it is not there."""
    prev = conf.prev_result
    if prev is None:
        raise invalid("CHECK needs prevResult (the result of the ADD)")
    interfaces = prev.get("interfaces", [])
    mine = [i for i, itf in enumerate(interfaces)
            if itf.get("name") == req.ifname and itf.get("sandbox") == req.netns]
    if not mine:
        raise invalid(f"prevResult has no interface {req.ifname} in {req.netns}")
    ips = [ip for ip in prev.get("ips", []) if ip.get("interface") == mine[0]]
    if not ips:
        raise invalid(f"prevResult has no address on {req.ifname}")
    routes = prev.get("routes", [])
    return Expected(ifname=req.ifname, mac=interfaces[mine[0]].get("mac", ""),
                    address=ips[0]["address"], gateway=ips[0].get("gateway", str(conf.gateway)),
                    default_route=any(r.get("dst") == "0.0.0.0/0" for r in routes))


def drift(exp: Expected, seen: Optional[dict], allocated: Optional[str]) -> list[str]:
    """What differs between prevResult and the kernel. `seen` is the pod interface as observed
    ({"mac", "up", "addresses": [...cidr], "default_via": [...]}) or None when it is missing;
    `allocated` is IPAM's address for the attachment."""
    problems = []
    ip = exp.address.split("/")[0]
    if allocated != ip:
        problems.append(f"IPAM holds {allocated or 'nothing'} for it, not {ip}")
    if seen is None:
        return problems + [f"interface {exp.ifname} is missing"]
    if exp.mac and seen["mac"] != exp.mac:
        problems.append(f"{exp.ifname} has MAC {seen['mac']}, not {exp.mac}")
    if not seen["up"]:
        problems.append(f"{exp.ifname} is down")
    if exp.address not in seen["addresses"]:
        problems.append(f"address {exp.address} is missing on {exp.ifname} "
                        f"(it has {', '.join(seen['addresses']) or 'none'})")
    if exp.default_route and exp.gateway not in seen["default_via"]:
        problems.append(f"default route via {exp.gateway} is missing")
    return problems

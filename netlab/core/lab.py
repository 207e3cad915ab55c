"""The Lab: what a scenario becomes once parsed and checked, immutable, with every name and address
allocated. Pure data, read by every layer; the features add their own parts (`Lab.parts`).

Kernel names (namespaces, interfaces) are derived here, within the kernel's limits (15 characters
for an interface).
"""

from __future__ import annotations

import hashlib
import ipaddress
import os
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Mapping, Optional

IFNAMSIZ = 15
NETEXEC = "netexec"
DEFAULT_PORT = 8080
DOCKER_CIDR = "172.17.0.0/16"   # docker0's default subnet, on every node unless it says otherwise
UNDERLAY_MTU = 1500   # every underlay link is plain Ethernet
NODE_PORT = 8000  # every node runs netlab's server on this port (the classic `nc -l 8000`)
# Where a lab's state lives (runtime.state writes it): /run/netlab/labs/<lab>/. A plan that
# writes files there (a CNI conflist) names them by this path.
STATE_ROOT = os.environ.get("NETLAB_STATE_DIR", "/run/netlab")


def state_dir(lab: str) -> str:
    return os.path.join(STATE_ROOT, "labs", lab)


def ifname_for(name: str, prefix: str = "") -> str:
    """A kernel interface name for an object, within 15 characters, stable and readable."""
    full = prefix + name
    if len(full) <= IFNAMSIZ:
        return full
    digest = hashlib.sha1(name.encode()).hexdigest()[:4]
    keep = IFNAMSIZ - len(prefix) - 5
    return f"{prefix}{name[:keep]}-{digest}"


@dataclass(frozen=True)
class Container:
    name: str
    argv: tuple[str, ...]
    port: Optional[int]
    image: Optional[str]


@dataclass(frozen=True)
class ContainerPort:
    """A container's declared port (Kubernetes' ContainerPort): what a named targetPort finds."""
    port: int
    name: str = ""
    protocol: str = "TCP"


@dataclass(frozen=True)
class Node:
    name: str
    ns: str
    ip: str
    prefixlen: int
    pod_cidr: str
    gateway: str          # cni0's address: the first host of the pod subnet
    uplink: str           # the node's port on the underlay bridge (in the underlay namespace)
    docker_cidr: str = DOCKER_CIDR
    docker_gw: str = "172.17.0.1"   # docker0's address: the first host of docker_cidr
    segment: int = 0      # index of the node's underlay segment in Lab.segments
    vtep: str = ""        # vxlan: flannel.1's address, the pod subnet's network address (/32)
    vtep_mac: str = ""    # vxlan: flannel.1's MAC, derived from the node IP (0a:58:<ip>)


@dataclass(frozen=True)
class Pod:
    name: str
    ns: str
    node: str
    ip: str
    host_veth: str        # the node's end of the pod's veth, enslaved to cni0
    containers: tuple[Container, ...]
    host_network: bool = False   # hostNetwork: true: no namespace of its own, the node's IP
    mtu: int = UNDERLAY_MTU   # of eth0 (and its veth peer): less than the underlay on vxlan
    # Kubernetes' view of it (Services select pods by these): its namespace, labels, the ports
    # its containers declare, and the deployment that made it ("" for a pod of `pods:`).
    namespace: str = "default"
    labels: tuple[tuple[str, str], ...] = ()
    ports: tuple[ContainerPort, ...] = ()
    deployment: str = ""


@dataclass(frozen=True)
class Lab:
    name: str
    source: str
    text: str
    backend: str
    underlay: str
    nodes: tuple[Node, ...]
    pods: tuple[Pod, ...]
    underlay_ns: str = field(default="")
    mtu: int = UNDERLAY_MTU          # the pods' MTU: 1500 on host-gw, 1450 on vxlan
    segments: tuple[str, ...] = ()   # the underlay's subnets; more than one: joined by a router
    router_ns: str = ""              # "<lab>-router" when the underlay has several segments
    router_ips: tuple[str, ...] = () # the router's address in each segment (its first host)
    namespaces: tuple[str, ...] = () # every namespace the lab makes, in the order it makes them
    # What each feature adds, by name (`containers` of Docker, `outside`, `checks`, `services`..):
    # read as attributes, lab.containers, so no layer needs to know which feature made it.
    parts: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))

    def __getattr__(self, name: str) -> Any:
        parts = self.__dict__.get("parts")
        if parts is not None and name in parts:
            return parts[name]
        raise AttributeError(f"Lab has no {name!r}")

    def node(self, name: str) -> Node:
        return next(n for n in self.nodes if n.name == name)

    def pod(self, name: str) -> Pod:
        return next(p for p in self.pods if p.name == name)

    def pods_on(self, node: str) -> tuple[Pod, ...]:
        return tuple(p for p in self.pods if p.node == node)


@dataclass(frozen=True)
class Place:
    """Something of a lab a user can name (a pod, node, container...): its namespace and address."""
    name: str
    ns: str
    ip: Optional[str]
    kind: str


def places(lab: Lab) -> list[Place]:
    """Every named thing of a lab, for exec, trace, verify --from and graph: pods, nodes, and what
    the features add (their parts that have `name`, `ns` and `ip`)."""
    out = [Place(p.name, p.ns, p.ip, "pod") for p in lab.pods]
    out += [Place(n.name, n.ns, n.ip, "node") for n in lab.nodes]
    for key, part in lab.parts.items():
        for obj in part if isinstance(part, tuple) else ():
            if hasattr(obj, "ns") and hasattr(obj, "name") and hasattr(obj, "ip"):
                out.append(Place(obj.name, obj.ns, obj.ip, getattr(obj, "kind", key.rstrip("s"))))
    return out


def largest_ping_payload(lab: Lab) -> int:
    """The largest `ping -M do -s N` payload that fits every pod's MTU (IPv4 20 + ICMP 8 bytes)."""
    return min((p.mtu for p in lab.pods), default=lab.mtu) - 28


def bridge_name(segment: int) -> str:
    """The underlay bridge of a segment, in the underlay namespace."""
    return f"br{segment}"


def vtep_mac(node_ip: str) -> str:
    """flannel.1's MAC for a node: locally administered 0a:58 then the node IP, so it is stable
    and the plan stays pure (flannel lets the kernel pick one and publishes it instead)."""
    return "0a:58:" + ":".join(f"{b:02x}" for b in ipaddress.IPv4Address(node_ip).packed)


def netexec_argv(pod: str, port: int) -> tuple[str, ...]:
    """The built-in server's arguments; the plan turns `netexec` into this Python's module."""
    return (NETEXEC, "--port", str(port), "--name", pod)


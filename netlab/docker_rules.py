"""What Docker's network modes promise, derived from a Lab as plain data, ready to become checks.

Pure: no kernel. For every docker container (and every hostNetwork pod) it lists the probes that
prove its mode, each positive or negative:
- none: only loopback; reaches nobody; nobody reaches it (a port published on it does nothing);
  its own server answers on its localhost.
- bridge: reaches the outside world and the server there sees the node's address (NAT); its
  published ports answer at node IP:hostPort from other nodes and from pods (TCP and UDP), and
  the server sees the client's own address (DNAT only); its container address is not reachable
  from other nodes.
- host (and hostNetwork pods): its address is the node's; its port answers at the node's IP; a
  port published in host mode does nothing.

An Expectation says: from `src` (a namespace), a `kind` probe to `dst`:`port` is answered by the
server named `answered_by` (`reachable=True`), or is not answered by it (`reachable=False`: it
fails, or somebody else answers); `seen_source` is the address that server reports on /clientip
(or to UDP `clientip`). `addresses` probes read the IPv4 addresses of `src` instead: those
listed must be there (and, with `only`, nothing else).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Optional

from .model import DockerContainer, Lab, Node, Pod

LOOPBACK = "127.0.0.1"


@dataclass(frozen=True)
class Expectation:
    rule: str                 # which promise this probe proves, e.g. "bridge-nat-out"
    subject: str              # the container (or pod) the promise is about
    src: str                  # who probes: a node, pod, container or "outside"
    src_ns: str               # the namespace the probe runs in
    kind: str                 # "tcp" (HTTP), "udp", "ping" or "addresses"
    dst: Optional[str]        # the address probed (None for "addresses")
    port: Optional[int]
    reachable: bool
    answered_by: Optional[str] = None    # the server's name (/hostname) when it must answer
    seen_source: Optional[str] = None    # the address the server must see (/clientip)
    addresses: tuple[str, ...] = ()      # for "addresses": these IPv4 addresses are there
    only: bool = False                   # ... and no other
    why: str = ""

    def as_dict(self) -> dict:
        return asdict(self)


def expectations(lab: Lab) -> list[Expectation]:
    """Every probe that proves the Docker modes of a lab, in scenario order."""
    out: list[Expectation] = []
    for c in lab.containers:
        out += {"none": none_rules, "bridge": bridge_rules, "host": host_rules}[c.mode](lab, c)
    for p in lab.pods:
        if p.host_network:
            out += host_network_pod_rules(lab, p)
    return out


def _clients(lab: Lab, node: Node) -> list[tuple[str, str, str]]:
    """(name, namespace, source address) of the probes sent to a node's address: every other
    node, the first pod with its own network on each node (its own node's too), and the outside
    world (from its router's address on the underlay), like a client on another host."""
    out = [(n.name, n.ns, n.ip) for n in lab.nodes if n is not node]
    for n in lab.nodes:
        pod = next((p for p in lab.pods_on(n.name) if not p.host_network), None)
        if pod is not None:
            out.append((pod.name, pod.ns, pod.ip))
    if lab.outside is not None:
        out.append(("outside", lab.outside.ns, lab.outside.router))
    return out


def _udp_served(c: DockerContainer) -> bool:
    # netlab's netexec answers UDP on its port in docker containers; a user command may not.
    return c.process.image is not None


def none_rules(lab: Lab, c: DockerContainer) -> list[Expectation]:
    node = lab.node(c.node)
    out = [Expectation("none-only-loopback", c.name, c.name, c.ns, "addresses", None, None, True,
                       addresses=(LOOPBACK,), only=True,
                       why="a none container has lo and nothing else")]
    out.append(Expectation("none-reaches-nobody", c.name, c.name, c.ns, "ping", node.ip, None,
                           False, why="no interface but lo: not even its own node"))
    if lab.outside:
        out.append(Expectation("none-reaches-nobody", c.name, c.name, c.ns, "tcp", lab.outside.ip,
                               lab.outside.port, False, answered_by="outside",
                               why="no route out of the container"))
    if c.process.port:
        out.append(Expectation("none-localhost", c.name, c.name, c.ns, "tcp", LOOPBACK,
                               c.process.port, True, answered_by=c.name, seen_source=LOOPBACK,
                               why="its own server answers on its own localhost"))
    for p in c.ports:
        for name, ns, _ in _clients(lab, node)[:1] + [(node.name, node.ns, node.ip)]:
            out.append(Expectation("none-port-does-nothing", c.name, name, ns, p.proto, node.ip,
                                   p.host_port, False, answered_by=c.name,
                                   why=f"-p {p} on a none container publishes nothing"))
    return out


def bridge_rules(lab: Lab, c: DockerContainer) -> list[Expectation]:
    node = lab.node(c.node)
    out: list[Expectation] = []
    if lab.outside:
        out.append(Expectation("bridge-nat-out", c.name, c.name, c.ns, "tcp", lab.outside.ip,
                               lab.outside.port, True, answered_by="outside", seen_source=node.ip,
                               why="MASQUERADE: the outside world sees the node's address"))
    for p in c.published:
        for name, ns, src_ip in _clients(lab, node):
            if p.proto == "udp" and not _udp_served(c):
                continue
            out.append(Expectation("bridge-published-port", c.name, name, ns, p.proto, node.ip,
                                   p.host_port, True, answered_by=c.name, seen_source=src_ip,
                                   why=f"-p {p}: DNAT node {node.ip}:{p.host_port} to "
                                       f"{c.ip}:{p.container_port}, the client's address kept"))
    for other in lab.nodes:
        if other is node:
            continue
        out.append(Expectation("bridge-address-private", c.name, other.name, other.ns, "ping",
                               c.ip, None, False,
                               why=f"{c.ip} exists only behind {node.name}'s docker0"))
        if c.process.port:
            out.append(Expectation("bridge-address-private", c.name, other.name, other.ns, "tcp",
                                   c.ip, c.process.port, False, answered_by=c.name,
                                   why=f"{c.ip} exists only behind {node.name}'s docker0"))
    return out


def host_rules(lab: Lab, c: DockerContainer) -> list[Expectation]:
    node = lab.node(c.node)
    out = _host_mode(lab, node, c.name, c.ns, c.process.port)
    for p in c.ports:
        if p.host_port == c.process.port:
            continue
        for name, ns, _ in _clients(lab, node)[:1]:
            out.append(Expectation("host-port-ignored", c.name, name, ns, p.proto, node.ip,
                                   p.host_port, False, answered_by=c.name,
                                   why=f"-p {p} is ignored in host mode"))
    return out


def host_network_pod_rules(lab: Lab, pod: Pod) -> list[Expectation]:
    port = next((c.port for c in pod.containers if c.port), None)
    return _host_mode(lab, lab.node(pod.node), pod.name, pod.ns, port)


def _host_mode(lab: Lab, node: Node, name: str, ns: str, port: Optional[int]) -> list[Expectation]:
    out = [Expectation("host-shares-node-ip", name, name, ns, "addresses", None, None, True,
                       addresses=(node.ip,),
                       why="host mode: the node's own network namespace and IP")]
    if port:
        for src, src_ns, src_ip in _clients(lab, node):
            out.append(Expectation("host-port-at-node-ip", name, src, src_ns, "tcp", node.ip, port,
                                   True, answered_by=name, seen_source=src_ip,
                                   why=f"host mode: it listens on {node.ip}:{port} itself"))
    return out


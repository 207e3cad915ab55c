"""Checks: what verify proves, as small frozen dataclasses derived from the Lab (pure). A check
knows where its probe runs, what it expects, and the command that reproduces it; Endpoint says
where a check starts or ends and which addresses a server may see from it without NAT.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Iterable, Optional

from ..core.lab import NETEXEC, NODE_PORT, Lab, Node, Pod

REACHABLE, UNREACHABLE = "reachable", "unreachable"
# A lab's round trip takes microseconds, but a busy 2-core machine may stall a probe for a while;
# only an unreachable target pays these (ping: timeout x (retries + 1); HTTP: the connect timeout).
PING_TIMEOUT_MS = 500
PING_RETRIES = 2
HTTP_CONNECT_TIMEOUT = 2.0
HTTP_MAX_TIME = 10.0



@dataclass(frozen=True)
class Server:
    """A server of the lab a check needs: netexec in a pod, or the node's own on port 8000."""
    ns: str
    port: int
    owner: str            # pod or node name
    container: str


@dataclass(frozen=True)
class Check:
    rule: str
    src: str              # pod or node name (FROM)
    dst: str              # pod or node name, or an address (TO)
    method: str           # "ping", "http" or "addr"
    ns: str               # the namespace the probe runs in
    target: str = ""      # the address probed
    port: Optional[int] = None
    path: str = ""
    expect: str = REACHABLE
    sees: tuple[str, ...] = ()    # the client's own addresses, as a server could see them
    nat: Optional[bool] = None    # False: the server must see one of `sees`; True: none of them
    body: Optional[str] = None    # the exact answer the server must give
    subnet: str = ""              # addr: the pod subnet the address must be inside
    server: Optional[Server] = None
    hops: tuple[tuple[str, str, str], ...] = ()   # (namespace, address, "forward"|"return")
    label: str = ""               # a scenario check's name and line
    not_by: str = ""              # negative: this server must not be the one that answers
    addrs: tuple[str, ...] = ()   # addrs: these IPv4 addresses are in the namespace ...
    only: bool = False            # ... and no other
    why: str = ""                 # the promise the check proves, said when it fails
    size: int = 0                 # mtu: the ICMP payload the lab's pod MTU allows
    asks: bool = False            # the answer says who answered (a Docker check): judged so
    data: tuple = ()              # a feature's own check method: what its probe needs
    command: str = ""             # ... and the shell command that reproduces it

    @property
    def url(self) -> str:
        return f"http://{self.target}:{self.port}{self.path}"

    @property
    def expected(self) -> str:
        if self.method == "addr":
            return f"in {self.subnet}, unique"
        if self.method == "addrs":
            return ("only " if self.only else "has ") + ", ".join(self.addrs)
        if self.method == "mtu":
            return "reply, DF, eth0 MTU - 28"
        if self.expect == UNREACHABLE and self.not_by:
            return f"no answer from {self.not_by}"
        if self.expect == UNREACHABLE:
            return "no reply" if self.method == "ping" else "no connection"
        if self.method == "ping":
            return "reply"
        if self.nat is False:
            return f"sees {self.sees[0]}"
        if self.nat is True:
            return f"NATed (not {self.sees[0]})"
        if self.body is not None:
            return f"answers {self.body!r}"
        return "connects"

    @property
    def reproduce(self) -> str:
        if self.command:
            return self.command
        if self.method == "addr":
            return f"ip -n {self.ns} -4 addr show dev eth0"
        where = f"ip netns exec {self.ns} " if self.ns else ""   # "": this host (up --node)
        if self.method == "addrs":
            return f"ip -n {self.ns} -4 -brief addr show" if self.ns else "ip -4 -brief addr show"
        if self.method == "ping":
            return f"{where}ping -c1 -W1 {self.target}"
        if self.method == "mtu":
            # The payload from the MTU eth0 really has, as the probe does (ip netns exec
            # remounts /sys, so /sys/class/net is the namespace's own).
            return (f"{where}sh -c 'ping -M do -c1 -W1 -s "
                    f"$(($(cat /sys/class/net/eth0/mtu) - 28)) {self.target}'")
        if self.method == "udp":
            return f"echo {self.path} | {where}socat -t1 - UDP:{self.target}:{self.port}"
        return f"{where}curl -s {self.url}"


@dataclass(frozen=True)
class Endpoint:
    """Where a check starts or ends: its namespace, address, and the node namespace it sits behind."""
    name: str
    ns: Optional[str]     # None for an address outside the lab
    ip: str
    node_ns: Optional[str] = None    # a pod's node; None for a node itself or an address
    sees: tuple[str, ...] = ()       # the addresses a server may see from it without NAT


def pod_end(lab: Lab, pod: Pod, towards: Optional[Pod] = None) -> Endpoint:
    if pod.host_network:
        # A hostNetwork pod is its node's namespace and IP: it talks (and is talked to) as the node.
        return replace(node_end(lab.node(pod.node), towards, lab.backend == "vxlan"), name=pod.name)
    return Endpoint(pod.name, pod.ns, pod.ip, lab.node(pod.node).ns, (pod.ip,))


def node_end(node: Node, towards: Optional[Pod] = None, vxlan: bool = False) -> Endpoint:
    # A node talks to its own pods from cni0's address and to anything else from eth0's.
    # On vxlan it talks to other nodes' pods from flannel.1's address (the route's src), as flannel.
    first = node.ip
    if towards is not None and not towards.host_network:
        first = node.gateway if towards.node == node.name else (node.vtep if vxlan else node.ip)
    return Endpoint(node.name, node.ns, node.ip, None, (first,) + tuple(
        a for a in (node.ip, node.gateway) + (node.vtep,) * vxlan if a and a != first))


def hops(src: Endpoint, dst: Endpoint) -> tuple[tuple[str, str, str], ...]:
    """The namespaces a packet and its reply cross, each with the address it must find a route to."""
    out = [(src.ns, dst.ip, "forward")]
    if src.node_ns:
        out.append((src.node_ns, dst.ip, "forward"))
    if dst.node_ns and dst.node_ns not in (src.ns, src.node_ns):
        out.append((dst.node_ns, dst.ip, "forward"))
    if dst.ns:
        back = src.sees[0] if src.sees else src.ip
        out.append((dst.ns, back, "return"))
        if dst.node_ns:
            out.append((dst.node_ns, back, "return"))
        if src.node_ns and src.node_ns not in (dst.ns, dst.node_ns):
            out.append((src.node_ns, back, "return"))
    return tuple(out)


def servers_of(pod: Pod) -> list[Server]:
    return [Server(pod.ns, c.port, pod.name, c.name) for c in pod.containers
            if c.image == NETEXEC and c.port]


def node_server(node: Node) -> Server:
    return Server(node.ns, NODE_PORT, node.name, NETEXEC)


def reach(rule: str, src: Endpoint, dst: Endpoint, servers: Iterable[Server]) -> list[Check]:
    """Ping, then /clientip on each server: the server must see the client's own address."""
    route = hops(src, dst)
    return [Check(rule, src.name, dst.name, "ping", src.ns, dst.ip, hops=route)] + [
        Check(rule, src.name, dst.name, "http", src.ns, dst.ip, s.port, "/clientip",
              sees=src.sees, nat=False, server=s, hops=route) for s in servers]


NETNS_DIR = "/run/netns"   # where named network namespaces are mounted (as runtime.kernel)


def launch(ns: str) -> list[str]:
    """The argv prefix that runs a probe inside namespace `ns` (a process of its own: never a
    Python thread that setns()es). "" (plan.HERE): a node on a real host probes where it runs."""
    if ns == "":
        return []
    return ["nsenter", f"--net={NETNS_DIR}/{ns}", "--"]

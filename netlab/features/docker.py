"""Docker's network modes, the worked example of a feature: everything Docker-specific is here.

- Schema and model: `containers:` run straight on a node, like `docker run --network=MODE -p H:C`,
  in `none` (own namespace, `lo` only), `bridge` (own namespace behind `docker0`, an address from
  the node's dockerCIDR) or `host` (a process in the node's namespace); published ports checked.
- Plan: docker0, a veth per bridge-mode container, and the node's NAT rules (`table ip
  docker-nat`: MASQUERADE on the way out, DNAT of published ports), then the processes.
- Verify: what each mode promises, derived from the Lab as plain data (Expectation), then checks:
  - none: only loopback; reaches nobody; nobody reaches it (a port published on it does nothing);
    its own server answers on its localhost.
  - bridge: reaches the outside world and the server there sees the node's address (NAT); its
    published ports answer at node IP:hostPort from other nodes and from pods (TCP and UDP), and
    the server sees the client's own address (DNAT only); its container address is not
    reachable from other nodes.
  - host (and hostNetwork pods): its address is the node's; its port answers at the node's IP; a
    port published in host mode does nothing.
- Show: the containers like `docker ps`, their published ports, docker0 per node.

An Expectation says: from `src` (a namespace), a `kind` probe to `dst`:`port` is answered by the
server named `answered_by` (`reachable=True`), or is not answered by it (`reachable=False`: it
fails, or somebody else answers); `seen_source` is the address that server reports on /clientip
(or to UDP `clientip`). `addresses` probes read the IPv4 addresses of `src` instead: those
listed must be there (and, with `only`, nothing else).
"""

from __future__ import annotations

import ipaddress
import itertools
import re
from dataclasses import asdict, dataclass, replace
from typing import Any, Literal, Optional, Union

from ..core.feature import Feature, Needs, NotOnHost
from ..core.lab import DEFAULT_PORT, NETEXEC, Container, Lab, Node, Pod, ifname_for, netexec_argv
from ..core.ops import AddrAdd, BridgeAdd, LinkUp, NftApply, RouteAdd, Spawn, VethAdd, argv_of
from ..core.schema import Build, Loc, did_you_mean
from ..verify.checks import REACHABLE, UNREACHABLE, Check, Server, servers_of
from .pods import ContainerSpec

LOOPBACK = "127.0.0.1"
DOCKER_TABLE = "docker-nat"


class DockerSpec(ContainerSpec):
    """A container run straight on a node, like `docker run --network=MODE -p H:C`."""
    node: str
    network: Literal["none", "bridge", "host"] = "bridge"
    ports: list[Union[str, int]] = []


@dataclass(frozen=True)
class PortMap:
    """A published port, `-p host_port:container_port/proto`."""
    host_port: int
    container_port: int
    proto: str            # tcp or udp

    def __str__(self) -> str:
        return f"{self.host_port}:{self.container_port}/{self.proto}"


@dataclass(frozen=True)
class DockerContainer:
    """A container run straight on a node in Docker's none, bridge or host network mode."""
    name: str
    node: str
    mode: str             # none, bridge or host
    ns: str               # its own namespace (none, bridge) or the node's (host)
    ip: Optional[str]     # bridge: from the node's docker subnet; host: the node's IP; none: None
    host_veth: Optional[str]   # bridge: the node's end of its veth, enslaved to docker0
    ports: tuple[PortMap, ...]  # as written in the scenario
    process: Container

    @property
    def published(self) -> tuple[PortMap, ...]:
        """The ports that really get published: Docker ignores -p in none and host mode."""
        return self.ports if self.mode == "bridge" else ()



def containers_on(lab: Lab, node: str) -> tuple[DockerContainer, ...]:
    return tuple(c for c in lab.containers if c.node == node)


class Docker(Feature):
    name = "docker"
    schema = {"containers": (list[DockerSpec], [])}

    def build(self, spec: Any, b: Build) -> None:
        nodes, pods = b.fields["nodes"], b.fields["pods"]
        _check_docker_cidrs(nodes, b.scratch["segments"][0], b.scratch["cluster"], b.where)
        containers = _docker_containers(spec, b, {n.name: n for n in nodes})
        b.parts["containers"] = containers
        b.namespaces += [c.ns for c in containers if c.mode != "host"]

    def ops(self, lab: Lab, phase: str) -> list:
        if phase == "links":
            return docker_ops(lab)
        if phase == "processes":
            return [Spawn(c.ns, c.name, c.name, argv_of(c.process)) for c in lab.containers]
        return []

    def node_ops(self, lab: Lab, node: Node, underlay: str, phase: str) -> list:
        if lab.containers:
            raise NotOnHost(f"--node: lab {lab.name} has docker containers, which only a whole "
                            f"lab on one machine builds: run it without --node")
        return []

    def rules(self) -> dict:
        return {rule: _docker_rule(rule) for rule in
                ("docker-none", "docker-bridge", "docker-host", "docker-published-port")}

    def needs(self, lab: Lab) -> Needs:
        return Needs(tools=["nft"] * any(c.mode == "bridge" for c in lab.containers),
                     commands=[(f"container '{c.name}'", c.process.argv[0]) for c in lab.containers
                               if c.process.image != NETEXEC and c.process.argv])

    def show(self, lab: Lab, status: Any) -> dict:
        return _show_data(lab, status)

    def rows(self, data: dict) -> list[tuple[str, ...]]:
        return [(c["name"], c["ready"], c["status"], c["ip"] or "-", c["node"], c["mode"],
                 c["name"], c["namespace"]) for c in data.get("containers", [])]

    def render(self, data: dict) -> list[Any]:
        return _render_ports(data)


def _check_docker_cidrs(nodes: tuple[Node, ...], underlay, cluster, where) -> None:
    """Every node's docker0 subnet stays clear of the underlay and of the pod ranges.

    Nodes may share one docker subnet (by default they all have 172.17.0.0/16, as Docker does):
    a container's address means something only on its own node.
    """
    for i, node in enumerate(nodes):
        docker = ipaddress.IPv4Network(node.docker_cidr)
        loc = ("nodes", i, "dockerCIDR")
        fix = "give the node another `dockerCIDR:`, such as 172.18.0.0/16"
        if docker.overlaps(underlay):
            where.fail(loc, f"node '{node.name}': dockerCIDR {docker} overlaps the underlay "
                            f"{underlay}: {fix}")
        if docker.overlaps(cluster):
            where.fail(loc, f"node '{node.name}': dockerCIDR {docker} overlaps network.podCIDR "
                            f"{cluster}: {fix}")
        for other in nodes:
            if docker.overlaps(ipaddress.IPv4Network(other.pod_cidr)):
                where.fail(loc, f"node '{node.name}': dockerCIDR {docker} overlaps node "
                                f"'{other.name}''s podCIDR {other.pod_cidr}: {fix}")


def parse_port(value: Any) -> PortMap:
    """`"8081:8080"` or `"5353:53/udp"` -> PortMap; ValueError with the fix otherwise."""
    if isinstance(value, int) and not isinstance(value, bool):
        raise ValueError(f"{value} is a number, not a mapping (YAML reads an unquoted 81:30 as a "
                         f"number in base 60): write it quoted, like \"8081:8080\"")
    text = str(value)
    m = re.fullmatch(r"(\d+):(\d+)(?:/(tcp|udp))?", text)
    if not m:
        raise ValueError(f"'{text}' is not a published port: write hostPort:containerPort, like "
                         f"\"8081:8080\" or \"5353:53/udp\"")
    host, cont = int(m.group(1)), int(m.group(2))
    for port in (host, cont):
        if not 1 <= port <= 65535:
            raise ValueError(f"'{text}': port {port} is out of range: use 1 to 65535")
    return PortMap(host, cont, m.group(3) or "tcp")


def _docker_containers(spec: Any, b: Build, by_name: dict) -> tuple[DockerContainer, ...]:
    where, lab, veths, claim = b.where, b.lab, b.scratch["veths"], b.claim
    # Ports a node's own stack answers on, per (proto, port): host-mode containers and
    # hostNetwork pods listen there, bridge containers publish there.
    node_ports: dict[str, dict[tuple[str, int], str]] = {n: {} for n in by_name}

    def take(node: str, proto: str, port: int, who: str, loc: Loc):
        other = node_ports[node].get((proto, port))
        if other is not None:
            where.fail(loc, f"{who}: port {port}/{proto} on node '{node}' is already taken by "
                            f"{other}: use another host port")
        node_ports[node][(proto, port)] = who

    for i, p in enumerate(spec.pods):
        if p.hostNetwork:
            for j, c in enumerate(p.containers):
                if c.image is not None or c.port is not None:
                    take(p.node, "tcp", c.port or DEFAULT_PORT, f"pod '{p.name}' (hostNetwork)",
                         ("pods", i, "containers", j, "port"))

    # Lazily: a /16 has 65,534 hosts, and most labs take none of them (hosts() is a generator).
    free = {n: (str(h) for h in
                itertools.islice(ipaddress.IPv4Network(node.docker_cidr).hosts(), 1, None))
            for n, node in by_name.items()}
    out: list[DockerContainer] = []
    for i, c in enumerate(spec.containers):
        loc = ("containers", i)
        claim(c.name, loc + ("name",))
        who = f"container '{c.name}'"
        if c.node not in by_name:
            fix = did_you_mean(c.node, list(by_name), f"use one of {', '.join(by_name)}")
            where.fail(loc + ("node",), f"{who} is on unknown node '{c.node}': {fix}")
        node = by_name[c.node]
        if (c.image is None) == (c.command is None):
            where.fail(loc, f"{who}: give either `image: netexec` (netlab's HTTP server) or "
                            f"`command: [...]`, not both or neither")
        ports: list[PortMap] = []
        for k, value in enumerate(c.ports):
            try:
                pm = parse_port(value)
            except ValueError as e:
                where.fail(loc + ("ports", k), f"{who}: {e}")
            if c.network == "bridge":
                take(c.node, pm.proto, pm.host_port, who, loc + ("ports", k))
            ports.append(pm)
        if c.image == NETEXEC:
            port = c.port or DEFAULT_PORT
            # netexec answers HTTP on the TCP port and, for docker containers, UDP on the same
            # number (like agnhost's --udp-port), so a published /udp port can be proven too.
            process = Container(name=c.name, argv=netexec_argv(c.name, port)
                                + ("--udp-port", str(port)), port=port, image=NETEXEC)
        else:
            process = Container(name=c.name, argv=tuple(c.command or ()), port=c.port, image=None)
        if c.network == "host" and process.port is not None:
            take(c.node, "tcp", process.port, f"{who} (host mode)", loc + ("port",))
            if process.image == NETEXEC:
                take(c.node, "udp", process.port, f"{who} (host mode)", loc + ("port",))
        ip, veth, ns = None, None, f"{lab}-{c.name}"
        if c.network == "host":
            ip, ns = node.ip, node.ns
        elif c.network == "bridge":
            ip = next(free[c.node], None)
            if ip is None:
                where.fail(loc + ("node",), f"node '{node.name}''s dockerCIDR {node.docker_cidr} "
                                            f"has no address left for {who}: give the node a "
                                            f"larger `dockerCIDR:`")
            veth = ifname_for(c.name, "veth-")
            if veth in veths[c.node]:
                where.fail(loc + ("name",), f"{who} would get the same interface name '{veth}' "
                                            f"as a pod or container on '{node.name}': rename it")
            veths[c.node].add(veth)
        out.append(DockerContainer(name=c.name, node=c.node, mode=c.network, ns=ns, ip=ip,
                                   host_veth=veth, ports=tuple(ports), process=process))
    return tuple(out)


def docker_ops(lab: Lab) -> list:
    """docker0 on every node that runs docker containers, a veth per bridge-mode container, and
    the node's NAT rules; none-mode containers get only their namespace, host-mode ones nothing."""
    ops: list = []
    for node in lab.nodes:
        containers = containers_on(lab, node.name)
        if not containers:
            continue
        plen = int(node.docker_cidr.split("/")[1])
        ops += [BridgeAdd(node.ns, "docker0"), AddrAdd(node.ns, "docker0", node.docker_gw, plen),
                LinkUp(node.ns, "docker0")]
        for c in containers:
            if c.mode != "bridge":
                continue
            ops += [
                VethAdd(node.ns, c.host_veth, c.ns, "eth0"),
                LinkUp(node.ns, c.host_veth, master="docker0"),
                AddrAdd(c.ns, "eth0", c.ip, plen),
                LinkUp(c.ns, "eth0"),
                RouteAdd(c.ns, "default", node.docker_gw, "eth0"),
            ]
        ops.append(NftApply(node.ns, docker_ruleset(node, containers)))
    return ops


def docker_ruleset(node: Node, containers: tuple[DockerContainer, ...]) -> str:
    """The node's Docker NAT rules, as nft text: what Docker's iptables rules do, in one table.

    Traffic to the node's address enters the `docker` chain from prerouting (other nodes, pods)
    and from output (the node itself); there each published port is DNAT'd to its container.
    Traffic from the docker subnet that leaves the node (not back into docker0) is masqueraded
    to the address of the interface it leaves by.
    """
    dnat = [f"\t\t{p.proto} dport {p.host_port} dnat to {c.ip}:{p.container_port} "
            f"comment \"{c.name} {p}\""
            for c in containers for p in c.published]
    lines = [
        f"table ip {DOCKER_TABLE} {{",
        "\tchain prerouting {",
        "\t\ttype nat hook prerouting priority dstnat; policy accept;",
        f"\t\tip daddr {node.ip} jump docker",
        "\t}",
        "\tchain output {",
        "\t\ttype nat hook output priority -100; policy accept;",
        f"\t\tip daddr {node.ip} jump docker",
        "\t}",
        "\tchain postrouting {",
        "\t\ttype nat hook postrouting priority srcnat; policy accept;",
        f"\t\tip saddr {node.docker_cidr} oifname != \"docker0\" masquerade",
        "\t}",
        "\tchain docker {",
        *dnat,
        "\t}",
        "}",
    ]
    return "\n".join(lines) + "\n"


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



# ---------------------------------------------------------------- as verify's checks

# Each docker_rules promise belongs to one verify rule; what -p does, in every mode, is one rule.
DOCKER_RULE = {"none-only-loopback": "docker-none", "none-reaches-nobody": "docker-none",
               "none-localhost": "docker-none", "bridge-nat-out": "docker-bridge",
               "bridge-address-private": "docker-bridge", "host-shares-node-ip": "docker-host",
               "host-port-at-node-ip": "docker-host", "bridge-published-port":
               "docker-published-port", "none-port-does-nothing": "docker-published-port",
               "host-port-ignored": "docker-published-port"}


def docker_checks(lab: Lab, e) -> list[Check]:
    """One docker_rules Expectation as checks: an address list, a ping, or requests (HTTP over TCP,
    a datagram over UDP) asking the server its name and, where it matters, the address it saw."""
    rule = DOCKER_RULE[e.rule]
    base = Check(rule, e.src, e.dst or e.subject, "ping", e.src_ns, e.dst or "",
                 expect=REACHABLE if e.reachable else UNREACHABLE, label=e.rule, why=e.why, asks=True,
                 hops=((e.src_ns, e.dst, "forward"),) if e.dst and e.dst != LOOPBACK else ())
    if e.kind == "addresses":
        return [replace(base, method="addrs", dst=e.subject, addrs=e.addresses, only=e.only)]
    if e.kind == "ping":
        return [base]
    method = "http" if e.kind == "tcp" else "udp"
    ask = (lambda what: "/" + what) if method == "http" else (lambda what: what)
    server = _docker_server(lab, e.answered_by, e.port) if e.reachable else None
    asking = replace(base, method=method, port=e.port, server=server)
    if not e.reachable:
        return [replace(asking, path=ask("hostname"), not_by=e.answered_by or "")]
    out = [replace(asking, path=ask("hostname"), body=e.answered_by)] if e.answered_by else []
    if e.seen_source:
        out.append(replace(asking, path=ask("clientip"), sees=(e.seen_source,), nat=False))
    return out


def _docker_server(lab: Lab, name: Optional[str], port: Optional[int]) -> Optional[Server]:
    """The TCP server a positive check needs listening (a UDP answer comes from the same one)."""
    for c in lab.containers:
        if c.name == name and c.process.port:
            return Server(c.ns, c.process.port, c.name, c.name)
    for p in lab.pods:
        if p.name == name:
            return next(iter(servers_of(p)), None)
    if lab.outside is not None and name == "outside":
        return Server(lab.outside.ns, lab.outside.port, "outside", "server")
    return None


def _docker_rule(rule: str) -> Callable[[Lab], list[Check]]:
    def derive_rule(lab: Lab) -> list[Check]:
        return [c for e in expectations(lab) if DOCKER_RULE[e.rule] == rule
                for c in docker_checks(lab, e)]
    derive_rule.__doc__ = f"Docker's promises of {rule} (expectations)."
    return derive_rule



# ---------------------------------------------------------------- show

def _show_data(lab: Lab, status: Any) -> dict:
    """Docker containers (like `docker ps`) and the outside world, for `show`."""
    data: dict = {"containers": [], "docker0": {
        n.name: {"cidr": n.docker_cidr, "address": n.docker_gw} for n in lab.nodes
        if containers_on(lab, n.name)}}
    for c in lab.containers:
        node = lab.node(c.node)
        running, present = c.name in status.alive, status.present(c.ns)
        data["containers"].append({
            "name": c.name, "namespace": c.ns, "ip": c.ip, "node": c.node, "mode": c.mode,
            "ready": f"{int(running)}/1",
            "status": "Missing" if not present else "Running" if running else "Degraded",
            "ports": [f"{node.ip}:{p.host_port}->{p.container_port}/{p.proto}" for p in c.published],
            "ignored_ports": [str(p) for p in c.ports if p not in c.published]})
    return data


def _render_ports(data: dict) -> list[Any]:
    """The published ports (and those a mode ignores), as a table for show."""
    ports = [(c["name"], p) for c in data["containers"] for p in c["ports"]]
    ignored = [(c["name"], c["mode"], p) for c in data["containers"] for p in c["ignored_ports"]]
    if not ports and not ignored:
        return []
    rows = ports + [(name, f"{p} ignored: {mode} mode publishes nothing")
                    for name, mode, p in ignored]
    return ["", (("CONTAINER", "PUBLISHED PORT"), rows)]

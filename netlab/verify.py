"""Verify: derive the checks a lab implies (plus the scenario's own), probe them with real ping and
curl inside the lab's namespaces, and judge each one with a reason and the command that reproduces it.

Deriving is pure: a rule is a function Lab -> list[Check], registered in RULES; later network modes
add their rules there. Probing groups the checks by source namespace: one `fping` with every ping
target and one `curl --parallel` with every URL per namespace, run concurrently on a bounded pool.
Before probing, it waits (bounded) until the lab's servers listen, and it never enters a namespace
from a Python thread: `nsenter --net=/run/netns/NS` launches each probe process.
"""

from __future__ import annotations

import ipaddress
import os
import re
import shutil
import subprocess
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from typing import Callable, Iterable, Optional

from . import kernel as K
from .errors import NetlabError
from .model import NETEXEC, NODE_PORT, Lab, Node, Pod
from .state import LabState

REACHABLE, UNREACHABLE = "reachable", "unreachable"
# A lab's round trip takes microseconds, but a busy 2-core machine may stall a probe for a while;
# only an unreachable target pays these (ping: timeout x (retries + 1); HTTP: the connect timeout).
PING_TIMEOUT_MS = 500
PING_RETRIES = 2
HTTP_CONNECT_TIMEOUT = 2.0
HTTP_MAX_TIME = 10.0
READY_TIMEOUT = 5.0        # how long verify waits for a lab's servers to listen


# ---------------------------------------------------------------- checks (pure)


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


def _reach(rule: str, src: Endpoint, dst: Endpoint, servers: Iterable[Server]) -> list[Check]:
    """Ping, then /clientip on each server: the server must see the client's own address."""
    route = hops(src, dst)
    return [Check(rule, src.name, dst.name, "ping", src.ns, dst.ip, hops=route)] + [
        Check(rule, src.name, dst.name, "http", src.ns, dst.ip, s.port, "/clientip",
              sees=src.sees, nat=False, server=s, hops=route) for s in servers]


def rule_pod_ip(lab: Lab) -> list[Check]:
    """Each pod's address (as the kernel has it) is inside its node's pod subnet and unique."""
    # A hostNetwork pod has the node's address, not one of the pod subnet (docker-host proves it).
    return [Check("pod-ip", p.name, p.node, "addr", p.ns, p.ip, subnet=lab.node(p.node).pod_cidr)
            for p in lab.pods if not p.host_network]


def _pod_pairs(lab: Lab, rule: str, same_node: bool) -> list[Check]:
    ends = [(p, pod_end(lab, p), servers_of(p)) for p in lab.pods]
    out = []
    for src, _, _ in ends:
        for dst, dst_end, servers in ends:
            if dst is not src and (src.node == dst.node) == same_node:
                out += _reach(rule, pod_end(lab, src, dst), dst_end, servers)
    return out


def rule_pod_pod_same_node(lab: Lab) -> list[Check]:
    """Pod to pod on one node, over cni0: ping, and /clientip sees the client pod's own IP."""
    return _pod_pairs(lab, "pod-pod-same-node", True)


def rule_pod_pod_cross_node(lab: Lab) -> list[Check]:
    """Pod to pod across nodes, routed by the nodes: ping, and /clientip with no NAT."""
    return _pod_pairs(lab, "pod-pod-cross-node", False)


def rule_node_to_pod(lab: Lab) -> list[Check]:
    """Every node reaches every pod directly."""
    return [c for n in lab.nodes for p in lab.pods
            for c in _reach("node-to-pod", node_end(n, p, lab.backend == "vxlan"), pod_end(lab, p),
                            servers_of(p))]


def rule_pod_to_node(lab: Lab) -> list[Check]:
    """Every pod reaches every node directly (the node's server on port 8000 sees the pod's IP)."""
    return [c for p in lab.pods for n in lab.nodes
            for c in _reach("pod-to-node", pod_end(lab, p), node_end(n), [node_server(n)])]


def rule_localhost(lab: Lab) -> list[Check]:
    """The containers of a pod share one namespace: its server answers on localhost."""
    return [Check("localhost", p.name, p.name, "http", p.ns, "localhost", s.port, "/hostname",
                  body=p.name, server=s) for p in lab.pods for s in servers_of(p)]


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


# ---------------------------------------------------------------- Docker modes (pure)

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
    from .docker_rules import LOOPBACK
    rule = DOCKER_RULE[e.rule]
    base = Check(rule, e.src, e.dst or e.subject, "ping", e.src_ns, e.dst or "",
                 expect=REACHABLE if e.reachable else UNREACHABLE, label=e.rule, why=e.why,
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
        from .docker_rules import expectations
        return [c for e in expectations(lab) if DOCKER_RULE[e.rule] == rule
                for c in docker_checks(lab, e)]
    derive_rule.__doc__ = f"Docker's promises of {rule} (docker_rules.expectations)."
    return derive_rule


def rule_mtu(lab: Lab) -> list[Check]:
    """From one pod on each node, a ping with DF set and the largest payload its eth0 MTU allows
    crosses to one pod on every other node: a pod MTU too large for the overlay shows here."""
    first = {}
    for p in lab.pods:
        if not p.host_network:
            first.setdefault(p.node, p)
    return [Check("mtu", src.name, dst.name, "mtu", src.ns, dst.ip, size=src.mtu - 28,
                  hops=hops(pod_end(lab, src), pod_end(lab, dst)),
                  why="the pods' MTU must fit the path between the nodes" +
                  (", less VXLAN's 50 bytes" if lab.backend == "vxlan" else ""))
            for src in first.values() for dst in first.values() if dst.node != src.node]


# The rules, in the order they are reported. Later network modes register theirs here.
RULES: dict[str, Callable[[Lab], list[Check]]] = {
    "pod-ip": rule_pod_ip,
    "pod-pod-same-node": rule_pod_pod_same_node,
    "pod-pod-cross-node": rule_pod_pod_cross_node,
    "node-to-pod": rule_node_to_pod,
    "pod-to-node": rule_pod_to_node,
    "localhost": rule_localhost,
    "scenario": rule_scenario,
    "docker-none": _docker_rule("docker-none"),
    "docker-bridge": _docker_rule("docker-bridge"),
    "docker-host": _docker_rule("docker-host"),
    "docker-published-port": _docker_rule("docker-published-port"),
    "mtu": rule_mtu,
}


def derive(lab: Lab, only: Iterable[str] = (), source: Optional[str] = None) -> list[Check]:
    """Every check of the lab, narrowed to some rules and/or one source pod or node."""
    rules = list(only) or list(RULES)
    checks = [c for r in rules for c in RULES[r](lab)]
    return [c for c in checks if source is None or c.src == source]


# ---------------------------------------------------------------- results


@dataclass
class Result:
    check: Check
    ok: bool
    observed: str
    reason: str = ""

    def as_dict(self) -> dict:
        c = self.check
        return {"rule": c.rule, "from": c.src, "to": c.dst, "method": c.method,
                "target": c.url if c.method == "http" else c.target, "expected": c.expected,
                "observed": self.observed, "ok": self.ok, "reason": self.reason,
                "reproduce": c.reproduce} | ({"name": c.label} if c.label else {})


@dataclass
class Report:
    lab: str
    results: list[Result] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def failed(self) -> list[Result]:
        return [r for r in self.results if not r.ok]

    def summary(self) -> str:
        bad = len(self.failed)
        return (f"verify {self.lab}: {len(self.results)} checks, {len(self.results) - bad} passed, "
                f"{bad} failed in {self.seconds:.2f}s")


# ---------------------------------------------------------------- probing


def _launch(ns: str) -> list[str]:
    if ns == "":   # plan.HERE: a node on a real host probes from where netlab runs
        return []
    return ["nsenter", f"--net={K.netns_path(ns)}", "--"]


@dataclass
class PingOut:
    alive: bool
    detail: str = ""


def ping_many(ns: str, targets: list[str]) -> dict[str, PingOut]:
    """One fping for every target of one namespace (a real ICMP echo each, like ping -c1)."""
    argv = _launch(ns) + ["fping", "-i", "0", "-B", "1", "-t", str(PING_TIMEOUT_MS),
                          "-r", str(PING_RETRIES)] + targets
    proc = subprocess.run(argv, capture_output=True, text=True,
                          timeout=30 + len(targets) * PING_TIMEOUT_MS / 1000)
    return parse_fping(targets, proc.returncode, proc.stdout, proc.stderr)


def parse_fping(targets: list[str], code: int, stdout: str, stderr: str) -> dict[str, PingOut]:
    """fping's "ADDR is alive" / "ADDR is unreachable" lines, and its ICMP errors on stderr."""
    if code > 1:
        why = stderr.strip().splitlines()[-1:] or [f"exit {code}"]
        return {t: PingOut(False, f"fping failed: {why[0]}") for t in targets}
    out = {t: PingOut(False, "no reply") for t in targets}
    for line in stdout.splitlines():
        words = line.split()
        if len(words) >= 3 and words[0] in out:
            out[words[0]] = PingOut(words[2] == "alive", "" if words[2] == "alive" else "no reply")
    for line in stderr.splitlines():
        # e.g. "ICMP Network Unreachable from 10.244.1.1 for ICMP Echo sent to 10.244.9.9"
        m = re.match(r"(ICMP .*?) for ICMP Echo sent to (\S+)", line)
        if m and m.group(2) in out and not out[m.group(2)].alive:
            out[m.group(2)].detail = m.group(1)
    return out


@dataclass
class HttpOut:
    connected: bool
    code: str = "000"
    body: str = ""
    error: str = ""
    local_ip: str = ""


# Bodies go to files on tmpfs: thousands of small files on a disk-backed /tmp cost double.
_TMP = "/dev/shm" if os.path.isdir("/dev/shm") else None
_WRITE_OUT = "%{filename_effective}\t%{http_code}\t%{time_connect}\t%{local_ip}\t%{errormsg}\n"


def curl_many(ns: str, urls: list[str]) -> list[HttpOut]:
    """One `curl --parallel` for every URL of one namespace; each body goes to its own file."""
    tmp = tempfile.mkdtemp(prefix="netlab-verify-", dir=_TMP)
    try:
        config = "".join(f'url = "{u}"\noutput = "r{i}"\n' for i, u in enumerate(urls))
        argv = _launch(ns) + [
            "curl", "-s", "--no-progress-meter", "--parallel", "--parallel-immediate",
            "--parallel-max", str(min(len(urls), 100)), "--connect-timeout",
            str(HTTP_CONNECT_TIMEOUT), "--max-time", str(HTTP_MAX_TIME), "--output-dir", tmp,
            "-w", _WRITE_OUT, "-K", "-"]
        proc = subprocess.run(argv, input=config, capture_output=True, text=True,
                              timeout=30 + HTTP_MAX_TIME * len(urls))
        return parse_curl(len(urls), proc.stdout, proc.stderr or str(proc.returncode), _body(tmp))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _body(tmp: str) -> Callable[[int], str]:
    def read(i: int) -> str:
        try:
            with open(os.path.join(tmp, f"r{i}"), errors="replace") as f:
                return f.read(4096)
        except OSError:
            return ""
    return read


def parse_curl(count: int, stdout: str, stderr: str, body: Callable[[int], str]) -> list[HttpOut]:
    """One --write-out line per transfer: output file rI, HTTP code, connect time, local IP, error."""
    out = [HttpOut(False, error=f"curl did not run: {stderr.strip()}") for _ in range(count)]
    for line in stdout.splitlines():
        parts = line.split("\t")
        name = os.path.basename(parts[0])
        if len(parts) < 5 or not name[1:].isdigit() or int(name[1:]) >= count:
            continue
        i = int(name[1:])
        connected = parts[1] != "000" or float(parts[2] or 0) > 0
        # "Failed to connect to 10.244.2.2 port 8080 after 0 ms: Couldn't connect to server"
        error = parts[4].strip().rsplit(": ", 1)[-1]
        out[i] = HttpOut(connected, parts[1], body(i).strip() if connected else "", error, parts[3])
    return out


def udp_ask(ns: str, host: str, port: int, what: str) -> HttpOut:
    """One datagram `what` to a netexec UDP port (socat waits 1 s for the answer); the answer."""
    argv = _launch(ns) + ["socat", "-t1", "-T2", "-", f"UDP:{host}:{port}"]
    proc = subprocess.run(argv, input=what + "\n", capture_output=True, text=True, timeout=30)
    body = proc.stdout.strip()
    error = (proc.stderr.strip().splitlines() or ["no answer"])[-1].rsplit(": ", 1)[-1]
    return HttpOut(bool(body), "200" if body else "000", body, "" if body else error)


@dataclass
class MtuOut:
    mtu: int                  # eth0's MTU in the source namespace, as the kernel has it
    alive: bool
    detail: str = ""


def ping_df(ns: str, target: str, mtu: int) -> MtuOut:
    """`ping -M do` (DF set, no local fragmenting) with the largest payload eth0's MTU allows."""
    argv = _launch(ns) + ["ping", "-n", "-M", "do", "-c", "2", "-i", "0.2", "-W", "1", "-s",
                          str(mtu - 28), target]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=30)
    # e.g. "From 10.244.1.1 icmp_seq=1 Frag needed and DF set (mtu = 1450)"
    errors = [re.sub(r"^(From \S+ )?(icmp_seq=\d+ )?(ping: )?", "", line)
              for line in (proc.stdout + proc.stderr).splitlines()
              if line.startswith("From ") or "ping:" in line]
    return MtuOut(mtu, proc.returncode == 0, errors[0] if errors else "no reply")


def observe_mtus(checks: list[Check]) -> dict[str, int]:
    """eth0's MTU in each namespace an mtu check starts in (netlink, in process)."""
    out: dict[str, int] = {}
    with K.Kernel() as kern:
        for c in checks:
            if c.ns not in out:
                try:
                    out[c.ns] = int(kern.link_mtu(c.ns, "eth0"))
                except Exception:  # no eth0: the probe's ping says so
                    out[c.ns] = c.size + 28
    return out


def observe_all_addresses(checks: list[Check]) -> dict[str, list[str]]:
    """Every IPv4 address in each namespace an addrs check names (netlink, in process)."""
    seen: dict[str, list[str]] = {}
    with K.Kernel() as kern:
        for c in checks:
            if c.ns not in seen:
                try:
                    seen[c.ns] = [a.split("/")[0] for a in kern.ipv4_addresses(c.ns, None)]
                except Exception as e:
                    seen[c.ns] = [f"error: {e}"]
    return seen


def _listening(pid: int, port: int) -> bool:
    """Whether the namespace of `pid` has a TCP socket listening on `port` (state 0A)."""
    want = f":{port:04X}"
    for name in ("tcp", "tcp6"):
        try:
            with open(f"/proc/{pid}/net/{name}") as f:
                next(f, None)
                for line in f:
                    words = line.split()
                    if len(words) > 3 and words[3] == "0A" and words[1].endswith(want):
                        return True
        except OSError:
            continue
    return False


def wait_ready(lab: Lab, servers: set[Server], timeout: float = READY_TIMEOUT) -> dict[Server, str]:
    """Wait (bounded, polling) until each server listens; the reason for each one that does not."""
    from . import workloads
    by_owner = {what: pid for pid, what in LabState(lab.name).journal().pids.items()}
    in_ns: dict[str, list[int]] = {}
    inodes = {K.netns_inode(s.ns): s.ns for s in servers}
    for pid, inode in workloads.pids_in(i for i in inodes if i).items():
        in_ns.setdefault(inodes[inode], []).append(pid)
    problems: dict[Server, str] = {}
    waiting: dict[Server, int] = {}
    for s in servers:
        pid = by_owner.get(f"{s.owner}/{s.container}")
        if not K.netns_exists(s.ns):
            problems[s] = f"namespace {s.ns} does not exist (is the lab up? netlab status)"
        elif pid is not None and not workloads.alive(pid):
            problems[s] = (f"server down: container '{s.container}' of {s.owner} (pid {pid}) is "
                           f"not running, so nothing listens on port {s.port} in {s.ns}")
        elif pid is None and not in_ns.get(s.ns):
            problems[s] = f"server down: no process runs in {s.ns} to listen on port {s.port}"
        else:
            waiting[s] = pid if pid is not None else in_ns[s.ns][0]
    deadline = time.monotonic() + timeout
    delay = 0.005
    while waiting:
        waiting = {s: pid for s, pid in waiting.items() if not _listening(pid, s.port)}
        if not waiting or time.monotonic() > deadline:
            break
        time.sleep(delay)
        delay = min(delay * 2, 0.1)
    for s in waiting:
        problems[s] = f"server down: nothing listens on port {s.port} in {s.ns} after {timeout:g}s"
    return problems


def observe_addresses(checks: list[Check]) -> dict[str, list[str]]:
    """eth0's IPv4 addresses in each namespace an addr check names (netlink, in process)."""
    seen: dict[str, list[str]] = {}
    with K.Kernel() as kern:
        for c in checks:
            if c.ns in seen:
                continue
            try:
                seen[c.ns] = [a.split("/")[0] for a in kern.ipv4_addresses(c.ns, "eth0")]
            except Exception as e:  # missing namespace or link: the check says so
                seen[c.ns] = [f"error: {e}"]
    return seen


# ---------------------------------------------------------------- judging


def _judge_addr(c: Check, seen: dict[str, list[str]], owners: dict[str, list[str]]) -> Result:
    addrs = seen.get(c.ns, [])
    if addrs and addrs[0].startswith("error:"):
        return Result(c, False, "-", f"cannot read eth0 in {c.ns}: {addrs[0][7:]}")
    if not addrs:
        return Result(c, False, "no address", f"eth0 in {c.ns} has no IPv4 address")
    observed = ", ".join(addrs)
    outside = [a for a in addrs if ipaddress.IPv4Address(a) not in ipaddress.IPv4Network(c.subnet)]
    if outside:
        return Result(c, False, observed, f"{outside[0]} is outside {c.dst}'s pod subnet {c.subnet}")
    shared = [a for a in addrs if len(owners.get(a, [])) > 1]
    if shared:
        others = [o for o in owners[shared[0]] if o != c.src]
        return Result(c, False, observed, f"{shared[0]} is also the address of {', '.join(others)}")
    if c.target not in addrs:
        return Result(c, False, observed, f"the scenario gives {c.src} {c.target}, the kernel has "
                                          f"{observed}")
    return Result(c, True, observed)


def _judge_ping(c: Check, out: PingOut) -> Result:
    observed = "reply" if out.alive else out.detail or "no reply"
    return Result(c, out.alive == (c.expect == REACHABLE), observed)


def _judge_http(c: Check, out: HttpOut) -> Result:
    if not out.connected:
        observed = out.error or "no connection"
        return Result(c, c.expect == UNREACHABLE, observed)
    if c.expect == UNREACHABLE:
        return Result(c, False, f"connected (HTTP {out.code})",
                      f"{c.target}:{c.port} accepted a connection from {c.src}")
    if out.code != "200":
        return Result(c, False, f"HTTP {out.code}", out.error or f"the server answered HTTP {out.code}")
    if c.body is not None:
        ok = out.body == c.body
        return Result(c, ok, repr(out.body), "" if ok else f"expected the answer {c.body!r}")
    if c.nat is None:
        return Result(c, True, "connected")
    saw = out.body.rsplit(":", 1)[0]
    observed = f"sees {saw}"
    if c.nat is False and saw not in c.sees:
        sent = f"; the client sent from {out.local_ip}" if out.local_ip else ""
        on_way = [ns for ns, _, way in c.hops[1:] if way == "forward"] or [c.ns]
        look = " or ".join(f"`ip netns exec {ns} nft list ruleset`" for ns in on_way)
        return Result(c, False, observed, f"NAT: the server saw {saw}, expected {c.sees[0]} (the "
                                          f"client's own address){sent}: something on the way "
                                          f"rewrites the source (look for masquerade: {look})")
    if c.nat is True and saw in c.sees:
        return Result(c, False, observed, f"no NAT: the server saw the client's own address {saw}")
    return Result(c, True, observed)


def _judge_addrs(c: Check, addrs: list[str]) -> Result:
    if addrs and addrs[0].startswith("error:"):
        return Result(c, False, "-", f"cannot read the addresses of {c.ns}: {addrs[0][7:]}")
    observed = ", ".join(addrs) or "none"
    lacking = [a for a in c.addrs if a not in addrs]
    if lacking:
        return Result(c, False, observed, f"{c.ns} has no address {lacking[0]}")
    extra = [a for a in addrs if a not in c.addrs]
    if c.only and extra:
        return Result(c, False, observed, f"{c.ns} also has {', '.join(extra)}")
    return Result(c, True, observed)


def _judge_answer(c: Check, out: HttpOut) -> Result:
    """A Docker check's request (HTTP or UDP): who answered, and the address it saw."""
    proto = "HTTP" if c.method == "http" else "UDP"
    if not out.connected:
        return Result(c, c.expect == UNREACHABLE, out.error or "no answer")
    if c.method == "http" and out.code != "200":
        who = f"HTTP {out.code}"
    else:
        who = out.body
    if c.expect == UNREACHABLE:
        ok = who != c.not_by
        return Result(c, ok, f"answered by {who}", "" if ok else
                      f"{c.not_by} answered {c.src} at {c.target}:{c.port} ({proto})")
    if c.body is not None:
        ok = who == c.body
        return Result(c, ok, repr(who), "" if ok else f"{c.target}:{c.port} ({proto}) was "
                                                      f"answered by {who!r}, not {c.body!r}")
    saw = out.body.rsplit(":", 1)[0]
    ok = saw in c.sees
    return Result(c, ok, f"sees {saw}", "" if ok else f"the server saw {saw}, expected "
                                                      f"{c.sees[0]}")


def _judge_mtu(c: Check, out: MtuOut) -> Result:
    size = out.mtu - 28
    observed = f"{size} B: " + ("reply" if out.alive else out.detail)
    if out.alive:
        return Result(c, True, observed)
    note = "" if size == c.size else (f"eth0 in {c.ns} has MTU {out.mtu}, the lab's pods "
                                      f"{c.size + 28}; ")
    return Result(c, False, observed, f"{note}a {size}-byte ping with DF set from {c.src} to "
                                      f"{c.target} got {out.detail}: a packet as large as its MTU "
                                      f"allows does not cross ({c.why})")


class _Routes:
    """`ip route get` per (namespace, address), cached: where a lost packet had no way on."""

    def __init__(self, lab: Optional[Lab] = None):
        self.cache: dict[tuple[str, str], str] = {}
        self.lab = lab
        self.snap = None
        self.traces: dict[tuple[str, str], str] = {}

    def stopped(self, ns: str, address: str) -> str:
        """Where `netlab trace` (the kernel's routes, links and neighbours) stops the packet."""
        key = (ns, address)
        if key not in self.traces:
            self.traces[key] = ""
            try:
                from . import look
                self.snap = self.snap or look.live_snapshot(self.lab)
                t = look.live_trace(self.lab, ns, address, self.snap)
                if not t.arrived and t.reason:
                    self.traces[key] = t.reason
            except Exception:  # the trace only adds detail; the reason stands without it
                pass
        return self.traces[key]

    def error(self, ns: str, address: str) -> str:
        key = (ns, address)
        if key not in self.cache:
            if not K.netns_exists(ns):
                self.cache[key] = f"namespace {ns} does not exist"
            else:
                proc = subprocess.run(["ip", "-n", ns, "route", "get", address],
                                      capture_output=True, text=True, timeout=10)
                msg = (proc.stderr.strip().splitlines() or [""])[-1]
                self.cache[key] = "" if proc.returncode == 0 else (
                    f"no route to {address} in {ns} (`ip -n {ns} route get {address}`: "
                    f"{msg.removeprefix('RTNETLINK answers: ')})")
        return self.cache[key]

    def where(self, c: Check, detail: str) -> str:
        for ns, address, way in c.hops:
            if ns is None:
                continue
            err = self.error(ns, address)
            if err:
                return f"{err}" + (" on the way back" if way == "return" else "")
        hint = f" ({detail})" if detail and detail not in ("no reply", "no connection") else ""
        for ns, address, way in c.hops if self.lab is not None else ():
            stop = self.stopped(ns, address) if ns else ""
            if stop:
                back = " on the way back" if way == "return" else ""
                return (f"{c.src} got no answer from {c.target}{hint}: the packet stops{back}: "
                        f"{stop}")
        return (f"{c.src} got no answer from {c.target}{hint}; every namespace on the way has a "
                f"route, so look for a firewall rule or a link that is down")


def judge(lab: Lab, checks: list[Check], pings: dict, https: dict, seen: dict,
          problems: dict[Server, str], missing: set[str]) -> list[Result]:
    owners: dict[str, list[str]] = {}
    for c in checks:
        if c.method == "addr":
            for a in seen.get(c.ns, []):
                owners.setdefault(a, []).append(c.src)
    routes = _Routes(lab)
    results = []
    for i, c in enumerate(checks):
        if c.method != "addr" and c.ns in missing:
            results.append(Result(c, False, "not run", f"cannot run: namespace {c.ns} does not "
                                                       f"exist (is the lab up? netlab status)"))
            continue
        if c.server is not None and c.server in problems:
            results.append(Result(c, False, "not run", f"cannot run: {problems[c.server]}"))
            continue
        if c.method == "addr":
            r = _judge_addr(c, seen, owners)
        elif c.method == "addrs":
            r = _judge_addrs(c, https[i])
        elif c.method == "mtu":
            r = _judge_mtu(c, https[i])
            if not r.ok and not re.search(r"mtu|frag|too long", https[i].detail, re.I):
                r.reason = ""       # not a matter of size: say where the packet stopped
        elif c.method == "ping":
            r = _judge_ping(c, pings[c.ns][c.target])
        elif c.rule in DOCKER_RULE.values():
            r = _judge_answer(c, https[i])
        else:
            r = _judge_http(c, https[i])
        if not r.ok and not r.reason:
            if c.expect == UNREACHABLE:
                r.reason = f"{c.target} answered {c.src}, but the check expects it unreachable"
            else:
                r.reason = routes.where(c, r.observed)
        if not r.ok and c.why and c.method != "mtu":
            r.reason += f" ({c.label}: {c.why})"
        results.append(r)
    return results


def need_tools(checks: list[Check]) -> None:
    """The probe tools must be installed (setup.sh installs them); say so before probing."""
    methods = {c.method for c in checks}
    wanted = ["nsenter"] * bool(methods - {"addr", "addrs"}) + ["fping"] * ("ping" in methods) + \
        ["curl"] * ("http" in methods) + ["socat"] * ("udp" in methods) + \
        ["ping"] * ("mtu" in methods) + ["ip"]
    missing = [tool for tool in wanted if shutil.which(tool) is None]
    if missing:
        raise NetlabError(f"verify needs {', '.join(missing)}: install with `sudo ./setup.sh` or "
                          f"`apt-get install {' '.join(_PACKAGES[t] for t in missing)}`")


_PACKAGES = {"nsenter": "util-linux", "fping": "fping", "curl": "curl", "ip": "iproute2",
             "socat": "socat", "ping": "iputils-ping"}


def workers_default() -> int:
    # Probe processes mostly wait on the network and the lab's servers: a few per CPU.
    return max(4, (os.cpu_count() or 1) * 4)


def run(lab: Lab, checks: list[Check], workers: Optional[int] = None,
        ready_timeout: float = READY_TIMEOUT) -> Report:
    """Probe every check and judge it. Probes of one namespace share one fping and one curl."""
    started = time.monotonic()
    need_tools(checks)
    missing = {c.ns for c in checks if not K.netns_exists(c.ns)}
    problems = wait_ready(lab, {c.server for c in checks if c.server is not None}, ready_timeout)
    ping_targets: dict[str, list[str]] = {}
    http_jobs: dict[str, list[int]] = {}
    for i, c in enumerate(checks):
        if c.ns in missing or (c.server is not None and c.server in problems):
            continue
        if c.method == "ping":
            targets = ping_targets.setdefault(c.ns, [])
            if c.target not in targets:
                targets.append(c.target)
        elif c.method == "http":
            http_jobs.setdefault(c.ns, []).append(i)
    pings: dict[str, dict[str, PingOut]] = {}
    https: dict[int, HttpOut] = {}
    run_one = [i for i, c in enumerate(checks) if c.method in ("udp", "mtu")
               and c.ns not in missing and not (c.server is not None and c.server in problems)]
    mtus = observe_mtus([checks[i] for i in run_one if checks[i].method == "mtu"])
    with ThreadPoolExecutor(max_workers=workers or workers_default()) as pool:
        http_futures = {ns: pool.submit(curl_many, ns, [checks[i].url for i in idx])
                        for ns, idx in http_jobs.items()}
        ping_futures = {ns: pool.submit(ping_many, ns, t) for ns, t in ping_targets.items()}
        one_futures = {i: pool.submit(udp_ask, c.ns, c.target, c.port, c.path) if c.method == "udp"
                       else pool.submit(ping_df, c.ns, c.target, mtus[c.ns])
                       for i, c in ((i, checks[i]) for i in run_one)}
        # netlink in this (main) thread while the probes run; the pool's threads never setns().
        seen = observe_addresses([c for c in checks if c.method == "addr"])
        all_addrs = observe_all_addresses([c for c in checks if c.method == "addrs"])
        for ns, fut in ping_futures.items():
            pings[ns] = fut.result()
        for ns, fut in http_futures.items():
            https.update(zip(http_jobs[ns], fut.result()))
        for i, fut in one_futures.items():
            https[i] = fut.result()
    # Each check's own outcome by its index: an addrs check's is the namespace's address list.
    https.update((i, all_addrs[c.ns]) for i, c in enumerate(checks) if c.method == "addrs")
    results = judge(lab, checks, pings, https, seen, problems, missing)
    return Report(lab.name, results, time.monotonic() - started)


# ---------------------------------------------------------------- rendering


COLUMNS = ("RULE", "FROM", "TO", "METHOD", "EXPECTED", "OBSERVED", "RESULT", "REPRODUCE")


def _row(r: Result) -> tuple[str, ...]:
    c = r.check
    method = f"{c.method} :{c.port}{c.path}" if c.method == "http" else c.method
    if c.method == "udp":
        method = f"udp :{c.port} {c.path}"
    return (c.rule, c.src, c.dst, method, c.expected, _short(r.observed), "pass" if r.ok else "FAIL",
            c.reproduce)


def _short(text: str, width: int = 40) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 1] + "…"


def _named(c: Check) -> str:
    # a scenario check by its name; a docker check's name ends its reason instead
    return c.label if c.label and not c.why else f"{c.src} -> {c.dst}"


def render_text(report: Report) -> str:
    """A plain table (fast for thousands of rows), the reasons of the failures, a summary line."""
    rows = [COLUMNS] + [_row(r) for r in report.results]
    widths = [max(len(row[i]) for row in rows) for i in range(len(COLUMNS) - 1)]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)) + "  " + row[-1]
             for row in rows]
    failed = report.failed
    if failed:
        lines += ["", "Failures:"]
        lines += [f"  {r.check.rule} {_named(r.check)} "
                  f"({_row(r)[3]}): {r.reason}\n"
                  f"    reproduce: {r.check.reproduce}" for r in failed]
    lines += ["", report.summary()]
    return "\n".join(lines) + "\n"


def save(report: Report) -> None:
    """The report as verify.json in the lab's state directory, where `netlab graph --verify`
    reads it; written whole and renamed, so a reader never sees half of it."""
    import json
    path = LabState(report.lab).dir / "verify.json"
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(render_json(report), indent=1) + "\n")
    os.replace(tmp, path)


def render_json(report: Report) -> dict:
    return {"lab": report.lab, "checks": len(report.results),
            "passed": len(report.results) - len(report.failed), "failed": len(report.failed),
            "seconds": round(report.seconds, 3), "results": [r.as_dict() for r in report.results]}


def render_junit(report: Report) -> str:
    """JUnit XML: one testsuite per rule, one testcase per check (for workshop grading)."""
    import xml.etree.ElementTree as ET
    root = ET.Element("testsuites", name=f"netlab verify {report.lab}",
                      tests=str(len(report.results)), failures=str(len(report.failed)),
                      time=f"{report.seconds:.3f}")
    suites: dict[str, ET.Element] = {}
    for r in report.results:
        c = r.check
        suite = suites.get(c.rule)
        if suite is None:
            suite = suites[c.rule] = ET.SubElement(root, "testsuite", name=c.rule)
        case = ET.SubElement(suite, "testcase", classname=f"{report.lab}.{c.rule}",
                             name=f"{c.src} -> {c.dst} {_row(r)[3]}")
        if not r.ok:
            failure = ET.SubElement(case, "failure", message=r.reason, type="check")
            failure.text = f"expected {c.expected}, observed {r.observed}"
        ET.SubElement(case, "system-out").text = c.reproduce
    for suite in suites.values():
        cases = list(suite)
        suite.set("tests", str(len(cases)))
        suite.set("failures", str(sum(1 for case in cases if case.find("failure") is not None)))
    return ET.tostring(root, encoding="unicode", xml_declaration=True) + "\n"

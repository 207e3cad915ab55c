"""The Services' verify rules, after Kubernetes' e2e "Granular Checks: Services": pod and node to
ClusterIP (TCP, UDP), NodePort on every node IP, outside to NodePort and LoadBalancer, every
endpoint reached, client IP kept in the cluster, Local keeps the outside client's IP and only local
endpoints answer, Cluster from outside SNATs to a node address, ClientIP affinity, hairpin, and a
Service with no endpoints refuses.

One check method of its own, "svc": a client (netlab/svcclient.py) asks several times, each on a
new connection, and the judge compares the answers with the endpoints the model says. A failure
says why, from what the kernel holds on the node that DNATs: its kube-proxy table, the endpoint's
chain and dnat rule, the masquerade rule, bridge netfilter, and whether the endpoint's server
listens at all.
"""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from ..core.lab import Lab, Pod
from ..verify.checks import REACHABLE, UNREACHABLE, Check
from ..verify.report import Result
from . import kubeproxy
from .services import BRIDGE_NF, Endpoint, Service, ServicePort, endpoints

METHOD = "svc"
CLIENT = str(Path(__file__).parent.parent / "svcclient.py")
TIMEOUT = 1.0          # each try's connect / answer timeout (a lab answers in microseconds)


@dataclass(frozen=True)
class Ep:
    """An endpoint as a check needs it: who, where, and its kube-proxy chain."""
    pod: str
    ip: str
    port: int
    node: str
    ns: str
    node_ns: str
    chain: str


class SvcCheck(Check):
    """A Check whose reproduce command is the repeated curl (or socat) the probe makes."""

    @property
    def reproduce(self) -> str:
        mode, proto, tries = self.data[:3]
        where = f"ip netns exec {self.ns} "
        if proto == "udp":
            one = f"echo {self.path} | {where}socat -t1 - UDP:{self.target}:{self.port}"
        else:
            one = f"{where}curl -s --connect-timeout 1 http://{self.target}:{self.port}{self.path}"
        return one if tries == 1 else f"for i in $(seq {tries}); do {one}; echo; done | sort | uniq -c"

    @property
    def expected(self) -> str:
        mode, eps = self.data[0], self.data[3]
        names = ", ".join(e.pod for e in eps)
        return {"any": f"answered by one of {names}", "all": f"every endpoint answers: {names}",
                "one": "one endpoint over every try", "self": f"{self.src} answers itself",
                "clientip": f"sees {', '.join(self.sees)}", "refuse": "connection refused",
                "none": "no answer"}[mode]


def _check(rule, src, dst, ns, target, port, path, mode, proto, tries, eps, dnat_ns, sees=(),
           expect=REACHABLE, why="") -> SvcCheck:
    return SvcCheck(rule, src, dst, METHOD, ns, target, port, path, expect, tuple(sees),
                    why=why, data=(mode, proto, tries, tuple(eps), dnat_ns))


# ---------------------------------------------------------------- deriving


def _eps(lab: Lab, svc: Service, port: ServicePort) -> list[Ep]:
    out = []
    for e in endpoints(svc, lab.pods):
        if e.port_name == port.name:
            out.append(Ep(e.pod, e.ip, e.port, e.node, lab.pod(e.pod).ns, lab.node(e.node).ns,
                          kubeproxy.endpoint_chain(svc, port, e)))
    return out


def _ports(lab: Lab):
    """Every (service, port, endpoints) of the lab's non-headless Services."""
    # Services of netlab's add-ons that answer as their own servers (the ingress controller's
    # nginx), not as netexec: their feature's rules prove them.
    addons = set(lab.parts.get("addon_services", ()))
    return [(s, p, _eps(lab, s, p)) for s in lab.services if not s.headless
            and s.key not in addons for p in s.ports]


def _clients(lab: Lab, eps: list[Ep]) -> list[Pod]:
    """One client pod per node, none of the Service's own endpoints (hairpin is its own rule)."""
    mine = {e.pod for e in eps}
    out = []
    for n in lab.nodes:
        pod = next((p for p in lab.pods_on(n.name) if not p.host_network and p.name not in mine),
                   None)
        if pod is not None:
            out.append(pod)
    return out


def _path(proto: str, what: str) -> str:
    return what if proto == "udp" else "/" + what


def _dst(svc: Service, port: ServicePort) -> str:
    return f"svc/{svc.name}:{port.name or port.port}"


def rule_pod_clusterip(lab: Lab) -> list[Check]:
    """Every pod's node DNATs the ClusterIP (TCP and UDP) to one of the Service's endpoints."""
    out = []
    for s, p, eps in _ports(lab):
        proto = p.protocol.lower()
        for pod in _clients(lab, eps) if eps else ():
            out.append(_check("svc-pod-clusterip", pod.name, _dst(s, p), pod.ns, s.cluster_ip,
                              p.port, _path(proto, "hostname"), "any", proto, 3, eps,
                              lab.node(pod.node).ns))
    return out


def rule_node_clusterip(lab: Lab) -> list[Check]:
    """Every node reaches every ClusterIP (its own connections are DNAT'd in nat-output)."""
    return [_check("svc-node-clusterip", n.name, _dst(s, p), n.ns, s.cluster_ip, p.port,
                   _path(p.protocol.lower(), "hostname"), "any", p.protocol.lower(), 2, eps, n.ns)
            for s, p, eps in _ports(lab) if eps for n in lab.nodes]


def rule_nodeport(lab: Lab) -> list[Check]:
    """A pod and a node reach the NodePort on every node's IP; a nodePort nobody has refuses."""
    out = []
    used = {p.node_port for s in lab.services for p in s.ports if p.node_port}
    for s, p, eps in _ports(lab):
        if not p.node_port or not eps:
            continue
        proto = p.protocol.lower()
        clients = _clients(lab, eps)[:1]
        for n in lab.nodes:
            # Local policy: a pod's traffic to another node's NodePort is not masqueraded (the
            # "short-circuit pod traffic" rule), so an endpoint on the pod's own node answers it
            # directly and the pod drops the reply. Kubernetes does the same: prove it on the
            # pod's own node only.
            for pod in clients if s.external_traffic_policy == "Cluster" or \
                    pod_node(clients, n.name) else ():
                out.append(_check("svc-nodeport", pod.name, f"{n.name}:{p.node_port}", pod.ns,
                                  n.ip, p.node_port, _path(proto, "hostname"), "any", proto, 2,
                                  eps, lab.node(pod.node).ns))
            first = lab.nodes[0]
            out.append(_check("svc-nodeport", first.name, f"{n.name}:{p.node_port}", first.ns,
                              n.ip, p.node_port, _path(proto, "hostname"), "any", proto, 2, eps,
                              first.ns))
    if out and proto == "tcp":
        free = next(n for n in range(32767, 30000, -1) if n not in used)
        first = lab.nodes[0]
        out.append(_check("svc-nodeport", first.name, f"{first.name}:{free}", first.ns, first.ip,
                          free, "/hostname", "none", "tcp", 1, (), first.ns, expect=UNREACHABLE,
                          why="a nodePort no Service has is not answered"))
    return out


def pod_node(clients, node: str) -> bool:
    return any(p.node == node for p in clients)


def _outside_sees(lab: Lab) -> tuple[str, ...]:
    return (lab.outside.router,)


def rule_outside(lab: Lab) -> list[Check]:
    """The outside world reaches a Cluster-policy NodePort on every node and every LoadBalancer IP
    (Local-policy NodePorts: rule svc-local)."""
    if lab.outside is None:
        return []
    out = []
    o = lab.outside
    for s, p, eps in _ports(lab):
        if not eps:
            continue
        proto = p.protocol.lower()
        local = s.external_traffic_policy == "Local"
        if p.node_port and not local:
            out += [_check("svc-outside", "outside", f"{n.name}:{p.node_port}", o.ns, n.ip,
                           p.node_port, _path(proto, "hostname"), "any", proto, 2, eps, n.ns)
                    for n in lab.nodes]
        if s.load_balancer_ip:
            via = lab.node(s.announced_by)
            lb_eps = [e for e in eps if e.node == via.name] if local else eps
            out.append(_check("svc-outside", "outside", f"{s.load_balancer_ip}:{p.port}", o.ns,
                              s.load_balancer_ip, p.port, _path(proto, "hostname"), "any", proto,
                              2, lb_eps, via.ns))
    return out


def rule_endpoints(lab: Lab) -> list[Check]:
    """Every endpoint is reached: the set of /hostname answers through the ClusterIP equals the
    endpoint set within a bounded number of tries (a missing one is named)."""
    out = []
    for s, p, eps in _ports(lab):
        if s.session_affinity == "ClientIP":
            continue    # one client sticks to one endpoint: rule svc-affinity
        clients = _clients(lab, eps)[:1]
        proto = p.protocol.lower()
        for pod in clients if eps else ():
            out.append(_check("svc-endpoints", pod.name, _dst(s, p), pod.ns, s.cluster_ip, p.port,
                              _path(proto, "hostname"), "all", proto, 10 * len(eps) + 10, eps,
                              lab.node(pod.node).ns))
    return out


def rule_clientip(lab: Lab) -> list[Check]:
    """Inside the cluster the client's IP is kept: /clientip through the ClusterIP shows the
    client pod's own address."""
    return [_check("svc-clientip", pod.name, _dst(s, p), pod.ns, s.cluster_ip, p.port,
                   _path(p.protocol.lower(), "clientip"), "clientip", p.protocol.lower(), 3, eps,
                   lab.node(pod.node).ns, sees=(pod.ip,))
            for s, p, eps in _ports(lab) if eps and not lab.kube_proxy.masquerade_all
            for pod in _clients(lab, eps)]


def rule_local(lab: Lab) -> list[Check]:
    """externalTrafficPolicy Local from outside: a node with local endpoints keeps the client's IP
    and only they answer; a node without any drops the traffic."""
    if lab.outside is None:
        return []
    o, out = lab.outside, []
    for s, p, eps in _ports(lab):
        if s.external_traffic_policy != "Local" or not p.node_port or not eps:
            continue
        proto = p.protocol.lower()
        for n in lab.nodes:
            local = [e for e in eps if e.node == n.name]
            dst = f"{n.name}:{p.node_port}"
            if local:
                out.append(_check("svc-local", "outside", dst, o.ns, n.ip, p.node_port,
                                  _path(proto, "hostname"), "all", proto, 10 * len(local) + 10,
                                  local, n.ns, why="only the node's own endpoints answer"))
                out.append(_check("svc-local", "outside", dst, o.ns, n.ip, p.node_port,
                                  _path(proto, "clientip"), "clientip", proto, 2, local, n.ns,
                                  sees=_outside_sees(lab), why="Local keeps the client's IP"))
            else:
                out.append(_check("svc-local", "outside", dst, o.ns, n.ip, p.node_port,
                                  _path(proto, "hostname"), "none", proto, 1, (), n.ns,
                                  expect=UNREACHABLE, why="a node without local endpoints drops"))
    return out


def rule_cluster_snat(lab: Lab) -> list[Check]:
    """externalTrafficPolicy Cluster from outside: the endpoint sees the receiving node's address
    (kube-proxy masquerades), never the outside client's."""
    if lab.outside is None:
        return []
    out = []
    for s, p, eps in _ports(lab):
        if s.external_traffic_policy != "Cluster" or not p.node_port or not eps:
            continue
        proto = p.protocol.lower()
        for n in lab.nodes:
            sees = tuple(a for a in (n.ip, n.gateway, n.vtep) if a)
            out.append(_check("svc-cluster-snat", "outside", f"{n.name}:{p.node_port}",
                              lab.outside.ns, n.ip, p.node_port, _path(proto, "clientip"),
                              "clientip", proto, 3, eps, n.ns, sees=sees))
    return out


def rule_affinity(lab: Lab) -> list[Check]:
    """sessionAffinity ClientIP: one client gets one endpoint over 10 tries."""
    return [_check("svc-affinity", pod.name, _dst(s, p), pod.ns, s.cluster_ip, p.port,
                   _path(p.protocol.lower(), "hostname"), "one", p.protocol.lower(), 10, eps,
                   lab.node(pod.node).ns)
            for s, p, eps in _ports(lab) if eps and s.session_affinity == "ClientIP"
            for pod in _clients(lab, eps)[:1]]


def rule_hairpin(lab: Lab) -> list[Check]:
    """Hairpin: an endpoint reaches itself through its own Service (kube-proxy masquerades it, and
    cni0 sends the frame back out the port it came in)."""
    out = []
    for s, p, eps in _ports(lab):
        if s.session_affinity == "ClientIP":
            continue    # affinity may keep an endpoint on another one: no hairpin to prove
        firsts: dict[str, Ep] = {}
        for e in eps:
            firsts.setdefault(e.node, e)
        for e in firsts.values():
            proto = p.protocol.lower()
            out.append(_check("svc-hairpin", e.pod, _dst(s, p), e.ns, s.cluster_ip, p.port,
                              _path(proto, "hostname"), "self", proto, 10 * len(eps) + 10, eps,
                              lab.node(e.node).ns))
    return out


def rule_no_endpoints(lab: Lab) -> list[Check]:
    """A Service with no endpoints refuses at once (kube-proxy's reject), from a pod and a node,
    and at its NodePort from outside."""
    out = []
    for s, p, eps in _ports(lab):
        if eps or p.protocol != "TCP":
            continue
        for pod in _clients(lab, eps)[:1]:
            out.append(_check("svc-no-endpoints", pod.name, _dst(s, p), pod.ns, s.cluster_ip,
                              p.port, "/hostname", "refuse", "tcp", 2, (), lab.node(pod.node).ns,
                              expect=UNREACHABLE))
        n = lab.nodes[0]
        out.append(_check("svc-no-endpoints", n.name, _dst(s, p), n.ns, s.cluster_ip, p.port,
                          "/hostname", "refuse", "tcp", 2, (), n.ns, expect=UNREACHABLE))
        if p.node_port and lab.outside is not None:
            out.append(_check("svc-no-endpoints", "outside", f"{n.name}:{p.node_port}",
                              lab.outside.ns, n.ip, p.node_port, "/hostname", "refuse", "tcp", 2,
                              (), n.ns, expect=UNREACHABLE))
    return out


RULES = {"svc-pod-clusterip": rule_pod_clusterip, "svc-node-clusterip": rule_node_clusterip,
         "svc-nodeport": rule_nodeport, "svc-outside": rule_outside,
         "svc-endpoints": rule_endpoints, "svc-clientip": rule_clientip, "svc-local": rule_local,
         "svc-cluster-snat": rule_cluster_snat, "svc-affinity": rule_affinity,
         "svc-hairpin": rule_hairpin, "svc-no-endpoints": rule_no_endpoints}


# ---------------------------------------------------------------- probing and judging


@dataclass
class SvcOut:
    answers: list[str]          # one per try: the answer, or "" for an error
    errors: list[str]           # one per try: "" for an answer, else refused/timeout/...


def parse_client(text: str) -> SvcOut:
    out = SvcOut([], [])
    for line in text.splitlines():
        kind, _, rest = line.partition("\t")
        out.answers.append(rest if kind == "ok" else "")
        out.errors.append("" if kind == "ok" else rest or "error")
    return out


class Probe:
    """The "svc" method: run svcclient.py inside the check's namespace (a subprocess through
    nsenter: the pool's threads never change namespace)."""

    def run(self, c: Check) -> SvcOut:
        from ..verify.probes import launch
        mode, proto, tries, eps = c.data[:4]
        argv = launch(c.ns) + [sys.executable, "-I", "-S", CLIENT, proto, c.target, str(c.port),
                               c.path, str(tries), "--timeout", str(TIMEOUT)]
        if mode == "all":
            argv += ["--want", ",".join(e.pod for e in eps)]
        elif mode == "self":
            argv += ["--want", c.src]
        try:
            proc = subprocess.run(argv, capture_output=True, text=True,
                                  timeout=30 + tries * TIMEOUT * 2)
        except subprocess.TimeoutExpired:
            return SvcOut([""], ["probe timed out"])
        out = parse_client(proc.stdout)
        if not out.answers:
            out.errors = [f"client failed: {proc.stderr.strip()[-200:]}"]
            out.answers = [""]
        return out

    def judge(self, c: Check, out: SvcOut) -> Result:
        return judge(c, out)


def _summary(out: SvcOut) -> str:
    counts: dict[str, int] = {}
    for a, e in zip(out.answers, out.errors):
        key = a if not e else f"<{e}>"
        counts[key] = counts.get(key, 0) + 1
    return ", ".join(f"{k} x{v}" if v > 1 else k for k, v in counts.items())


def judge(c: Check, out: SvcOut) -> Result:
    mode, eps = c.data[0], c.data[3]
    names = {e.pod for e in eps}
    got = [a for a in out.answers if a]
    errors = [e for e in out.errors if e]
    observed = _summary(out)
    if mode == "refuse":
        bad = [e for e in out.errors if e != "refused"]
        if not bad:
            return Result(c, True, observed)
        if got:
            return Result(c, False, observed, f"{got[0]} answered at {c.target}:{c.port}, but the "
                                              f"Service has no endpoints: it must refuse")
        return Result(c, False, observed, f"{c.target}:{c.port} gave {bad[0]}, not connection "
                                          f"refused: the no-endpoints reject is missing "
                                          f"({_table_problem(c) or 'look at `ip netns exec ' + c.data[4] + ' nft list map ip kube-proxy no-endpoint-services`'})")
    if mode == "none":
        if not got:
            return Result(c, True, observed)
        return Result(c, False, observed, f"{got[0]} answered {c.src} at {c.target}:{c.port}, "
                                          f"but the check expects no answer")
    if mode == "clientip":
        saw = {a.rsplit(":", 1)[0] for a in got}
        if errors:
            return Result(c, False, observed, _why_lost(c, out, eps))
        wrong = sorted(saw - set(c.sees))
        if wrong:
            if c.rule == "svc-cluster-snat":
                reason = (f"the endpoint saw {wrong[0]}, not an address of the node that received "
                          f"it ({', '.join(c.sees)}): masquerade missing? "
                          f"{_masq_problem(c) or ''}").rstrip(" ?")
            else:
                reason = (f"the endpoint saw {wrong[0]}, expected {c.sees[0]} (the client's own "
                          f"address): something masquerades it ({c.data[4]}'s table ip "
                          f"kube-proxy marks it for masquerade)")
            return Result(c, False, observed, reason)
        return Result(c, True, observed)
    strangers = sorted(set(got) - names)
    if strangers:
        return Result(c, False, observed, f"{strangers[0]} answered but is not an endpoint of "
                                          f"{c.dst} here ({', '.join(sorted(names))})")
    if mode == "any":
        if errors:
            return Result(c, False, observed, _why_lost(c, out, eps))
        return Result(c, True, observed)
    if mode == "all":
        missing = [e for e in eps if e.pod not in got]
        if not missing:
            return Result(c, True, observed)
        return Result(c, False, observed, f"endpoint {missing[0].pod} ({missing[0].ip}:"
                                          f"{missing[0].port}) never answered in {len(out.answers)}"
                                          f" tries: {_why_endpoint(c, missing[0])}")
    if mode == "one":
        if errors:
            return Result(c, False, observed, _why_lost(c, out, eps))
        if len(set(got)) == 1:
            return Result(c, True, observed)
        return Result(c, False, observed, f"{len(set(got))} endpoints answered over "
                                          f"{len(got)} tries: ClientIP affinity does not hold "
                                          f"(the affinity sets of {c.data[4]}'s kube-proxy table)")
    if mode == "self":
        if c.src in got and not errors:
            return Result(c, True, observed)
        e = next(e for e in eps if e.pod == c.src)
        return Result(c, False, observed, f"{c.src} never reached itself through {c.target}:"
                                          f"{c.port} in {len(out.answers)} tries: "
                                          f"{_why_endpoint(c, e, hairpin=True)}")
    return Result(c, False, observed, f"unknown mode {mode}")


# ---------------------------------------------------------------- why, from the kernel


def _run(ns: str, *argv: str) -> subprocess.CompletedProcess:
    return subprocess.run(["ip", "netns", "exec", ns, *argv], capture_output=True, text=True,
                          timeout=10)


def _table(ns: str) -> Optional[str]:
    r = _run(ns, "nft", "list", "table", "ip", kubeproxy.TABLE)
    return r.stdout if r.returncode == 0 else None


def _table_problem(c: Check) -> str:
    if _table(c.data[4]) is None:
        return f"node namespace {c.data[4]} has no table ip kube-proxy"
    return ""


def _chain(table: str, name: str) -> Optional[str]:
    """The rules of one chain in `nft list table` output (chains end with a tab and a brace)."""
    head = f"\tchain {name} {{\n"
    if head not in table:
        return None
    return table.split(head, 1)[1].split("\n\t}", 1)[0]


def _masq_problem(c: Check) -> str:
    table = _table(c.data[4])
    if table is None:
        return _table_problem(c)
    if "masquerade" not in (_chain(table, "masquerading") or ""):
        return (f"masquerade missing: chain masquerading of {c.data[4]}'s table ip kube-proxy "
                f"has no masquerade rule")
    return ""


def _listens(e: Ep, proto: str) -> bool:
    r = _run(e.ns, "ss", "-Hln" + ("u" if proto == "udp" else "t"), f"sport = :{e.port}")
    return r.returncode == 0 and bool(r.stdout.strip())


def _bridge_nf(node_ns: str) -> tuple[str, str]:
    sysctl = _run(node_ns, "sysctl", "-n", BRIDGE_NF).stdout.strip() or "absent"
    try:
        info = json.loads(subprocess.run(["ip", "-j", "-d", "-n", node_ns, "link", "show",
                                          "cni0"], capture_output=True, text=True,
                                         timeout=10).stdout or "[]")
        opt = str(info[0]["linkinfo"]["info_data"].get("nf_call_iptables", "?"))
    except (ValueError, LookupError):
        opt = "?"
    return sysctl, opt


def _why_endpoint(c: Check, e: Ep, hairpin: bool = False) -> str:
    """Why endpoint `e` did not answer through the node that DNATs (c.data[4])."""
    proto, node_ns = c.data[1], c.data[4]
    if not _listens(e, proto):
        return (f"nothing listens on {proto.upper()} port {e.port} in {e.ns}: the endpoint's "
                f"server is not running")
    table = _table(node_ns)
    if table is None:
        return f"node namespace {node_ns} has no table ip kube-proxy"
    body = _chain(table, e.chain)
    if body is None:
        return (f"node namespace {node_ns}'s table ip kube-proxy has no chain {e.chain} "
                f"(endpoint {e.pod}): its DNAT is gone")
    if f"dnat to {e.ip}:{e.port}" not in body:
        return (f"chain {e.chain} in {node_ns} has no `dnat to {e.ip}:{e.port}` rule "
                f"(endpoint {e.pod})")
    if hairpin and _masq_problem(c):
        return _masq_problem(c) + ": a hairpin connection needs it"
    if node_ns == e.node_ns and c.src != "outside":
        sysctl, opt = _bridge_nf(node_ns)
        if sysctl != "1" and opt != "1":
            return (f"bridge netfilter is off in {node_ns} ({BRIDGE_NF}={sysctl}, cni0 "
                    f"nf_call_iptables {opt}): the reply of same-node endpoint {e.pod} is "
                    f"bridged back past the DNAT and the client drops it")
    problem = _masq_problem(c)
    if problem:
        return problem
    return f"the rules for it are in place in {node_ns}; look at `netlab trace` and conntrack -L"


def _why_lost(c: Check, out: SvcOut, eps) -> str:
    errors = sorted({e for e in out.errors if e})
    lost = f"{out.errors.count(errors[0])} of {len(out.errors)} tries got {errors[0]}"
    if not eps:
        return lost
    for e in eps:
        if not _listens(e, c.data[1]):
            return (f"{lost}: nothing listens on port {e.port} in {e.ns} (endpoint {e.pod}'s "
                    f"server is not running)")
    for e in eps:
        why = _why_endpoint(c, e)
        if not why.startswith("the rules for it are in place"):
            return f"{lost}: {why}"
    return f"{lost}; every endpoint's rules are in place in {c.data[4]}"

"""The cluster DNS's verify rules: real `dig` (bind9-dnsutils) inside the pods, with the pod's own
resolv.conf (run through `ip netns exec`, which bind-mounts /etc/netns/<ns>/resolv.conf; an
nsenter of the network namespace alone would read the host's).

- dns-service: every Service's name resolves to its ClusterIP from every Kubernetes namespace (one
  client pod in each) and from a node: by FQDN and by each short form the search path allows
  (`web` only in its own namespace, `web.shop`, `web.shop.svc`); PTR of each ClusterIP;
- dns-scope: a short name does not resolve from another namespace;
- dns-pod: pod records a-b-c-d.<ns>.pod.cluster.local;
- dns-srv: SRV _<port>._<proto>.<svc>.<ns>.svc.cluster.local for named ports;
- dns-headless: a headless Service's name answers exactly its endpoints' addresses;
- dns-nxdomain: names that do not exist are NXDOMAIN;
- dns-server: every pod and node asks 10.96.0.10, and the answer comes from it (dig's SERVER).

Each check reproduces with nslookup; a failure says why from what the machine holds: the pod's
resolv.conf, the DNS server's process, the node's kube-proxy rules for the kube-dns Service.
"""

from __future__ import annotations

import os
import re
import subprocess
from dataclasses import dataclass, field
from typing import Optional

from ...core.lab import Lab, Pod
from ...verify.checks import Check, Server
from ...verify.report import Result

METHOD = "dns"
NXDOMAIN = "NXDOMAIN"
ETC = "/etc/netns"


class DnsCheck(Check):
    """data: (qtype, expected answers or NXDOMAIN, absolute?, node namespace, DNS pod's ns,
    Service IP, DNS pod's IP)."""

    @property
    def expected(self) -> str:
        want = self.data[1]
        if want == NXDOMAIN:
            return "no answer (NXDOMAIN)"
        return f"{self.data[0]} {', '.join(want)}"

    @property
    def reproduce(self) -> str:
        qtype, name = self.data[0], self.target
        opt = "" if qtype == "A" else f"-type={qtype} "
        return f"ip netns exec {self.ns} nslookup {opt}{name}"


def _check(rule: str, lab: Lab, src: str, ns: str, node_ns: str, name: str, qtype: str,
           want, why: str = "") -> DnsCheck:
    d = lab.dns
    dns_pod = lab.pod(d.pod)
    want = want if want == NXDOMAIN else tuple(sorted(want))
    # server: verify waits until dnsmasq listens (and asks anyway when it does not: Probe)
    return DnsCheck(rule, src, name, METHOD, ns, name, 53, why=why,
                    server=Server(dns_pod.ns, 53, dns_pod.name, dns_pod.containers[0].name),
                    data=(qtype, want, name.endswith("."), node_ns, dns_pod.ns, d.service_ip,
                          dns_pod.ip))


def _fqdn(lab: Lab, s) -> str:
    return f"{s.name}.{s.namespace}.svc.{lab.dns.domain}"


def clients(lab: Lab) -> list[Pod]:
    """One client pod per Kubernetes namespace that has one (ClusterFirst, its own namespace)."""
    out: dict[str, Pod] = {}
    for p in lab.pods:
        if p.host_network or p.name == lab.dns.pod or _policy(lab, p) == "Default":
            continue
        out.setdefault(p.namespace, p)
    return list(out.values())


def _policy(lab: Lab, p: Pod) -> str:
    return dict(lab.dns.policies).get(p.name, "ClusterFirst")


def _node_ns(lab: Lab, p: Pod) -> str:
    return lab.node(p.node).ns


def rule_service(lab: Lab) -> list[Check]:
    """Every Service resolves to its ClusterIP, by FQDN and each short form, from every
    namespace (and from a node); the ClusterIP's PTR names the Service."""
    if lab.dns is None:
        return []
    out = []
    svcs = [s for s in lab.services if not s.headless]
    for c in clients(lab):
        for s in svcs:
            forms = [_fqdn(lab, s), f"{s.name}.{s.namespace}.svc", f"{s.name}.{s.namespace}"]
            if s.namespace == c.namespace:
                forms.append(s.name)
            out += [_check("dns-service", lab, c.name, c.ns, _node_ns(lab, c), f, "A",
                           [s.cluster_ip]) for f in forms]
    node = lab.nodes[0]
    for s in svcs:
        # the node's search path has no namespace; ndots:2 completes `web.shop` first
        for f in (_fqdn(lab, s), f"{s.name}.{s.namespace}"):
            out.append(_check("dns-service", lab, node.name, node.ns, node.ns, f, "A",
                              [s.cluster_ip]))
    first = clients(lab)[:1]
    for c in first:
        for s in svcs:
            out.append(_check("dns-service", lab, c.name, c.ns, _node_ns(lab, c), s.cluster_ip,
                              "PTR", [_fqdn(lab, s)]))
    return out


def rule_scope(lab: Lab) -> list[Check]:
    """Kubernetes namespaces are DNS scope: a Service's short name does not resolve from a pod of
    another namespace (unless that namespace has a Service of the same name)."""
    if lab.dns is None:
        return []
    out = []
    for c in clients(lab):
        here = {s.name for s in lab.services if s.namespace == c.namespace}
        for name in sorted({s.name for s in lab.services if s.namespace != c.namespace} - here):
            out.append(_check("dns-scope", lab, c.name, c.ns, _node_ns(lab, c), name, "A",
                              NXDOMAIN))
    return out


def rule_pod(lab: Lab) -> list[Check]:
    """Pod records: each client resolves its own a-b-c-d.<ns>.pod name and the DNS pod's."""
    if lab.dns is None:
        return []
    dns_pod = lab.pod(lab.dns.pod)
    out = []
    for c in clients(lab):
        for p in (c, dns_pod):
            name = f"{p.ip.replace('.', '-')}.{p.namespace}.pod.{lab.dns.domain}"
            out.append(_check("dns-pod", lab, c.name, c.ns, _node_ns(lab, c), name, "A", [p.ip]))
    return out


def rule_srv(lab: Lab) -> list[Check]:
    """SRV records of named ports: `port target` of the Service (headless: of each endpoint)."""
    if lab.dns is None:
        return []
    from . import records
    srv: dict[str, list[str]] = {}
    for r in records(lab):
        if r.type == "SRV":
            srv.setdefault(r.name, []).append(f"{r.port} {r.value}.")
    out = []
    for c in clients(lab)[:1]:
        for name, want in srv.items():
            out.append(_check("dns-srv", lab, c.name, c.ns, _node_ns(lab, c), name, "SRV", want))
    return out


def rule_headless(lab: Lab) -> list[Check]:
    """A headless Service's name answers exactly the addresses of its ready endpoints."""
    if lab.dns is None:
        return []
    from ..services import endpoints
    out = []
    for c in clients(lab)[:1]:
        for s in lab.services:
            if s.headless:
                ips = sorted({e.ip for e in endpoints(s, lab.pods)})
                out.append(_check("dns-headless", lab, c.name, c.ns, _node_ns(lab, c),
                                  _fqdn(lab, s), "A", ips or NXDOMAIN))
    return out


def rule_nxdomain(lab: Lab) -> list[Check]:
    """Names that do not exist are NXDOMAIN: in the zone, in a namespace, and outside the zone."""
    if lab.dns is None:
        return []
    out = []
    for c in clients(lab):
        for name in ("no-such-service", f"no-such-service.{c.namespace}.svc.{lab.dns.domain}"):
            out.append(_check("dns-nxdomain", lab, c.name, c.ns, _node_ns(lab, c), name, "A",
                              NXDOMAIN))
    return out


def rule_server(lab: Lab) -> list[Check]:
    """Every pod and node asks the kube-dns Service (10.96.0.10) and is answered by it."""
    if lab.dns is None:
        return []
    d = lab.dns
    out = []
    for p in lab.pods:
        if p.host_network or p.name == d.pod:
            continue
        out.append(_check("dns-server", lab, p.name, p.ns, _node_ns(lab, p),
                          "kube-dns.kube-system", "A", [d.service_ip]))
    for n in lab.nodes:
        out.append(_check("dns-server", lab, n.name, n.ns, n.ns, "kube-dns.kube-system", "A",
                          [d.service_ip]))
    return out


RULES = {"dns-service": rule_service, "dns-scope": rule_scope, "dns-pod": rule_pod,
         "dns-srv": rule_srv, "dns-headless": rule_headless, "dns-nxdomain": rule_nxdomain,
         "dns-server": rule_server}


# ---------------------------------------------------------------- probing


@dataclass
class DigOut:
    status: str = ""                 # NOERROR, NXDOMAIN, ... or "" when nothing answered
    answers: list[str] = field(default_factory=list)   # the data of the answers of the qtype
    server: str = ""                 # dig's SERVER line: the address that answered
    error: str = ""                  # timed out, dig failed...
    qname: str = ""                  # the name finally asked (after the search list)


_HEADER = re.compile(r";; ->>HEADER<<- opcode: \w+, status: (\w+)")
_SERVER = re.compile(r";; SERVER: ([^#\s]+)#")
_COMM = re.compile(r";; communications error to ([^#\s]+)#\d+: (.*)")


def parse_dig(text: str, qtype: str) -> DigOut:
    """dig's default output: the status of the (last) answer, its answer section's records of
    `qtype` (their data), the SERVER line, or why nothing came back."""
    out = DigOut()
    section = ""
    for line in text.splitlines():
        m = _HEADER.search(line)
        if m:
            out.status, out.answers, section = m.group(1), [], ""
            continue
        if line.startswith(";; ") and line.endswith("SECTION:"):
            section = line[3:-len(" SECTION:")]
            continue
        m = _SERVER.match(line)
        if m:
            out.server = m.group(1)
            continue
        m = _COMM.match(line)
        if m:       # ";; communications error to 10.96.0.10#53: connection refused"
            out.error = f"no answer from {m.group(1)}: {m.group(2)}"
        elif line.startswith(";; connection timed out") or "no servers could be reached" in line:
            out.error = out.error or "no answer: no servers could be reached"
        if not line or line.startswith(";"):
            if section == "QUESTION" and line.startswith(";") and not line.startswith(";;"):
                out.qname = line[1:].split()[0].rstrip(".")
            continue
        words = line.split()
        if section == "ANSWER" and len(words) >= 5 and words[3] == qtype:
            data = " ".join(words[4:])
            if qtype == "SRV":       # priority weight port target: compared as port target
                parts = data.split()
                data = f"{parts[2]} {parts[3]}" if len(parts) == 4 else data
            out.answers.append(data.rstrip(".") if qtype in ("A", "PTR") else data)
    return out


class Probe:
    """The "dns" method: one real dig in the check's namespace, with the pod's resolv.conf. It asks
    even when verify finds the DNS server down: the query that gets no answer is the symptom, and
    the judge says why from the DNS pod's namespace itself."""
    asks_down_servers = True

    def run(self, c: Check) -> DigOut:
        qtype = c.data[0]
        query = ["-x", c.target] if qtype == "PTR" else [c.target, qtype]
        argv = ["ip", "netns", "exec", c.ns, "dig", "+search", "+time=1", "+tries=2", *query]
        try:
            proc = subprocess.run(argv, capture_output=True, text=True, timeout=30)
        except subprocess.TimeoutExpired:
            return DigOut(error="dig timed out")
        except FileNotFoundError:
            return DigOut(error="ip not found")
        out = parse_dig(proc.stdout, qtype)
        if not out.status and not out.error:
            out.error = (proc.stderr.strip().splitlines() or [f"dig exited {proc.returncode}"])[-1]
        return out

    def judge(self, c: Check, out: DigOut) -> Result:
        return judge(c, out)

    def lost(self, c: Check, out: DigOut) -> Optional[tuple]:
        """A query nothing answered: its packet, to the kube-dns Service (for verify's trace)."""
        return None if out.status else (c.ns, c.data[5], 53, "udp")

    def stops(self, reason: str, stop: str) -> str:
        """The reason with where the trace stopped the query (then no need to look at the
        server's sockets)."""
        return f"{reason.split(_TRY)[0]}; the query stops: {stop}"


def _observed(out: DigOut) -> str:
    if not out.status:
        return out.error or "no answer"
    text = out.status if not out.answers else ", ".join(sorted(out.answers))
    return f"{text} from {out.server}" if out.server else text


def judge(c: Check, out: DigOut) -> Result:
    qtype, want, _, node_ns, dns_ns, service_ip, dns_ip = c.data
    observed = _observed(out)
    if not out.status:
        return Result(c, False, observed, _why_no_answer(c, out))
    if out.server != service_ip:
        return Result(c, False, observed, f"answered by {out.server or '?'}, not the kube-dns "
                                          f"Service {service_ip}: {_resolv_problem(c) or 'see'} "
                                          f"{ETC}/{c.ns}/resolv.conf")
    if want == NXDOMAIN:
        # NXDOMAIN, or NOERROR without an answer (`shop.svc.cluster.local` is namespace shop's
        # node in the zone: it exists, with no address, in CoreDNS as in dnsmasq)
        if not out.answers:
            return Result(c, True, observed)
        return Result(c, False, observed, f"{c.target} resolved to {', '.join(out.answers)} "
                                          f"({out.qname or c.target}) from {c.src}, but it must "
                                          f"not resolve here{_scope_hint(c)}")
    got = sorted(out.answers)
    if got == list(want):
        return Result(c, True, observed)
    if out.status == "NXDOMAIN" or not got:
        problem = _resolv_problem(c)
        if problem:
            return Result(c, False, observed, problem)
        return Result(c, False, observed, f"the DNS server has no {qtype} record for "
                                          f"{out.qname or c.target}: see `netlab get dns`")
    missing, extra = sorted(set(want) - set(got)), sorted(set(got) - set(want))
    say = []
    if missing:
        say.append(f"missing {', '.join(missing)}")
    if extra:
        say.append(f"unexpected {', '.join(extra)}")
    return Result(c, False, observed, f"{c.target} answers {', '.join(got)}: {'; '.join(say)}")


def _scope_hint(c: Check) -> str:
    if c.rule != "dns-scope":
        return ""
    return (f": a short name is looked up in the client's own namespace first, and "
            f"`{c.target}` is a Service of another one (its search path: "
            f"{' '.join(_search(read_resolv(c.ns) or '')) or 'none'})")


def _search(text: str) -> list[str]:
    found = [w[1:] for w in (line.split() for line in text.splitlines())
             if w and w[0] in ("search", "domain")]
    return found[-1] if found else []


def read_resolv(ns: str) -> Optional[str]:
    try:
        with open(os.path.join(ETC, ns, "resolv.conf")) as f:
            return f.read()
    except OSError:
        return None


def _resolv_problem(c: Check) -> str:
    """What is wrong with the check's namespace's resolv.conf for this query, or ""."""
    text = read_resolv(c.ns)
    path = f"{ETC}/{c.ns}/resolv.conf"
    service_ip = c.data[5]
    if text is None:
        return f"{path} is missing: {c.src} asks the host's resolver, not the cluster DNS"
    servers = [w[1] for w in (line.split() for line in text.splitlines())
               if len(w) >= 2 and w[0] == "nameserver"]
    if service_ip not in servers:
        return f"{path} names nameserver {', '.join(servers) or 'none'}, not {service_ip}"
    search = _search(text)
    name = c.target
    if not name.endswith(".") and c.data[0] != "PTR" and name.count(".") < 4:
        # a short name needs the search domain that completes it
        want = [d for d in search if f"{name}.{d}".endswith(f".svc.cluster.local")
                or f"{name}.{d}".endswith(".pod.cluster.local")]
        if not want:
            return (f"{path} has no search path that completes `{name}` "
                    f"(search: {' '.join(search) or 'none'}): a short name cannot resolve")
    return ""


def _why_no_answer(c: Check, out: DigOut) -> str:
    node_ns, dns_ns, service_ip, dns_ip = c.data[3:7]
    problem = _resolv_problem(c)
    if problem:
        return f"{out.error}; {problem}"
    down = _server_down(dns_ns, service_ip, out.error)
    if down:
        return down
    rules = _service_rules(node_ns, service_ip)
    if rules:
        return f"{out.error}: {rules}"
    return (f"{out.error} from {service_ip}; the server (dnsmasq, {dns_ip} in {dns_ns}) runs and "
            f"{node_ns} has the kube-dns Service's rules{_TRY}`ip netns exec {dns_ns} ss -lunp`")


_TRY = ": try "


def _server_down(dns_ns: str, service_ip: str, error: str) -> str:
    """Why the kube-dns Service gets no answer when its pod's namespace has nothing on udp/53,
    from that namespace as it is (`ss`, its processes), or "" when something listens there (or
    it cannot be seen)."""
    listening = udp_listens(dns_ns, 53)
    if listening is not False:
        return ""
    cause = error.split(": ", 1)[1] if error.startswith("no answer") and ": " in error else error
    procs = _pids(dns_ns)
    names = sorted({_comm(p) for p in procs or []})
    if procs == []:
        who = "dnsmasq not running: no process in the namespace"
    elif "dnsmasq" in names:
        who = "dnsmasq runs but does not listen there"
    else:
        who = f"dnsmasq not running; the namespace runs {', '.join(names)}"
    return (f"no answer from kube-dns {service_ip} ({cause}): nothing listens on udp/53 in "
            f"{dns_ns} ({who}): look with `ip netns exec {dns_ns} ss -lunp`")


def udp_listens(ns: str, port: int) -> Optional[bool]:
    """Whether a UDP socket is bound to `port` in namespace `ns` (`ss -lun` run inside it); None
    when it cannot be told."""
    try:
        proc = subprocess.run(["ip", "netns", "exec", ns, "ss", "-Hlun", f"sport = :{port}"],
                              capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return bool(proc.stdout.strip()) if proc.returncode == 0 else None


def _comm(pid: str) -> str:
    try:
        with open(f"/proc/{pid}/comm") as f:
            return f.read().strip()
    except OSError:
        return "?"


def _pids(ns: str) -> Optional[list[str]]:
    try:
        proc = subprocess.run(["ip", "netns", "pids", ns], capture_output=True, text=True,
                              timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return proc.stdout.split() if proc.returncode == 0 else None


def _service_rules(node_ns: str, service_ip: str) -> str:
    """Whether the node's kube-proxy table sends udp/53 to the kube-dns Service's chain."""
    try:
        proc = subprocess.run(["ip", "netns", "exec", node_ns, "nft", "list", "map", "ip",
                               "kube-proxy", "service-ips"], capture_output=True, text=True,
                              timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return ""
    if proc.returncode != 0:
        return (f"node namespace {node_ns} has no kube-proxy map service-ips: nothing DNATs "
                f"{service_ip}:53 to the DNS pod")
    if not re.search(rf"{re.escape(service_ip)} \. udp \. 53 ", proc.stdout):
        return (f"{node_ns}'s kube-proxy rules have no entry for {service_ip} . udp . 53 "
                f"(Service kube-system/kube-dns): nothing DNATs the queries to the DNS pod "
                f"(`ip netns exec {node_ns} nft list map ip kube-proxy service-ips`)")
    return ""

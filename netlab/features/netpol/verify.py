"""verify for NetworkPolicy: the rule `policy`, its probe, and what policies change in the other
rules' checks.

- `rule_policy(lab)`: for every ordered pair of pods (not a pod to itself) and every port a
  policy names (numbers, named ports resolved on the pods, and the pods' declared ports for
  rules that name only a protocol), TCP and UDP: the model's verdict, expected reachable or
  unreachable, with the policy rule that says so (the last of the check's `data`).
- `Probe`: the method "netpol", batched: one connect.py per source namespace probes all its
  targets at once. Reached = connected, or refused (the packet got to the pod); dropped = no
  answer at all (nft `drop` sends nothing back).
- `refine(lab, checks)`: the checks of the other rules (ping and /clientip between pods and
  nodes) that the policies deny are expected unreachable, naming the policy; so a lab with a
  default-deny still passes verify. A denied pod-to-pod connection check is left out (the
  `policy` rule probes the same pair, port and protocol, once), and so is an mtu check (no ping
  gets through to measure with). Other features' checks (Services...) are left as they are.
- `observed_tables(lab, results)`: the truth tables with what verify saw (`verify
  --policy-matrix`).
"""

from __future__ import annotations

import subprocess
import sys
from dataclasses import replace
from pathlib import Path
from typing import Optional

from ...core.lab import Lab
from ...verify.checks import REACHABLE, UNREACHABLE, Check
from ...verify.report import Result
from .model import Matrix, _Cluster, _verdict, egress_verdict, matrix, render_matrix
from .specs import TABLE

METHOD = "netpol"
TIMEOUT = 1.5
CONNECT = str(Path(__file__).with_name("connect.py"))


def probed_ports(policies, pods) -> list[tuple[int, str]]:
    """(port, protocol) pairs verify probes: what the policies name, plus the pods' declared
    ports (where a rule names only a protocol, or none)."""
    out: set[tuple[int, str]] = set()
    for pol in policies:
        for rule in pol.ingress + pol.egress:
            for pp in rule.ports or ():
                if isinstance(pp.port, int):
                    out.add((pp.port, pp.protocol))
                    if pp.endPort:
                        out.add((pp.endPort, pp.protocol))
                elif isinstance(pp.port, str):
                    out |= {(p.named_port(pp.port, pp.protocol), pp.protocol) for p in pods
                            if p.named_port(pp.port, pp.protocol) is not None}
    out |= {(cp.port, cp.protocol) for p in pods for cp in p.ports}
    return sorted((p, proto) for p, proto in out if proto in ("TCP", "UDP"))


def _model(lab: Lab):
    from . import cluster
    return cluster(lab)


def rule_policy(lab: Lab) -> list[Check]:
    """Every pair of pods on every probed port, TCP and UDP, against the policy model."""
    pols = lab.network_policies
    if not pols:
        return []
    nss, pods, nodes = _model(lab)
    pods = sorted(pods, key=lambda p: p.id)
    ports = probed_ports(pols, pods)
    ports += [(cp.port, cp.protocol) for p in lab.pods if not p.host_network
              for cp in p.ports if not cp.name and (cp.port, cp.protocol) not in ports]
    ports = sorted(set(ports))
    c = _Cluster(nss, pods, nodes)
    by_name = {p.name: p for p in lab.pods}
    out = []
    for s in pods:
        for d in pods:
            if d.id == s.id:
                continue
            for port, proto in ports:
                ok, why = _verdict(c, pols, s.id, d.id, port, proto)
                ns = by_name[s.name].ns
                out.append(Check("policy", s.name, d.name, METHOD, ns, d.ip, port,
                                 expect=REACHABLE if ok else UNREACHABLE,
                                 data=(proto, s.id, d.id, lab.node(d.node).ns,
                                       lab.node(s.node).ns, why),
                                 command=reproduce(ns, proto, d.ip, port)))
    return out


def reproduce(ns: str, proto: str, ip: str, port: int) -> str:
    if port == 53:                 # connect.py asks a DNS server a real query over UDP
        tcp = " +tcp" if proto == "TCP" else ""
        return f"ip netns exec {ns} dig{tcp} @{ip} +time=1 +tries=1 . NS"
    if proto == "UDP":
        return f"echo hostname | ip netns exec {ns} socat -t1 - UDP:{ip}:{port}"
    return f"ip netns exec {ns} curl -s --connect-timeout 2 http://{ip}:{port}/hostname"


class Probe:
    """The "netpol" method: connect.py in the check's namespace, every target of it at once."""

    def run(self, c: Check) -> str:
        return self.run_many([c])[0]

    def run_many(self, checks: list[Check]) -> list[str]:
        from ...verify.checks import launch
        text = "".join(f"{c.data[0].lower()} {c.target} {c.port}\n" for c in checks)
        argv = launch(checks[0].ns) + [sys.executable, "-I", "-S", CONNECT,
                                       "--timeout", str(TIMEOUT)]
        try:
            proc = subprocess.run(argv, input=text, capture_output=True, text=True,
                                  timeout=60 + 4 * TIMEOUT * (1 + len(checks) // 400))
        except subprocess.TimeoutExpired:
            return ["probe timed out"] * len(checks)
        out = ["probe failed: " + proc.stderr.strip()[-200:]] * len(checks)
        for line in proc.stdout.splitlines():
            i, _, r = line.partition("\t")
            if i.isdigit() and int(i) < len(checks):
                out[int(i)] = r
        return out

    def judge(self, c: Check, out: str) -> Result:
        return judge(c, out)

    def lost(self, c: Check, out: str) -> Optional[tuple]:
        """An allowed connection that got no answer: its packet (for verify's trace)."""
        if out != "timeout" or c.expect != REACHABLE:
            return None
        return (c.ns, c.target, c.port, c.data[0].lower())


def reached(out: str) -> bool:
    return out in ("open", "refused")


def judge(c: Check, out: str) -> Result:
    proto, src, dst, dst_node_ns, src_node_ns, why = c.data
    observed = {"open": "connected", "refused": "refused (reached, no server)",
                "timeout": "no answer (dropped)"}.get(out, out)
    want = c.expect == REACHABLE
    if reached(out) == want:
        return Result(c, True, observed)
    table = f"ip netns exec {{}} nft list table inet {TABLE}"
    if want:
        if out not in ("timeout",):
            return Result(c, False, observed, f"{src} -> {dst} {proto}/{c.port} failed "
                                              f"({observed}); the model allows it: {why}")
        where = ", ".join(f"`{table.format(ns)}`" for ns in dict.fromkeys((dst_node_ns,
                                                                          src_node_ns)))
        return Result(c, False, observed,
                      f"{src} -> {dst} {proto}/{c.port} was dropped, but the model allows it: "
                      f"{why}; the nft rule for that is missing ({where})")
    return Result(c, False, observed,
                  f"{src} -> {dst} {proto}/{c.port} got through, but the model denies it: "
                  f"{why}; the chain's drop is missing or bypassed (bridge netfilter off?): "
                  f"`{table.format(dst_node_ns)}`")




# ---------------------------------------------------------------- other rules' checks

_PROTO = {"ping": ("ICMP", 0), "mtu": ("ICMP", 0), "http": ("TCP", None), "udp": ("UDP", None)}


def refine(lab: Lab, checks: list[Check]) -> list[Check]:
    """Other rules' checks between pods and nodes that the policies deny: expected unreachable.
    A node reaches its own pods from the inside (output hook: never filtered, as kubelet
    probes), a pod its own node (input hook); everything else is forwarded and decided."""
    pols = lab.network_policies
    if not pols:
        return checks
    nss, pods, nodes = _model(lab)
    c = _Cluster(nss, pods, nodes)
    policy_pods = {p.name: p for p in pods}
    lab_pods = {p.name: p for p in lab.pods}
    node_names = {n.name for n in lab.nodes}
    out = []
    for ch in checks:
        if ch.rule == "policy" or ch.method not in _PROTO or ch.expect != REACHABLE:
            out.append(ch)
            continue
        proto, port = _PROTO[ch.method]
        port = ch.port if port is None else port
        ok, why = _allowed(c, pols, nss, pods, policy_pods, lab_pods, node_names, lab, ch,
                           proto, port)
        if ok:
            out.append(ch)
        elif ch.method == "mtu":
            continue        # a path MTU cannot be measured where the policy drops the ping
        elif ch.method in ("http", "udp") and ch.src in policy_pods and ch.dst in policy_pods:
            continue        # the `policy` rule probes this very pair, port and protocol
        else:
            out.append(replace(ch, expect=UNREACHABLE, nat=None, body=None,
                               label=ch.label or "NetworkPolicy", why=why))
    return out


def _place(name: str, lab_pods, node_names) -> tuple[str, Optional[str]]:
    """(kind, node) of a check's end: ("pod", node), ("node", node) or ("other", None)."""
    p = lab_pods.get(name)
    if p is not None:
        return ("node" if p.host_network else "pod"), p.node
    if name in node_names:
        return "node", name
    return "other", None


def _allowed(c, pols, nss, pods, policy_pods, lab_pods, node_names, lab, ch, proto, port):
    skind, snode = _place(ch.src, lab_pods, node_names)
    dkind, dnode = _place(ch.dst, lab_pods, node_names)
    if "other" in (skind, dkind) or snode == dnode and "node" in (skind, dkind):
        return True, ""
    if dkind == "pod":
        src = policy_pods[ch.src].id if skind == "pod" else (ch.sees[0] if ch.sees else
                                                             lab.node(snode).ip)
        return _verdict(c, pols, src, policy_pods[ch.dst].id, port, proto)
    if skind == "pod":           # to another node's address: the pod's egress decides
        return egress_verdict(pols, nss, pods, policy_pods[ch.src].id, ch.target, port, proto)
    return True, ""


# ---------------------------------------------------------------- the truth table


def observed_tables(lab: Lab, results: list[Result]) -> str:
    """One truth table per probed port and protocol: expected by the model, `!` where verify
    saw otherwise. Empty when the lab has no policies or no policy check ran."""
    pols = lab.network_policies
    mine = [r for r in results if r.check.rule == "policy"]
    if not pols or not mine:
        return ""
    nss, pods, nodes = _model(lab)
    seen: dict[tuple[int, str], dict] = {}
    for r in mine:
        c = r.check
        want = c.expect == REACHABLE
        seen.setdefault((c.port, c.data[0]), {})[c.data[1], c.data[2]] = want if r.ok else not want
    out = []
    for (port, proto), got in sorted(seen.items()):
        exp = matrix(pols, nss, pods, port, proto, nodes)
        obs = replace(exp, allowed={k: got.get(k, v) for k, v in exp.allowed.items()})
        out.append(render_matrix(exp, obs))
    return "\n".join(out)

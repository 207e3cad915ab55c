"""The Services' own check method, "svc": its probe (netlab/svcclient.py run inside the check's
namespace: several tries, each on a new connection) and its judge, which compares the answers with
the endpoints the model says and, for a failure, says why from what the node that DNATs holds:
its kube-proxy table, the endpoint's chain and dnat rule, the masquerade rule, bridge netfilter,
and whether the endpoint's server listens at all. The rules that make these checks: svcchecks.py.
"""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from ..verify.checks import HTTP_CONNECT_TIMEOUT, Check
from ..verify.report import Result
from . import kubeproxy
from .svcmodel import BRIDGE_NF

# Ep (in annotations only) is svcchecks.py's, which imports this module.
CLIENT = str(Path(__file__).parent.parent / "svcclient.py")
# Each try's connect / answer timeout: a lab answers in microseconds, but a busy machine may stall
# a probe for a while (verify's HTTP connect timeout); only a lost try pays it.
TIMEOUT = HTTP_CONNECT_TIMEOUT
RETRIES = 2            # asks again after a timeout, where one lost try would fail the check


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
        mode, proto, tries, eps = c.data[:4]
        # As verify's own probes enter a namespace (verify.probes.launch), without importing the
        # runtime layer into a feature.
        argv = ["nsenter", f"--net=/run/netns/{c.ns}", "--"] + [sys.executable, "-I", "-S", CLIENT, proto, c.target, str(c.port),
                               c.path, str(tries), "--timeout", str(TIMEOUT)]
        if mode in ("any", "clientip", "one", "self"):
            argv += ["--retries", str(RETRIES)]     # a lost try here fails the check
        if mode == "all":
            argv += ["--want", ",".join(e.pod for e in eps)]
        elif mode == "self":
            # up to 20 tries of which one lost fails the check: a broken hairpin stops at once
            argv += ["--want", c.src, "--stop-on-loss"]
        try:
            proc = subprocess.run(argv, capture_output=True, text=True,
                                  timeout=30 + tries * TIMEOUT * (RETRIES + 2))
        except subprocess.TimeoutExpired:
            return SvcOut([""], ["probe timed out"])
        out = parse_client(proc.stdout)
        if not out.answers:
            out.errors = [f"client failed: {proc.stderr.strip()[-200:]}"]
            out.answers = [""]
        return out

    def judge(self, c: Check, out: SvcOut) -> Result:
        return judge(c, out)


def _tries(n: int) -> str:
    return "1 try" if n == 1 else f"{n} tries"


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
        limited = _icmp_limited(c)
        if limited:
            return Result(c, False, observed, f"{c.target}:{c.port} gave {bad[0]}, not connection "
                                              f"refused: {limited}")
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
                reason = (f"the endpoint saw {wrong[0]}, not an address of the node that "
                          f"received it ({', '.join(c.sees)}): " +
                          (_masq_problem(c) or "nothing masquerades it on the way"))
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
                                          f"{c.port} in {_tries(len(out.answers))}: "
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
    # An empty (flushed) chain's closing brace follows its head at once.
    return ("\n" + table.split(head, 1)[1]).split("\n\t}", 1)[0]


def _icmp_limited(c: Check) -> str:
    """kube-proxy's reject of a Service without endpoints is an ICMP port unreachable, which the
    kernel rate-limits per destination host (net.ipv4.icmp_ratelimit) and shares with the ICMP
    redirects a node sends when it routes a packet back out the interface it came in: say so when
    the reject is in place and the node held ICMP back."""
    node_ns = c.data[4]
    table = _table(node_ns)
    if table is None or f"{c.target} . " not in (table.split("no-endpoint-services", 1) + [""])[1]:
        return ""
    listing = _run(node_ns, "nstat", "-asz", "IcmpOutRateLimitHost", "IcmpOutRedirects").stdout
    counts = dict(line.split()[:2] for line in listing.splitlines()
                  if not line.startswith("#") and len(line.split()) >= 2)
    held = int(counts.get("IcmpOutRateLimitHost", 0))
    if not held:
        return ""
    redirects = int(counts.get("IcmpOutRedirects", 0))
    why = (f"; it sent {redirects} ICMP redirects (IcmpOutRedirects), for packets it routed back "
           f"out the interface they came in" if redirects else "")
    sysctl, opt = _bridge_nf(node_ns)
    if redirects and sysctl != "1" and opt != "1":
        why += (f", as bridge netfilter is off ({BRIDGE_NF}={sysctl}, cni0 nf_call_iptables "
                f"{opt}): its pods' Service connections are DNAT'd by routing, not in cni0")
    return (f"the reject is in place, but {node_ns} held back {held} ICMP errors by its per-host "
            f"rate limit (nstat IcmpOutRateLimitHost, net.ipv4.icmp_ratelimit){why}")


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


def _hairpin(node_ns: str, veth: str) -> Optional[bool]:
    """Whether a cni0 port has hairpin mode on (None: unknown)."""
    try:
        info = json.loads(subprocess.run(["ip", "-j", "-d", "-n", node_ns, "link", "show", veth],
                                         capture_output=True, text=True, timeout=10).stdout or "[]")
        return bool(info[0]["linkinfo"]["info_slave_data"]["hairpin"])
    except (ValueError, LookupError):
        return None


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
    if hairpin and f"ip saddr {e.ip} jump mark-for-masquerade" not in body:
        # Not masqueraded, the DNAT'd packet comes back to the endpoint from its own address,
        # which the kernel drops as a martian source.
        return (f"chain {e.chain} in {node_ns} has no `ip saddr {e.ip} jump "
                f"mark-for-masquerade` rule: {e.pod}'s connection to itself keeps its own source "
                f"address and is dropped as a martian")
    if hairpin and node_ns == e.node_ns and e.veth and _hairpin(node_ns, e.veth) is False:
        return (f"hairpin is off on {e.veth} in {node_ns} (endpoint {e.pod}'s cni0 port): the "
                f"bridge never sends {e.pod}'s own DNAT'd frame back out the port it came in")
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

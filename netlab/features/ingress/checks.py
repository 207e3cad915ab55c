"""verify's rules `ingress` and `gateway`: curl from the outside world and from a pod, with a Host
header, to the controller's LoadBalancer IP (or the first node's IP and nodePort): every rule's
host and path reach the right Service (the answering pod's name, from netexec --any-path, is one
of its endpoints), Exact does not take a longer path, Prefix matches path elements only, an
unknown host gets the default backend or 404, header matches win, weights split within
TOLERANCE over WEIGHT_TRIES requests, and the backend sees the client's address in
X-Forwarded-For.

One check method of its own, "ingress": curl asks one URL several times with the check's headers;
the judge compares the answers with what the routing table says nginx must pick, and a failure
says why from what the lab holds (nginx not listening, a Service with no endpoints, which
Service answered instead).
"""

from __future__ import annotations

import re
import shlex
import subprocess
from dataclasses import dataclass
from typing import Optional

from ...core.lab import Lab, Pod
from ...verify.checks import Check
from ...verify.report import Result
from ..services import endpoints
from . import LISTEN_PORT, NAMESPACE, SERVICE, address_of, conf_text, table_of
from .live import LiveConf, explain
from .requests import Probe, probes
from .spec import IngressConfig
from .table import route_request

METHOD = "ingress"
WEIGHT_TRIES = 100
TOLERANCE = 5            # percentage points each weighted Service's share may be off by
TRIES = 2                # a plain route: every try must land right
XFF_PATH = "/headers"


class IngressCheck(Check):
    """A Check whose reproduce command is the curl (repeated for weights) the probe makes."""

    @property
    def reproduce(self) -> str:
        mode, host, headers, tries = self.data[0], self.data[1], self.data[2], self.data[4]
        hdrs = " ".join(f"-H {shlex.quote(f'{k}: {v}')}" for k, v in (("Host", host),) + headers)
        one = f"ip netns exec {self.ns} curl -s {hdrs} {self.url}"
        if mode == "weights":
            return f"for i in $(seq {tries}); do {one}; echo; done | sort | uniq -c"
        return one

    @property
    def expected(self) -> str:
        mode, expect = self.data[0], self.data[3]
        if mode == "xff":
            return f"X-Forwarded-For: {self.sees[0]}"
        if isinstance(expect, int):
            return f"HTTP {expect}"
        if mode == "weights":
            total = sum(w for _, w, _ in expect)
            return ", ".join(f"{svc} {100 * w // total}%±{TOLERANCE}" for svc, w, _ in expect)
        return f"answered by Service {expect[0][0]}"


@dataclass(frozen=True)
class Source:
    name: str
    ns: str
    sees: tuple[str, ...]        # the client's addresses, as nginx may see it


def _sources(lab: Lab) -> list[Source]:
    out = []
    if lab.outside is not None:
        out.append(Source("outside", lab.outside.ns, (lab.outside.router, lab.outside.ip)))
    backends = {e.pod for s in lab.services for e in endpoints(s, lab.pods)}
    pods = [p for p in lab.pods if not p.host_network and p.name != lab.ingress.pod]
    pod: Optional[Pod] = next((p for p in pods if p.name not in backends), None) or \
        next(iter(pods), None)
    if pod is not None:
        out.append(Source(pod.name, pod.ns, (pod.ip,)))
    return out


def _expect(lab: Lab, services: tuple, status: Optional[int]):
    if status is not None:
        return status
    out = []
    for key, weight in services:
        ns, name = key.split("/", 1)
        svc = next((s for s in lab.services if s.namespace == ns and s.name == name), None)
        pods = frozenset(e.pod for e in endpoints(svc, lab.pods)) if svc else frozenset()
        out.append((key, weight, pods))
    return tuple(out)


def _who(lab: Lab) -> tuple[tuple[str, str], ...]:
    """Every pod behind a Service, with its Service (what names a wrong answer)."""
    return tuple((e.pod, s.key) for s in lab.services for e in endpoints(s, lab.pods))


def _checks(lab: Lab, rule: str, reqs: list[Probe], xff_hosts: list[str]) -> list[Check]:
    addr, ports = address_of(lab)
    who = _who(lab)
    ctl, model = lab.ingress, conf_text(lab)
    pod_ns = lab.pod(ctl.pod).ns

    def live(port: int) -> LiveConf:
        return LiveConf(pod_ns, ctl.conf_path, ctl.state, model, port)
    out: list[Check] = []
    for i, src in enumerate(_sources(lab)):
        for r in reqs:
            expect = _expect(lab, r.services, r.status)
            # nginx's weighted round robin is one counter for every client: a split is measured
            # from one source at a time (the first); the others check the route only.
            weighted = not isinstance(expect, int) and len(expect) > 1 and i == 0
            mode, tries = ("weights", WEIGHT_TRIES) if weighted else ("route", TRIES)
            hdr = "".join(f" {k}: {v}" for k, v in r.headers)
            promise, _, source = r.why.rpartition(": ")
            out.append(IngressCheck(rule, src.name, f"{r.host}{r.path}{hdr}", METHOD, src.ns,
                                    addr, ports[r.port], r.path, sees=src.sees, why=promise,
                                    label=source,
                                    data=(mode, r.host, r.headers, expect, tries, who,
                                          ctl.pod, pod_ns, live(r.port))))
        for host in xff_hosts[:1]:
            c = route_request(table_of(lab), LISTEN_PORT, host, XFF_PATH)
            if c.status or not c.backends:
                continue
            expect = _expect(lab, tuple((f"{b.namespace}/{b.service}", b.weight)
                                        for b in c.backends), None)
            out.append(IngressCheck(rule, src.name, f"{host}{XFF_PATH} X-Forwarded-For", METHOD,
                                    src.ns, addr, ports[LISTEN_PORT], XFF_PATH, sees=src.sees,
                                    why="the backend sees the client's address in "
                                        "X-Forwarded-For", label=f"{host} via nginx",
                                    data=("xff", host, (), expect, 1, who, ctl.pod, pod_ns,
                                          live(LISTEN_PORT))))
    return out


def rule_ingress(lab: Lab) -> list[Check]:
    """Every Ingress rule's host and path through the real nginx, from outside and from a pod."""
    if lab.ingress is None or not lab.ingress.config.ingresses:
        return []
    cfg = lab.ingress.config
    reqs = probes(IngressConfig(ingresses=cfg.ingresses), table_of(lab), LISTEN_PORT)
    reqs = [r for r in reqs if r.port == LISTEN_PORT]
    hosts = [r.host for ing in cfg.ingresses for r in ing.rules if r.host and "*" not in r.host]
    return _checks(lab, "ingress", reqs, hosts or ["unknown.invalid"])


def rule_gateway(lab: Lab) -> list[Check]:
    """Every HTTPRoute attached to a Gateway listener: hostnames, path and header matches,
    weighted backendRefs."""
    if lab.ingress is None or not lab.ingress.config.gateways:
        return []
    cfg = lab.ingress.config
    reqs = probes(IngressConfig(gateways=cfg.gateways, httproutes=cfg.httproutes),
                  table_of(lab), LISTEN_PORT)
    if cfg.ingresses:       # the ingress rule asks port 80's unknown host already
        reqs = [r for r in reqs if not (r.port == LISTEN_PORT and r.why.startswith("an unknown"))]
    return _checks(lab, "gateway", reqs, [])


# ---------------------------------------------------------------- probing and judging

@dataclass
class Answers:
    codes: list[int]           # 0: no HTTP answer
    bodies: list[str]
    error: str = ""            # curl's own words when nothing answered


_ONE = re.compile(r"(.*?)\n@@(\d{3})@@\n", re.S)


def parse_curl(text: str) -> tuple[list[int], list[str]]:
    codes, bodies = [], []
    for m in _ONE.finditer(text):
        codes.append(int(m.group(2)))
        bodies.append(m.group(1).strip())
    return codes, bodies


class HttpProbe:
    """The "ingress" method: one curl asks the URL `tries` times with the Host and match headers
    (a subprocess through nsenter: the pool's threads never change namespace)."""

    def run(self, c: Check) -> Answers:
        from ...verify.checks import launch
        host, headers, tries = c.data[1], c.data[2], c.data[4]
        argv = launch(c.ns) + ["curl", "-s", "--connect-timeout", "2", "-m", "5",
                               "-w", "\n@@%{http_code}@@\n", "-H", f"Host: {host}"]
        for k, v in headers:
            argv += ["-H", f"{k}: {v}"]
        argv += [c.url] * tries
        try:
            proc = subprocess.run(argv, capture_output=True, text=True, timeout=30 + tries)
        except subprocess.TimeoutExpired:
            return Answers([0], [""], "curl timed out")
        codes, bodies = parse_curl(proc.stdout)
        err = {6: "cannot resolve", 7: "connection refused", 28: "timed out",
               52: "empty reply", 56: "connection reset"}.get(proc.returncode, "")
        return Answers(codes or [0], bodies or [""], err or proc.stderr.strip()[-200:])

    def judge(self, c: Check, out: Answers) -> Result:
        return judge(c, out)


def _observed(c: Check, out: Answers) -> str:
    who = dict(c.data[5])
    counts: dict[str, int] = {}
    for code, body in zip(out.codes, out.bodies):
        if code == 0:
            key = f"<{out.error or 'no answer'}>"
        elif code != 200:
            key = f"HTTP {code}"
        elif c.data[0] == "xff":
            key = _xff(body) or "no X-Forwarded-For"
        else:
            key = f"{body} ({who.get(body, '?')})"
        counts[key] = counts.get(key, 0) + 1
    return ", ".join(f"{k} x{v}" if v > 1 else k for k, v in counts.items())


def _xff(headers: str) -> str:
    for line in headers.splitlines():
        name, _, value = line.partition(":")
        if name.strip().lower() == "x-forwarded-for":
            return value.strip()
    return ""


def judge(c: Check, out: Answers) -> Result:
    mode, expect, who = c.data[0], c.data[3], dict(c.data[5])
    observed = _observed(c, out)
    if any(code == 0 for code in out.codes):
        return Result(c, False, observed, _why_silent(c, out))
    if isinstance(expect, int):
        bad = [code for code in out.codes if code != expect]
        if not bad:
            return Result(c, True, observed)
        body = out.bodies[out.codes.index(bad[0])]
        by = f" from {body} ({who.get(body, '?')})" if bad[0] == 200 else ""
        return Result(c, False, observed, f"expected HTTP {expect}, got {bad[0]}{by}{_live(c)}")
    for code in out.codes:
        if code != 200:
            return Result(c, False, observed, _why_status(c, code, expect))
    if mode == "xff":
        first = _xff(out.bodies[0]).split(",")[0].strip()
        if first in c.sees:
            return Result(c, True, observed)
        return Result(c, False, observed, f"X-Forwarded-For says {first or 'nothing'}, not the "
                                          f"client's {c.sees[0]}: something SNATs before nginx "
                                          f"(externalTrafficPolicy of Service "
                                          f"{NAMESPACE}/{SERVICE}?)")
    pods = {p: svc for svc, _, ps in expect for p in ps}
    for body in out.bodies:
        if body not in pods:
            want = " or ".join(svc for svc, _, _ in expect)
            return Result(c, False, observed, f"{body} ({who.get(body, 'no backend pod')}) "
                                              f"answered, expected Service {want}{_live(c)}")
    if mode == "weights":
        total = sum(w for _, w, _ in expect)
        n = len(out.bodies)
        for svc, w, ps in expect:
            got = 100 * sum(b in ps for b in out.bodies) / n
            want = 100 * w / total
            if abs(got - want) > TOLERANCE:
                return Result(c, False, observed, f"Service {svc} got {got:.0f}% of {n} "
                                                  f"requests, its weight says {want:.0f}% "
                                                  f"(±{TOLERANCE})")
    return Result(c, True, observed)


def _why_status(c: Check, code: int, expect) -> str:
    empty = [svc for svc, _, ps in expect if not ps]
    if code in (502, 503, 504) and empty:
        return (f"nginx answered {code}: Service {empty[0]} has no endpoints, so kube-proxy "
                f"refuses its ClusterIP")
    if code == 404:
        return (f"nginx answered 404: no location of the nginx.conf takes {c.data[1]}{c.path} "
                f"for Service {expect[0][0]}; look at `netlab show ingress NAME --config`"
                f"{_live(c)}")
    return f"nginx answered {code}, expected Service {expect[0][0]}{_live(c)}"


def _live(c: Check) -> str:
    """Which location of the controller's running nginx.conf took the request, when it is not
    the one of the conf the model renders (a conf changed by hand): "; ..." or ""."""
    if len(c.data) < 9:
        return ""
    said = explain(c.data[8], c.data[1], c.path)
    return f"; {said}" if said else ""


def _why_silent(c: Check, out: Answers) -> str:
    pod, pod_ns = c.data[6], c.data[7]
    try:
        ss = subprocess.run(["ip", "netns", "exec", pod_ns, "ss", "-Hltn", "sport = :80"],
                            capture_output=True, text=True, timeout=10)
        listening = ss.returncode == 0 and bool(ss.stdout.strip())
    except (OSError, subprocess.TimeoutExpired):
        listening = True
    if not listening:
        return (f"no answer at {c.target}:{c.port} ({out.error or 'no connection'}): nothing "
                f"listens on port 80 in the controller pod {NAMESPACE}/{pod} ({pod_ns}): nginx "
                f"is not running")
    return (f"no answer at {c.target}:{c.port} ({out.error or 'no connection'}), though nginx "
            f"listens in {pod_ns}: the controller's Service does not reach it (look at `netlab "
            f"get svc -n {NAMESPACE}` and the nodes' kube-proxy tables)")

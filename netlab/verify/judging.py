"""Judging: each check's outcome against what it expects, and, for a packet that did not arrive,
where it stopped (the routes on its way, then a trace of the kernel's state): the reason a failure
gives.
"""

from __future__ import annotations

import ipaddress
import re
import subprocess
from typing import Optional

from ..core.lab import Lab
from ..features.neighbours import host_gc_thresh3
from ..runtime import kernel as K
from .checks import REACHABLE, UNREACHABLE, Check, Server
from .probes import HttpOut, MtuOut, PingOut
from .nft_reasons import Nft as _Nft
from .nft_reasons import run as _run
from .report import Result


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


def _judge_http(c: Check, out: HttpOut, nft: Optional["_Nft"] = None) -> Result:
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
        culprit = next((f for ns in on_way if nft is not None
                        for f in [nft.source_nat(ns, c.sees[0])] if f), "")
        if culprit:
            return Result(c, False, observed, f"NAT: the server saw {saw}, expected {c.sees[0]} "
                                              f"(the client's own address){sent}: {culprit}")
        look = " or ".join(f"`ip netns exec {ns} nft list ruleset`" for ns in on_way)
        named = nft.rewrites(on_way) if nft is not None else ""
        return Result(c, False, observed, f"NAT: the server saw {saw}, expected {c.sees[0]} (the "
                                          f"client's own address){sent}: something on the way "
                                          f"rewrites the source{named} (look for masquerade: "
                                          f"{look})")
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
        self._plan = None
        self.nft = _Nft(lab)

    def plan(self):
        """The plan's snapshot (view.snapshot.of_plan): what the kernel should hold."""
        if self._plan is None and self.lab is not None:
            from ..view import snapshot
            self._plan = snapshot.of_plan(self.lab)
        return self._plan

    def live(self):
        if self.snap is None and self.lab is not None:
            from ..view import look
            self.snap = look.live_snapshot(self.lab)
        return self.snap

    def planned_route(self, ns: str, address: str) -> str:
        """What the plan routes `address` by in ns, and what of it the kernel lacks, or ""."""
        try:
            from ..view import snapshot
            want = self.plan().ns(ns) if self.plan() else None
            if want is None:
                return ""
            found = snapshot.lookup(want, address)
            if found.route is None or found.error:
                return ""
            r = found.route
            text = f"; the plan has `{r.text()}` here, missing from the kernel"
            have = self.live().ns(ns) if self.live() else None
            iface = have.iface(r.dev) if have else None
            if iface is not None and not iface.up:
                return (f"{text}: {r.dev} is down, and the kernel takes the routes of a link "
                        f"that goes down (ip -n {ns} link set {r.dev} up)")
            if r.via is None and r.src:
                # A connected route: the kernel adds it with the device's address, and removes it
                # with the address.
                have = self.live().ns(ns) if self.live() else None
                iface = have.iface(r.dev) if have else None
                if iface is not None and r.src not in iface.ips:
                    plen = r.dst.split("/")[1]
                    return (f"{text}: {r.dev} lacks its address {r.src}/{plen} "
                            f"(ip -n {ns} addr add {r.src}/{plen} dev {r.dev})")
                return f"{text} ({r.dev}'s own subnet)"
            return f"{text} (ip -n {ns} route add {r.text()})"
        except Exception:   # the plan only adds detail
            return ""

    def unlike_plan(self, ns: str, address: str, reason: str) -> str:
        """Where a trace stopped in ns: what the kernel routes there differently from the plan,
        or the plan's owner of a next hop nobody has."""
        try:
            from ..view import snapshot
            plan, live = self.plan(), self.live()
            want, have = plan.ns(ns), live.ns(ns)
            if want is None or have is None:
                return ""
            w, h = snapshot.lookup(want, address), snapshot.lookup(have, address)
            if w.route is not None and h.route is not None and \
                    (w.route.dst, w.route.via, w.route.dev) != (h.route.dst, h.route.via, h.route.dev):
                return (f"; {ns} routes it by `{h.route.text()}`, the plan by "
                        f"`{w.route.text()}` (ip -n {ns} route replace {w.route.text()})")
            m = re.search(r"has the address (\S+)", reason)
            owner = plan.owner(m.group(1)) if m else None
            if owner is not None:
                o_ns, o_if = owner
                addr = next(a for a in o_if.addrs if a.split("/")[0] == m.group(1))
                return (f"; the plan puts {m.group(1)} on {o_if.name} in {o_ns.name}, missing "
                        f"from the kernel (ip -n {o_ns.name} addr add {addr} dev {o_if.name})")
        except Exception:
            pass
        return ""

    def stopped(self, ns: str, address: str, port: Optional[int] = None,
                proto: Optional[str] = None) -> str:
        """Where `netlab trace` (the kernel's routes, links, neighbours and nft rules) stops the
        packet: a ping, or TCP/UDP to `port` (so a rule that drops that port is named)."""
        key = (ns, address, port, proto)
        if key not in self.traces:
            self.traces[key] = ""
            try:
                from ..view import look
                self.snap = self.snap or look.live_snapshot(self.lab)
                t = look.live_trace(self.lab, ns, address, self.snap, port=port, proto=proto)
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
                    f"{msg.removeprefix('RTNETLINK answers: ')})"
                    f"{self.planned_route(ns, address)}")
        return self.cache[key]

    def missing_route(self, c: Check) -> str:
        """The first namespace on the way without a route, said as a reason, or ""."""
        for ns, address, way in c.hops:
            if ns is None:
                continue
            err = self.error(ns, address)
            if err:
                return f"{err}" + (" on the way back" if way == "return" else "")
        return ""

    def where(self, c: Check, detail: str) -> str:
        missing = self.missing_route(c)
        if missing:
            return missing
        hint = f" ({detail})" if detail and detail not in ("no reply", "no connection") else ""
        # The request as the probe sent it; its answer (the way back) traced as a ping.
        proto = {"http": "tcp", "udp": "udp"}.get(c.method)
        for ns, address, way in c.hops if self.lab is not None else ():
            port = c.port if proto and way != "return" else None
            stop = self.stopped(ns, address, port, proto if port else None) if ns else ""
            if stop:
                back = " on the way back" if way == "return" else ""
                where = stop.split(":", 1)[0] if ":" in stop else ns
                return (f"{c.src} got no answer from {c.target}{hint}: the packet stops{back}: "
                        f"{stop}{self.unlike_plan(where, address, stop)}")
        found = self.overlay(c) or self.nft.dropped(c, self) or self.nft.no_dnat(c, self)
        if found:
            return f"{c.src} got no answer from {c.target}{hint}: {found}"
        return (f"{c.src} got no answer from {c.target}{hint}; every namespace on the way has a "
                f"route, so look for a firewall rule or a link that is down")

    def overlay(self, c: Check) -> str:
        """A node on the way whose VXLAN device lacks the neighbour or the fdb entry of the
        next hop it routes to (the kernel's routes alone cannot show it)."""
        if self.lab is None or getattr(self.lab, "backend", "") != "vxlan":
            return ""
        nodes = {n.ns for n in self.lab.nodes}
        for ns, address, way in c.hops:
            if ns in nodes:
                found = _vxlan_entries(ns, address)
                if found:
                    return found + (" (on the way back)" if way == "return" else "")
        return ""


def _stops(routes: "_Routes", probe, c: Check, out, reason: str) -> str:
    """Where a feature's probe's packet stopped, traced through the live rules: the probe's
    `lost(check, out)` says which packet got no answer (namespace, address, port, protocol),
    its `stops(reason, stop)` (if any) how to say it."""
    lost = getattr(probe, "lost", None)
    way = lost(c, out) if lost is not None else None
    stop = routes.stopped(*way) if way else ""
    if not stop:
        return reason
    say = getattr(probe, "stops", None)
    return say(reason, stop) if say is not None else f"{reason}; the packet stops: {stop}"


def _lost(r: Result) -> bool:
    """A packet that got no answer at all (not a wrong answer)."""
    return r.check.method in ("ping", "http", "udp", "mtu") and \
        not r.observed.startswith(("sees", "HTTP", "'", "connected", "answered"))


def overflow_reason(c: Check, times: int, limit: int) -> str:
    """A lost packet while the kernel's neighbour table was full: the ARP entry it needed could
    not be made (the table is shared by every namespace on the host)."""
    return (f"{c.src} got no answer from {c.target}: the kernel's neighbour (ARP) table was full "
            f"while verify ran ({times} times: table_fulls in /proc/net/stat/arp_cache; the kernel "
            f"log says 'neighbor table overflow'), so an entry this packet needed could not be "
            f"made. The table is shared by every namespace on this host: look at sysctl "
            f"net.ipv4.neigh.default.gc_thresh3 (now {limit}) and the entries in use (`ip -s neigh` "
            f"in each namespace), or give the lab permanent entries with "
            f"`network: {{staticNeighbours: always}}`")


def blocked(c: Check, problems: dict[Server, str], custom: Optional[dict] = None) -> bool:
    """Whether a check is not run because its server is down. A feature's probe that says
    `asks_down_servers` runs anyway: its query failing is the symptom, and its judge says why
    from what the server's namespace holds (the cluster DNS's dig)."""
    return (c.server is not None and c.server in problems
            and not getattr((custom or {}).get(c.method), "asks_down_servers", False))


def judge(lab: Lab, checks: list[Check], pings: dict, https: dict, seen: dict,
          problems: dict[Server, str], missing: set[str], custom: Optional[dict] = None,
          table_full: int = 0) -> list[Result]:
    """Each check's result. `table_full`: how many times the kernel's neighbour table was full
    while the probes ran; a packet lost then is blamed on that, not on a route or a firewall."""
    custom = custom or {}
    limit = host_gc_thresh3() if table_full else 0
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
        if blocked(c, problems, custom):
            results.append(Result(c, False, "not run", f"cannot run: {problems[c.server]}"))
            continue
        if c.method == "addr":
            r = _judge_addr(c, seen, owners)
        elif c.method == "addrs":
            r = _judge_addrs(c, https[i])
        elif c.method == "mtu":
            r = _judge_mtu(c, https[i])
            if not r.ok and not re.search(r"mtu|frag|too long", https[i].detail, re.I) \
                    and https[i].mtu - 28 == c.size:
                r.reason = ""       # not a matter of size: say where the packet stopped
        elif c.method == "ping":
            r = _judge_ping(c, pings[c.ns][c.target])
        elif c.method in custom:
            r = custom[c.method].judge(c, https[i])
            if not r.ok:
                r.reason = _stops(routes, custom[c.method], c, https[i], r.reason)
        elif c.asks:
            r = _judge_answer(c, https[i])
        else:
            r = _judge_http(c, https[i], routes.nft)
        if not r.ok and not r.reason:
            if c.expect == UNREACHABLE:
                r.reason = f"{c.target} answered {c.src}, but the check expects it unreachable"
            elif table_full and _lost(r):
                # a missing route is a reason of its own, full table or not
                r.reason = routes.missing_route(c) or overflow_reason(c, table_full, limit)
            else:
                r.reason = routes.where(c, r.observed)
        if not r.ok and c.why and c.method != "mtu":
            r.reason += f" ({c.label}: {c.why})"
        results.append(r)
    return results




def _vxlan_entries(ns: str, address: str) -> str:
    """In a node's namespace: if `address` is routed over a VXLAN device, whether that device
    holds the neighbour entry of the gateway (its VTEP MAC) and the fdb entry sending that MAC
    to a node; a reason naming the missing entry, or ""."""
    import json
    try:
        got = json.loads(_run(["ip", "-n", ns, "-j", "route", "get", address]) or "[]")
    except ValueError:
        return ""
    if not got or not got[0].get("gateway"):
        return ""
    dev, gw = got[0].get("dev", ""), got[0]["gateway"]
    try:
        links = json.loads(_run(["ip", "-n", ns, "-j", "-d", "link", "show", "dev", dev]) or "[]")
    except ValueError:
        return ""
    if not links or links[0].get("linkinfo", {}).get("info_kind") != "vxlan":
        return ""
    try:
        neigh = json.loads(_run(["ip", "-n", ns, "-j", "neigh", "show", gw, "dev", dev]) or "[]")
        fdb = json.loads(_run(["bridge", "-n", ns, "-j", "fdb", "show", "dev", dev]) or "[]")
    except ValueError:
        return ""
    mac = next((n.get("lladdr") for n in neigh if n.get("lladdr")), None)
    if mac is None:
        state = ", ".join(s for n in neigh for s in n.get("state", [])) or "no entry"
        return (f"{ns}: {dev} has no neighbour entry for the VTEP {gw} ({state}): the kernel "
                f"routes {address} via {gw} but cannot resolve its MAC over VXLAN (ip -n {ns} "
                f"neigh show dev {dev})")
    if not any(e.get("mac") == mac and e.get("dst") for e in fdb):
        return (f"{ns}: {dev} has no fdb entry for {mac} (the VTEP {gw}): the frame has no node "
                f"to go to (bridge -n {ns} fdb show dev {dev})")
    return ""

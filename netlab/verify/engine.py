"""Verify: derive the checks a lab implies (each feature's rules, plus the scenario's own), probe
them inside the lab's namespaces, judge each one with a reason and the command that reproduces it.

The rules come from the features (features.RULES), in their order; a feature's own check method
brings its probe and judge (Feature.probes). Probes run concurrently on a bounded pool.
"""

from __future__ import annotations

import os
import shutil
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import replace
from typing import Callable, Iterable, Optional

from ..core.errors import NetlabError
from ..core.lab import Lab
from ..core.ops import HERE
from ..features import PROBES
from ..features.derive import derive as features_derive
from ..features.neighbours import table_fulls
from ..runtime import kernel as K
from . import coverage
from .checks import Check
from .coverage import Cover
from .judging import blocked, judge
from .probes import READY_TIMEOUT, HttpOut, PingOut, curl_many, observe_addresses, \
    observe_all_addresses, observe_mtus, ping_df, ping_many, udp_ask, wait_ready
from .report import Report


def derive(lab: Lab, only: Iterable[str] = (), source: Optional[str] = None,
           cover: Optional[Cover] = None) -> list[Check]:
    """Every check of the lab (in the mode `cover`, else the lab's default: see coverage),
    narrowed to some rules and/or one source pod or node."""
    return [c for c in features_derive(lab, only, cover) if source is None or c.src == source]


def pairs(checks: list[Check]) -> int:
    """How many (source, target) pairs the checks cover."""
    return len({(c.src, c.dst) for c in checks})


def derive_node(here: Lab, node: str, only: Iterable[str] = ()) -> list[Check]:
    """verify on one node's host (`here`: the lab with that node HERE): every check that starts on
    this node or one of its pods, to pods and nodes everywhere (remote ones by their addresses from
    the scenario). Servers on other hosts are not waited for here; run verify on each host to cover
    every source."""
    local = {node} | {p.name for p in here.pods_on(node)}
    local_ns = {HERE} | {p.ns for p in here.pods_on(node)}
    out = []
    for c in derive(here, only):
        if c.src not in local:
            continue
        server = c.server if c.server is not None and c.server.ns in local_ns else None
        route = tuple(h for h in c.hops if h[0] in local_ns and h[0] != HERE)
        out.append(replace(c, server=server, hops=route))
    return out


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
        ready_timeout: float = READY_TIMEOUT, cover: Optional[Cover] = None,
        progress: Optional[Callable[[int, int], None]] = None) -> Report:
    """Probe every check and judge it. Probes of one namespace share one fping and one curl.
    `progress(done, total)` hears of each finished probe job; `cover`: the mode, for the report."""
    started = time.monotonic()
    fulls_before = table_fulls()
    need_tools(checks)
    missing = {c.ns for c in checks if not K.netns_exists(c.ns)}
    problems = wait_ready(lab, {c.server for c in checks if c.server is not None}, ready_timeout)
    ping_targets: dict[str, list[str]] = {}
    http_jobs: dict[str, list[int]] = {}
    for i, c in enumerate(checks):
        if c.ns in missing or blocked(c, problems, PROBES):
            continue
        if c.method == "ping":
            targets = ping_targets.setdefault(c.ns, [])
            if c.target not in targets:
                targets.append(c.target)
        elif c.method == "http":
            http_jobs.setdefault(c.ns, []).append(i)
    pings: dict[str, dict[str, PingOut]] = {}
    https: dict[int, HttpOut] = {}
    run_one = [i for i, c in enumerate(checks) if c.method in ("udp", "mtu", *PROBES)
               and c.ns not in missing and not blocked(c, problems, PROBES)]
    mtus = observe_mtus([checks[i] for i in run_one if checks[i].method == "mtu"])
    with ThreadPoolExecutor(max_workers=workers or workers_default()) as pool:
        http_futures = {ns: pool.submit(curl_many, ns, [checks[i].url for i in idx])
                        for ns, idx in http_jobs.items()}
        ping_futures = {ns: pool.submit(ping_many, ns, t) for ns, t in ping_targets.items()}
        # A feature's probe with run_many takes every check of one namespace in one go.
        batches: dict[tuple[str, str], list[int]] = {}
        for i in run_one:
            if hasattr(PROBES.get(checks[i].method), "run_many"):
                batches.setdefault((checks[i].method, checks[i].ns), []).append(i)
        batched = {i for idx in batches.values() for i in idx}
        batch_futures = {key: pool.submit(PROBES[key[0]].run_many, [checks[i] for i in idx])
                         for key, idx in batches.items()}
        one_futures = {i: pool.submit(udp_ask, c.ns, c.target, c.port, c.path) if c.method == "udp"
                       else pool.submit(PROBES[c.method].run, c) if c.method in PROBES
                       else pool.submit(ping_df, c.ns, c.target, mtus[c.ns])
                       for i, c in ((i, checks[i]) for i in run_one) if i not in batched}
        # netlink in this (main) thread while the probes run; the pool's threads never setns().
        seen = observe_addresses([c for c in checks if c.method == "addr"])
        all_addrs = observe_all_addresses([c for c in checks if c.method == "addrs"])
        jobs = len(ping_futures) + len(http_futures) + len(one_futures)
        done = 0
        if progress is not None:
            for fut in as_completed([*ping_futures.values(), *http_futures.values(),
                                     *one_futures.values()]):
                done += 1
                progress(done, jobs)
        for ns, fut in ping_futures.items():
            pings[ns] = fut.result()
        for ns, fut in http_futures.items():
            https.update(zip(http_jobs[ns], fut.result()))
        for i, fut in one_futures.items():
            https[i] = fut.result()
        for key, fut in batch_futures.items():
            https.update(zip(batches[key], fut.result()))
    fulls_after = table_fulls()
    # The kernel's shared neighbour table was full while verify ran: say so in what failed.
    full = (fulls_after - fulls_before) if None not in (fulls_before, fulls_after) else 0
    # Each check's own outcome by its index: an addrs check's is the namespace's address list.
    https.update((i, all_addrs[c.ns]) for i, c in enumerate(checks) if c.method == "addrs")
    results = judge(lab, checks, pings, https, seen, problems, missing, PROBES, table_full=full)
    cover = cover or coverage.choose(len(lab.pods))
    return Report(lab.name, results, time.monotonic() - started, mode=cover.describe(),
                  pairs=pairs(checks), table_full=full)



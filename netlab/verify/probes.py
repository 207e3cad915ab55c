"""Probes: real ping, curl and socat run inside a lab's namespaces, and what netlink observes there.

Probes of one namespace share one `fping` and one `curl --parallel`; a probe process enters its
namespace through `nsenter --net=/run/netns/NS`, never from a Python thread. Each parser is pure
and unit-tested on the tools' real outputs.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass
from typing import Callable

from ..core.lab import Lab
from ..runtime import kernel as K
from ..runtime import workloads
from ..runtime.state import LabState
from .checks import launch  # noqa: F401  (probes of features use it too)
from .checks import HTTP_CONNECT_TIMEOUT, HTTP_MAX_TIME, PING_RETRIES, PING_TIMEOUT_MS, Check, \
    Server

READY_TIMEOUT = 5.0        # how long verify waits for a lab's servers to listen




@dataclass
class PingOut:
    alive: bool
    detail: str = ""


def ping_many(ns: str, targets: list[str]) -> dict[str, PingOut]:
    """One fping for every target of one namespace (a real ICMP echo each, like ping -c1)."""
    argv = launch(ns) + ["fping", "-i", "0", "-B", "1", "-t", str(PING_TIMEOUT_MS),
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
        argv = launch(ns) + [
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
    argv = launch(ns) + ["socat", "-t1", "-T2", "-", f"UDP:{host}:{port}"]
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
    argv = launch(ns) + ["ping", "-n", "-M", "do", "-c", "2", "-i", "0.2", "-W", "1", "-s",
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


def _listening_in(ns: str, port: int) -> bool:
    """Whether namespace `ns` has a TCP socket listening on `port` (read from inside it: a shared
    server's socket is in the pod's namespace, not in its process's)."""
    want = f":{port:04X}"
    try:
        with K.inside(ns):
            with open("/proc/thread-self/net/tcp") as f:
                lines = f.read().splitlines()[1:]
    except OSError:
        return False
    return any(len(w) > 3 and w[3] == "0A" and w[1].endswith(want) for w in map(str.split, lines))


def wait_ready(lab: Lab, servers: set[Server], timeout: float = READY_TIMEOUT) -> dict[Server, str]:
    """Wait (bounded, polling) until each server listens; the reason for each one that does not."""
    from ..core.servers import SHARED, served
    recorded = LabState(lab.name).journal().pids
    by_owner = {what: pid for pid, what in recorded.items()}
    shared = served(lab)
    shared_wait: dict[Server, int] = {}
    for s in [s for s in servers if s.owner in shared]:
        pid = by_owner.get(f"{shared[s.owner]}/{SHARED}")
        if pid is not None and workloads.alive(pid):
            shared_wait[s] = pid
    servers = {s for s in servers if s not in shared_wait}
    in_ns: dict[str, list[int]] = {}
    inodes = {K.netns_inode(s.ns): s.ns for s in servers}
    for pid, inode in workloads.pids_in(i for i in inodes if i).items():
        in_ns.setdefault(inodes[inode], []).append(pid)
    problems: dict[Server, str] = {}
    waiting: dict[Server, int] = {}
    for s in servers:
        pid = by_owner.get(f"{s.owner}/{s.container}")
        # a process netlab did not start, in the namespace of a dead one (the learner started the
        # server again by hand): it is the one to wait for
        by_hand = [p for p in in_ns.get(s.ns, []) if p not in recorded]
        if pid is not None and by_hand and not workloads.alive(pid):
            pid = by_hand[0]
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
    while waiting or shared_wait:
        waiting = {s: pid for s, pid in waiting.items() if not _listening(pid, s.port)}
        shared_wait = {s: pid for s, pid in shared_wait.items() if not _listening_in(s.ns, s.port)}
        if not (waiting or shared_wait) or time.monotonic() > deadline:
            break
        time.sleep(delay)
        delay = min(delay * 2, 0.1)
    for s in [*waiting, *shared_wait]:
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



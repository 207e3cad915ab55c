"""No leaks over time: 50 cycles of up, traffic, down of the default scenario, in one process (the
lifecycle API) and across processes (the CLI). Namespaces, processes, open file descriptors, threads,
zombies and state files are counted after each cycle: nothing may grow.
(`netlab verify` joins these cycles when it is merged; here the traffic is one ping and one curl.)
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from conftest import leftovers, netlab, requires_root, unique_name
from netlab import model
from netlab.runtime import lifecycle

pytestmark = [requires_root, pytest.mark.slow]

CYCLES = 50


def traffic(lab: str) -> None:
    """web (node1) pings db (node3) and curls its /clientip: the lab really works this cycle."""
    ns = f"{lab}-web"
    assert subprocess.run(["ip", "netns", "exec", ns, "ping", "-c1", "-W2", "10.244.3.2"],
                          capture_output=True).returncode == 0
    r = subprocess.run(["ip", "netns", "exec", ns, "curl", "-s", "--max-time", "5", "--retry", "50",
                        "--retry-delay", "0", "--retry-connrefused",
                        "http://10.244.3.2:8080/clientip"], capture_output=True, text=True)
    assert r.stdout.startswith("10.244.1.2:"), r


def counts(lab: str) -> dict:
    me = os.getpid()
    zombies = 0
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                stat = Path(f"/proc/{pid}/stat").read_bytes().rsplit(b")", 1)[1].split()
            except OSError:
                continue
            zombies += stat[0] == b"Z" and int(stat[1]) == me
    return {
        "fds": len(os.listdir("/proc/self/fd")),
        "threads": len(os.listdir("/proc/self/task")),
        "zombie children": zombies,
        "namespaces": len([ns for ns in os.listdir("/run/netns") if ns.startswith(lab + "-")]),
        "state files": sum(len(files) for _, _, files in os.walk("/run/netlab/labs/" + lab)),
        "lock files": int(Path(f"/run/netlab/locks/{lab}.lock").exists()),
        "leftovers": len(leftovers(lab)),
    }


def rss_kib() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def test_cycles_in_one_process():
    lab = model.load(None, unique_name("rl"))
    seen = []
    for cycle in range(CYCLES):
        result = lifecycle.up(lab)
        assert not result.already_up
        traffic(lab.name)
        lifecycle.down(lab.name)
        seen.append(counts(lab.name))
        if cycle == 0:
            rss_first = rss_kib()
    # After the first cycle (which loads modules and opens what is kept for good), nothing grows.
    assert seen[-1] == seen[0], (seen[0], seen[-1])
    assert all(c == seen[0] for c in seen), [(i, c) for i, c in enumerate(seen) if c != seen[0]][:3]
    assert seen[-1]["namespaces"] == seen[-1]["leftovers"] == seen[-1]["zombie children"] == 0
    assert seen[-1]["state files"] == 0
    print(f"{CYCLES} cycles in one process: {seen[-1]}, RSS {rss_first} -> {rss_kib()} KiB")


def test_cycles_across_processes():
    lab = unique_name("rl")
    seen = []
    for _ in range(CYCLES):
        netlab("up", "--name", lab)
        traffic(lab)
        netlab("down", lab)
        # netlab ran in child processes: this test process's own fds and threads are not its
        # (pytest-xdist's workers open and close some of their own under load).
        seen.append({k: v for k, v in counts(lab).items() if k not in ("fds", "threads")})
    assert all(c == seen[0] for c in seen), [c for c in seen if c != seen[0]][:3]
    assert seen[-1]["namespaces"] == seen[-1]["leftovers"] == seen[-1]["state files"] == 0
    assert leftovers(lab) == []
    print(f"{CYCLES} cycles across processes: {seen[-1]}")

"""Crash recovery and `netlab clean`: kill -9 of `netlab up` at random moments, lost records, and
namespaces netlab did not make (never touched, even when named like a lab's)."""

from __future__ import annotations

import collections
import os
import random
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import ROOT, leftovers, netlab, requires_root, unique_name

pytestmark = requires_root

STATE = Path("/run/netlab/labs")


def ip_netns(*args: str) -> None:
    subprocess.run(["ip", "netns", *args], check=True, capture_output=True)


def netns_list() -> set[str]:
    return set(os.listdir("/run/netns")) if os.path.isdir("/run/netns") else set()


def what_was_left(name: str) -> str:
    """A word for what a killed `up` left: nothing, an incomplete record, or a complete lab."""
    journal = STATE / name / "journal"
    if not (STATE / name).exists():
        return "nothing"
    text = journal.read_text() if journal.exists() else ""
    return "complete" if "complete" in text.split() else "incomplete"


def start_up(name: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "netlab", "up", "--name", name], cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def wait_for(predicate, proc: subprocess.Popen) -> None:
    while not predicate() and proc.poll() is None:
        time.sleep(0.001)


@pytest.mark.slow
def test_kill_9_of_up_at_random_moments(runs_clean):
    seed = int(os.environ.get("NETLAB_CRASH_SEED", time.time()))
    rng = random.Random(seed)
    # How long the kernel work of one `up` takes here: from its record appearing to "complete"
    # (the shortest of three, so that most kills land in the middle of it).
    windows = []
    for _ in range(3):
        name = unique_name("rl")
        proc = start_up(name)
        wait_for((STATE / name).exists, proc)
        began = time.monotonic()
        wait_for(lambda: what_was_left(name) == "complete", proc)
        windows.append(time.monotonic() - began)
        assert proc.wait() == 0
        netlab("down", name)
        assert leftovers(name) == []
    window = min(windows)

    seen = collections.Counter()
    for trial in range(24):
        name = unique_name("rl")
        proc = start_up(name)
        if trial % 4 == 3:
            time.sleep(rng.uniform(0, 1.0))  # anywhere from Python's start on
        else:
            wait_for((STATE / name).exists, proc)  # while the kernel is being changed
            time.sleep(rng.uniform(0, 1.2) * window)
        proc.kill()
        proc.wait()
        seen_now = what_was_left(name)
        seen[seen_now] += 1
        if trial % 2 and seen_now != "complete":
            netlab("clean")  # an interrupted up is a leftover: clean alone removes it
        else:
            netlab("down", name)
        assert leftovers(name) == [], f"trial {trial} (seed {seed}) left things behind"
        assert not [ns for ns in netns_list() if ns.startswith(name)]
    print(f"seed {seed}: kill -9 of `netlab up` (kernel work {window:.2f}s) left {dict(seen)}")


def test_clean_removes_a_lab_whose_record_is_lost(runs_clean):
    name = unique_name("rl")
    netlab("up", "--name", name)
    shutil.rmtree(STATE / name)  # as if /run/netlab were wiped while the lab was up
    assert len(leftovers(name)) == 20  # 10 namespaces, 10 processes (7 containers, 3 node servers), no record
    netlab("clean")  # (a clean of a test running alongside may get there first: same result)
    assert leftovers(name) == []


def test_down_removes_a_lab_whose_record_is_lost():
    name = unique_name("rl")
    netlab("up", "--name", name)
    shutil.rmtree(STATE / name)
    out = netlab("down", name).stdout
    assert "removed 10 namespaces, stopped 10 processes" in out, out
    assert leftovers(name) == []


def test_namespaces_netlab_did_not_make_are_never_touched(runs_clean):
    name = unique_name("rl")
    mine = [f"{name}-node1", f"{name}-extra", f"{name}-ghost"]
    try:
        ip_netns("add", mine[0])
        # Named like the lab's node1: `up` refuses and leaves it alone.
        r = netlab("up", "--name", name, check=False)
        assert r.returncode == 1 and f"namespace {name}-node1 already exists" in r.stderr, r.stderr
        assert leftovers(name) == [f"netns {name}-node1"]
        ip_netns("del", mine[0])

        netlab("up", "--name", name)
        ip_netns("add", mine[1])
        # A crash between recording a namespace and creating it, then somebody made one of that
        # name; and a crash between creating the file under /run/netns and mounting it.
        with open(STATE / name / "journal", "a") as journal:
            journal.write(f"netns {name}-ghost\nnetns {name}-stub\n")
        ip_netns("add", mine[2])
        Path(f"/run/netns/{name}-stub").touch()

        netlab("down", name)
        kept = set(mine[1:])
        assert netns_list() & kept == kept
        assert not Path(f"/run/netns/{name}-stub").exists()
        netlab("clean")
        assert netns_list() & kept == kept
        assert sorted(leftovers(name)) == sorted(f"netns {ns}" for ns in kept)
    finally:
        for ns in mine:
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)
    assert leftovers(name) == []


def test_clean_keeps_labs_that_are_up(lab_name, runs_clean):
    netlab("up", "--name", lab_name)
    out = netlab("clean").stdout
    assert lab_name in out.split("left up:")[1], out
    assert len([ns for ns in netns_list() if ns.startswith(lab_name + "-")]) == 10
    assert "already up" in netlab("up", "--name", lab_name).stdout


def test_stray_marked_process_is_stopped_by_clean(runs_clean):
    name = unique_name("rl")
    proc = subprocess.Popen(["sleep", "600"], env={**os.environ, "NETLAB_LAB": name})
    try:
        netlab("clean")  # (or a clean of a test running alongside: same result)
        assert proc.wait(timeout=10) is not None
        assert leftovers(name) == []
    finally:
        proc.kill()

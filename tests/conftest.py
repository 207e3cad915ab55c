"""Shared test helpers: unique lab names, running the real CLI, and proving nothing is left."""

from __future__ import annotations

import fcntl
import json
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SCENARIOS = ROOT / "scenarios"


def unique_name(prefix: str = "t") -> str:
    """A lab name no other test (or parallel worker) uses."""
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def netlab(*args: str, check: bool = True, env: dict | None = None, timeout: float = 120):
    """Run the real `netlab` command line in a subprocess, as a user would."""
    proc = subprocess.run([sys.executable, "-m", "netlab", *args], capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, **(env or {})}, cwd=ROOT)
    if check and proc.returncode != 0:
        raise AssertionError(f"netlab {' '.join(args)} exited {proc.returncode}\n"
                             f"stdout: {proc.stdout}\nstderr: {proc.stderr}")
    return proc


def leftovers(lab: str) -> list[str]:
    """Everything of a lab still on the machine: namespaces, processes in them, state files."""
    found = []
    try:
        found += [f"netns {ns}" for ns in os.listdir("/run/netns") if ns.startswith(lab + "-")]
    except FileNotFoundError:
        pass
    state = Path("/run/netlab/labs") / lab
    if state.exists():
        found.append(f"state {state}")
    mark = f"NETLAB_LAB={lab}".encode()
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            env = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
            stat = Path(f"/proc/{pid}/stat").read_bytes().rsplit(b")", 1)[1].split()[0]
        except OSError:
            continue
        if mark in env and stat != b"Z":
            found.append(f"process {pid}")
    return found


@pytest.fixture
def lab_name(request):
    """A unique lab name; after the test, the lab is taken down and nothing of it may be left."""
    name = unique_name(request.node.name.split("[")[0].replace("_", "-")[5:18].strip("-") or "t")
    yield name
    if os.geteuid() == 0:
        netlab("down", name, check=False)
        assert leftovers(name) == [], f"lab {name} left things behind"


requires_root = pytest.mark.skipif(os.geteuid() != 0, reason="needs root: integration test")


def lab_fixture(prefix: str):
    """A fixture giving a unique lab name with this prefix, taken down and checked after the test."""
    @pytest.fixture
    def lab():
        name = unique_name(prefix)
        yield name
        netlab("down", name, check=False)
        assert leftovers(name) == [], f"lab {name} left things behind"
    return lab


def in_ns(ns: str, *cmd: str, timeout: float = 10) -> subprocess.CompletedProcess:
    return subprocess.run(["ip", "netns", "exec", ns, *cmd], capture_output=True, text=True,
                          timeout=timeout)


def curl(ns: str, url: str, tries: int = 50) -> str:
    """curl from inside ns; the server may still be starting, so retry a bounded number of times."""
    for _ in range(tries):
        r = in_ns(ns, "curl", "-s", "--max-time", "2", url)
        if r.returncode == 0:
            return r.stdout
        time.sleep(0.1)
    raise AssertionError(f"curl {url} from {ns} failed: {r.returncode} {r.stderr}")


def verify_json(lab: str, *args: str) -> tuple[int, dict]:
    """`netlab verify LAB --json`: its exit code (0 or 1) and its parsed report."""
    proc = netlab("verify", lab, "--json", *args, check=False)
    assert proc.returncode in (0, 1), proc.stderr
    return proc.returncode, json.loads(proc.stdout)


def _tests_lock(mode: int):
    """`netlab clean` removes every lab that is not recorded as up, whoever made it: a test that
    runs it holds this lock exclusively, a test that builds a lab without netlab's record (the
    plan script run by bash) holds it shared, so parallel tests never take each other's labs."""
    fd = os.open("/tmp/netlab-tests-clean.lock", os.O_RDWR | os.O_CREAT, 0o644)
    fcntl.flock(fd, mode)
    try:
        yield
    finally:
        os.close(fd)


@pytest.fixture
def runs_clean():
    yield from _tests_lock(fcntl.LOCK_EX)


@pytest.fixture
def unrecorded_lab():
    yield from _tests_lock(fcntl.LOCK_SH)

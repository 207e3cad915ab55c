"""The CLI on big labs: Ctrl-C during `up` rolls back and says what it removed (exit 130); the
summary of a big lab fits a screen while `show` lists every pod; verify says which mode ran."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

from bench.gen import scenario
from conftest import ROOT, leftovers, netlab, requires_root, unique_name, lab_fixture, verify_json

pytestmark = requires_root

lab = lab_fixture("scl-cli")


def test_ctrl_c_during_up_rolls_back_and_says_what(tmp_path, lab):
    path = tmp_path / "big.yaml"
    path.write_text(scenario(10, 100, name=lab))
    proc = subprocess.Popen([sys.executable, "-m", "netlab", "up", str(path)], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    # Interrupt once `up` has made some of the lab's namespaces (bounded wait).
    for _ in range(600):
        made = [ns for ns in os.listdir("/run/netns") if ns.startswith(lab + "-")]
        if len(made) >= 20 or proc.poll() is not None:
            break
        time.sleep(0.01)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, (out, err)
    assert f"interrupted: rolled back lab {lab}: removed " in err and "namespaces" in err
    assert leftovers(lab) == []


def test_big_lab_summary_and_covering_verify(tmp_path, lab):
    path = tmp_path / "mid.yaml"
    path.write_text(scenario(4, 40, netexec=True, name=lab))     # 160 pods: covering mode
    up = netlab("up", str(path), timeout=300)
    assert len(up.stdout.splitlines()) < 40
    assert "pods (40 per node)" in up.stdout and "netlab show" in up.stdout
    shown = netlab("show", lab).stdout
    assert f"{lab}-p4-40" in shown
    text = netlab("verify", lab, timeout=300)
    lines = text.stdout.splitlines()
    assert len(lines) < 40 and "covering" in text.stdout and lines[-1].endswith(tuple("0123456789s"))
    code, data = verify_json(lab)
    assert code == 0 and data["failed"] == 0 and data["mode"].startswith("covering")
    code, mesh = verify_json(lab, "--mesh", "--only", "pod-pod-same-node")
    assert code == 0 and mesh["checks"] == 4 * 40 * 39 * 2 and mesh["mode"].startswith("mesh")


def test_shared_server_answers_from_inside_each_pod_and_its_loss_is_named(tmp_path, lab):
    path = tmp_path / "shared.yaml"
    path.write_text(scenario(2, 30, netexec=True, name=lab))      # 60 pods: shared servers
    netlab("up", str(path), timeout=300)
    # no process in the pod, yet its own namespace has the socket: the answer names the pod
    assert subprocess.run(["ip", "netns", "pids", f"{lab}-p1-7"], capture_output=True,
                          text=True).stdout.strip() == ""
    got = subprocess.run(["ip", "netns", "exec", f"{lab}-p2-1", "curl", "-s", "--max-time", "5",
                          "--retry", "20", "--retry-connrefused", "--retry-delay", "0",
                          "http://10.0.1.8:8080/hostname"], capture_output=True, text=True)
    assert got.stdout == "p1-7"
    shown = netlab("show", lab).stdout
    assert all(" Running " in line for line in shown.splitlines() if line.startswith("p1-"))
    code, data = verify_json(lab)
    assert code == 0 and data["failed"] == 0
    pids = subprocess.run(["ip", "netns", "pids", f"{lab}-n1"], capture_output=True,
                          text=True).stdout.split()
    shared = [p for p in pids if "--pod" in open(f"/proc/{p}/cmdline").read().split("\0")]
    assert len(shared) == 1
    os.kill(int(shared[0]), signal.SIGKILL)
    code, data = verify_json(lab, "--only", "localhost")
    assert code == 1
    reasons = {r["from"]: r["reason"] for r in data["results"] if not r["ok"]}
    assert set(reasons) == {f"p1-{i}" for i in range(1, 31)}
    assert all("server down" in r for r in reasons.values())

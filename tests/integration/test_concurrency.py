"""Idempotence and concurrency: `up` of a lab that is up changes nothing, `down` of a gone lab
succeeds, two commands on one lab at once never mix, two labs with the same addresses side by side
do not see each other (real ping and curl in both)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from conftest import ROOT, leftovers, netlab, requires_root, unique_name
from netlab import model, plan

pytestmark = requires_root

PODS = {"web": "10.244.1.2", "frontend": "10.244.1.3", "api": "10.244.2.2",
        "worker": "10.244.2.3", "db": "10.244.3.2", "cache": "10.244.3.3"}
CONTAINERS = {"web": 2, "frontend": 1, "api": 1, "worker": 1, "db": 1, "cache": 1}


def ip_json(ns: str, *what: str) -> list:
    out = subprocess.run(["ip", "-n", ns, "-j", *what], capture_output=True, text=True, check=True)
    return json.loads(out.stdout)


def pids_in(ns: str) -> list[int]:
    out = subprocess.run(["ip", "netns", "pids", ns], capture_output=True, text=True, check=True)
    return sorted(int(p) for p in out.stdout.split())


def links(ns: str) -> list:
    # What netlab sets; not operstate, which the kernel settles on its own a moment after `up`.
    return [(link["ifindex"], link["ifname"], link.get("address"), link.get("master"), link["mtu"],
             "UP" in link["flags"], link.get("ifalias")) for link in ip_json(ns, "link", "show")]


def addresses(ns: str) -> list:
    # Not flags like "tentative" (IPv6 duplicate address detection finishes after `up`).
    return [(a["ifname"], i["family"], i["local"], i["prefixlen"])
            for a in ip_json(ns, "addr", "show") for i in a["addr_info"]]


def routes(ns: str) -> list:
    # IPv4 (netlab's): IPv6 link-local routes appear on their own once duplicate address detection
    # ends; and not flags like "linkdown" (carrier, which the kernel settles a moment after `up`).
    return [{k: v for k, v in r.items() if k != "flags"}
            for r in ip_json(ns, "-4", "route", "show", "table", "all")]


def lab_snapshot(lab: str) -> dict:
    """What the kernel holds of a lab: each namespace's identity (inode), links, addresses,
    routes and processes, plus the lab's record."""
    names = sorted(ns for ns in os.listdir("/run/netns") if ns.startswith(lab + "-"))
    return {
        "namespaces": {ns: {"inode": os.stat(f"/run/netns/{ns}").st_ino,
                            "links": links(ns),
                            "addresses": addresses(ns),
                            "routes": routes(ns),
                            "pids": pids_in(ns)} for ns in names},
        "journal": Path(f"/run/netlab/labs/{lab}/journal").read_text(),
    }


def changes(a: dict, b: dict) -> list:
    out = [("journal", a["journal"], b["journal"])] if a["journal"] != b["journal"] else []
    for ns in sorted(set(a["namespaces"]) | set(b["namespaces"])):
        x, y = a["namespaces"].get(ns, {}), b["namespaces"].get(ns, {})
        out += [(ns, k, x.get(k), y.get(k)) for k in sorted(set(x) | set(y)) if x.get(k) != y.get(k)]
    return out


def assert_one_whole_lab(lab: str) -> None:
    """Exactly one lab's worth: 10 namespaces, its processes, one record of each."""
    snap = lab_snapshot(lab)
    assert len(snap["namespaces"]) == 10, sorted(snap["namespaces"])
    for pod, n in CONTAINERS.items():
        assert len(snap["namespaces"][f"{lab}-{pod}"]["pids"]) == n, pod
    journal = snap["journal"].split("\n")
    assert sorted(line.split()[1] for line in journal if line.startswith("netns ")) == \
        sorted(snap["namespaces"])
    # One process per container, plus the server every node runs for verify's node checks.
    spawns = [op for op in plan.build(model.load(None, name=lab)) if isinstance(op, plan.Spawn)]
    assert len([line for line in journal if line.startswith("pid ")]) == len(spawns) == 10
    assert journal.count("complete") == 1


def start(*args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "netlab", *args], cwd=ROOT, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def test_up_of_a_lab_that_is_up_changes_nothing(lab_name):
    netlab("up", "--name", lab_name)
    before = lab_snapshot(lab_name)
    again = netlab("up", "--name", lab_name)
    assert f"lab {lab_name} is already up; nothing changed" in again.stdout
    diff = changes(before, lab_snapshot(lab_name))
    assert diff == [], "\n".join(map(str, diff))
    assert json.loads(netlab("up", "--name", lab_name, "--json").stdout)["already_up"] is True
    assert changes(before, lab_snapshot(lab_name)) == []


def test_down_of_a_lab_that_is_gone_succeeds():
    name = unique_name("rl")
    r = netlab("down", name)
    assert r.returncode == 0 and f"lab {name} is not up; nothing to do" in r.stdout
    assert leftovers(name) == []


def test_two_ups_at_once_never_mix(lab_name):
    for _ in range(3):
        procs = [start("up", "--name", lab_name) for _ in range(2)]
        results = sorted((p.wait(timeout=120), p.stdout.read(), p.stderr.read()) for p in procs)
        codes = [r[0] for r in results]
        # The second waits for the lock and then finds the lab up.
        assert codes == [0, 0], results
        words = sorted("already up" in r[1] for r in results)
        assert words == [False, True], results
        assert_one_whole_lab(lab_name)
        netlab("down", lab_name)
        assert leftovers(lab_name) == []


def test_up_and_down_at_once_leave_all_or_nothing(lab_name):
    for _ in range(3):
        up = start("up", "--name", lab_name)
        down = start("down", lab_name)
        assert up.wait(timeout=120) == 0, up.stderr.read()
        assert down.wait(timeout=120) == 0, down.stderr.read()
        if leftovers(lab_name):
            assert_one_whole_lab(lab_name)  # down came first and found nothing
        netlab("down", lab_name)
        assert leftovers(lab_name) == []


def test_a_busy_lab_is_refused_with_a_clear_message(lab_name, monkeypatch):
    from netlab import model
    from netlab.runtime import lifecycle, state
    monkeypatch.setattr(lifecycle, "UP_LOCK_WAIT", 0.2)
    with state.LabState(lab_name).lock():  # as if another `netlab up` were at work on it
        try:
            lifecycle.up(model.load(None, lab_name))
            raise AssertionError("up went ahead while the lab was locked")
        except Exception as e:
            assert f"lab {lab_name} is busy: another netlab command is bringing it up or down" \
                in str(e)
    assert leftovers(lab_name) == []


def curl(ns: str, url: str) -> subprocess.CompletedProcess:
    return subprocess.run(["ip", "netns", "exec", ns, "curl", "-s", "--max-time", "5", "--retry",
                           "30", "--retry-delay", "0", "--retry-connrefused", url],
                          capture_output=True, text=True, timeout=60)


def ping(ns: str, ip: str) -> int:
    return subprocess.run(["ip", "netns", "exec", ns, "ping", "-c1", "-W2", ip],
                          capture_output=True, timeout=10).returncode


def assert_lab_works(lab: str) -> None:
    for src, src_ip in PODS.items():
        for dst, dst_ip in PODS.items():
            if src != dst:
                assert ping(f"{lab}-{src}", dst_ip) == 0, (lab, src, dst)
        r = curl(f"{lab}-{src}", f"http://{PODS['db']}:8080/clientip")
        if src != "db":
            assert r.stdout.rsplit(":", 1)[0] == src_ip, (lab, src, r)


def test_two_labs_with_the_same_addresses_do_not_interfere():
    a, b = unique_name("rl"), unique_name("rl")
    try:
        netlab("up", "--name", a)
        netlab("up", "--name", b)
        assert_lab_works(a)
        assert_lab_works(b)
        # Stop b's api server: a's api still answers, b's refuses. Same address, separate worlds.
        for pid in pids_in(f"{b}-api"):
            os.kill(pid, signal.SIGKILL)
        for _ in range(100):
            if not pids_in(f"{b}-api"):
                break
            time.sleep(0.05)
        assert curl(f"{a}-web", f"http://{PODS['api']}:8080/hostname").stdout == "api"
        refused = subprocess.run(["ip", "netns", "exec", f"{b}-web", "curl", "-s", "--max-time",
                                  "5", f"http://{PODS['api']}:8080/hostname"], capture_output=True)
        assert refused.returncode == 7  # connection refused: b's api has no server now
        netlab("down", b)
        assert leftovers(b) == []
        assert_lab_works(a)
    finally:
        netlab("down", a, check=False)
        netlab("down", b, check=False)
    assert leftovers(a) == [] and leftovers(b) == []

"""The root network namespace stays as it was: links, addresses, routes, rules, the nftables ruleset
and every readable sysctl under /proc/sys/net, before `up`, after traffic in the lab, after `down`.

Only the root namespace's own state is compared (tests running alongside make namespaces of their
own, which do not show in it).
"""

from __future__ import annotations

import json
import os
import subprocess

from conftest import leftovers, netlab, requires_root

pytestmark = requires_root


def run(*cmd: str) -> str:
    return subprocess.run(cmd, capture_output=True, text=True, check=True).stdout


def root_snapshot() -> dict:
    snap = {
        "links": json.loads(run("ip", "-j", "link", "show")),
        "addresses": json.loads(run("ip", "-j", "addr", "show")),
        "routes4": json.loads(run("ip", "-j", "-4", "route", "show", "table", "all")),
        "routes6": json.loads(run("ip", "-j", "-6", "route", "show", "table", "all")),
        "rules4": json.loads(run("ip", "-j", "-4", "rule", "show")),
        "rules6": json.loads(run("ip", "-j", "-6", "rule", "show")),
        "nft": run("nft", "list", "ruleset"),
    }
    sysctls = {}
    for folder, _, files in os.walk("/proc/sys/net"):
        for f in files:
            path = os.path.join(folder, f)
            try:
                with open(path) as fh:
                    sysctls[path] = fh.read()
            except OSError:
                pass  # write-only or refused: not readable state
    snap["sysctl"] = sysctls
    return snap


def differences(a: dict, b: dict) -> list[str]:
    diff = [k for k in a if k != "sysctl" and a[k] != b[k]]
    diff += [k for k in set(a["sysctl"]) | set(b["sysctl"]) if a["sysctl"].get(k) != b["sysctl"].get(k)]
    return diff


def in_ns(ns: str, *cmd: str) -> subprocess.CompletedProcess:
    return subprocess.run(["ip", "netns", "exec", ns, *cmd], capture_output=True, text=True,
                          timeout=20)


def test_root_namespace_is_left_as_it_was(lab_name):
    before = root_snapshot()
    assert len(before["sysctl"]) > 100 and before["links"]

    netlab("up", "--name", lab_name)
    web, db = f"{lab_name}-web", f"{lab_name}-db"
    assert in_ns(web, "ping", "-c2", "-W2", "10.244.3.2").returncode == 0  # web -> db across nodes
    r = in_ns(web, "curl", "-s", "--retry", "20", "--retry-delay", "0", "--retry-connrefused",
              "--max-time", "10", "http://10.244.3.2:8080/clientip")
    assert r.stdout.startswith("10.244.1.2:"), r
    assert in_ns(db, "ping", "-c1", "-W2", "192.168.1.11").returncode == 0  # pod -> node
    after_traffic = root_snapshot()
    assert differences(before, after_traffic) == []

    netlab("down", lab_name)
    after_down = root_snapshot()
    assert differences(before, after_down) == []
    assert leftovers(lab_name) == []

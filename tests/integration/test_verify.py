"""netlab verify as root on real labs: it passes on a healthy lab, and when the lab is broken on
purpose (a route deleted, a MASQUERADE added, a server stopped, a namespace gone) exactly the checks
that must fail fail, each with its reason. Outputs are read back as JSON and as JUnit XML."""

from __future__ import annotations

import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path


from conftest import SCENARIOS, netlab, requires_root, unique_name, lab_fixture, verify_json

pytestmark = requires_root

NODE_OF = {"web": "node1", "frontend": "node1", "api": "node2", "worker": "node2",
           "db": "node3", "cache": "node3"}
# the default lab: 6 pod-ip, 12 same node, 48 across nodes, 36 node-to-pod, 36 pod-to-node, 6 localhost,
# 6 mtu
DEFAULT_CHECKS = 150


lab = lab_fixture("vf")
verify = verify_json


def failed(data: dict) -> dict[tuple, str]:
    return {(r["rule"], r["from"], r["to"], r["method"]): r["reason"]
            for r in data["results"] if not r["ok"]}


def sh(*argv: str, stdin: str | None = None) -> None:
    subprocess.run(argv, input=stdin, text=True, check=True, capture_output=True, timeout=20)


def test_healthy_lab_passes_every_check_in_every_output(lab, tmp_path):
    netlab("up", "--name", lab)
    text = netlab("verify", lab)                      # exit 0: every check passes
    lines = text.stdout.splitlines()
    assert lines[0].split() == ["RULE", "CHECKS", "PASSED", "FAILED"] and len(lines) <= 40
    assert "pod-pod-cross-node      48      48       0" in text.stdout
    assert "72 pairs checked (mesh: every pair)" in text.stdout
    rows = netlab("verify", lab, "-v").stdout                # every check's row
    assert f"ip netns exec {lab}-web curl -s http://10.244.2.3:8080/clientip" in rows
    assert text.stdout.rstrip().splitlines()[-1].startswith(
        f"verify {lab}: {DEFAULT_CHECKS} checks, {DEFAULT_CHECKS} passed, 0 failed in ")

    code, data = verify(lab, "--junit", str(tmp_path / "report.xml"))
    assert code == 0 and data["checks"] == DEFAULT_CHECKS and data["failed"] == 0
    assert all(r["ok"] for r in data["results"])
    http = [r for r in data["results"] if r["rule"] == "pod-pod-cross-node" and r["method"] == "http"]
    assert len(http) == 24 and all(r["observed"] == r["expected"] for r in http)
    root = ET.parse(tmp_path / "report.xml").getroot()
    assert (root.get("tests"), root.get("failures")) == (str(DEFAULT_CHECKS), "0")
    assert {s.get("name") for s in root.iter("testsuite")} == {
        "pod-ip", "pod-pod-same-node", "pod-pod-cross-node", "node-to-pod", "pod-to-node",
        "localhost", "mtu"}


def test_deleted_cross_node_route_fails_exactly_the_checks_that_need_it(lab, tmp_path):
    netlab("up", "--name", lab)
    sh("ip", "-n", f"{lab}-node1", "route", "del", "10.244.2.0/24")
    code, data = verify(lab, "--junit", str(tmp_path / "report.xml"))
    assert code == 1

    # node1 (and its pods) can no longer send to node2's pods: every exchange between the two sides
    # fails, whichever side starts it (a request or its reply needs the route); nothing else does.
    side1 = {"node1", "web", "frontend"}
    pods2 = {"api", "worker"}
    expected = {(r["rule"], r["from"], r["to"], r["method"]) for r in data["results"]
                if (r["from"] in side1 and r["to"] in pods2) or (r["from"] in pods2 and r["to"] in side1)}
    got = failed(data)
    # 24: ping and /clientip of 12 pairs; 2: the mtu pings web -> api and back (first pods)
    assert set(got) == expected and len(expected) == 26
    for (rule, src, dst, method), reason in got.items():
        assert f"in {lab}-node1" in reason and "no route to 10.244.2." in reason, reason
        assert ("on the way back" in reason) == (src in pods2), reason
    junit = ET.parse(tmp_path / "report.xml").getroot()
    assert junit.get("failures") == "26"
    assert {f.get("message") for f in junit.iter("failure")} == set(got.values())


def test_masquerade_in_a_node_fails_the_no_nat_checks_from_its_pods(lab):
    netlab("up", "--name", lab)
    sh("ip", "netns", "exec", f"{lab}-node1", "nft", "-f", "-", stdin=(
        "add table ip vfnat\n"
        "add chain ip vfnat post { type nat hook postrouting priority srcnat; }\n"
        "add rule ip vfnat post oifname eth0 masquerade\n"))
    code, data = verify(lab)
    assert code == 1
    # HTTP from node1's pods to anything behind another node; the same node is not NATed.
    expected = {(r["rule"], r["from"], r["to"], "http") for r in data["results"]
                if r["method"] == "http" and r["from"] in ("web", "frontend")
                and r["to"] in {"api", "worker", "db", "cache", "node2", "node3"}}
    got = failed(data)
    assert set(got) == expected and len(expected) == 12
    for (_, src, _, _), reason in got.items():
        own = {"web": "10.244.1.2", "frontend": "10.244.1.3"}[src]
        assert f"the server saw 192.168.1.11, expected {own}" in reason, reason
    observed = {r["observed"] for r in data["results"] if not r["ok"]}
    assert observed == {"sees 192.168.1.11"}


def test_stopped_server_fails_its_http_checks_with_the_reason(lab):
    netlab("up", "--name", lab)
    journal = (Path("/run/netlab/labs") / lab / "journal").read_text().splitlines()
    [pid] = [int(line.split()[1]) for line in journal if line.endswith(" api/server")]
    sh("kill", str(pid))
    code, data = verify(lab)
    assert code == 1
    got = failed(data)
    expected = {(r["rule"], r["from"], r["to"], "http") for r in data["results"]
                if r["method"] == "http" and r["to"] == "api"}
    assert set(got) == expected and len(expected) == 5 + 3 + 1   # 5 pods, 3 nodes, localhost
    assert all(f"container 'server' of api (pid {pid}) is not running" in why
               for why in got.values()), got
    # ping still works: only the server is gone
    assert all(r["ok"] for r in data["results"] if r["to"] == "api" and r["method"] == "ping")


def test_missing_namespace_fails_the_checks_that_need_it(lab, unrecorded_lab):
    # A lab with a namespace gone is no longer "up" for `netlab clean`: keep tests that run it away.
    netlab("up", "--name", lab)
    sh("ip", "netns", "del", f"{lab}-db")      # its server keeps the namespace alive, unnamed
    code, data = verify(lab, "--from", "db")
    assert code == 1 and data["checks"] == 1 + 2 + 8 + 6 + 1 + 2  # addr, pods, nodes, localhost, mtu
    assert all(not r["ok"] and "does not exist" in r["reason"] for r in data["results"]), data


def test_scenario_checks_positive_and_negative(lab, tmp_path):
    scenario = tmp_path / "checks.yaml"
    scenario.write_text((SCENARIOS / "three-node.yaml").read_text() + "\n".join([
        "checks:",
        "  - {from: web, to: api, port: 8080, nat: false}",
        "  - {from: db, to: node1, port: 8000}",
        "  - {name: no way out, from: web, to: 203.0.113.9, expect: unreachable}",
        "  - {from: web, to: api, port: 9090, expect: unreachable}",
        "  - {name: wrongly expects NAT, from: cache, to: worker, port: 8080, nat: true}",
        "  - {name: wrongly expects unreachable, from: node2, to: db, expect: unreachable}",
        ""]))
    netlab("up", str(scenario), "--name", lab)
    code, data = verify(lab, "--only", "scenario")
    assert code == 1 and data["checks"] == 6
    ok = {r["to"]: r["ok"] for r in data["results"]}
    assert ok == {"api": True, "node1": True, "203.0.113.9": True, "worker": False, "db": False}
    reasons = {r["to"]: r["reason"] for r in data["results"] if not r["ok"]}
    assert "no NAT: the server saw the client's own address 10.244.3.3" in reasons["worker"]
    assert "answered node2, but the check expects it unreachable" in reasons["db"]
    names = {r["to"]: r.get("name") for r in data["results"]}
    assert names["worker"].startswith("wrongly expects NAT (line ") and names["api"] is not None
    # narrowing to one source keeps only its checks
    code, data = verify(lab, "--only", "scenario", "--from", "web")
    assert code == 0 and data["checks"] == 3


def test_usage_errors_exit_2(lab):
    netlab("up", "--name", lab)
    r = netlab("verify", lab, "--only", "pod-to-moon", check=False)
    assert r.returncode == 2 and "unknown rule 'pod-to-moon'" in r.stderr
    r = netlab("verify", lab, "--from", "nobody", check=False)
    assert r.returncode == 2 and "has no pod or node 'nobody'" in r.stderr
    r = netlab("verify", unique_name("vf"), check=False)
    assert r.returncode == 2 and "is not up" in r.stderr


def test_verify_right_after_up_waits_for_the_servers_and_gives_up_in_bounded_time(lab):
    from netlab import model, verify as V
    from netlab.runtime import lifecycle
    the_lab = model.load(None, lab)
    lifecycle.up(the_lab)                 # servers were spawned an instant ago
    report = V.run(the_lab, V.derive(the_lab))
    assert len(report.results) == DEFAULT_CHECKS and report.failed == []
    # a process that never listens: the wait ends at its bound with the reason
    web = the_lab.pod("web")
    never = V.Server(web.ns, 9999, "web", "shell")
    problems = V.wait_ready(the_lab, {never, V.servers_of(web)[0]}, timeout=0.3)
    assert problems == {never: f"server down: nothing listens on port 9999 in {web.ns} after 0.3s"}

"""Check derivation, judging and rendering: pure, no root, no kernel."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from collections import Counter

from netlab import model, plan, verify as V

LAB = model.load(None)           # the default three-node lab: 3 nodes, 6 pods, 2 per node


def by(rule, src, dst, method):
    return [c for c in V.derive(LAB) if (c.rule, c.src, c.dst, c.method) == (rule, src, dst, method)]


def test_every_rule_yields_the_expected_number_of_checks():
    counts = Counter(c.rule for c in V.derive(LAB))
    # same node: 3 nodes x 2 ordered pairs; across: 6 x 4; each pair: ping + /clientip;
    # mtu: one pod per node to one pod on each other node (3 x 2); no docker containers
    assert counts == {"pod-ip": 6, "pod-pod-same-node": 12, "pod-pod-cross-node": 48,
                      "node-to-pod": 36, "pod-to-node": 36, "localhost": 6, "mtu": 6}


def test_pod_to_pod_http_expects_the_client_pods_own_address_and_reproduces_by_hand():
    [c] = by("pod-pod-cross-node", "web", "worker", "http")
    assert (c.target, c.port, c.path, c.nat, c.sees) == ("10.244.2.3", 8080, "/clientip", False,
                                                         ("10.244.1.2",))
    assert c.reproduce == "ip netns exec three-node-web curl -s http://10.244.2.3:8080/clientip"
    assert c.expected == "sees 10.244.1.2"
    [p] = by("pod-pod-cross-node", "web", "worker", "ping")
    assert p.reproduce == "ip netns exec three-node-web ping -c1 -W1 10.244.2.3"


def test_path_of_a_cross_node_check_names_each_namespace_and_the_return_path():
    [c] = by("pod-pod-cross-node", "web", "api", "ping")
    assert c.hops == (("three-node-web", "10.244.2.2", "forward"),
                      ("three-node-node1", "10.244.2.2", "forward"),
                      ("three-node-node2", "10.244.2.2", "forward"),
                      ("three-node-api", "10.244.1.2", "return"),
                      ("three-node-node2", "10.244.1.2", "return"),
                      ("three-node-node1", "10.244.1.2", "return"))


def test_a_node_is_seen_from_cni0_by_its_own_pods_and_from_eth0_by_the_others():
    [own] = by("node-to-pod", "node1", "web", "http")
    [other] = by("node-to-pod", "node1", "api", "http")
    assert own.sees[0] == "10.244.1.1" and other.sees[0] == "192.168.1.11"
    [to_node] = by("pod-to-node", "api", "node3", "http")
    assert (to_node.target, to_node.port, to_node.sees) == ("192.168.1.13", model.NODE_PORT,
                                                             ("10.244.2.2",))
    assert to_node.server == V.Server("three-node-node3", 8000, "node3", "netexec")


def test_localhost_and_pod_ip_checks():
    [c] = by("localhost", "web", "web", "http")
    assert (c.target, c.path, c.body) == ("localhost", "/hostname", "web")
    [a] = by("pod-ip", "api", "node2", "addr")
    assert (a.target, a.subnet, a.reproduce) == ("10.244.2.2", "10.244.2.0/24",
                                                 "ip -n three-node-api -4 addr show dev eth0")


def test_only_and_from_narrow_the_checks():
    checks = V.derive(LAB, ["pod-to-node", "localhost"], source="web")
    assert {c.rule for c in checks} == {"pod-to-node", "localhost"}
    assert {c.src for c in checks} == {"web"} and len(checks) == 3 * 2 + 1


def test_a_pod_without_a_server_gets_ping_checks_only():
    text = ("nodes: [{name: a}, {name: b}]\npods:\n  - {name: quiet, node: a}\n"
            "  - {name: srv, node: b, containers: [{name: s, image: netexec}]}\n")
    lab = model.parse(text, "t.yaml", "t")
    to_quiet = [c for c in V.derive(lab) if c.dst == "quiet"]
    assert to_quiet and {c.method for c in to_quiet if c.rule != "mtu"} == {"ping"}
    assert {c.method for c in V.derive(lab) if c.dst == "srv" and c.rule != "mtu"} == {"ping", "http"}


def test_scenario_checks_become_checks():
    text = (model.DEFAULT_SCENARIO.read_text() + "checks:\n"
            "  - {from: web, to: api, port: 8080, nat: false}\n"
            "  - {from: node1, to: 203.0.113.7, expect: unreachable}\n"
            "  - {from: db, to: node2, port: 8000, nat: true}\n"
            "  - {from: web, to: 10.244.2.3, port: 9090, expect: unreachable}\n")
    lab = model.parse(text, "s.yaml")
    c1, c2, c3, c4 = V.derive(lab, ["scenario"])
    assert (c1.method, c1.url, c1.nat, c1.sees, c1.server.owner) == (
        "http", "http://10.244.2.2:8080/clientip", False, ("10.244.1.2",), "api")
    assert (c2.method, c2.target, c2.expect, c2.ns) == ("ping", "203.0.113.7", "unreachable",
                                                        "three-node-node1")
    assert c2.hops == (("three-node-node1", "203.0.113.7", "forward"),)
    assert (c3.url, c3.nat, c3.expected) == ("http://192.168.1.12:8000/clientip", True,
                                             "NATed (not 10.244.3.2)")
    assert (c4.dst, c4.server, c4.path, c4.expected) == ("worker", None, "/", "no connection")


def test_node_servers_are_in_the_plan():
    spawns = [op for op in plan.build(LAB) if isinstance(op, plan.Spawn) and op.owner.startswith("node")]
    assert [(op.ns, op.argv[-4:]) for op in spawns] == [
        (f"three-node-node{i}", ("--port", "8000", "--name", f"node{i}")) for i in (1, 2, 3)]


# ---------------------------------------------------------------- judging (pure)


def test_nat_failure_names_the_address_seen_and_the_one_expected():
    [c] = by("pod-pod-cross-node", "web", "api", "http")
    r = V._judge_http(c, V.HttpOut(True, "200", "192.168.1.11:40000", local_ip="10.244.1.2"))
    assert not r.ok and r.observed == "sees 192.168.1.11"
    assert "saw 192.168.1.11, expected 10.244.1.2" in r.reason
    assert "ip netns exec three-node-node1 nft list ruleset" in r.reason
    assert V._judge_http(c, V.HttpOut(True, "200", "10.244.1.2:40000")).ok


def test_expectations_both_ways():
    [c] = by("pod-pod-cross-node", "web", "api", "http")
    assert not V._judge_http(c, V.HttpOut(False, error="Connection refused")).ok
    no = V.Check("scenario", "web", "api", "http", "ns", "10.244.2.2", 9090, "/",
                 expect=V.UNREACHABLE)
    assert V._judge_http(no, V.HttpOut(False, error="Connection refused")).ok
    bad = V._judge_http(no, V.HttpOut(True, "404", "not found"))
    assert not bad.ok and "accepted a connection" in bad.reason
    ping = V.Check("scenario", "a", "b", "ping", "ns", "1.2.3.4", expect="unreachable")
    assert V._judge_ping(ping, V.PingOut(False)).ok
    assert not V._judge_ping(ping, V.PingOut(True)).ok
    [hn] = by("localhost", "web", "web", "http")
    assert not V._judge_http(hn, V.HttpOut(True, "200", "cache")).ok


def test_pod_ip_judgement_outside_and_duplicate():
    [a] = by("pod-ip", "api", "node2", "addr")
    owners = {"10.244.2.2": ["api"]}
    assert V._judge_addr(a, {a.ns: ["10.244.2.2"]}, owners).ok
    out = V._judge_addr(a, {a.ns: ["10.244.9.2"]}, {"10.244.9.2": ["api"]})
    assert not out.ok and "outside node2's pod subnet 10.244.2.0/24" in out.reason
    dup = V._judge_addr(a, {a.ns: ["10.244.2.2"]}, {"10.244.2.2": ["api", "worker"]})
    assert not dup.ok and "also the address of worker" in dup.reason


def test_lost_packet_is_located_at_the_first_namespace_without_a_route(monkeypatch):
    [c] = by("pod-pod-cross-node", "api", "web", "ping")     # the reply crosses node1
    routes = V._Routes()
    monkeypatch.setattr(routes, "error", lambda ns, addr: "no route" if (ns, addr) == (
        "three-node-node1", "10.244.2.2") else "")
    assert routes.where(c, "no reply") == "no route on the way back"
    monkeypatch.setattr(routes, "error", lambda ns, addr: "")
    assert "every namespace on the way has a route" in routes.where(c, "no reply")


def _report():
    checks = by("pod-pod-cross-node", "web", "api", "ping") + by("localhost", "db", "db", "http")
    return V.Report("three-node", [V.Result(checks[0], True, "reply"),
                                   V.Result(checks[1], False, "'x'", "expected the answer 'db'")],
                    0.5)


def test_json_and_junit_renderings_parse():
    data = json.loads(json.dumps(V.render_json(_report())))
    assert (data["checks"], data["passed"], data["failed"]) == (2, 1, 1)
    assert data["results"][1]["reproduce"] == "ip netns exec three-node-db curl -s http://localhost:8080/hostname"
    root = ET.fromstring(V.render_junit(_report()).split("?>", 1)[1])
    assert (root.get("tests"), root.get("failures")) == ("2", "1")
    failures = root.findall(".//failure")
    assert len(failures) == 1 and failures[0].get("message") == "expected the answer 'db'"


def test_text_table_lists_failures_and_closes_with_a_summary():
    text = V.render_text(_report(), verbose=True)
    assert text.splitlines()[0].split() == ["RULE", "FROM", "TO", "METHOD", "EXPECTED", "OBSERVED",
                                            "RESULT", "REPRODUCE"]
    assert "Failures:" in text and "expected the answer 'db'" in text
    assert text.rstrip().splitlines()[-1] == "verify three-node: 2 checks, 1 passed, 1 failed in 0.50s"


def test_default_report_is_one_line_per_rule_then_the_failures():
    report = _report()
    text = V.render_text(report)
    lines = text.splitlines()
    assert lines[0].split() == ["RULE", "CHECKS", "PASSED", "FAILED"]
    rules = {c.rule for c in (r.check for r in report.results)}
    assert len([l for l in lines[1:] if l.split()[:1] and l.split()[0] in rules]) >= len(rules)
    assert "Failures:" in text and "expected the answer 'db'" in text and "reproduce: " in text
    assert text.rstrip().splitlines()[-1] == "verify three-node: 2 checks, 1 passed, 1 failed in 0.50s"


def test_missing_probe_tools_are_named_with_their_package(monkeypatch):
    from netlab.core.errors import NetlabError
    monkeypatch.setattr(V.shutil, "which", lambda tool: None if tool == "fping" else "/usr/bin/x")
    V.need_tools(by("localhost", "web", "web", "http"))           # curl only: fine
    try:
        V.need_tools(by("pod-pod-cross-node", "web", "api", "ping"))
    except NetlabError as e:
        assert e.code == 2 and "verify needs fping" in e.message and "apt-get install fping" in e.message
    else:
        raise AssertionError("no error without fping")


def test_fping_output_is_read_per_target_with_its_icmp_error():
    out = V.parse_fping(["10.244.2.2", "10.244.9.9", "10.244.3.3"], 1,
                        "10.244.2.2 is alive\n10.244.9.9 is unreachable\n",
                        "ICMP Network Unreachable from 10.244.1.1 for ICMP Echo sent to 10.244.9.9\n")
    assert out["10.244.2.2"].alive and not out["10.244.9.9"].alive and not out["10.244.3.3"].alive
    assert out["10.244.9.9"].detail == "ICMP Network Unreachable from 10.244.1.1"
    assert out["10.244.3.3"].detail == "no reply"
    broken = V.parse_fping(["1.2.3.4"], 4, "", "fping: can't create socket\n")
    assert broken["1.2.3.4"].detail == "fping failed: fping: can't create socket"


def test_curl_write_out_lines_map_back_to_their_urls():
    stdout = ("/dev/shm/x/r1\t000\t0.000000\t\tFailed to connect to 10.244.2.3 port 8080 after 0 ms: "
              "Couldn't connect to server\n"
              "/dev/shm/x/r0\t200\t0.000120\t10.244.1.2\t\n")
    out = V.parse_curl(3, stdout, "", {0: "10.244.1.2:41000\n", 1: "", 2: ""}.get)
    assert (out[0].connected, out[0].code, out[0].body, out[0].local_ip) == (
        True, "200", "10.244.1.2:41000", "10.244.1.2")
    assert (out[1].connected, out[1].error) == (False, "Couldn't connect to server")
    assert not out[2].connected and out[2].error.startswith("curl did not run")

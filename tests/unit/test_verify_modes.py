"""verify joined with the Docker modes, hostNetwork pods and the overlay: check derivation and
judging, pure (no root, no kernel)."""

from __future__ import annotations

from collections import Counter

from conftest import SCENARIOS
from netlab import model, verify as V
from netlab.features import docker as docker_rules

MIXED = model.load(SCENARIOS / "mixed.yaml", "m")
LESSON = model.load(SCENARIOS / "docker-modes.yaml", "dm")
OVERLAY = model.load(SCENARIOS / "overlay.yaml", "ov")


def checks(lab, rule=None, **where):
    return [c for c in V.derive(lab, [rule] if rule else ())
            if all(getattr(c, k) == v for k, v in where.items())]


def test_every_docker_expectation_becomes_checks_of_a_docker_rule():
    exps = docker_rules.expectations(MIXED)
    derived = [c for r in ("docker-none", "docker-bridge", "docker-host", "docker-published-port")
               for c in V.derive(MIXED, [r])]
    # each expectation by its docker_rules name (the label), at least one check each
    assert Counter(e.rule for e in exps).keys() == Counter(c.label for c in derived).keys()
    assert {c.rule for c in derived} == {"docker-none", "docker-bridge", "docker-host",
                                         "docker-published-port"}
    assert all(c.why and c.reproduce for c in derived)


def test_bridge_nat_out_is_a_nat_check_expecting_the_node_ip():
    [name, nat] = checks(MIXED, "docker-bridge", src="nginx", target="203.0.113.10")
    assert (name.path, name.body) == ("/hostname", "outside")
    assert (nat.path, nat.sees, nat.nat, nat.expected) == \
        ("/clientip", ("192.168.1.11",), False, "sees 192.168.1.11")
    assert nat.reproduce == "ip netns exec m-nginx curl -s http://203.0.113.10:80/clientip"


def test_a_port_published_on_a_none_container_is_a_negative_check():
    got = checks(LESSON, "docker-published-port", label="none-port-does-nothing")
    assert [(c.src, c.target, c.port, c.expect, c.not_by) for c in got] == [
        ("outside", "192.168.1.11", 80, V.UNREACHABLE, "c-none"),
        ("node1", "192.168.1.11", 80, V.UNREACHABLE, "c-none")]
    assert got[0].expected == "no answer from c-none"


def test_udp_published_port_asks_with_socat():
    [host, seen] = checks(MIXED, "docker-published-port", method="udp", src="client")
    assert (host.path, host.body, seen.path, seen.sees) == \
        ("hostname", "nginx", "clientip", ("10.244.2.2",))
    assert seen.reproduce == "echo clientip | ip netns exec m-client socat -t1 - UDP:192.168.1.11:5353"


def test_none_only_loopback_reads_every_address():
    [c] = checks(MIXED, "docker-none", method="addrs")
    assert (c.ns, c.addrs, c.only, c.expected) == ("m-island", ("127.0.0.1",), True, "only 127.0.0.1")


def test_host_network_pod_is_its_node():
    assert "exporter" not in {c.src for c in checks(MIXED, "pod-ip")}
    # exporter talks as node2: to node2's own pods from cni0's address, as the kernel picks it
    [same] = checks(MIXED, "pod-pod-same-node", src="exporter", dst="client", method="http")
    assert same.ns == "m-node2" and same.sees == ("10.244.2.1", "192.168.1.12")
    [back] = checks(MIXED, "pod-pod-same-node", src="client", dst="exporter", method="http")
    assert (back.target, back.sees) == ("192.168.1.12", ("10.244.2.2",))
    [cross] = checks(MIXED, "pod-pod-cross-node", src="web", dst="exporter", method="http")
    assert (cross.target, cross.sees) == ("192.168.1.12", ("10.244.1.2",))
    # node2 reaches its hostNetwork pod from its own IP
    [n2] = checks(MIXED, "node-to-pod", src="node2", dst="exporter", method="http")
    assert n2.sees[0] == "192.168.1.12"
    [addrs] = checks(MIXED, "docker-host", src="exporter", method="addrs")
    assert (addrs.ns, addrs.addrs, addrs.only) == ("m-node2", ("192.168.1.12",), False)


def test_vxlan_node_talks_to_other_nodes_pods_from_flannel_1():
    [c] = checks(OVERLAY, "node-to-pod", src="node1", dst="api", method="http")
    assert c.sees[0] == "10.244.1.0"
    [own] = checks(OVERLAY, "node-to-pod", src="node1", dst="web", method="http")
    assert own.sees[0] == "10.244.1.1"


def test_mtu_from_one_pod_per_node_to_one_on_every_other():
    got = checks(OVERLAY, "mtu")
    assert sorted((c.src, c.dst) for c in got) == sorted(
        [("web", "api"), ("web", "db"), ("api", "web"), ("api", "db"), ("db", "web"), ("db", "api")])
    assert {c.size for c in got} == {model.largest_ping_payload(OVERLAY)} == {1422}
    assert "ping -M do" in got[0].reproduce and "VXLAN" in got[0].why
    assert checks(LESSON, "mtu") == []          # no pods


def _one(c, out, method):
    return V.judge(MIXED, [c], {}, {0: out}, {}, {}, set())[0]


def test_judging_answers():
    [c] = checks(LESSON, "docker-published-port", label="none-port-does-nothing", src="node1")
    assert _one(c, V.HttpOut(True, "200", "c-host"), "http").ok           # somebody else
    assert _one(c, V.HttpOut(False, error="Couldn't connect"), "http").ok  # nobody
    bad = _one(c, V.HttpOut(True, "200", "c-none"), "http")
    assert not bad.ok and "c-none answered node1 at 192.168.1.11:80" in bad.reason
    assert "-p 80:80/tcp on a none container publishes nothing" in bad.reason
    [_, nat] = checks(MIXED, "docker-bridge", src="nginx", target="203.0.113.10")
    wrong = _one(nat, V.HttpOut(True, "200", "172.17.0.2:4000"), "http")
    assert not wrong.ok and "the server saw 172.17.0.2, expected 192.168.1.11" in wrong.reason
    assert "MASQUERADE" in wrong.reason


def test_judging_addresses_and_mtu():
    [only_lo] = checks(MIXED, "docker-none", method="addrs")
    assert _one(only_lo, ["127.0.0.1"], "addrs").ok
    extra = _one(only_lo, ["127.0.0.1", "10.0.0.5"], "addrs")
    assert not extra.ok and "also has 10.0.0.5" in extra.reason
    [mtu] = checks(OVERLAY, "mtu", src="web", dst="api")
    r = V.judge(OVERLAY, [mtu], {}, {0: V.MtuOut(1450, True)}, {}, {}, set())[0]
    assert r.ok and r.observed == "1422 B: reply"
    r = V.judge(OVERLAY, [mtu], {}, {0: V.MtuOut(1500, False, "Frag needed and DF set (mtu = 1450)")},
                {}, {}, set())[0]
    assert not r.ok and "has MTU 1500, the lab's pods 1450" in r.reason
    assert "1472-byte ping with DF set" in r.reason and "Frag needed" in r.reason

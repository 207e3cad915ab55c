"""The plan: the operations that build a lab, and the shell script that is their twin."""

from __future__ import annotations

from netlab import model, plan


def ops_of(kind, ops):
    return [op for op in ops if isinstance(op, kind)]


def test_plan_of_the_default_lab():
    lab = model.load(None, name="t1")
    ops = plan.build(lab)
    assert [op.ns for op in ops_of(plan.NetnsAdd, ops)] == list(lab.namespaces)
    # Every namespace exists before anything is made inside it.
    first = {}
    for i, op in enumerate(ops):
        for ns in (getattr(op, "ns", None), getattr(op, "peer_ns", None)):
            if ns is not None:
                first.setdefault(ns, i)
    assert all(isinstance(ops[i], plan.NetnsAdd) for i in first.values())
    routes = {(r.ns, r.dst, r.via) for r in ops_of(plan.RouteAdd, ops)}
    assert ("t1-node1", "10.244.2.0/24", "192.168.1.12") in routes
    assert ("t1-node3", "10.244.1.0/24", "192.168.1.11") in routes
    assert ("t1-web", "default", "10.244.1.1") in routes
    assert len([r for r in routes if r[1] != "default"]) == 6
    veths = {(v.ns, v.ifname, v.peer_ns, v.peer) for v in ops_of(plan.VethAdd, ops)}
    assert ("t1-node1", "veth-web", "t1-web", "eth0") in veths
    assert ("t1-underlay", "node2", "t1-node2", "eth0") in veths
    assert plan.Sysctl("t1-node2", "net.ipv4.ip_forward", "1") in ops
    spawns = ops_of(plan.Spawn, ops)
    assert [(s.owner, s.name) for s in spawns][:2] == [("web", "server"), ("web", "shell")]
    assert spawns[1].argv == ("sleep", "infinity")


def test_script_is_the_iproute2_twin_of_each_op():
    lab = model.load(None, name="t2")
    text = plan.script(lab, plan.build(lab))
    assert text.startswith("#!/bin/sh\n")
    assert "set -e\n" in text
    assert "ip netns add t2-web\n" in text
    assert "ip -n t2-node1 link add veth-web type veth peer name eth0 netns t2-web\n" in text
    assert "ip -n t2-node1 route add 10.244.2.0/24 via 192.168.1.12 dev eth0\n" in text
    assert "ip netns exec t2-node1 sysctl -qw net.ipv4.ip_forward=1\n" in text
    assert "ip -n t2-web link set lo up alias netlab:t2\n" in text


def test_script_quotes_what_a_user_wrote():
    lab = model.parse("nodes: [{name: n1}]\npods:\n  - name: p\n    node: n1\n    containers:\n"
                      "      - {name: c, command: [echo, '$(touch /tmp/x); rm -rf /']}\n", "s.yaml")
    text = plan.script(lab, plan.build(lab))
    assert "echo '$(touch /tmp/x); rm -rf /'" in text

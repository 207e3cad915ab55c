"""The plan for Docker modes and the outside world, and the nft ruleset text (pure, no root)."""

from __future__ import annotations

from conftest import SCENARIOS, netlab
from netlab import model, plan
from netlab.features import docker as docker_rules
from netlab.features.docker import docker_ruleset
from netlab.plan import AddrAdd, BridgeAdd, LinkUp, NftApply, RouteAdd, Spawn, VethAdd

LESSON_RULESET = """\
table ip docker-nat {
\tchain prerouting {
\t\ttype nat hook prerouting priority dstnat; policy accept;
\t\tip daddr 192.168.1.11 jump docker
\t}
\tchain output {
\t\ttype nat hook output priority -100; policy accept;
\t\tip daddr 192.168.1.11 jump docker
\t}
\tchain postrouting {
\t\ttype nat hook postrouting priority srcnat; policy accept;
\t\tip saddr 172.17.0.0/16 oifname != "docker0" masquerade
\t}
\tchain docker {
\t\ttcp dport 81 dnat to 172.17.0.2:80 comment "c-bridge 81:80/tcp"
\t}
}
"""


def lesson() -> model.Lab:
    return model.load(SCENARIOS / "docker-modes.yaml", "dm")


def test_lesson_ruleset_publishes_only_the_bridge_port():
    lab = lesson()
    node = lab.node("node1")
    assert docker_ruleset(node, docker_rules.containers_on(lab, "node1")) == LESSON_RULESET


def test_mixed_ruleset_tcp_and_udp_and_per_node_subnet():
    lab = model.load(SCENARIOS / "mixed.yaml", "m")
    r1 = docker_ruleset(lab.node("node1"), docker_rules.containers_on(lab, "node1"))
    assert '\t\ttcp dport 8081 dnat to 172.17.0.2:8080 comment "nginx 8081:8080/tcp"\n' in r1
    assert '\t\tudp dport 5353 dnat to 172.17.0.2:8080 comment "nginx 5353:8080/udp"\n' in r1
    assert "9090" not in r1 and "9001" not in r1       # none and host publish nothing
    r2 = docker_ruleset(lab.node("node2"), docker_rules.containers_on(lab, "node2"))
    assert "ip daddr 192.168.1.12 jump docker" in r2
    assert 'ip saddr 172.18.0.0/16 oifname != "docker0" masquerade' in r2
    assert "tcp dport 8082 dnat to 172.18.0.2:8080" in r2 and "8081" not in r2


def test_lesson_plan_ops():
    lab = lesson()
    ops = plan.build(lab)
    n, b = "dm-node1", "dm-c-bridge"
    for op in [BridgeAdd(n, "docker0"), AddrAdd(n, "docker0", "172.17.0.1", 16),
               LinkUp(n, "docker0"), VethAdd(n, "veth-c-bridge", b, "eth0"),
               LinkUp(n, "veth-c-bridge", master="docker0"), AddrAdd(b, "eth0", "172.17.0.2", 16),
               RouteAdd(b, "default", "172.17.0.1", "eth0"), NftApply(n, LESSON_RULESET),
               RouteAdd(n, "default", "192.168.1.254", "eth0"),
               AddrAdd("dm-outside", "lo", "203.0.113.10", 32),
               AddrAdd("dm-outside", "eth0", "192.168.1.254", 24)]:
        assert op in ops, op
    # none: its namespace and nothing else; host: no namespace, the process in the node's.
    touched = {getattr(op, "ns", None) for op in ops if not isinstance(op, Spawn)} | \
              {getattr(op, "peer_ns", None) for op in ops}
    assert "dm-c-host" not in touched and "dm-c-host" not in lab.namespaces
    assert [type(op).__name__ for op in ops if getattr(op, "ns", "") == "dm-c-none"] == \
        ["NetnsAdd", "Spawn"]
    spawns = {op.owner: op for op in ops if isinstance(op, Spawn)}
    assert spawns["c-host"].ns == n and spawns["c-none"].ns == "dm-c-none"
    assert spawns["outside"].ns == "dm-outside" and "--port" in spawns["outside"].argv
    # docker0 exists before the veth is enslaved to it; the table after both.
    kinds = [op for op in ops if getattr(op, "ns", "") == n]
    assert kinds.index(BridgeAdd(n, "docker0")) < kinds.index(LinkUp(n, "veth-c-bridge", "docker0"))


def test_host_network_pod_gets_no_veth_and_runs_in_the_node():
    lab = model.load(SCENARIOS / "mixed.yaml", "m")
    ops = plan.build(lab)
    assert not any(isinstance(op, VethAdd) and "exporter" in op.ifname for op in ops)
    spawn = next(op for op in ops if isinstance(op, Spawn) and op.owner == "exporter")
    assert spawn.ns == "m-node2"


def test_plain_scenario_has_no_docker_ops():
    ops = plan.build(model.load(SCENARIOS / "three-node.yaml"))
    assert not any(isinstance(op, NftApply) for op in ops)
    assert not any(isinstance(op, BridgeAdd) and op.ifname == "docker0" for op in ops)


def test_nft_op_renders_as_a_heredoc():
    text = NftApply("x-node1", "table ip t {\n}\n").ip()
    assert text == "ip netns exec x-node1 nft -f - <<'EOF'\ntable ip t {\n}\nEOF"


def test_plan_command_prints_the_nft_commands():
    r = netlab("plan", str(SCENARIOS / "docker-modes.yaml"), "--name", "dm")
    assert "ip netns exec dm-node1 nft -f - <<'EOF'\n" + LESSON_RULESET + "EOF\n" in r.stdout
    assert "ip -n dm-outside addr add 203.0.113.10/32 dev lo" in r.stdout


def test_docker_rules_for_the_lesson():
    exps = docker_rules.expectations(lesson())
    by_rule: dict = {}
    for e in exps:
        by_rule.setdefault(e.rule, []).append(e)
    (only_lo,) = by_rule["none-only-loopback"]
    assert only_lo.src_ns == "dm-c-none" and only_lo.addresses == ("127.0.0.1",) and only_lo.only
    assert all(not e.reachable for e in by_rule["none-reaches-nobody"])
    assert [(e.dst, e.port, e.answered_by) for e in by_rule["none-localhost"]] == \
        [("127.0.0.1", 80, "c-none")]
    # -p 80:80 on the none container: node1:80 must not be answered by it.
    assert [(e.src, e.dst, e.port, e.reachable) for e in by_rule["none-port-does-nothing"]] == \
        [("outside", "192.168.1.11", 80, False), ("node1", "192.168.1.11", 80, False)]
    (nat,) = by_rule["bridge-nat-out"]
    assert (nat.src_ns, nat.dst, nat.port, nat.seen_source) == \
        ("dm-c-bridge", "203.0.113.10", 80, "192.168.1.11")
    (host_ip,) = by_rule["host-shares-node-ip"]
    assert host_ip.src_ns == "dm-node1" and host_ip.addresses == ("192.168.1.11",)
    assert exps[0].as_dict()["rule"] == "none-only-loopback"


def test_docker_rules_across_nodes():
    lab = model.load(SCENARIOS / "mixed.yaml", "m")
    exps = docker_rules.expectations(lab)
    published = [(e.src, e.kind, e.port, e.seen_source) for e in exps
                 if e.rule == "bridge-published-port" and e.subject == "nginx"]
    assert ("node2", "tcp", 8081, "192.168.1.12") in published
    assert ("client", "udp", 5353, "10.244.2.2") in published
    assert ("web", "tcp", 8081, "10.244.1.2") in published
    assert not any(src == "node1" for src, *_ in published)   # other nodes, and pods
    private = [(e.src, e.kind, e.dst, e.reachable) for e in exps
               if e.rule == "bridge-address-private" and e.subject == "nginx"]
    assert private == [("node2", "ping", "172.17.0.2", False), ("node2", "tcp", "172.17.0.2", False)]
    assert {e.subject for e in exps if e.rule == "host-port-at-node-ip"} == {"agent", "exporter"}
    ignored = [(e.port, e.reachable) for e in exps if e.rule == "host-port-ignored"]
    assert ignored == [(9001, False)]

"""The NetworkPolicy feature, pure: `networkPolicies:` checked at its lines, the plan (one table
per node, bridge netfilter once even with Services), nothing for labs without policies, verify's
`policy` checks and what policies change in other rules' checks, the probe's judge."""

from __future__ import annotations

from pathlib import Path

import pytest

from netlab import model, plan
from netlab.core.errors import ScenarioError
from netlab.core.ops import NftApply, Sysctl
from netlab.features import RULES
from netlab.features.netpol import NetworkPolicies, cluster, rulesets
from netlab.features.netpol.verify import judge, probed_ports, refine, rule_policy
from netlab.verify import engine as V

ROOT = Path(__file__).resolve().parents[2]
SCENARIO = (ROOT / "scenarios" / "netpol.yaml").read_text()
BASE = """name: t
nodes: [{name: node1, ip: 192.168.1.11}, {name: node2, ip: 192.168.1.12}]
namespaces: [default, {name: y, labels: {team: red}}]
pods:
  - {name: a, node: node1, labels: {app: a}, containers: [{name: s, image: netexec, port: 80,
     ports: [{containerPort: 80, name: web}]}]}
  - {name: b, node: node2, namespace: y, labels: {app: b}}
"""


def lab(text=SCENARIO):
    return model.parse(text, "netpol.yaml", "t")


def with_policies(policies: str) -> str:
    return BASE + "networkPolicies:\n" + policies


def test_scenario_parses_namespaces_carry_their_name_label():
    the_lab = lab()
    assert len(the_lab.network_policies) == 6
    nss, pods, nodes = cluster(the_lab)
    assert {n.name: n.all_labels["kubernetes.io/metadata.name"] for n in nss}["y"] == "y"
    assert {p.id for p in pods} >= {"x/x-a", "y/y-b", "z/z-c"}
    assert nodes == {"node1": "192.168.1.11", "node2": "192.168.1.12", "node3": "192.168.1.13"}


def test_plan_one_table_per_node_after_services_and_bridge_netfilter():
    ops = plan.build(lab())
    tables = [op for op in ops if isinstance(op, NftApply)]
    assert [op.ns for op in tables] == ["t-node1", "t-node2", "t-node3"]
    assert all("table inet netlab-netpol {" in op.ruleset for op in tables)
    bridge = [op for op in ops if isinstance(op, Sysctl) and "bridge" in op.key]
    assert [(op.ns, op.value) for op in bridge] == [(f"t-node{i}", "1") for i in (1, 2, 3)]
    # the tables come after every link (routes phase): after the pods' veths
    assert ops.index(tables[0]) > max(i for i, op in enumerate(ops) if type(op).__name__ ==
                                      "VethAdd")


def test_with_services_bridge_netfilter_is_set_once():
    text = SCENARIO + """services:
  - {name: web, namespace: x, selector: {pod: a}, ports: [{port: 80}]}
"""
    ops = plan.build(lab(text))
    bridge = [op for op in ops if isinstance(op, Sysctl) and "bridge" in op.key]
    assert len(bridge) == 3
    kinds = [op.ruleset.split("{")[0] for op in ops if isinstance(op, NftApply)]
    assert sum("kube-proxy" in k for k in kinds) == 3 and sum("netpol" in k for k in kinds) == 3
    assert max(i for i, k in enumerate(kinds) if "kube-proxy" in k) < \
        min(i for i, k in enumerate(kinds) if "netpol" in k)


def test_no_policies_no_ops_no_checks():
    three = lab((ROOT / "scenarios" / "three-node.yaml").read_text())
    assert three.network_policies == ()
    f = NetworkPolicies()
    assert all(f.ops(three, ph) == [] for ph in ("links", "routes", "processes", "probes"))
    assert f.reload(three) == [] and rule_policy(three) == []
    checks = V.derive(three)
    assert refine(three, checks) is checks


@pytest.mark.parametrize("policies, line, words", [
    ("  - {name: p, namespace: nope, podSelector: {}}\n", 9, "namespace 'nope' is not declared"),
    ("  - {name: p, ingress: [{ports: [{port: http}]}]}\n", 9, "no pod declares a TCP port "
                                                               "named 'http': use one of web"),
    ("  - {name: p, ingress: [{from: [{ipBlock: {cidr: 10.0.0.1/8}}]}]}\n", 9, "host bits"),
    ("  - {name: p}\n  - {name: p}\n", 10, "defined twice (line 9)"),
    ("  - {name: p, podSelector: {matchLabels: {app: a}}, ingres: []}\n", 9, "ingres"),
    ("  - metadata: {name: p, namespace: y}\n    spec:\n      ingress:\n"
     "        - from: [{ipBlock: {cidr: 10.0.0.0/8}, podSelector: {}}]\n", 12,
     "either ipBlock or podSelector"),
])
def test_errors_name_the_line(policies, line, words):
    with pytest.raises(ScenarioError) as e:
        model.parse(with_policies(policies), "s.yaml", "t")
    assert e.value.line == line and words in str(e.value), str(e.value)


def test_full_object_shape_is_accepted():
    the_lab = model.parse(with_policies(
        "  - metadata: {name: p, namespace: y}\n    spec: {podSelector: {}, ingress: []}\n"),
        "s.yaml", "t")
    assert the_lab.network_policies[0].id == "y/p"


def test_policy_checks_every_pair_and_port_with_reasons():
    the_lab = model.parse(with_policies(
        "  - {name: deny, namespace: y, podSelector: {}, policyTypes: [Ingress]}\n"
        "  - {name: web, podSelector: {}, ingress: [{from: [{namespaceSelector: {}}], "
        "ports: [{port: web}, {protocol: UDP, port: 53}]}]}\n"), "s.yaml", "t")
    pods = cluster(the_lab)[1]
    assert probed_ports(the_lab.network_policies, pods) == [(53, "UDP"), (80, "TCP")]
    checks = {(c.src, c.dst, c.port, c.data[0]): c for c in rule_policy(the_lab)}
    assert set(checks) == {("a", "b", 53, "UDP"), ("a", "b", 80, "TCP"),
                           ("b", "a", 53, "UDP"), ("b", "a", 80, "TCP")}
    assert checks["b", "a", 80, "TCP"].expect == "reachable"
    assert checks["b", "a", 80, "TCP"].data[5] == "allowed by default/web ingress rule 1"
    assert checks["a", "b", 80, "TCP"].expect == "unreachable"
    assert "y/deny selects y/b for Ingress" in checks["a", "b", 80, "TCP"].data[5]
    # to UDP 53 the probe asks a DNS query (a DNS server ignores netexec's `hostname`)
    assert checks["b", "a", 53, "UDP"].reproduce == "ip netns exec t-b dig @10.244.1.2 +time=1 +tries=1 . NS"
    assert checks["b", "a", 80, "TCP"].reproduce.startswith("ip netns exec t-b curl")
    assert "policy" in RULES


def test_other_rules_expect_what_the_policies_allow():
    the_lab = model.parse(with_policies(
        "  - {name: deny, namespace: y, podSelector: {}, policyTypes: [Ingress, Egress]}\n"),
        "s.yaml", "t")
    got = {(c.rule, c.src, c.dst, c.method): c.expect for c in V.derive(the_lab)
           if c.method in ("ping", "http")}
    assert got["pod-pod-cross-node", "a", "b", "ping"] == "unreachable"
    # a denied pod-to-pod connection is the policy rule's to probe, once
    assert ("pod-pod-cross-node", "b", "a", "http") not in got
    assert got["pod-pod-cross-node", "b", "a", "ping"] == "unreachable"      # b's egress
    assert got["node-to-pod", "node2", "b", "ping"] == "reachable"           # its own node
    assert got["node-to-pod", "node1", "b", "ping"] == "unreachable"
    assert got["pod-to-node", "b", "node2", "http"] == "reachable"           # input hook
    assert got["pod-to-node", "b", "node1", "http"] == "unreachable"
    assert got["pod-to-node", "a", "node2", "http"] == "reachable"
    denied = [c for c in V.derive(the_lab) if c.expect == "unreachable" and c.rule != "policy"]
    assert all(c.label == "NetworkPolicy" and c.why.startswith("denied: y/deny") for c in denied)


def test_judge_names_the_rule_both_ways():
    the_lab = model.parse(with_policies(
        "  - {name: web, podSelector: {}, ingress: [{from: [{namespaceSelector: {}}], "
        "ports: [{port: web}]}]}\n  - {name: deny, namespace: y, podSelector: {}}\n"),
        "s.yaml", "t")
    [c] = [c for c in rule_policy(the_lab) if c.src == "b"]
    assert judge(c, "open").ok and judge(c, "refused").ok
    r = judge(c, "timeout")
    assert not r.ok and "allowed by default/web ingress rule 1" in r.reason
    assert "nft list table inet netlab-netpol" in r.reason
    [d] = [c for c in rule_policy(the_lab) if c.src == "a"]
    assert judge(d, "timeout").ok and not judge(d, "open").ok
    assert "the model denies it: denied: y/deny selects y/b" in judge(d, "refused").reason


def test_reload_is_every_node_table():
    the_lab = lab()
    ops = NetworkPolicies().reload(the_lab)
    assert [op.ruleset for op in ops] == list(rulesets(the_lab).values())

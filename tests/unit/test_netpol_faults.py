"""NetworkPolicy's fault policy-blocks-dns, its pure parts: where it applies, the checks the policy
model says it breaks (across every rule, not only DNS), the nft it loads and what undoes it, and
the pieces verify uses to name it (the probes' lost packets, the DNS query of the UDP/53 probe)."""

from __future__ import annotations

from pathlib import Path

from netlab import exercises as E, model, plan
from netlab.core.ops import NftApply
from netlab.features import FAULTS
from netlab.features.dns.rules import DigOut, Probe as DigProbe
from netlab.features.netpol import connect, verify as npverify
from netlab.verify import engine
from netlab.verify.judging import _stops

ROOT = Path(__file__).resolve().parents[2]
SCENARIO = ROOT / "scenarios" / "netpol-dns.yaml"
FAULT = FAULTS["policy-blocks-dns"]


def load(text: str = "", name: str = "nd-u"):
    return model.parse(text or SCENARIO.read_text(), "s.yaml", name)


def without_policies() -> str:
    return SCENARIO.read_text().split("networkPolicies:")[0]


def test_it_applies_to_the_namespace_whose_pods_ask_the_cluster_dns():
    assert FAULT.targets(load()) == ["shop"]
    for name in ("three-node", "dns", "netpol", "services", "same-node", "ingress", "mixed"):
        lab = model.load(str(ROOT / "scenarios" / f"{name}.yaml"))
        assert FAULT.targets(lab) == [], name   # no DNS, or namespaces spread over two nodes


def test_it_breaks_every_dns_query_of_the_namespace_and_the_policy_checks_to_the_dns_pod():
    lab = load()
    checks = engine.derive(lab)
    got = E.expected(lab, "policy-blocks-dns", "shop", checks)
    dns_pod = lab.dns.pod
    want = [c for c in checks if (c.method == "dns" and c.src in ("client", "web")) or
            (c.rule == "policy" and c.src in ("client", "web") and c.dst == dns_pod
             and c.expect == "reachable")]     # the DNS pod takes DNS only: 8080 was denied
    assert got == want
    assert {(c.port, c.data[0]) for c in got if c.rule == "policy"} == {(53, "UDP"), (53, "TCP")}
    # the node's own queries, pod to pod inside shop, the Service: all as before
    assert not [c for c in got if c.src == "node1" or c.method in ("svc", "http", "ping")]


def test_without_policies_in_the_lab_it_also_breaks_the_pings_to_the_dns_pod():
    lab = load(without_policies())
    assert not lab.network_policies and FAULT.targets(lab) == ["shop"]
    got = E.expected(lab, "policy-blocks-dns", "shop", engine.derive(lab))
    assert {(c.rule, c.src, c.dst) for c in got if c.method == "ping"} == \
        {("pod-pod-same-node", "client", lab.dns.pod), ("pod-pod-same-node", "web", lab.dns.pod)}
    broken = FAULT.make(lab, "shop")
    assert broken.undo == (NftApply("nd-u-node1", "table inet netlab-netpol\n"
                                                  "delete table inet netlab-netpol\n"),)


def test_not_where_the_pods_are_isolated_for_egress_already_nor_spread_over_nodes():
    egress = SCENARIO.read_text() + (
        "  - {name: own, namespace: shop, podSelector: {}, policyTypes: [Egress], egress: [{}]}\n")
    assert FAULT.targets(load(egress)) == []
    two = SCENARIO.read_text().replace(
        "  - {name: node1, ip: 192.168.1.11}\n",
        "  - {name: node1, ip: 192.168.1.11}\n  - {name: node2, ip: 192.168.1.12}\n").replace(
        "{name: client, node: node1", "{name: client, node: node2")
    assert FAULT.targets(load(two)) == []


def test_it_loads_the_features_own_rendering_and_undo_loads_the_plans():
    lab = load()
    broken = FAULT.make(lab, "shop")
    [op] = broken.ops
    assert op.ns == broken.ns == "nd-u-node1" and broken.obj == "shop/default-deny-egress"
    assert 'drop comment "shop/client isolated for Egress by shop/default-deny-egress"' in op.ruleset
    assert "dport 53" not in op.ruleset.split("chain egress.shop.client")[1].split("}")[0]
    planned = [o for o in plan.build(lab) if isinstance(o, NftApply) and "netlab-netpol" in o.ruleset]
    assert list(broken.undo) == planned
    assert broken.look == "ip netns exec nd-u-node1 nft list table inet netlab-netpol"
    assert broken.fix.count("nft 'insert rule inet netlab-netpol egress.shop.") == 2
    assert f"ip daddr {lab.pod(lab.dns.pod).ip} meta l4proto {{ tcp, udp }} th dport 53 return" \
        in broken.fix


def test_a_lost_packet_is_traced_where_the_probe_says():
    lab = load()
    dig = next(c for c in engine.derive(lab) if c.method == "dns" and c.src == "client")
    assert DigProbe().lost(dig, DigOut(error="no answer")) == ("nd-u-client", "10.96.0.10", 53,
                                                                "udp")
    assert DigProbe().lost(dig, DigOut(status="NOERROR")) is None
    pol = next(c for c in engine.derive(lab) if c.rule == "policy" and c.expect == "reachable")
    assert npverify.Probe().lost(pol, "timeout") == (pol.ns, pol.target, pol.port,
                                                     pol.data[0].lower())
    assert npverify.Probe().lost(pol, "open") is None

    class Routes:
        def stopped(self, ns, address, port, proto):
            return f"dropped in X by `drop` ({ns} {address} {port} {proto})"

    said = "no answer: the server runs: try `ss -lunp`"
    assert _stops(Routes(), DigProbe(), dig, DigOut(), said) == \
        "no answer: the server runs; the query stops: dropped in X by `drop` (nd-u-client " \
        "10.96.0.10 53 udp)"
    assert _stops(Routes(), npverify.Probe(), pol, "timeout", "lost") == \
        f"lost; the packet stops: dropped in X by `drop` ({pol.ns} {pol.target} 53 " \
        f"{pol.data[0].lower()})"
    assert _stops(Routes(), object(), dig, DigOut(), said) == said


def test_the_udp_53_probe_is_a_dns_query():
    q = connect.DNS_QUERY
    assert q[2:4] == b"\x00\x00" and q[4:6] == b"\x00\x01"     # a query, one question
    assert q[12:] == b"\x00\x00\x02\x00\x01"                    # ".", NS, IN

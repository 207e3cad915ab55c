"""The nftables evaluator (netlab/view/nft.py), on rulesets the real nft listed.

The fixtures in tests/unit/nft/ are `nft -j list ruleset` (NAME.json) and `nft -a list ruleset`
(NAME.txt) of NAME.nft loaded into a throwaway namespace by the real nft (capture.py there;
tests/integration/test_trace_nft_live.py captures them again and checks they still match):
docker.nft is node1's ruleset of scenarios/mixed.yaml (features/docker.py docker_ruleset),
kubeproxy.nft the kube-proxy table of wt-kubeproxy's kubeproxy.ruleset() for node1 with a
NodePort Service web (10.96.0.50:80 -> 10.244.1.2:8080, 10.244.2.2:8080), a UDP Service dns
(10.96.0.10:53 -> 10.244.2.3:53) and a Service with no endpoints (10.96.0.60:80), netpol.nft
a `table inet netlab-netpol` in wt-netpol's shape.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from netlab.view import nft as N
from netlab.view.nft import Packet

HERE = Path(__file__).resolve().parent / "nft"
NODE1 = {"lo": ("127.0.0.1",), "eth0": ("192.168.1.11",), "cni0": ("10.244.1.1",),
         "docker0": ("172.17.0.1",)}


def fixture(name: str) -> N.Ruleset:
    return N.parse((HERE / f"{name}.json").read_text(), (HERE / f"{name}.txt").read_text())


def one(outcomes):
    assert len(outcomes) == 1, outcomes
    return outcomes[0]


# ---------------------------------------------------------------- Docker


def test_docker_published_port_is_dnated_to_the_container():
    rs = fixture("docker")
    out = one(N.evaluate(rs, "prerouting", Packet("10.244.2.2", "192.168.1.11", "tcp", 8081,
                                                  40000, iif="eth0"), NODE1))
    assert out.verdict == "accept"
    assert (out.packet.daddr, out.packet.dport, out.packet.saddr) == ("172.17.0.2", 8080,
                                                                      "10.244.2.2")
    assert out.dnat.text == 'tcp dport 8081 dnat to 172.17.0.2:8080 comment "nginx 8081:8080/tcp"'
    assert out.dnat.where() == "chain docker, table ip docker-nat"
    assert [r.text for r in out.rules] == ["ip daddr 192.168.1.11 jump docker", out.dnat.text]
    udp = one(N.evaluate(rs, "prerouting", Packet("10.244.2.2", "192.168.1.11", "udp", 5353,
                                                  40000, iif="eth0"), NODE1))
    assert udp.packet.where() == "172.17.0.2:8080" and "udp dport 5353" in udp.dnat.text


def test_docker_leaves_other_ports_protocols_and_addresses_alone():
    rs = fixture("docker")
    for pkt in (Packet("10.244.2.2", "192.168.1.11", "tcp", 5353, iif="eth0"),   # udp only
                Packet("10.244.2.2", "192.168.1.11", "icmp", iif="eth0"),        # a ping
                Packet("10.244.2.2", "192.168.1.12", "tcp", 8081, iif="eth0")):  # not node1
        out = one(N.evaluate(rs, "prerouting", pkt, NODE1))
        assert out.dnat is None and out.packet == pkt and out.verdict == "accept"


def test_docker_node_itself_reaches_its_published_port_through_output():
    out = one(N.evaluate(fixture("docker"), "output",
                         Packet("192.168.1.11", "192.168.1.11", "tcp", 8081, oif="lo"), NODE1))
    assert out.packet.where() == "172.17.0.2:8080"


def test_docker_masquerade_is_a_source_rewrite_to_the_way_out():
    rs = fixture("docker")
    out = one(N.evaluate(rs, "postrouting", Packet("172.17.0.2", "203.0.113.10", "tcp", 80,
                                                   40000, iif="docker0", oif="eth0"), NODE1))
    assert out.packet.saddr == "192.168.1.11" and out.packet.daddr == "203.0.113.10"
    assert out.snat.text == 'ip saddr 172.17.0.0/16 oifname != "docker0" masquerade'
    # back into docker0 (container to container): no masquerade
    out = one(N.evaluate(rs, "postrouting", Packet("172.17.0.2", "172.17.0.3", "tcp", 80,
                                                   oif="docker0"), NODE1))
    assert out.snat is None and out.packet.saddr == "172.17.0.2"


# ---------------------------------------------------------------- kube-proxy


def test_clusterip_goes_through_the_service_chain_to_every_endpoint():
    outs = N.evaluate(fixture("kubeproxy"), "prerouting",
                      Packet("10.244.3.2", "10.96.0.50", "tcp", 80, 40000, iif="cni0"), NODE1)
    assert [o.packet.where() for o in outs] == ["10.244.1.2:8080", "10.244.2.2:8080"]
    assert [o.branch for o in outs] == ["numgen random mod 2: 0", "numgen random mod 2: 1"]
    first = outs[0]
    assert first.verdict == "accept" and first.packet.mark == 0       # a pod: no masquerade
    assert [r.chain for r in first.rules] == [
        "filter-prerouting", "firewall-check", "nat-prerouting", "services",
        "service-SUSTUHLJ-default/web/tcp/http",
        "endpoint-SVLGPL42-default/web/tcp/http__10.244.1.2/8080"]
    assert first.dnat.text == "meta l4proto tcp dnat to 10.244.1.2:8080"
    assert first.unknown == ()


def test_clusterip_udp_and_the_wrong_protocol():
    rs = fixture("kubeproxy")
    dns = one(N.evaluate(rs, "prerouting", Packet("10.244.1.2", "10.96.0.10", "udp", 53, 40000,
                                                  iif="cni0"), NODE1))
    assert dns.packet.where() == "10.244.2.3:53" and dns.branch == "numgen random mod 1: 0"
    tcp = one(N.evaluate(rs, "prerouting", Packet("10.244.1.2", "10.96.0.10", "tcp", 53, 40000,
                                                  iif="cni0"), NODE1))
    assert tcp.dnat is None and tcp.packet.daddr == "10.96.0.10"


def test_nodeport_from_another_node_is_marked_and_masqueraded():
    rs = fixture("kubeproxy")
    outs = N.evaluate(rs, "prerouting", Packet("192.168.1.12", "192.168.1.11", "tcp", 30080,
                                               40000, iif="eth0"), NODE1)
    assert [o.packet.where() for o in outs] == ["10.244.1.2:8080", "10.244.2.2:8080"]
    assert all(o.packet.mark == 0x4000 for o in outs)
    assert "external-SUSTUHLJ-default/web/tcp/http" in [r.chain for r in outs[0].rules]
    # The mark lives on to postrouting in the same namespace: kube-proxy masquerades.
    post = one(N.evaluate(rs, "postrouting",
                          Packet(**{**outs[0].packet.__dict__, "oif": "cni0"}), NODE1))
    assert post.packet.saddr == "10.244.1.1" and post.packet.mark == 0
    assert post.snat.text == "masquerade fully-random"
    # Not on loopback (ip daddr != 127.0.0.0/8), and not on an address the node does not hold.
    for daddr in ("127.0.0.1", "192.168.1.99"):
        out = one(N.evaluate(rs, "prerouting", Packet("192.168.1.12", daddr, "tcp", 30080,
                                                      40000, iif="eth0"), NODE1))
        assert out.dnat is None


def test_a_service_without_endpoints_is_rejected_naming_the_rule():
    out = one(N.evaluate(fixture("kubeproxy"), "forward",
                         Packet("10.244.3.2", "10.96.0.60", "tcp", 80, 40000, iif="eth0",
                                oif="eth0"), NODE1))
    assert out.verdict == "reject"
    assert out.reason() == "`reject` (chain reject-chain, table ip kube-proxy)"


# ---------------------------------------------------------------- NetworkPolicy-shaped drops


def test_netpol_drop_in_forward_names_the_rule_chain_and_table():
    rs = fixture("netpol")
    out = one(N.evaluate(rs, "forward", Packet("10.244.3.2", "10.244.2.2", "tcp", 8080, 40000,
                                               iif="eth0", oif="cni0"), NODE1))
    assert out.verdict == "drop"
    assert out.reason() == ('`drop comment "default/db isolated for Ingress by '
                            'default/db-allow"` (chain ingress.default.db, table inet '
                            'netlab-netpol)')
    assert out.rules[-1] is out.rule


def test_netpol_allows_what_a_rule_allows():
    rs = fixture("netpol")
    ok = one(N.evaluate(rs, "forward", Packet("10.244.1.7", "10.244.2.2", "tcp", 8080, 40000,
                                              iif="eth0", oif="cni0"), NODE1))
    assert ok.verdict == "accept"
    assert ok.rules[-1].text == ('ip saddr @default.db-allow.in1 tcp dport 8080 accept comment '
                                 '"default/db-allow ingress rule 1"')
    ping = one(N.evaluate(rs, "forward", Packet("10.244.1.7", "10.244.2.2", iif="eth0",
                                                oif="cni0"), NODE1))
    assert ping.verdict == "drop"          # the rule allows TCP 8080 only
    # Egress at the source's node: a port range in an anonymous set, then the ingress dispatch.
    for port, verdict, chain in ((9005, "drop", "ingress.default.db"),
                                 (9011, "drop", "egress.default.web")):
        out = one(N.evaluate(rs, "forward", Packet("10.244.2.5", "10.244.2.2", "tcp", port,
                                                   40000, iif="cni0", oif="cni0"), NODE1))
        assert (out.verdict, out.chain) == (verdict, chain)
    other = one(N.evaluate(rs, "forward", Packet("10.244.2.9", "10.244.3.3", "tcp", 22, 40000,
                                                 iif="cni0", oif="eth0"), NODE1))
    assert other.verdict == "accept" and other.rule is None


# ---------------------------------------------------------------- the kernel's order, unknowns


def ruleset(*items) -> N.Ruleset:
    return N.parse(json.dumps({"nftables": list(items)}))


def chain(table, name, hook=None, prio=0, policy="accept", type_="filter", family="inet"):
    body = {"family": family, "table": table, "name": name, "handle": 1}
    if hook:
        body.update(type=type_, hook=hook, prio=prio, policy=policy)
    return {"chain": body}


def rule(table, chain_name, *expr, family="inet", handle=9, comment=None):
    body = {"family": family, "table": table, "chain": chain_name, "handle": handle,
            "expr": list(expr)}
    if comment:
        body["comment"] = comment
    return {"rule": body}


DADDR = {"payload": {"protocol": "ip", "field": "daddr"}}


def test_base_chains_run_lowest_priority_first_and_accept_goes_on():
    rs = ruleset(chain("a", "late", "forward", prio=10), chain("b", "early", "forward", prio=-10),
                 rule("a", "late", {"drop": None}, comment="late"),
                 rule("b", "early", {"accept": None}))
    out = one(N.evaluate(rs, "forward", Packet("10.0.0.1", "10.0.0.2")))
    assert out.verdict == "drop" and out.chain == "late" and out.table == "inet a"
    assert out.rule.text == 'drop comment "late"'           # no nft text: rendered from JSON
    assert [r.chain for r in out.rules] == ["early", "late"]


def test_a_chain_policy_drop_is_named():
    rs = ruleset(chain("t", "input", "input", policy="drop"),
                 rule("t", "input", {"match": {"op": "==", "left": DADDR, "right": "10.0.0.9"}},
                      {"accept": None}))
    out = one(N.evaluate(rs, "input", Packet("10.0.0.1", "10.0.0.2")))
    assert out.verdict == "drop" and out.rule is None
    assert out.reason() == "the policy drop of chain input (table inet t)"
    assert one(N.evaluate(rs, "input", Packet("10.0.0.1", "10.0.0.9"))).verdict == "accept"


def test_the_first_nat_chain_that_rewrites_wins():
    dnat = [{"dnat": {"addr": a}} for a in ("10.1.1.1", "10.2.2.2")]
    rs = ruleset(chain("x", "pre", "prerouting", -100, type_="nat"),
                 chain("y", "pre", "prerouting", -90, type_="nat"),
                 rule("x", "pre", dnat[0]), rule("y", "pre", dnat[1]))
    out = one(N.evaluate(rs, "prerouting", Packet("10.0.0.1", "10.0.0.2")))
    assert out.packet.daddr == "10.1.1.1" and out.dnat.table == "x"


def test_unknown_expressions_are_assumed_to_match_and_listed():
    rs = ruleset(chain("t", "fwd", "forward"),
                 rule("t", "fwd", {"match": {"op": "==", "left": {"ct": {"key": "mark"}},
                                             "right": 7}},
                      {"quota": {"val": 1}}, {"counter": None}, {"drop": None}))
    out = one(N.evaluate(rs, "forward", Packet("10.0.0.1", "10.0.0.2")))
    assert out.verdict == "drop"
    assert out.unknown == ("ct mark 7 (chain fwd, table inet t)",)


def test_jump_return_goto_and_marks():
    mark = {"meta": {"key": "mark"}}
    rs = ruleset(chain("t", "pre", "prerouting"), chain("t", "sub"), chain("t", "tail"),
                 rule("t", "pre", {"jump": {"target": "sub"}}),
                 rule("t", "pre", {"match": {"op": "==", "left": {"&": [mark, 1]}, "right": 1}},
                      {"goto": {"target": "tail"}}),
                 rule("t", "pre", {"drop": None}),
                 rule("t", "sub", {"mangle": {"key": mark, "value": {"|": [mark, 1]}}}),
                 rule("t", "sub", {"return": None}),
                 rule("t", "sub", {"drop": None}),
                 rule("t", "tail", {"match": {"op": "==", "left": {"meta": {"key": "iifname"}},
                                              "right": "veth*"}}, {"accept": None}))
    out = one(N.evaluate(rs, "prerouting", Packet("10.0.0.1", "10.0.0.2", iif="veth-a")))
    assert out.verdict == "accept" and out.packet.mark == 1
    assert one(N.evaluate(rs, "prerouting", Packet("10.0.0.1", "10.0.0.2", iif="eth0"))
               ).verdict == "accept"      # off the end of tail: back to pre's caller, policy


def test_empty_and_foreign_families_are_ignored():
    assert N.parse("").chains == ()
    rs = ruleset(chain("t6", "fwd", "forward", family="ip6"),
                 rule("t6", "fwd", {"drop": None}, family="ip6"))
    assert rs.chains == () and one(N.evaluate(rs, "forward", Packet("1.1.1.1", "2.2.2.2"))
                                   ).verdict == "accept"


@pytest.mark.parametrize("name", ["docker", "kubeproxy", "netpol"])
def test_every_fixture_rule_is_named_as_nft_prints_it(name):
    rs = fixture(name)
    text = N.without_handles((HERE / f"{name}.txt").read_text())
    for c in rs.chains:
        for r in c.rules:
            assert r.text and r.text in text, r


def test_long_chains_do_not_recurse_and_unknown_drops_say_so():
    many = [rule("t", "fwd", {"match": {"op": "==", "left": DADDR,
                                        "right": f"10.9.{n // 250}.{n % 250}"}},
                 {"accept": None}, handle=n) for n in range(5000)]
    rs = ruleset(chain("t", "fwd", "forward"), *many,
                 rule("t", "fwd", {"match": {"op": "==", "left": {"fib": {"result": "oif",
                                                                          "flags": ["saddr"]}},
                                             "right": False}}, {"drop": None}, handle=9999))
    out = one(N.evaluate(rs, "forward", Packet("10.0.0.1", "10.0.0.2")))
    assert out.verdict == "drop" and len(out.rules) == 1
    assert out.unknown == ("fib saddr oif false (chain fwd, table inet t)",)
    assert one(N.evaluate(rs, "forward", Packet("10.0.0.1", "10.9.19.249"))).verdict == "accept"


def test_iptables_nft_compat_rules_are_read_from_their_text():
    """iptables.rules: Docker's classic iptables rules loaded by iptables-restore (iptables-nft);
    their addrtype, conntrack, multiport matches and DNAT/MASQUERADE/REJECT targets are `xt`
    expressions with no parameters in the JSON, evaluated from nft's translation."""
    rs = N.parse((HERE / "iptables.json").read_text(), (HERE / "iptables.txt").read_text())
    out = one(N.evaluate(rs, "prerouting", Packet("10.0.0.5", "192.168.1.11", "tcp", 8081,
                                                  iif="eth0"), NODE1))
    assert out.packet.where() == "172.17.0.2:8080" and out.unknown == ()
    assert out.dnat.text == 'iifname != "docker0" tcp dport 8081 counter dnat to 172.17.0.2:8080'
    assert one(N.evaluate(rs, "prerouting", Packet("10.0.0.5", "192.168.1.99", "tcp", 8081,
                                                   iif="eth0"), NODE1)).dnat is None  # not local
    out = one(N.evaluate(rs, "postrouting", Packet("172.17.0.2", "1.1.1.1", "tcp", 80,
                                                   oif="eth0"), NODE1))
    assert out.packet.saddr == "192.168.1.11"
    for port, verdict in ((22, "reject"), (6005, "reject"), (6011, "accept"), (80, "accept")):
        out = one(N.evaluate(rs, "forward", Packet("10.0.0.5", "172.17.0.2", "tcp", port,
                                                   iif="eth0", oif="docker0"), NODE1))
        assert out.verdict == verdict, port
    out = one(N.evaluate(rs, "forward", Packet("10.0.0.5", "172.17.0.9", iif="eth0"), NODE1))
    assert out.reason() == "`ip daddr 172.17.0.9 counter drop` (chain FORWARD, table ip filter)"

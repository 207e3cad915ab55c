"""netlab trace through nft rules, pure: a plan's snapshot with real rulesets (tests/unit/nft/,
listed by the real nft) in its node namespaces, walked as `netlab trace` walks a live lab."""

from __future__ import annotations

from dataclasses import replace

from netlab import model
from netlab.view import snapshot
from netlab.view import trace as T
from test_nft import fixture


def with_nft(snap, **rulesets):
    """The snapshot with these namespaces' rulesets: ns name -> fixture name."""
    return replace(snap, namespaces=tuple(
        replace(n, nft=fixture(rulesets[n.name])) if n.name in rulesets else n
        for n in snap.namespaces))


def mixed():
    lab = model.load("scenarios/mixed.yaml", "m")
    # docker.nft is node1's ruleset of this very scenario, as the real nft lists it
    return with_nft(snapshot.of_plan(lab), **{"m-node1": "docker"})


def test_a_published_port_traced_from_a_pod_on_another_node_lands_in_the_container():
    t = T.walk(mixed(), "m-client", "192.168.1.11", port=8081)
    assert t.arrived and t.final == "172.17.0.2:8080"
    assert [h.ns for h in t.hops] == ["m-client", "m-node2", "m-node1", "m-nginx"]
    node1 = t.hops[2]
    assert node1.rewrites == (
        'dnat 192.168.1.11:8081 -> 172.17.0.2:8080 by `tcp dport 8081 dnat to 172.17.0.2:8080 '
        'comment "nginx 8081:8080/tcp"` (chain docker, table ip docker-nat)',)
    assert node1.dst == "172.17.0.2" and node1.route == "172.17.0.0/16 dev docker0 src 172.17.0.1"
    assert node1.nat == ()              # evaluated: the grepped list gives way
    text = T.render(t)
    assert "   dnat     192.168.1.11:8081 -> 172.17.0.2:8080 by `tcp dport 8081" in text
    assert "(ip -n m-node1 route get 172.17.0.2)" in text
    assert text.endswith("arrived at 172.17.0.2:8080 (sent to 192.168.1.11:8081) in 4 namespaces")


def test_other_ports_and_a_ping_stop_at_the_node():
    for port, proto in ((8082, None), (None, None), (8081, "udp")):
        t = T.walk(mixed(), "m-client", "192.168.1.11", port=port, proto=proto)
        assert t.arrived and t.hops[-1].ns == "m-node1" and t.hops[-1].rewrites == ()
    t = T.walk(mixed(), "m-client", "192.168.1.11", port=5353, proto="udp")
    assert t.final == "172.17.0.2:8080" and t.hops[-1].ns == "m-nginx"


def test_the_node_itself_reaches_its_published_port():
    t = T.walk(mixed(), "m-node1", "192.168.1.11", port=8081)
    assert t.arrived and [h.ns for h in t.hops] == ["m-node1", "m-nginx"]
    assert t.hops[0].rewrites[0].startswith("dnat 192.168.1.11:8081 -> 172.17.0.2:8080")


def test_masquerade_shows_as_a_source_rewrite():
    t = T.walk(mixed(), "m-nginx", "203.0.113.10", port=80)
    assert t.arrived and t.hops[-1].ns == "m-outside"
    assert t.hops[1].rewrites == (
        'snat 172.17.0.2 -> 192.168.1.11 by `ip saddr 172.17.0.0/16 oifname != "docker0" '
        'masquerade` (chain postrouting, table ip docker-nat)',)
    text = T.render(t)
    route = text.index("route    default via 192.168.1.254 dev eth0    (ip -n m-node1")
    assert route < text.index("   snat     172.17.0.2 -> 192.168.1.11") < text.index(
        "leaves   by eth0 to 192.168.1.254: m-node1:eth0")


def three_node(**rulesets):
    lab = model.load("scenarios/three-node.yaml", "t")
    return with_nft(snapshot.of_plan(lab), **rulesets)


KUBE = {"t-node1": "kubeproxy", "t-node2": "kubeproxy", "t-node3": "kubeproxy"}


def test_a_clusterip_is_traced_to_its_endpoints():
    t = T.walk(three_node(**KUBE), "t-db", "10.96.0.50", port=80)
    assert t.arrived and t.final == "10.244.1.2:8080"
    assert [h.ns for h in t.hops] == ["t-db", "t-node3", "t-node1", "t-web"]
    node3 = t.hops[1]
    assert node3.candidates == ("10.244.1.2:8080 (accept, numgen random mod 2: 0, followed)",
                                "10.244.2.2:8080 (accept, numgen random mod 2: 1)")
    assert node3.rewrites == ("dnat 10.96.0.50:80 -> 10.244.1.2:8080 by `meta l4proto tcp dnat "
                              "to 10.244.1.2:8080` (chain endpoint-SVLGPL42-default/web/tcp/"
                              "http__10.244.1.2/8080, table ip kube-proxy)",)
    assert t.hops[2].rewrites == ()      # node1 routes the pod address, no second DNAT
    text = T.render(t)
    assert "   choice   2 candidates: 10.244.1.2:8080 (accept, numgen random mod 2: 0, " \
           "followed); 10.244.2.2:8080" in text
    assert text.endswith("arrived at 10.244.1.2:8080 (sent to 10.96.0.50:80) in 4 namespaces")


def test_a_nodeport_from_a_node_is_masqueraded_by_kube_proxy():
    t = T.walk(three_node(**KUBE), "t-node3", "192.168.1.11", port=30080)
    assert t.arrived and t.hops[-1].ns == "t-web"
    node1 = t.hops[1]
    assert node1.rewrites[0].startswith("dnat 192.168.1.11:30080 -> 10.244.1.2:8080")
    assert node1.rewrites[1] == ("snat 192.168.1.13 -> 10.244.1.1 by `masquerade fully-random` "
                                 "(chain masquerading, table ip kube-proxy)")


def test_a_service_without_endpoints_is_rejected():
    # Nodes with a default route (mixed.yaml: to the outside router) forward it: rejected there.
    snap = with_nft(snapshot.of_plan(model.load("scenarios/mixed.yaml", "m")),
                    **{"m-node1": "kubeproxy"})
    t = T.walk(snap, "m-web", "10.96.0.60", port=80)
    assert not t.arrived and t.hops[-1].ns == "m-node1"
    assert t.reason == "rejected in m-node1 by `reject` (chain reject-chain, table ip kube-proxy)"
    # Without one (three-node.yaml), the kernel has no route for it before any filter runs.
    t = T.walk(three_node(**KUBE), "t-db", "10.96.0.60", port=80)
    assert t.reason == "t-node3: no route to 10.96.0.60 (Network is unreachable)"


def test_a_drop_in_a_forward_chain_stops_the_trace_naming_the_rule():
    snap = three_node(**{"t-node2": "netpol"})
    t = T.walk(snap, "t-db", "10.244.2.2", port=8080)          # api is 10.244.2.2 on node2
    assert not t.arrived and [h.ns for h in t.hops] == ["t-db", "t-node3", "t-node2"]
    assert t.reason == ('dropped in t-node2 by `drop comment "default/db isolated for Ingress '
                        'by default/db-allow"` (chain ingress.default.db, table inet '
                        'netlab-netpol)')
    assert t.hops[-1].route == "10.244.2.0/24 dev cni0 src 10.244.2.1"
    assert t.hops[-1].crossed == ()      # it did not leave
    assert T.render(t).endswith(f"STOPPED: {t.reason}")
    # From node1's pods the policy allows TCP 8080, not a ping.
    assert T.walk(snap, "t-web", "10.244.2.2", port=8080).arrived
    assert not T.walk(snap, "t-web", "10.244.2.2").arrived


def test_without_rulesets_the_trace_is_as_before():
    lab = model.load("scenarios/three-node.yaml", "t")
    t = T.walk(snapshot.of_plan(lab), "t-web", "10.244.3.2", port=80)
    assert t.arrived and all(h.rewrites == () and h.candidates == () for h in t.hops)
    assert T.render(t).endswith("arrived at 10.244.3.2:80 in 4 namespaces")


def with_bridge_nf(snap, ns, bridge="cni0"):
    space = snap.ns(ns)
    space = replace(space, ifaces=tuple(replace(i, nf_call=True) if i.name == bridge else i
                                        for i in space.ifaces))
    return replace(snap, namespaces=tuple(space if n.name == ns else n for n in snap.namespaces))


def test_same_node_pods_meet_the_forward_hook_only_with_bridge_netfilter():
    snap = three_node(**{"t-node2": "netpol"})
    # worker (10.244.2.3) to api (10.244.2.2), both on node2's cni0: bridged, not routed.
    t = T.walk(snap, "t-worker", "10.244.2.2", port=8080)
    assert t.arrived and [h.ns for h in t.hops] == ["t-worker", "t-api"]
    t = T.walk(with_bridge_nf(snap, "t-node2"), "t-worker", "10.244.2.2", port=8080)
    assert not t.arrived and [h.ns for h in t.hops] == ["t-worker", "t-node2"]
    assert t.hops[0].crossed == ("t-worker:eth0", "t-node2:veth-worker", "t-node2:cni0 (bridge)")
    assert t.hops[1].note == "bridged by cni0: bridge netfilter runs t-node2's nft hooks on it"
    assert t.reason.startswith('dropped in t-node2 by `drop comment "default/db isolated for '
                               'Ingress')
    # Allowed traffic is bridged on: a hop for the bridge's namespace, then the pod.
    snap = with_bridge_nf(three_node(**{"t-node3": "netpol"}), "t-node3")
    t = T.walk(snap, "t-cache", "10.244.3.2", port=8080)
    assert t.arrived and [h.ns for h in t.hops] == ["t-cache", "t-node3", "t-db"]
    assert t.hops[1].crossed == ("t-node3:cni0 (bridge)", "t-node3:veth-db", "t-db:eth0")
    # A bridge in a namespace without rules adds no hop (the underlay's switch).
    t = T.walk(with_bridge_nf(snap, "t-underlay", "br0"), "t-web", "10.244.3.2")
    assert [h.ns for h in t.hops] == ["t-web", "t-node1", "t-node3", "t-db"]


def test_a_drop_on_a_match_not_evaluated_says_it_was_assumed():
    from test_nft import chain, rule, ruleset
    rs = ruleset(chain("t", "fwd", "forward"),
                 rule("t", "fwd", {"match": {"op": "==", "left": {"ct": {"key": "mark"}},
                                             "right": 7}}, {"drop": None}))
    snap = three_node()
    snap = replace(snap, namespaces=tuple(replace(n, nft=rs) if n.name == "t-node3" else n
                                          for n in snap.namespaces))
    t = T.walk(snap, "t-web", "10.244.3.2")
    assert t.reason == ("dropped in t-node3 by `ct mark 7 drop` (chain fwd, table inet t) "
                        "(assuming `ct mark 7` matches: not evaluated)")
    assert "   assumed  ct mark 7 (chain fwd, table inet t) matches (not evaluated)" in T.render(t)

"""The upstream Netpol e2e cases (kubernetes test/e2e/network/netpol/network_policy.go) on the
policy evaluator: namespaces x, y, z with pods a, b, c, each case asserting the whole 9x9 matrix.

The expected tables are built the way upstream builds them (start all-allowed, then ExpectPeer /
Expect / ExpectAllIngress / ExpectAllEgress), not computed from the code under test. Upstream
ignores loopback (a pod to itself); here it is always allowed, so the diagonal is set to `.`.
"""

import pytest

from netlab.netpol import (ContainerPort, Namespace, Pod, check, matrix, parse_policies,
                           render_matrix, ruleset, verdict)

NSS = ("x", "y", "z")
NAMES = ("a", "b", "c")
NODES = {"node1": "192.168.1.11", "node2": "192.168.1.12"}
NAMESPACES = [Namespace(n) for n in NSS]
PORTS = tuple(ContainerPort(f"serve-{p}-{proto.lower()}", p, proto)
              for p in (80, 81) for proto in ("TCP", "UDP"))
# x on node1, y on node2, z split: same-node and cross-node pairs in every table
PODS = [Pod(p, n, f"10.244.{i}.{j + 2}" if n != "z" else f"10.244.{1 + j % 2}.{10 + j}",
            "node1" if (n == "x" or (n == "z" and j % 2 == 0)) else "node2",
            {"pod": p}, PORTS)
        for i, n in enumerate(NSS, 1) for j, p in enumerate(NAMES)]
IP = {p.id: p.ip for p in PODS}
ALL = [p.id for p in PODS]


class Reachability:
    """Upstream's truth-table builder."""

    def __init__(self, default=True):
        self.m = {(s, d): default for s in ALL for d in ALL}

    def expect_peer(self, src_ns=None, src_pod=None, dst_ns=None, dst_pod=None, value=True):
        for s in ALL:
            for d in ALL:
                if _fits(s, src_ns, src_pod) and _fits(d, dst_ns, dst_pod):
                    self.m[s, d] = value
        return self

    def expect(self, s, d, value):
        self.m[s, d] = value
        return self

    def all_ingress(self, d, value):
        return self.expect_peer(dst_ns=d.split("/")[0], dst_pod=d.split("/")[1], value=value)

    def all_egress(self, s, value):
        return self.expect_peer(src_ns=s.split("/")[0], src_pod=s.split("/")[1], value=value)

    def table(self):
        return {k: (True if k[0] == k[1] else v) for k, v in self.m.items()}


def _fits(pod, ns, name):
    n, p = pod.split("/")
    return (ns is None or n == ns) and (name is None or p == name)


def assert_matrix(policies, reach, port, proto="TCP"):
    pols = parse_policies(policies)
    assert check(pols, NAMESPACES, PODS) == []
    got = matrix(pols, NAMESPACES, PODS, port, proto, NODES)
    want = reach.table()
    if got.allowed != want:
        from dataclasses import replace
        exp = replace(got, allowed=want)
        raise AssertionError("observed (evaluator) differs from expected:\n"
                             + render_matrix(exp, got))


def pol(name, ns="x", pod=None, ingress=None, egress=None, types=None):
    p = {"name": name, "namespace": ns,
         "podSelector": {"matchLabels": {"pod": pod}} if pod else {}}
    if ingress is not None:
        p["ingress"] = ingress
    if egress is not None:
        p["egress"] = egress
    if types is not None:
        p["policyTypes"] = types
    return p


NSL = "kubernetes.io/metadata.name"


def test_default_deny_ingress():
    """should support a 'default-deny-ingress' policy"""
    assert_matrix([pol("deny-ingress", ingress=[])],
                  Reachability().expect_peer(dst_ns="x", value=False), 80)


def test_default_deny_all():
    """should support a 'default-deny-all' policy"""
    r = Reachability().expect_peer(dst_ns="x", value=False).expect_peer(src_ns="x", value=False)
    assert_matrix([pol("deny-all", ingress=[], egress=[], types=["Ingress", "Egress"])], r, 80)


def test_allow_from_pods_in_server_namespace_by_pod_selector():
    """should enforce policy to allow traffic from pods within server namespace based on
    PodSelector"""
    p = pol("x-a-allows-x-b", pod="a",
            ingress=[{"from": [{"podSelector": {"matchLabels": {"pod": "b"}}}]}])
    r = Reachability().all_ingress("x/a", False).expect("x/b", "x/a", True)
    assert_matrix([p], r, 80)


def test_pod_selector_match_expressions():
    """should enforce policy based on PodSelector with MatchExpressions"""
    p = pol("x-a-allows-x-b", pod="a", ingress=[{"from": [{"podSelector": {"matchExpressions": [
        {"key": "pod", "operator": "In", "values": ["b"]}]}}]}])
    assert_matrix([p], Reachability().all_ingress("x/a", False).expect("x/b", "x/a", True), 80)


def test_allow_only_from_other_namespace_by_namespace_selector():
    """should enforce policy to allow traffic only from a different namespace, based on
    NamespaceSelector"""
    p = pol("allow-client-a-via-ns-selector", pod="a",
            ingress=[{"from": [{"namespaceSelector": {"matchLabels": {NSL: "y"}}}]}])
    r = (Reachability().expect_peer(src_ns="x", dst_ns="x", dst_pod="a", value=False)
         .expect_peer(src_ns="z", dst_ns="x", dst_pod="a", value=False))
    assert_matrix([p], r, 80)


def test_pod_selector_or_namespace_selector():
    """should enforce policy based on PodSelector or NamespaceSelector (two peers: OR)"""
    p = pol("allow-ns-y-match-selector", pod="a", ingress=[{"from": [
        {"namespaceSelector": {"matchExpressions": [
            {"key": NSL, "operator": "NotIn", "values": ["x"]}]}},
        {"podSelector": {"matchLabels": {"pod": "b"}}}]}])
    r = Reachability().expect("x/a", "x/a", False).expect("x/c", "x/a", False)
    assert_matrix([p], r, 80)


def test_pod_selector_and_namespace_selector():
    """should enforce policy based on PodSelector and NamespaceSelector (one peer: AND)"""
    p = pol("allow-ns-y-podselector-and-nsselector", pod="a", ingress=[{"from": [
        {"namespaceSelector": {"matchExpressions": [
            {"key": NSL, "operator": "NotIn", "values": ["x"]}]},
         "podSelector": {"matchLabels": {"pod": "b"}}}]}])
    r = (Reachability().all_ingress("x/a", False)
         .expect("y/b", "x/a", True).expect("z/b", "x/a", True))
    assert_matrix([p], r, 80)


def test_ports():
    """should enforce policy based on Ports (81 allowed from y; 80 isolated)"""
    p = pol("allow-client-a-via-ns-selector", pod="a", ingress=[{
        "from": [{"namespaceSelector": {"matchLabels": {NSL: "y"}}}],
        "ports": [{"port": 81, "protocol": "TCP"}]}])
    r81 = (Reachability().expect_peer(src_ns="x", dst_ns="x", dst_pod="a", value=False)
           .expect_peer(src_ns="z", dst_ns="x", dst_pod="a", value=False))
    assert_matrix([p], r81, 81)
    assert_matrix([p], Reachability().all_ingress("x/a", False), 80)


def test_stacked_policies_overlapping_pod_selectors():
    """should enforce multiple, stacked policies with overlapping podSelectors (union)"""
    def allow(port, name):
        return pol(name, pod="a", ingress=[{
            "from": [{"namespaceSelector": {"matchLabels": {NSL: "y"}}}],
            "ports": [{"port": port, "protocol": "TCP"}]}])
    allowed = (Reachability().expect_peer(src_ns="x", dst_ns="x", dst_pod="a", value=False)
               .expect_peer(src_ns="z", dst_ns="x", dst_pod="a", value=False))
    one = [allow(81, "allow-client-a-via-ns-selector")]
    assert_matrix(one, allowed, 81)
    assert_matrix(one, Reachability().all_ingress("x/a", False), 80)
    both = one + [allow(80, "allow-client-a-via-ns-selector-80")]
    assert_matrix(both, allowed, 80)


def test_ingress_on_one_named_port():
    """should allow ingress access on one named port"""
    p = pol("allow-all", ingress=[{"ports": [{"port": "serve-81-tcp"}]}])
    assert_matrix([p], Reachability(), 81)
    assert_matrix([p], Reachability().expect_peer(dst_ns="x", value=False), 80)


def test_ingress_from_namespace_on_one_named_port():
    """should allow ingress access from namespace on one named port"""
    p = pol("allow-client-a-via-ns-selector-80", pod="a", ingress=[{
        "from": [{"namespaceSelector": {"matchLabels": {NSL: "y"}}}],
        "ports": [{"port": "serve-80-tcp", "protocol": "TCP"}]}])
    r = (Reachability().expect_peer(src_ns="x", dst_ns="x", dst_pod="a", value=False)
         .expect_peer(src_ns="z", dst_ns="x", dst_pod="a", value=False))
    assert_matrix([p], r, 80)
    assert_matrix([p], Reachability().all_ingress("x/a", False), 81)


def test_egress_on_one_named_port():
    """should allow egress access on one named port"""
    # upstream's helper sets policyTypes [Egress]; without it Kubernetes' default would be
    # [Ingress, Egress] (egress rules present) and isolate x for ingress too
    p = pol("allow-egress", types=["Egress"], egress=[{"ports": [{"port": "serve-80-tcp"}]}])
    assert_matrix([p], Reachability(), 80)
    assert_matrix([p], Reachability().expect_peer(src_ns="x", value=False), 81)


def test_deny_egress_from_all_pods_in_a_namespace():
    """should deny egress from all pods in a namespace"""
    p = pol("deny-egress-ns-x", egress=[], types=["Egress"])
    assert_matrix([p], Reachability().expect_peer(src_ns="x", value=False), 80)


def test_deny_egress_by_pod_selector():
    """should deny egress from pods based on PodSelector"""
    p = pol("deny-egress-pod-a", pod="a", egress=[], types=["Egress"])
    assert_matrix([p], Reachability().all_egress("x/a", False), 80)


def test_client_side_egress_deny_wins_over_server_allow():
    """should support denying of egress traffic on the client side (even if the server
    explicitly allows this traffic)"""
    egress = pol("allow-to-ns-y-pod-a", pod="a", types=["Egress"], egress=[{"to": [{
        "namespaceSelector": {"matchLabels": {NSL: "y"}},
        "podSelector": {"matchLabels": {"pod": "a"}}}]}])
    ingress = pol("allow-from-xa", ns="y", pod="b", ingress=[{"from": [{
        "namespaceSelector": {"matchLabels": {NSL: "x"}},
        "podSelector": {"matchLabels": {"pod": "a"}}}]}])
    r = (Reachability().all_egress("x/a", False).expect("x/a", "y/a", True)
         .all_ingress("y/b", False))
    assert_matrix([egress, ingress], r, 80)


def test_egress_to_cidr_with_except():
    """should enforce except clause while egress access to server in CIDR block"""
    p = pol("deny-client-a-via-except-cidr-egress-rule", pod="a", types=["Egress"], egress=[{
        "to": [{"ipBlock": {"cidr": "10.244.2.0/24", "except": [IP["y/b"] + "/32"]}}]}])
    r = (Reachability().all_egress("x/a", False)
         .expect("x/a", "y/a", True).expect("x/a", "y/c", True).expect("x/a", "z/b", True))
    assert_matrix([p], r, 80)


def test_ip_in_both_cidr_and_except_is_allowed_by_another_rule():
    """should ensure an IP overlapping both IPBlock.CIDR and IPBlock.Except is allowed"""
    p = pol("cidr-except-and-allow", pod="a", types=["Egress"], egress=[
        {"to": [{"ipBlock": {"cidr": "10.244.2.0/24", "except": [IP["y/b"] + "/32"]}}]},
        {"to": [{"ipBlock": {"cidr": IP["y/b"] + "/32"}}]}])
    r = (Reachability().all_egress("x/a", False).expect("x/a", "y/a", True)
         .expect("x/a", "y/b", True).expect("x/a", "y/c", True).expect("x/a", "z/b", True))
    assert_matrix([p], r, 80)


def test_tcp_not_allowed_when_policy_names_only_udp():
    """should not allow access by TCP when a policy specifies only UDP"""
    p = pol("allow-only-udp-ingress-on-port-81", pod="a",
            ingress=[{"ports": [{"protocol": "UDP", "port": 81}]}])
    assert_matrix([p], Reachability().all_ingress("x/a", False), 81, "TCP")
    assert_matrix([p], Reachability(), 81, "UDP")


def test_any_port_on_a_specific_protocol():
    """should enforce ingress policy allowing any port traffic to a server on a specific
    protocol"""
    p = pol("allow-ingress-by-proto", pod="a", ingress=[{"ports": [{"protocol": "TCP"}]}])
    assert_matrix([p], Reachability(), 80, "TCP")
    assert_matrix([p], Reachability(), 81, "TCP")
    assert_matrix([p], Reachability().all_ingress("x/a", False), 80, "UDP")


def test_ingress_allow_all_takes_precedence():
    """should enforce multiple ingress policies with ingress allow-all policy taking
    precedence"""
    only80 = pol("allow-client-a-via-ns-selector", pod="a",
                 ingress=[{"ports": [{"port": 80, "protocol": "TCP"}]}])
    assert_matrix([only80], Reachability().all_ingress("x/a", False), 81)
    allow_all = pol("allow-all", ingress=[{}])
    assert_matrix([only80, allow_all], Reachability(), 81)


def test_end_port_range():
    """endPort (Kubernetes 1.25 GA): port..endPort inclusive, on its protocol only"""
    p = pol("allow-80-to-81", pod="a",
            ingress=[{"ports": [{"port": 80, "endPort": 81, "protocol": "TCP"}]}])
    assert_matrix([p], Reachability(), 80)
    assert_matrix([p], Reachability(), 81)
    assert_matrix([p], Reachability().all_ingress("x/a", False), 82)
    assert_matrix([p], Reachability().all_ingress("x/a", False), 80, "UDP")


def test_allow_from_all_namespaces_and_empty_from_is_all_sources():
    """should enforce policy to allow ingress traffic from pods in all namespaces; and an empty
    `from` list means the same as none: every source"""
    p = pol("allow-from-another-ns", pod="a", ingress=[{"from": [{"namespaceSelector": {}}]}])
    assert_matrix([p], Reachability(), 80)
    assert_matrix([pol("empty-from", pod="a", ingress=[{"from": []}])], Reachability(), 80)


# --- reasons, own node, outside addresses ------------------------------------------------------

def test_reasons_name_the_policy_and_rule():
    pols = parse_policies([pol("default-deny", ingress=[]),
                           pol("allow-from-b", pod="a", ingress=[
                               {"from": [{"podSelector": {"matchLabels": {"pod": "c"}}}]},
                               {"from": [{"namespaceSelector": {"matchLabels": {NSL: "y"}},
                                          "podSelector": {"matchLabels": {"pod": "b"}}}]}])])
    ok, why = verdict(pols, NAMESPACES, PODS, "y/b", "x/a", 80, "TCP", NODES)
    assert ok and why == "allowed by x/allow-from-b ingress rule 2"
    ok, why = verdict(pols, NAMESPACES, PODS, "y/b", "x/b", 80, "TCP", NODES)
    assert not ok
    assert why == ("denied: x/default-deny selects x/b for Ingress and no rule allows y/b "
                   "on TCP/80")


def test_own_node_is_allowed_other_node_is_not():
    pols = parse_policies([pol("default-deny", ingress=[])])
    assert verdict(pols, NAMESPACES, PODS, NODES["node1"], "x/a", 80, "TCP", NODES)[0]
    ok, why = verdict(pols, NAMESPACES, PODS, NODES["node2"], "x/a", 80, "TCP", NODES)
    assert not ok and "192.168.1.12" in why
    cidr = parse_policies([pol("from-nodes", ingress=[
        {"from": [{"ipBlock": {"cidr": "192.168.1.0/24"}}]}])])
    assert verdict(cidr, NAMESPACES, PODS, NODES["node2"], "x/a", 80, "TCP", NODES)[0]


def test_policy_types_default():
    p = parse_policies([pol("e", egress=[{}]), pol("i", ingress=[{}]), pol("none")])
    assert [x.types for x in p] == [("Ingress", "Egress"), ("Ingress",), ("Ingress",)]


# --- validation -----------------------------------------------------------------------------

@pytest.mark.parametrize("bad, message", [
    ({"ingress": [{"ports": [{"endPort": 90}]}]}, "endPort needs port"),
    ({"ingress": [{"ports": [{"port": 90, "endPort": 80}]}]}, "endPort 80 must be >= port 90"),
    ({"ingress": [{"ports": [{"port": "web", "endPort": 80}]}]}, "named port"),
    ({"ingress": [{"from": [{"ipBlock": {"cidr": "10.0.0.1/8"}}]}]}, "host bits"),
    ({"ingress": [{"from": [{"ipBlock": {"cidr": "10.0.0.0/8",
                                         "except": ["11.0.0.0/16"]}}]}]}, "strict subnet"),
    ({"ingress": [{"from": [{}]}]}, "must set podSelector"),
    ({"ingress": [{"from": [{"ipBlock": {"cidr": "10.0.0.0/8"}, "podSelector": {}}]}]},
     "either ipBlock"),
    ({"ingress": [{"ports": [{"port": 70000}]}]}, "not in 1-65535"),
    ({"ingress": [{"ports": [{"protocol": "ICMP"}]}]}, "TCP"),
    ({"podSelector": {"matchExpressions": [{"key": "a", "operator": "In"}]}}, "non-empty"),
    ({"ingres": []}, "Extra inputs are not permitted"),
    ({"name": "Allow.All"}, "not a DNS label"),
])
def test_validation_messages(bad, message):
    with pytest.raises(ValueError, match=message):
        parse_policies([{"name": "p", "namespace": "x", **bad}])


def test_unknown_named_port_and_namespace():
    pols = parse_policies([pol("p", ns="w", ingress=[{"ports": [{"port": "serve-90-tcp"}]}])])
    errs = check(pols, NAMESPACES, PODS)
    assert any("namespace 'w' is not defined" in e for e in errs)
    assert any("no pod declares a TCP port named 'serve-90-tcp'" in e for e in errs)


def test_full_object_shape():
    p = parse_policies([{"metadata": {"name": "d", "namespace": "x"},
                         "spec": {"podSelector": {}, "policyTypes": ["Ingress"]}}])
    assert p[0].id == "x/d" and p[0].types == ("Ingress",)


# --- rendering and nft text -----------------------------------------------------------------

def test_render_matrix_marks_differences():
    pols = parse_policies([pol("deny", ingress=[])])
    exp = matrix(pols, NAMESPACES, PODS, 80, "TCP", NODES)
    text = render_matrix(exp)
    rows = text.splitlines()
    assert rows[0].split()[1:] == ALL and len(rows) == 10
    assert rows[ALL.index("y/a") + 1].split()[1:] == ["X"] * 3 + ["."] * 6
    from dataclasses import replace
    obs = replace(exp, allowed={**exp.allowed, ("y/a", "x/b"): True})
    cells = render_matrix(exp, obs).splitlines()[ALL.index("y/a") + 1].split()[1:]
    assert cells == ["X", "!", "X"] + ["."] * 6


def test_ruleset_shape():
    pols = parse_policies([
        pol("allow-from-b", pod="a", ingress=[{
            "from": [{"podSelector": {"matchLabels": {"pod": "b"}}},
                     {"ipBlock": {"cidr": "10.99.0.0/16", "except": ["10.99.1.0/24"]}}],
            "ports": [{"port": 80, "endPort": 90}, {"port": "serve-81-udp", "protocol": "UDP"}]}]),
        pol("deny-egress", ns="y", egress=[], types=["Egress"])])
    on1 = [p for p in PODS if p.node == "node1"]
    text = ruleset("node1", on1, PODS, NAMESPACES, pols, NODES)
    assert "table inet netlab-netpol {" in text
    assert "type filter hook forward priority filter; policy accept;" in text
    assert "ct state established,related accept" in text
    assert f"ip daddr vmap {{ {IP['x/a']} : jump ingress.x.a }}" in text
    assert "ip saddr 192.168.1.11 accept" in text
    # the peer set: x/b's IP and the ipBlock minus its except
    assert (f"set x.allow-from-b.in1 {{ type ipv4_addr; flags interval; elements = "
            f"{{ 10.99.0.0/24, 10.99.2.0/23, 10.99.4.0/22, 10.99.8.0/21, 10.99.16.0/20, "
            f"10.99.32.0/19, 10.99.64.0/18, 10.99.128.0/17, {IP['x/b']} }}; }}") in text
    assert ('ip saddr @x.allow-from-b.in1 meta l4proto tcp th dport { 80-90 } accept '
            'comment "x/allow-from-b ingress rule 1"') in text
    assert ('ip saddr @x.allow-from-b.in1 meta l4proto udp th dport 81 accept '
            'comment "x/allow-from-b ingress rule 1"') in text
    assert 'drop comment "x/a isolated for Ingress by x/allow-from-b"' in text
    assert "egress." not in text            # every pod of y is on node2
    on2 = [p for p in PODS if p.node == "node2"]
    text2 = ruleset("node2", on2, PODS, NAMESPACES, pols, NODES)
    ys = ", ".join(f"{IP[f'y/{n}']} : jump egress.y.{n}" for n in NAMES)
    assert f"ip saddr vmap {{ {ys} }}" in text2
    assert "ingress." not in text2


def test_without_rule_keeps_policy_types():
    from netlab.netpol import without_rule
    pols = parse_policies([pol("e", egress=[{"to": [{"podSelector": {}}]}])])
    left = without_rule(pols, "x/e", "egress", 1)
    assert left[0].egress == () and left[0].types == ("Ingress", "Egress")
    ok, why = verdict(left, NAMESPACES, PODS, "x/a", "y/a", 80, "TCP", NODES)
    assert not ok and "x/e selects x/a for Egress" in why
    with pytest.raises(ValueError, match="no ingress rule 1"):
        without_rule(pols, "x/e", "ingress", 1)


def test_egress_deny_breaks_dns_and_the_fix():
    """The lesson's trap: default-deny egress in x also stops x's DNS queries to kube-dns."""
    kube = Namespace("kube-system")
    dns = Pod("coredns", "kube-system", "10.244.3.53", "node2", {"k8s-app": "kube-dns"},
              (ContainerPort("dns", 53, "UDP"), ContainerPort("dns-tcp", 53, "TCP")))
    nss, pods = NAMESPACES + [kube], PODS + [dns]
    deny = pol("default-deny-egress", egress=[], types=["Egress"])
    pols = parse_policies([deny])
    ok, why = verdict(pols, nss, pods, "x/a", "kube-system/coredns", 53, "UDP", NODES)
    assert not ok and why.startswith("denied: x/default-deny-egress selects x/a for Egress")
    fix = pol("allow-dns", types=["Egress"], egress=[{
        "to": [{"namespaceSelector": {"matchLabels": {NSL: "kube-system"}},
                "podSelector": {"matchLabels": {"k8s-app": "kube-dns"}}}],
        "ports": [{"port": "dns", "protocol": "UDP"}, {"port": "dns-tcp", "protocol": "TCP"}]}])
    pols = parse_policies([deny, fix])
    for proto in ("UDP", "TCP"):
        assert verdict(pols, nss, pods, "x/a", "kube-system/coredns", 53, proto, NODES) == \
            (True, "allowed by x/allow-dns egress rule 1")
    assert not verdict(pols, nss, pods, "x/a", "y/a", 53, "UDP", NODES)[0]
    text = ruleset("node1", [p for p in pods if p.node == "node1"], pods, nss, pols, NODES)
    assert ("ip daddr @x.allow-dns.eg1 meta l4proto tcp th dport 53 return "
            'comment "x/allow-dns egress rule 1"') in text

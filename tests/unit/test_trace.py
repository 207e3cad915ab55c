"""netlab trace, pure: the walk over a hand-made snapshot of two nodes, a pod on each."""

from __future__ import annotations

from dataclasses import replace

from netlab import model
from netlab.view import snapshot
from netlab.view import trace as T
from netlab.view.snapshot import Iface, Namespace, Route, Snapshot


def lab_snapshot(node1_routes=None, forwarding=True, masquerade=()):
    """Two nodes on a switch; pod a on node1 (10.244.1.2), pod b on node2 (10.244.2.2)."""
    def node(n, routes):
        return Namespace(f"n{n}", (
            Iface("lo", "loopback", addrs=("127.0.0.1/8",)),
            Iface("eth0", "veth", peer=("sw", f"p{n}"), addrs=(f"192.168.1.1{n}/24",)),
            Iface("cni0", "bridge", addrs=(f"10.244.{n}.1/24",)),
            Iface(f"veth-{'ab'[n - 1]}", "veth", master="cni0", peer=("ab"[n - 1], "eth0")),
        ), (Route("192.168.1.0/24", None, "eth0"), Route(f"10.244.{n}.0/24", None, "cni0"),
            *routes), forwarding, masquerade if n == 1 else ())

    def pod(name, n):
        return Namespace(name, (
            Iface("lo", "loopback", addrs=("127.0.0.1/8",)),
            Iface("eth0", "veth", peer=(f"n{n}", f"veth-{name}"), addrs=(f"10.244.{n}.2/24",)),
        ), (Route(f"10.244.{n}.0/24", None, "eth0"), Route("default", f"10.244.{n}.1", "eth0")))

    switch = Namespace("sw", (Iface("br0", "bridge"),
                              Iface("p1", "veth", master="br0", peer=("n1", "eth0")),
                              Iface("p2", "veth", master="br0", peer=("n2", "eth0"))))
    to2 = (Route("10.244.2.0/24", "192.168.1.12", "eth0"),) if node1_routes is None else node1_routes
    return Snapshot((switch, node(1, to2), node(2, (Route("10.244.1.0/24", "192.168.1.11", "eth0"),)),
                     pod("a", 1), pod("b", 2)))


def with_iface(snap, ns, name, **changes):
    space = snap.ns(ns)
    space = replace(space, ifaces=tuple(replace(i, **changes) if i.name == name else i
                                        for i in space.ifaces))
    return replace(snap, namespaces=tuple(space if n.name == ns else n for n in snap.namespaces))


def test_cross_node_path_names_routes_and_bridges():
    t = T.walk(lab_snapshot(), "a", "10.244.2.2")
    assert t.arrived and t.reason == ""
    assert [h.ns for h in t.hops] == ["a", "n1", "n2", "b"]
    assert t.hops[0].route == "default via 10.244.1.1 dev eth0"
    assert t.hops[0].crossed == ("a:eth0", "n1:veth-a", "n1:cni0 (bridge)")
    assert t.hops[1].route == "10.244.2.0/24 via 192.168.1.12 dev eth0"
    assert t.hops[1].crossed == ("n1:eth0", "sw:p1", "sw:br0 (bridge)", "sw:p2", "n2:eth0")
    assert t.hops[2].route == "10.244.2.0/24 dev cni0"
    assert t.hops[2].crossed == ("n2:cni0 (bridge)", "n2:veth-b", "b:eth0")
    assert t.hops[3].note == "arrived: 10.244.2.2 is the address of eth0 here"
    text = T.render(t, {"a": "pod a"})
    assert "1. a (pod a)" in text and "arrived at 10.244.2.2 in 4 namespaces" in text


def test_a_missing_route_stops_in_its_namespace_and_is_named():
    expected = lab_snapshot()
    t = T.walk(lab_snapshot(node1_routes=()), "a", "10.244.2.2", expected=expected)
    assert not t.arrived and [h.ns for h in t.hops] == ["a", "n1"]
    assert t.reason.startswith("n1: no route to 10.244.2.2 (Network is unreachable)")
    assert "the plan has `10.244.2.0/24 via 192.168.1.12 dev eth0` here, missing" in t.reason
    assert "STOPPED: n1: no route" in T.render(t)


def test_an_unreachable_route_rejects():
    t = T.walk(lab_snapshot(node1_routes=(Route("10.244.2.0/24", type="unreachable"),)),
               "a", "10.244.2.2")
    assert not t.arrived
    assert t.reason == "n1: route `unreachable 10.244.2.0/24` rejects 10.244.2.2 (No route to host)"


def test_an_interface_down_on_the_way():
    t = T.walk(with_iface(lab_snapshot(), "n2", "veth-b", up=False), "a", "10.244.2.2")
    assert not t.arrived and t.hops[-1].ns == "n2"
    assert t.reason.startswith("interface n2 veth-b on the way is down")
    t = T.walk(with_iface(lab_snapshot(), "a", "eth0", up=False), "a", "10.244.2.2")
    assert t.reason == "a: interface eth0 is down (ip -n a link set eth0 up)"


def test_nobody_owns_the_next_hop():
    wrong = (Route("10.244.2.0/24", "192.168.1.99", "eth0"),)
    t = T.walk(lab_snapshot(node1_routes=wrong), "a", "10.244.2.2")
    assert not t.arrived
    assert t.reason.startswith("n1: no namespace behind eth0 has the address 192.168.1.99")
    # A pod's own subnet, an address nobody holds: the neighbour never answers.
    t = T.walk(lab_snapshot(), "a", "10.244.1.77")
    assert t.reason.startswith("a: no namespace behind eth0 has the address 10.244.1.77")


def test_a_node_that_does_not_forward():
    t = T.walk(lab_snapshot(forwarding=False), "a", "10.244.2.2")
    assert not t.arrived and t.hops[-1].ns == "n1"
    assert "n1 does not forward packets" in t.reason


def test_a_routing_loop_is_caught():
    loop = (Route("10.244.2.0/24", "192.168.1.12", "eth0"),)
    snap = lab_snapshot(node1_routes=loop)
    n2 = snap.ns("n2")
    n2 = replace(n2, routes=tuple(r for r in n2.routes if r.dev != "cni0") +
                 (Route("10.244.2.0/24", "192.168.1.11", "eth0"),))
    snap = replace(snap, namespaces=tuple(n2 if n.name == "n2" else n for n in snap.namespaces))
    t = T.walk(snap, "a", "10.244.2.2")
    assert not t.arrived and t.reason == "routing loop: the packet came back to n1"


def test_to_a_node_and_to_localhost():
    assert T.walk(lab_snapshot(), "a", "192.168.1.12").hops[-1].ns == "n2"
    t = T.walk(lab_snapshot(), "a", "127.0.0.1")
    assert t.arrived and len(t.hops) == 1


def test_nat_rules_on_the_way_are_listed_when_they_match():
    rules = snapshot.nat_lines(
        "table ip nat {\n"
        "  chain postrouting {\n"
        "    type nat hook postrouting priority srcnat; policy accept;\n"
        "    ip saddr 10.244.1.0/24 ip daddr != 10.244.0.0/16 masquerade\n"
        "    ip saddr 172.17.0.0/16 masquerade\n"
        "  }\n}\n")
    assert rules == ("chain postrouting: ip saddr 10.244.1.0/24 ip daddr != 10.244.0.0/16 masquerade",
                     "chain postrouting: ip saddr 172.17.0.0/16 masquerade")
    snap = lab_snapshot(masquerade=rules)
    # To another pod: the first rule excludes the cluster range, the second another source.
    assert T.walk(snap, "a", "10.244.2.2").hops[1].nat == ()
    out = (Route("default", "192.168.1.12", "eth0"),)
    snap = lab_snapshot(node1_routes=out, masquerade=rules)
    t = T.walk(snap, "a", "192.168.1.12")
    assert t.hops[1].nat == (rules[0],)
    assert "nat      chain postrouting: ip saddr 10.244.1.0/24" in T.render(t)


def test_through_a_vxlan_tunnel():
    def node(n, other):
        return Namespace(f"n{n}", (
            Iface("flannel.1", "vxlan", vni=1, addrs=(f"10.244.{n}.0/32",)),
            Iface("cni0", "bridge", addrs=(f"10.244.{n}.1/24",))),
            (Route(f"10.244.{other}.0/24", f"10.244.{other}.0", "flannel.1"),
             Route(f"10.244.{n}.0/24", None, "cni0")), True)
    t = T.walk(Snapshot((node(1, 2), node(2, 1))), "n1", "10.244.2.1")
    assert t.arrived
    assert t.hops[0].crossed == ("n1:flannel.1 (vxlan)", "n2:flannel.1 (vxlan)")


def test_live_route_get_answer_names_the_table_entry():
    ns = lab_snapshot().ns("n1")
    got = T.from_route_get(ns, "10.244.2.2", {"dev": "eth0", "gateway": "192.168.1.12",
                                              "src": "192.168.1.11"})
    assert got.route.text() == "10.244.2.0/24 via 192.168.1.12 dev eth0" and got.error is None
    got = T.from_route_get(ns, "8.8.8.8", {"error": "Network is unreachable"})
    assert got.error == "Network is unreachable" and got.route is None


def test_plan_snapshot_holds_what_up_builds():
    lab = model.load(None, name="p")
    snap = snapshot.of_plan(lab)
    node1 = snap.ns("p-node1")
    assert node1.forwarding and node1.iface("veth-web").master == "cni0"
    assert node1.iface("veth-web").peer == ("p-web", "eth0")
    assert Route("10.244.2.0/24", "192.168.1.12", "eth0") in node1.routes
    assert Route("10.244.1.0/24", None, "cni0", src="10.244.1.1") in node1.routes
    t = T.walk(snap, "p-web", lab.pod("db").ip)
    assert t.arrived and [h.ns for h in t.hops] == ["p-web", "p-node1", "p-node3", "p-db"]

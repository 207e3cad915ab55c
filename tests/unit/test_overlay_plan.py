"""Unit tests (no root) of the plan for host-gw, vxlan and a routed underlay."""

from __future__ import annotations

import pytest

from conftest import SCENARIOS
from netlab import model, plan as P

NEW_OPS = (P.LinkMtu, P.VxlanAdd, P.NeighAdd, P.FdbAppend, P.OnlinkRouteAdd)


def of(ops, kind):
    return [op for op in ops if isinstance(op, kind)]


def vxlan_three_node() -> model.Lab:
    text = model.DEFAULT_SCENARIO.read_text().replace("backend: host-gw", "backend: vxlan")
    return model.parse(text, "v.yaml", "v")


def test_host_gw_plan_has_no_overlay_no_mtu_and_routes_via_node_ips():
    lab = model.load(None, "h")
    ops = P.build(lab)
    assert not [op for op in ops if isinstance(op, NEW_OPS)]
    pod_routes = {(op.ns, op.dst, op.via) for op in of(ops, P.RouteAdd) if op.dst != "default"}
    assert pod_routes == {(n.ns, o.pod_cidr, o.ip) for n in lab.nodes for o in lab.nodes
                          if o is not n}
    assert [op.ifname for op in of(ops, P.BridgeAdd) if op.ns == lab.underlay_ns] == ["br0"]


def test_vxlan_plan_builds_flannel_1_with_entries_for_every_other_node():
    lab = vxlan_three_node()
    ops = P.build(lab)
    vx = of(ops, P.VxlanAdd)
    assert [(op.ns, op.ifname, op.vni, op.local, op.dev, op.port, op.mac, op.mtu) for op in vx] == [
        (n.ns, "flannel.1", 1, n.ip, "eth0", 4789, n.vtep_mac, 1450) for n in lab.nodes]
    assert {(op.ns, op.ifname, op.address, op.prefixlen) for op in of(ops, P.AddrAdd)
            if op.ifname == "flannel.1"} == {(n.ns, "flannel.1", n.vtep, 32) for n in lab.nodes}
    pairs = [(n, o) for n in lab.nodes for o in lab.nodes if o is not n]
    assert of(ops, P.NeighAdd) == [P.NeighAdd(n.ns, "flannel.1", o.vtep, o.vtep_mac)
                                   for n, o in pairs]
    assert of(ops, P.FdbAppend) == [P.FdbAppend(n.ns, "flannel.1", o.vtep_mac, o.ip)
                                    for n, o in pairs]
    assert of(ops, P.OnlinkRouteAdd) == [P.OnlinkRouteAdd(n.ns, o.pod_cidr, o.vtep, "flannel.1")
                                         for n, o in pairs]
    # No host-gw route: pod subnets go through the overlay only.
    assert not [op for op in of(ops, P.RouteAdd) if op.dst.startswith("10.244.")]


def test_vxlan_plan_sets_the_pod_mtu_on_cni0_and_both_veth_ends():
    lab = vxlan_three_node()
    mtus = {(op.ns, op.ifname): op.mtu for op in of(P.build(lab), P.LinkMtu)}
    want = {(n.ns, "cni0"): 1450 for n in lab.nodes}
    for p in lab.pods:
        want[(lab.node(p.node).ns, p.host_veth)] = want[(p.ns, "eth0")] = 1450
    assert mtus == want


def test_the_overlay_comes_after_the_links_it_uses():
    ops = P.build(vxlan_three_node())
    pos = {op: i for i, op in enumerate(ops)}
    for vx in of(ops, P.VxlanAdd):
        eth0_up = next(i for op, i in pos.items()
                       if isinstance(op, P.LinkUp) and (op.ns, op.ifname) == (vx.ns, "eth0"))
        up = next(i for op, i in pos.items()
                  if isinstance(op, P.LinkUp) and (op.ns, op.ifname) == (vx.ns, "flannel.1"))
        assert eth0_up < pos[vx] < up
        # onlink needs the device up; the neighbour entry needs it to exist.
        assert all(up < pos[r] for r in of(ops, P.OnlinkRouteAdd) if r.ns == vx.ns)


def test_routed_underlay_plan_adds_the_router_and_routes_between_segments():
    lab = model.load(SCENARIOS / "overlay.yaml", "o")
    ops = P.build(lab)
    assert P.NetnsAdd("o-router", "o") in ops
    assert P.Sysctl("o-router", "net.ipv4.ip_forward", "1") in ops
    assert [op.ifname for op in of(ops, P.BridgeAdd) if op.ns == lab.underlay_ns] == ["br0", "br1"]
    router_addrs = {(op.ifname, op.address) for op in of(ops, P.AddrAdd) if op.ns == "o-router"}
    assert router_addrs == {("eth0", "192.168.1.1"), ("eth1", "192.168.2.1")}
    for node in lab.nodes:
        up = next(op for op in of(ops, P.LinkUp) if (op.ns, op.ifname) == (lab.underlay_ns,
                                                                          node.uplink))
        assert up.master == f"br{node.segment}"
    seg_routes = {(op.ns, op.dst, op.via) for op in of(ops, P.RouteAdd)
                  if op.dst.startswith("192.")}
    assert seg_routes == {("o-node1", "192.168.2.0/24", "192.168.1.1"),
                          ("o-node2", "192.168.2.0/24", "192.168.1.1"),
                          ("o-node3", "192.168.1.0/24", "192.168.2.1")}


@pytest.mark.parametrize("op,text", [
    (P.LinkMtu("n", "cni0", 1450), "ip -n n link set dev cni0 mtu 1450"),
    (P.VxlanAdd("n", "flannel.1", 1, "192.168.1.11", "eth0", 4789, "0a:58:c0:a8:01:0b", 1450),
     "ip -n n link add flannel.1 address 0a:58:c0:a8:01:0b mtu 1450 type vxlan id 1 "
     "local 192.168.1.11 dev eth0 dstport 4789 nolearning"),
    (P.NeighAdd("n", "flannel.1", "10.244.2.0", "0a:58:c0:a8:01:0c"),
     "ip -n n neigh add 10.244.2.0 lladdr 0a:58:c0:a8:01:0c dev flannel.1 nud permanent"),
    (P.FdbAppend("n", "flannel.1", "0a:58:c0:a8:01:0c", "192.168.1.12"),
     "bridge -n n fdb append 0a:58:c0:a8:01:0c dev flannel.1 dst 192.168.1.12 self permanent"),
    (P.OnlinkRouteAdd("n", "10.244.2.0/24", "10.244.2.0", "flannel.1"),
     "ip -n n route add 10.244.2.0/24 via 10.244.2.0 dev flannel.1 onlink"),
])
def test_new_operations_render_as_iproute2(op, text):
    assert op.ip() == text


def test_plan_script_creates_the_overlay():
    lab = model.load(SCENARIOS / "overlay.yaml", "o")
    script = P.script(lab, P.build(lab))
    assert "ip netns add o-router" in script
    assert script.count("type vxlan id 1 ") == len(lab.nodes)
    assert script.count("fdb append") == len(lab.nodes) * (len(lab.nodes) - 1)

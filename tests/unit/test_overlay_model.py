"""Unit tests (no root) of the model's cross-node fields: backend, MTU, underlay segments."""

from __future__ import annotations

import ipaddress

import pytest

from conftest import SCENARIOS
from netlab import model
from netlab.core.errors import ScenarioError

ROUTED = """\
name: r
network:
  underlay:
    - 192.168.1.0/24
    - 192.168.2.0/24
  backend: {backend}
nodes:
  - {{name: node1, ip: 192.168.1.11}}
  - {{name: node2, ip: 192.168.1.12}}
  - {{name: node3, ip: 192.168.2.13}}
pods:
  - {{name: a, node: node1}}
  - {{name: c, node: node3}}
"""


def refused(text: str) -> ScenarioError:
    with pytest.raises(ScenarioError) as e:
        model.parse(text, "s.yaml")
    assert e.value.code == 2
    return e.value


def test_default_scenario_stays_host_gw_on_one_flat_segment():
    lab = model.load(None)
    assert lab.backend == "host-gw" and lab.mtu == 1500
    assert lab.underlay == "192.168.1.0/24" and lab.segments == ("192.168.1.0/24",)
    assert lab.router_ns == "" and lab.router_ips == ()
    assert all(p.mtu == 1500 for p in lab.pods) and all(n.segment == 0 for n in lab.nodes)
    assert model.largest_ping_payload(lab) == 1472


def test_vxlan_lowers_the_pod_mtu_by_the_50_byte_header():
    text = model.DEFAULT_SCENARIO.read_text().replace("backend: host-gw", "backend: vxlan")
    lab = model.parse(text, "v.yaml")
    assert lab.backend == "vxlan" and lab.mtu == 1450
    assert {p.mtu for p in lab.pods} == {1450}
    assert model.largest_ping_payload(lab) == 1450 - 28


def test_vtep_address_and_mac_are_derived_from_the_model():
    lab = model.load(SCENARIOS / "overlay.yaml")
    for node in lab.nodes:
        assert node.vtep == str(ipaddress.IPv4Network(node.pod_cidr).network_address)
        first = int(node.vtep_mac.split(":")[0], 16)
        assert first & 2 and not first & 1   # locally administered, unicast
        assert node.vtep_mac == model.vtep_mac(node.ip)
    assert len({n.vtep_mac for n in lab.nodes}) == len(lab.nodes)
    other = model.load(SCENARIOS / "overlay.yaml", "other")   # the same under any lab name
    assert [(n.vtep, n.vtep_mac) for n in other.nodes] == [(n.vtep, n.vtep_mac) for n in lab.nodes]


def test_overlay_scenario_is_vxlan_on_a_routed_underlay():
    lab = model.load(SCENARIOS / "overlay.yaml")
    assert lab.backend == "vxlan" and len(lab.segments) == 2
    assert lab.router_ns == "overlay-router" and lab.router_ns in lab.namespaces
    assert lab.router_ips == ("192.168.1.1", "192.168.2.1")
    assert {n.segment for n in lab.nodes} == {0, 1}
    assert {p.node for p in lab.pods} == {n.name for n in lab.nodes}
    assert lab.node("node3").prefixlen == 24


def test_host_gw_across_segments_is_refused_naming_the_nodes_and_the_line():
    err = refused(ROUTED.format(backend="host-gw"))
    assert err.line == 6
    assert "node1, node2 (192.168.1.0/24) and node3 (192.168.2.0/24) share no segment" in str(err)
    assert str(err).endswith("use backend: vxlan or put them on one segment")


def test_host_gw_on_several_segments_is_fine_when_the_nodes_share_one():
    text = ROUTED.format(backend="host-gw").replace("192.168.2.13", "192.168.1.13")
    lab = model.parse(text, "s.yaml")
    assert lab.router_ns == "r-router" and {n.segment for n in lab.nodes} == {0}


def test_vxlan_across_segments_is_accepted():
    lab = model.parse(ROUTED.format(backend="vxlan"), "s.yaml")
    assert [n.segment for n in lab.nodes] == [0, 0, 1]


@pytest.mark.parametrize("old,new,line,words", [
    ("  - {name: node3, ip: 192.168.2.13}", "  - {name: node3}", 10, "give `ip:`"),
    ("192.168.2.13", "192.168.3.13", 10, "not a host address of any underlay segment"),
    ("192.168.2.13", "192.168.2.1", 10, "the lab router's address"),
    ("    - 192.168.2.0/24", "    - 192.168.1.128/25", 5,
     "overlaps segment 192.168.1.0/24 (line 4)"),
    ("  underlay:\n    - 192.168.1.0/24\n    - 192.168.2.0/24", "  underlay: 7", 3,
     "or a list of segments"),
    ("  underlay:\n    - 192.168.1.0/24\n    - 192.168.2.0/24", "  underlay: []", 3,
     "or a list of segments"),
    ("    - 192.168.2.0/24", "    - 192.168.2.0", 3, "has no prefix length"),
    ("name: node1,", "name: br1,", 8, "the underlay's bridge 'br1'"),
])
def test_bad_routed_underlays_are_refused_with_line_and_fix(old, new, line, words):
    text = ROUTED.format(backend="vxlan")
    assert old in text
    err = refused(text.replace(old, new))
    assert err.line == line and words in str(err), str(err)


def test_unknown_backend_is_refused():
    err = refused(ROUTED.format(backend="flannel"))
    assert err.line == 6 and "'flannel' is not allowed" in str(err) and "'vxlan'" in str(err)


def test_pod_subnet_may_not_overlap_any_segment():
    text = ROUTED.format(backend="vxlan").replace("192.168.2.13}", "192.168.2.13, "
                                                  "podCIDR: 192.168.2.128/25}")
    assert "overlaps the underlay 192.168.2.0/24" in str(refused(text))


def test_host_gw_by_default_across_segments_is_refused_at_the_underlay_line():
    err = refused(ROUTED.format(backend="host-gw").replace("  backend: host-gw\n", ""))
    assert err.line == 3 and "use backend: vxlan" in str(err)

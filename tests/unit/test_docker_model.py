"""Docker containers, hostNetwork pods and the outside world in the scenario model (pure, no root)."""

from __future__ import annotations

import pytest

from conftest import SCENARIOS
from netlab import model
from netlab.features import outside
from netlab.core.errors import ScenarioError
from netlab.features.docker import PortMap, parse_port

BASE = """\
nodes:
  - name: node1
  - name: node2
"""


def parse(extra: str, base: str = BASE) -> model.Lab:
    return model.parse(base + extra, "s.yaml", "t")


def refused(extra: str, base: str = BASE) -> str:
    with pytest.raises(ScenarioError) as e:
        parse(extra, base)
    assert e.value.code == 2
    return str(e.value)


def test_mixed_scenario_modes_addresses_and_namespaces():
    lab = model.load(SCENARIOS / "mixed.yaml", "m")
    c = {x.name: x for x in lab.containers}
    assert {n: x.mode for n, x in c.items()} == {
        "island": "none", "nginx": "bridge", "agent": "host", "cache": "bridge"}
    assert (c["nginx"].ip, c["nginx"].ns, c["nginx"].host_veth) == ("172.17.0.2", "m-nginx",
                                                                     "veth-nginx")
    assert c["cache"].ip == "172.18.0.2"                 # node2 has its own dockerCIDR
    assert (c["agent"].ip, c["agent"].ns) == ("192.168.1.11", "m-node1")
    assert (c["island"].ip, c["island"].host_veth) == (None, None)
    assert c["nginx"].published == (PortMap(8081, 8080, "tcp"), PortMap(5353, 8080, "udp"))
    assert c["island"].published == () and c["agent"].published == ()
    assert c["island"].ports == (PortMap(9090, 8080, "tcp"),)
    exporter = lab.pod("exporter")
    assert (exporter.host_network, exporter.ns, exporter.ip) == (True, "m-node2", "192.168.1.12")
    assert lab.node("node1").docker_gw == "172.17.0.1" and lab.node("node2").docker_gw == "172.18.0.1"
    assert lab.outside == outside.Outside(ns="m-outside", ip="203.0.113.10", port=80,
                                        router="192.168.1.254", prefixlen=24)
    assert set(lab.namespaces) == {"m-underlay", "m-node1", "m-node2", "m-web", "m-client",
                                   "m-island", "m-nginx", "m-cache", "m-outside"}
    assert len(lab.namespaces) == len(set(lab.namespaces))


def test_defaults_bridge_mode_docker_subnet_and_outside():
    lab = parse("containers:\n  - {name: a, node: node1, image: netexec}\n"
                "  - {name: b, node: node1, command: [sleep, infinity]}\noutside: true\n")
    a, b = lab.containers
    assert (a.mode, a.ip, b.ip) == ("bridge", "172.17.0.2", "172.17.0.3")
    assert a.process.port == 8080 and a.process.argv[-2:] == ("--udp-port", "8080")
    assert b.process.argv == ("sleep", "infinity") and b.process.port is None
    assert lab.outside.ip == "203.0.113.10" and lab.outside.router == "192.168.1.254"
    assert parse("outside: false\n").outside is None
    assert parse("outside: {ip: 198.51.100.7, port: 8080}\n").outside.port == 8080


def test_a_scenario_without_containers_is_unchanged():
    lab = model.load(SCENARIOS / "three-node.yaml")
    assert lab.containers == () and lab.outside is None
    assert all(not p.host_network for p in lab.pods)


@pytest.mark.parametrize("text, expected", [
    ("8081:8080", PortMap(8081, 8080, "tcp")),
    ("5353:53/udp", PortMap(5353, 53, "udp")),
    ("80:80/tcp", PortMap(80, 80, "tcp")),
    ("65535:1", PortMap(65535, 1, "tcp")),
])
def test_parse_port(text, expected):
    assert parse_port(text) == expected


@pytest.mark.parametrize("value, message", [
    ("8080", "write hostPort:containerPort"),
    ("0:80", "port 0 is out of range"),
    ("80:70000", "port 70000 is out of range"),
    ("80:80/sctp", "write hostPort:containerPort"),
    ("a:b", "write hostPort:containerPort"),
    (4890, 'write it quoted, like "8081:8080"'),
])
def test_parse_port_refuses(value, message):
    with pytest.raises(ValueError, match=message):
        parse_port(value)


def test_unquoted_sexagesimal_port_is_refused_with_its_line():
    msg = refused("containers:\n  - name: a\n    node: node1\n    image: netexec\n"
                  "    ports:\n      - 81:30\n")
    assert msg.startswith("s.yaml:9: container 'a': 4890 is a number") and "quoted" in msg


@pytest.mark.parametrize("extra, message", [
    ("containers:\n  - {name: web, node: node9, image: netexec}\n",
     "s.yaml:5: container 'web' is on unknown node 'node9': did you mean 'node"),
    ("pods:\n  - {name: web, node: node1}\ncontainers:\n  - {name: web, node: node1, image: netexec}\n",
     "s.yaml:7: the name 'web' is used twice (line 5): nodes, pods and containers need"),
    ("containers:\n  - {name: node2, node: node1, image: netexec}\n",
     "s.yaml:5: the name 'node2' is used twice (line 3)"),
    ("containers:\n  - {name: a, node: node1, image: netexec, ports: ['80:1']}\n"
     "  - {name: b, node: node1, image: netexec, ports: ['80:2']}\n",
     "s.yaml:6: container 'b': port 80/tcp on node 'node1' is already taken by container 'a'"),
    ("containers:\n  - {name: a, node: node1, network: host, image: netexec, port: 9000}\n"
     "  - {name: b, node: node1, image: netexec, ports: ['9000:80']}\n",
     "s.yaml:6: container 'b': port 9000/tcp on node 'node1' is already taken by container 'a' "
     "(host mode)"),
    ("pods:\n  - name: p\n    node: node1\n    hostNetwork: true\n    containers:\n"
     "      - {name: s, image: netexec, port: 9100}\n"
     "containers:\n  - {name: b, node: node1, image: netexec, ports: ['9100:80']}\n",
     "port 9100/tcp on node 'node1' is already taken by pod 'p' (hostNetwork)"),
    ("containers:\n  - {name: a, node: node1, image: netexec, ports: ['80']}\n",
     "s.yaml:5: container 'a': '80' is not a published port"),
    ("containers:\n  - {name: a, node: node1, network: overlay, image: netexec}\n",
     "s.yaml:5: container 'a': network: 'overlay' is not allowed here"),
    ("containers:\n  - {name: a, node: node1, netwrok: none, image: netexec}\n",
     "s.yaml:5: container 'a': unknown field 'netwrok': did you mean 'network'?"),
    ("containers:\n  - {name: a, node: node1, image: netexec, command: [sh]}\n",
     "give either `image: netexec`"),
    ("containers:\n  - {name: a, node: node1}\n", "give either `image: netexec`"),
    ("containers:\n  - {name: a, node: node1, image: netexec, port: 0}\n", "s.yaml:5: container 'a': port: Input should be greater than or equal to 1"),
    ("containers:\n  - {name: outside, node: node1, image: netexec}\n", "is reserved"),
    ("pods:\n  - {name: p, node: node1, hostNetwork: true, ip: 10.244.1.9}\n",
     "s.yaml:5: pod 'p' has hostNetwork: true and so the node's IP 192.168.1.11: remove `ip:`"),
    ("outside: {ip: 192.168.1.50}\n",
     "s.yaml:4: outside ip 192.168.1.50 is inside the underlay 192.168.1.0/24"),
    ("outside: {ip: 172.17.3.3}\n", "is inside node 'node1''s dockerCIDR 172.17.0.0/16"),
    ("outside: {ip: nowhere}\n", "'nowhere' is not an IPv4 address"),
    ("outside: {adress: 203.0.113.9}\n", "s.yaml:4: unknown field 'adress': known fields: ip, port"),
])
def test_bad_containers_are_refused_with_line_and_fix(extra, message):
    assert message in refused(extra)


def test_same_host_port_other_protocol_other_node_or_none_mode_is_fine():
    lab = parse("containers:\n"
                "  - {name: a, node: node1, image: netexec, ports: ['53:53', '53:53/udp']}\n"
                "  - {name: b, node: node2, image: netexec, ports: ['53:53']}\n"
                "  - {name: c, node: node1, network: none, image: netexec, ports: ['53:53']}\n"
                "  - {name: d, node: node1, network: host, command: [sleep, infinity],"
                " ports: ['53:53']}\n")
    assert [len(c.published) for c in lab.containers] == [2, 1, 0, 0]


@pytest.mark.parametrize("node_extra, message", [
    ("    dockerCIDR: 192.168.0.0/16\n", "s.yaml:3: node 'node1': dockerCIDR 192.168.0.0/16 overlaps "
                                        "the underlay 192.168.1.0/24"),
    ("    dockerCIDR: 10.244.0.0/20\n", "dockerCIDR 10.244.0.0/20 overlaps network.podCIDR"),
    ("    dockerCIDR: 172.17.0.1/16\n", "has host bits set: did you mean 172.17.0.0/16?"),
])
def test_bad_docker_cidr(node_extra, message):
    base = "nodes:\n  - name: node1\n" + node_extra
    assert message in refused("", base)


def test_docker_subnet_runs_out():
    base = "nodes:\n  - name: node1\n    dockerCIDR: 172.20.0.0/30\n"
    msg = refused("containers:\n  - {name: a, node: node1, image: netexec}\n"
                  "  - {name: b, node: node1, image: netexec}\n", base)
    assert "s.yaml:6: node 'node1''s dockerCIDR 172.20.0.0/30 has no address left" in msg


def test_node_on_the_routers_address_is_refused():
    base = "nodes:\n  - name: node1\n    ip: 192.168.1.254\n"
    assert "s.yaml:3: node 'node1': ip 192.168.1.254 is the outside world's router" in \
        refused("outside: true\n", base)

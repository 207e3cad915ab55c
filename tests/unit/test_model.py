"""The scenario model: parsing, allocation, derived names, and errors with file and line."""

from __future__ import annotations

import textwrap

import pytest

from netlab import model
from netlab.core.errors import ScenarioError

BASE = """\
name: demo
nodes:
  - name: node1
  - name: node2
pods:
  - name: a
    node: node1
  - name: b
    node: node2
    containers:
      - {name: server, image: netexec, port: 9000}
"""


def parse(text: str, name=None) -> model.Lab:
    return model.parse(textwrap.dedent(text), "s.yaml", name)


def error(text: str) -> str:
    with pytest.raises(ScenarioError) as e:
        parse(text)
    return str(e.value)


def test_default_scenario_matches_the_issue():
    lab = model.load(None)
    assert lab.name == "three-node"
    assert [(n.name, n.ip, n.pod_cidr, n.gateway) for n in lab.nodes] == [
        ("node1", "192.168.1.11", "10.244.1.0/24", "10.244.1.1"),
        ("node2", "192.168.1.12", "10.244.2.0/24", "10.244.2.1"),
        ("node3", "192.168.1.13", "10.244.3.0/24", "10.244.3.1"),
    ]
    assert all(len(lab.pods_on(n.name)) >= 2 for n in lab.nodes)
    web = lab.pod("web")
    assert [c.name for c in web.containers] == ["server", "shell"]
    assert web.ns == "three-node-web"


def test_defaults_allocate_addresses_deterministically():
    lab = parse(BASE)
    assert [n.ip for n in lab.nodes] == ["192.168.1.11", "192.168.1.12"]
    assert [n.pod_cidr for n in lab.nodes] == ["10.244.1.0/24", "10.244.2.0/24"]
    assert [p.ip for p in lab.pods] == ["10.244.1.2", "10.244.2.2"]
    assert lab.pod("b").containers[0].port == 9000
    assert parse(BASE) == parse(BASE)


def test_explicit_pod_ip_is_skipped_by_allocation():
    lab = parse(BASE + "  - {name: c, node: node1, ip: 10.244.1.2}\n")
    assert lab.pod("c").ip == "10.244.1.2"
    assert lab.pod("a").ip == "10.244.1.3"


def test_name_override_renames_every_namespace():
    lab = parse(BASE, name="other")
    assert lab.name == "other"
    assert all(ns.startswith("other-") for ns in lab.namespaces)


def test_lab_name_from_file_when_not_given():
    lab = model.parse("nodes: [{name: n1}]\n", "dir/my-lab.yaml")
    assert lab.name == "my-lab"


@pytest.mark.parametrize("name,prefix,expected", [
    ("web", "veth-", "veth-web"),
    ("frontend", "veth-", "veth-frontend"),
])
def test_short_interface_names_are_kept(name, prefix, expected):
    assert model.ifname_for(name, prefix) == expected


def test_long_interface_names_fit_the_kernel_and_stay_distinct():
    a = model.ifname_for("frontend-deployment-a", "veth-")
    b = model.ifname_for("frontend-deployment-b", "veth-")
    assert len(a) <= 15 and len(b) <= 15 and a != b and a.startswith("veth-front")


@pytest.mark.parametrize("text,line,fragment", [
    ("nodes:\n  - name: node1\n    podCidr: 10.244.1.0/24\n", 3, "did you mean 'podCIDR'"),
    ("nodes:\n  - name: node1\n  - name: node1\n", 3, "used twice"),
    ("nodes:\n  - name: n1\npods:\n  - {name: p, node: n9}\n", 4, "unknown node 'n9'"),
    ("nodes:\n  - {name: n1, podCIDR: 10.244.1.0/24}\n  - {name: n2, podCIDR: 10.244.1.128/25}\n",
     3, "overlaps"),
    ("nodes:\n  - {name: n1, podCIDR: 10.244.1.5/24}\n", 2, "did you mean 10.244.1.0/24"),
    ("nodes:\n  - name: n1\npods:\n  - {name: p, node: n1, ip: 10.9.9.9}\n", 4, "outside"),
    ("nodes:\n  - name: N_1\n", 2, "not a valid name"),
    ("nodes:\n  - name: n1\npods:\n  - name: p\n    node: n1\n    containers:\n"
     "      - {name: c, image: netexec, port: 70000}\n", 7, "less than or equal to 65535"),
    ("nodes:\n  - name: n1\n    ip: [1, 2]\n", 3, "ip"),
    ("nodes: [\n", 2, "YAML syntax error"),
    ("a: &x [1]\nb: *x\nnodes: [{name: n1}]\n", 2, "aliases"),
    ("", 1, "empty"),
    ("nodes: []\n", 1, "at least one node"),
    ("nodes:\n  - name: underlay\n", 2, "reserved"),
    ("nodes:\n  - {name: n1, ip: 192.168.1.11}\n  - {name: n2, ip: 192.168.1.11}\n", 3,
     "already used"),
    ("nodes:\n  - name: n1\npods:\n  - name: p\n    node: n1\n    containers:\n"
     "      - {name: c}\n", 7, "either `image: netexec`"),
])
def test_errors_name_the_line_and_the_fix(text, line, fragment):
    message = error(text)
    assert message.startswith(f"s.yaml:{line}: "), message
    assert fragment in message, message
    assert "\n" not in message


def test_non_utf8_and_huge_files_are_refused(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_bytes(b"nodes:\n  - name: n\xff1\n")
    with pytest.raises(ScenarioError, match=r"bad.yaml:2: byte 0xff is not UTF-8"):
        model.load(bad)
    huge = tmp_path / "huge.yaml"
    huge.write_bytes(b"#" * (model.MAX_BYTES + 10))
    with pytest.raises(ScenarioError, match="larger than 1 MiB"):
        model.load(huge)
    with pytest.raises(ScenarioError, match="no such file"):
        model.load(tmp_path / "missing.yaml")

"""netlab graph, pure: every scenario's picture shows every pod, IP, bridge and veth, and its
lines are the plan's; Mermaid; colours from verify results; the CLI's errors."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from pathlib import Path

import pytest

from conftest import netlab
from graph_parse import drawn_edges, expected, parse_dot, parse_svg
from netlab.view import graph as G
from netlab import model
from netlab.view import snapshot
from netlab.core.errors import NetlabError
from netlab.view.snapshot import Iface, Namespace, Route, Snapshot

SCENARIO_FILES = sorted(Path(model.DEFAULT_SCENARIO).parent.glob("*.yaml"))
needs_dot = pytest.mark.skipif(shutil.which("dot") is None, reason="Graphviz dot not installed")


def picture(lab, results=None):
    return G.build(lab, snapshot.of_plan(lab), results)


@pytest.mark.parametrize("path", SCENARIO_FILES, ids=lambda p: p.name)
def test_dot_of_every_scenario_shows_the_plan(path):
    lab = model.load(path)
    want = expected(lab)
    dot = parse_dot(G.to_dot(picture(lab)))
    clusters = "\n".join(dot["clusters"].values())
    labels = "\n".join(dot["nodes"].values())
    for pod in want["pods"]:   # a hostNetwork pod has no box: it shows in its node's note
        assert f"pod {pod} " in clusters + labels
    for ip in want["ips"]:
        assert f"{ip}/" in labels, ip
    assert want["bridges"] <= set(dot["nodes"])
    edge_labels = {label for _, _, label in dot["edges"]}
    for a, b in want["veths"]:
        assert f"{a} \u2194 {b}" in edge_labels
    assert drawn_edges(dot) == want["edges"]
    assert len(dot["edges"]) == len(want["edges"])   # nothing drawn twice or extra
    # Every line ends on a shape that is drawn.
    assert {x for a, b, _ in dot["edges"] for x in (a, b)} <= set(dot["nodes"])


@needs_dot
@pytest.mark.parametrize("path", SCENARIO_FILES, ids=lambda p: p.name)
def test_svg_of_every_scenario_shows_the_plan(path):
    lab = model.load(path)
    want = expected(lab)
    svg = parse_svg(G.render(picture(lab), "svg"))
    text = "\n".join(svg["text"])
    for pod in want["pods"]:
        assert f"pod {pod} " in text
    for ip in want["ips"]:
        assert f"{ip}/" in text
    assert want["bridges"] <= svg["nodes"]
    for a, b in want["veths"]:
        assert f"{a} \u2194 {b}" in text
    # Graphviz titles an undirected edge "a&#45;&#45;b", which XML reads as "a--b".
    drawn = {frozenset(t.split("--")) for t in svg["edges"]}
    assert {ends for ends, _ in want["edges"]} <= drawn


def test_png_is_a_png():
    if shutil.which("dot") is None:
        pytest.skip("Graphviz dot not installed")
    assert G.render(picture(model.load(None)), "png")[:8] == b"\x89PNG\r\n\x1a\n"


def test_mermaid_has_every_shape_and_line():
    g = picture(model.load(None))
    text = G.to_mermaid(g)
    assert text.startswith("flowchart TB\n")
    for n in g.nodes:
        assert f"  {G._mid(n.id)}" in text
    lines = [line for line in text.splitlines() if "|" in line and ("---" in line or "-.->" in line)]
    assert len(lines) == len(g.edges)
    assert '"veth-web \u2194 eth0"' in text and "subgraph n_cluster_web" in text
    assert text.count("subgraph ") == sum(line.strip() == "end" for line in text.splitlines())


def test_pods_nest_inside_their_node_and_containers_show_their_command():
    g = picture(model.load(None, name="g1"))
    parents = {c.id: c.parent for c in g.clusters}
    assert parents["cluster_web"] == "cluster_node1" and parents["cluster_db"] == "cluster_node3"
    assert parents["cluster_node1"] is None and parents["cluster_underlay"] is None
    procs = {n.id: n.label for n in g.nodes if n.kind == "containers"}
    assert "server: netexec :8080" in procs["web/containers"]
    assert "shell: sleep infinity" in procs["web/containers"]


def test_verify_results_colour_pods_and_links():
    lab = model.load(None, name="g2")
    results = [
        {"rule": "pod-to-pod", "src": "web", "dst": "db", "passed": True},
        {"rule": "pod-to-pod", "src": "web", "dst": "api", "passed": False},
        {"rule": "node-to-pod", "src": "node3", "dst": "db", "passed": True},
    ]
    g = picture(lab, results)
    status = {c.id: c.status for c in g.clusters}
    assert status["cluster_web"] == G.MIXED
    assert status["cluster_db"] == G.PASS
    assert status["cluster_api"] == G.FAIL
    assert status["cluster_cache"] is None and status["cluster_node2"] is None
    assert status["cluster_node3"] == G.PASS
    edges = {(e.a, e.b): e.status for e in g.edges}
    assert edges[("node1/cni0", "web/eth0")] == G.MIXED
    assert edges[("node3/cni0", "db/eth0")] == G.PASS
    assert edges[("node2/cni0", "api/eth0")] == G.FAIL
    assert edges[("underlay/br0", "node2/eth0")] == G.FAIL
    assert edges[("node1/cni0", "frontend/eth0")] is None
    assert g.note == "verify: 2 of 3 checks passed"
    dot = G.to_dot(g)
    assert f'"node2/cni0" -- "api/eth0" [label="veth-api \u2194 eth0", color="{G.COLOURS[G.FAIL]}"' \
        in dot


def test_verify_results_file(tmp_path):
    assert G.read_results(tmp_path / "verify.json") is None
    (tmp_path / "verify.json").write_text("{not json")
    with pytest.raises(NetlabError, match="not a verify results file"):
        G.read_results(tmp_path / "verify.json")
    (tmp_path / "verify.json").write_text('[{"rule": "x"}]')
    with pytest.raises(NetlabError, match="rule, src, dst, passed"):
        G.read_results(tmp_path / "verify.json")
    rows = [{"rule": "r", "src": "web", "dst": "db", "passed": True, "command": "curl ..."}]
    (tmp_path / "verify.json").write_text(json.dumps(rows))
    assert G.read_results(tmp_path / "verify.json") == rows
    # verify's own --json report is read too: {"results": [{from, to, ok, ...}]}
    report = {"lab": "x", "results": [{"rule": "r", "from": "web", "to": "db", "ok": False}]}
    (tmp_path / "verify.json").write_text(json.dumps(report))
    assert G.read_results(tmp_path / "verify.json") == [
        {"rule": "r", "from": "web", "to": "db", "ok": False, "src": "web", "dst": "db",
         "passed": False}]


def test_vxlan_tunnels_are_drawn_between_nodes():
    lab = replace(model.load(None, name="vx"), backend="vxlan")

    def node(n, ip):
        return Namespace(f"vx-node{n}", (
            Iface("eth0", "veth", addrs=(f"{ip}/24",)),
            Iface("flannel.1", "vxlan", vni=1, addrs=(f"10.244.{n}.0/32",))),
            (Route("10.244.9.0/24", f"10.244.9.0", "flannel.1"),), True)

    snap = Snapshot((node(1, "192.168.1.11"), node(2, "192.168.1.12"), node(3, "192.168.1.13")), "vx")
    g = G.build(lab, snap)
    tunnels = [e for e in g.edges if e.kind == "tunnel"]
    assert {(e.a, e.b) for e in tunnels} == {("node1/flannel.1", "node2/flannel.1"),
                                            ("node1/flannel.1", "node3/flannel.1"),
                                            ("node2/flannel.1", "node3/flannel.1")}
    assert tunnels[0].label == "VXLAN 1: 192.168.1.11 \u2194 192.168.1.12"
    assert '"node1/flannel.1" [label="flannel.1 (vxlan 1)\\n10.244.1.0/32", shape=cds' in G.to_dot(g)


def test_a_down_link_is_drawn_dashed():
    lab = model.load(None, name="dn")
    snap = snapshot.of_plan(lab)
    node1 = snap.ns("dn-node1")
    eth0 = replace(node1.iface("eth0"), up=False)
    node1 = replace(node1, ifaces=tuple(eth0 if i.name == "eth0" else i for i in node1.ifaces))
    snap = replace(snap, namespaces=tuple(node1 if n.name == "dn-node1" else n
                                          for n in snap.namespaces))
    dot = G.to_dot(G.build(lab, snap))
    assert '"node1/eth0" [label="eth0\\n192.168.1.11/24\\nDOWN", shape=box, ' \
           'style="rounded,filled,dashed"]' in dot


def test_cli_graph_writes_dot_and_mermaid(tmp_path):
    r = netlab("graph", "scenarios/three-node.yaml", "-o", str(tmp_path / "lab.dot"))
    assert "the plan of lab three-node" in r.stdout
    assert parse_dot((tmp_path / "lab.dot").read_text())["nodes"]["node1/cni0"].startswith("cni0")
    r = netlab("graph", "scenarios/three-node.yaml", "--format", "mermaid")
    assert r.stdout.startswith("flowchart TB")


def test_cli_graph_verify_without_results_says_so():
    r = netlab("graph", "scenarios/three-node.yaml", "--name", "gr-never-up", "-f", "dot",
               "--verify")
    assert "verify has not run for lab gr-never-up" in r.stderr
    assert r.stdout.startswith("graph lab {")


def test_cli_graph_bad_input_exits_2():
    r = netlab("graph", "scenarios/three-node.yaml", "--format", "gif", check=False)
    assert r.returncode == 2 and "--format gif: use one of svg, png, dot, mermaid" in r.stderr
    r = netlab("graph", "no/such.yaml", check=False)
    assert r.returncode == 2 and "no/such.yaml: no such file" in r.stderr
    r = netlab("graph", "gr-no-such-lab", check=False)
    assert r.returncode == 2 and "neither a scenario file nor a lab that is up" in r.stderr

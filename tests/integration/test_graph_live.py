"""netlab graph and trace on a real lab: the kernel's picture equals the plan's; a packet's path
across nodes; a deleted route or a downed link named where the packet stops."""

from __future__ import annotations

import json
import shutil
import subprocess

from conftest import SCENARIOS, netlab, requires_root
from graph_parse import drawn_edges, expected, parse_dot, parse_svg
from netlab import model

pytestmark = requires_root
SCENARIO = str(SCENARIOS / "three-node.yaml")


def test_gr_live_graph_equals_the_plans(lab_name, tmp_path):
    netlab("up", SCENARIO, "--name", lab_name)
    live = parse_dot(netlab("graph", lab_name, "--format", "dot").stdout)
    planned = parse_dot(netlab("graph", SCENARIO, "--name", lab_name, "--format", "dot").stdout)
    assert live["nodes"] == planned["nodes"]          # same pods, IPs, bridges, interfaces
    assert live["edges"] == planned["edges"]          # same veths and routes
    assert live["clusters"] == planned["clusters"]
    lab = model.load(SCENARIO, lab_name)
    assert drawn_edges(live) == expected(lab)["edges"]
    if shutil.which("dot"):
        r = netlab("graph", lab_name, "-o", str(tmp_path / "live.svg"))
        assert f"the kernel's state of lab {lab_name}" in r.stdout
        svg = parse_svg((tmp_path / "live.svg").read_bytes())
        assert {"node1/cni0", "node2/cni0", "node3/cni0", "underlay/br0"} <= svg["nodes"]
        assert all(f"{p.ip}/24" in svg["text"] for p in lab.pods)

    # What the kernel holds, not the plan: a link taken down shows as DOWN.
    subprocess.run(["ip", "-n", f"{lab_name}-node2", "link", "set", "cni0", "down"], check=True)
    live = parse_dot(netlab("graph", lab_name, "--format", "dot").stdout)
    assert live["nodes"]["node2/cni0"].endswith("\nDOWN")


def test_gr_live_graph_colours_from_verify_results(lab_name):
    netlab("up", "--name", lab_name)
    r = netlab("graph", lab_name, "--format", "dot", "--verify")
    assert f"verify has not run for lab {lab_name}" in r.stderr
    results = [{"rule": "pod-to-pod", "src": "web", "dst": "db", "passed": True},
               {"rule": "pod-to-pod", "src": "frontend", "dst": "api", "passed": False}]
    with open(f"/run/netlab/labs/{lab_name}/verify.json", "w") as f:
        json.dump(results, f)
    r = netlab("graph", lab_name, "--format", "dot", "--verify")
    assert r.stderr == "" and "verify: 1 of 2 checks passed" in r.stdout
    assert 'subgraph "cluster_db" {' in r.stdout
    db = r.stdout.split('subgraph "cluster_db" {\n')[1].splitlines()[0]
    api = r.stdout.split('subgraph "cluster_api" {\n')[1].splitlines()[0]
    assert 'color="#2e7d32"' in db and 'color="#c62828"' in api


def test_gr_trace_across_nodes(lab_name):
    netlab("up", SCENARIO, "--name", lab_name)
    r = netlab("trace", lab_name, "web", "db")
    out = r.stdout
    assert f"1. {lab_name}-web (pod web)" in out
    assert "route    default via 10.244.1.1 dev eth0" in out
    assert f"2. {lab_name}-node1 (node node1)" in out
    assert "route    10.244.3.0/24 via 192.168.1.13 dev eth0" in out          # node1's route
    assert f"{lab_name}-node1:cni0 (bridge)" in out                           # node1's bridge
    assert f"{lab_name}-underlay:br0 (bridge)" in out
    assert f"3. {lab_name}-node3 (node node3)" in out
    assert "route    10.244.3.0/24 dev cni0 src 10.244.3.1" in out            # node3's route
    assert f"{lab_name}-node3:cni0 (bridge) -> {lab_name}-node3:veth-db -> {lab_name}-db:eth0" in out
    assert "arrived at 10.244.3.2 in 4 namespaces" in out
    data = json.loads(netlab("trace", lab_name, "node2", "10.244.1.3", "--json").stdout)
    assert data["arrived"] and [h["ns"] for h in data["hops"]] == [
        f"{lab_name}-node2", f"{lab_name}-node1", f"{lab_name}-frontend"]


def test_gr_trace_stops_at_a_deleted_route(lab_name):
    netlab("up", SCENARIO, "--name", lab_name)
    subprocess.run(["ip", "-n", f"{lab_name}-node1", "route", "del", "10.244.2.0/24"], check=True)
    r = netlab("trace", lab_name, "web", "api", check=False)
    assert r.returncode == 1
    assert f"STOPPED: {lab_name}-node1: no route to 10.244.2.2 (Network is unreachable)" in r.stdout
    assert "the plan has `10.244.2.0/24 via 192.168.1.12 dev eth0` here, missing" in r.stdout
    # The other way still works: node2 still routes to node1's pods.
    assert netlab("trace", lab_name, "api", "web").returncode == 0


def test_gr_trace_stops_at_a_link_that_is_down(lab_name):
    netlab("up", SCENARIO, "--name", lab_name)
    subprocess.run(["ip", "-n", f"{lab_name}-node3", "link", "set", "veth-db", "down"], check=True)
    r = netlab("trace", lab_name, "web", "db", check=False)
    assert r.returncode == 1
    assert f"STOPPED: interface {lab_name}-node3 veth-db on the way is down" in r.stdout


def test_gr_trace_bad_names_exit_2(lab_name):
    netlab("up", SCENARIO, "--name", lab_name)
    r = netlab("trace", lab_name, "nosuch", "db", check=False)
    assert r.returncode == 2 and f"lab {lab_name} has no pod or node 'nosuch'" in r.stderr
    r = netlab("trace", lab_name, "web", "not-an-ip", check=False)
    assert r.returncode == 2 and "TO is a pod, node or IPv4 address" in r.stderr

"""The core, end to end as root: up the default scenario, real ping and curl between pods, down."""

from __future__ import annotations

import json

from conftest import SCENARIOS, leftovers, netlab, requires_root, curl, in_ns

pytestmark = requires_root


def test_up_ping_curl_down(lab_name):
    netlab("up", str(SCENARIOS / "three-node.yaml"), "--name", lab_name)
    data = json.loads(netlab("show", lab_name, "--json").stdout)
    pods = {p["name"]: p for p in data["pods"]}
    assert len(pods) == 6 and all(p["status"] == "Running" for p in pods.values()), pods
    assert {n["name"]: n["podCIDR"] for n in data["nodes"]} == {
        "node1": "10.244.1.0/24", "node2": "10.244.2.0/24", "node3": "10.244.3.0/24"}

    for src in pods.values():
        for dst in pods.values():
            if src is dst:
                continue
            ping = in_ns(src["namespace"], "ping", "-c1", "-W2", dst["ip"])
            assert ping.returncode == 0, f"{src['name']} -> {dst['name']}: {ping.stdout}"
            seen = curl(src["namespace"], f"http://{dst['ip']}:8080/clientip")
            assert seen.rsplit(":", 1)[0] == src["ip"], f"{dst['name']} saw {seen}, not {src['ip']}"

    # Two containers of one pod share localhost; a node reaches its pods directly.
    assert curl(f"{lab_name}-web", "http://localhost:8080/hostname") == "web"
    assert curl(f"{lab_name}-node1", f"http://{pods['web']['ip']}:8080/clientip").startswith(
        "10.244.1.1:")
    route = in_ns(f"{lab_name}-node1", "ip", "route").stdout
    assert "10.244.2.0/24 via 192.168.1.12 dev eth0" in route
    assert in_ns(f"{lab_name}-node1", "sysctl", "-n", "net.ipv4.ip_forward").stdout.strip() == "1"

    netlab("down", lab_name)
    assert leftovers(lab_name) == []


def test_up_twice_and_down_twice(lab_name):
    first = netlab("up", "--name", lab_name)
    assert "is up" in first.stdout
    again = netlab("up", "--name", lab_name)
    assert "already up; nothing changed" in again.stdout
    netlab("down", lab_name)
    assert "not up; nothing to do" in netlab("down", lab_name).stdout
    assert leftovers(lab_name) == []


def test_exec_returns_the_command_exit_code(lab_name):
    netlab("up", "--name", lab_name)
    r = netlab("exec", lab_name, "web", "--", "sh", "-c", "exit 7", check=False)
    assert r.returncode == 7
    r = netlab("exec", lab_name, "node2", "--", "ip", "-4", "-o", "addr", "show", "eth0")
    assert "192.168.1.12/24" in r.stdout
    r = netlab("exec", lab_name, "nosuchpod", "--", "true", check=False)
    assert r.returncode == 2 and "has no pod or node 'nosuchpod'" in r.stderr

"""Docker's none, bridge and host modes, hostNetwork pods and the outside world, as root, with
real curl, ping, UDP and nft inside the lab's namespaces; every rule positive and negative."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import SCENARIOS, leftovers, netlab, requires_root, unique_name
from netlab import model
from netlab.features import docker as docker_rules

pytestmark = requires_root

@pytest.fixture
def lab_name():
    """This file's labs are named dk-XXXXXXXX; after the test nothing of the lab may be left."""
    name = unique_name("dk")
    yield name
    netlab("down", name, check=False)
    assert leftovers(name) == [], f"lab {name} left things behind"


UDP_CLIENT = ("import socket,sys\n"
              "s=socket.socket(socket.AF_INET,socket.SOCK_DGRAM);s.settimeout(1)\n"
              "s.sendto(sys.argv[3].encode(),(sys.argv[1],int(sys.argv[2])))\n"
              "print(s.recv(2048).decode())")


def in_ns(ns: str, *cmd: str, timeout: float = 10) -> subprocess.CompletedProcess:
    return subprocess.run(["ip", "netns", "exec", ns, *cmd], capture_output=True, text=True,
                          timeout=timeout)


def ask(ns: str, proto: str, host: str, port: int, what: str) -> str | None:
    """One request: HTTP GET /what over TCP, or the datagram `what` over UDP; None if no answer."""
    if proto == "tcp":
        r = in_ns(ns, "curl", "-s", "--max-time", "2", f"http://{host}:{port}/{what}")
    else:
        r = in_ns(ns, sys.executable, "-I", "-S", "-c", UDP_CLIENT, host, str(port), what)
    return r.stdout.strip() if r.returncode == 0 else None


def answer(ns: str, proto: str, host: str, port: int, what: str, tries: int = 50) -> str:
    """Like ask, but the server may still be starting: retry a bounded number of times."""
    for _ in range(tries):
        got = ask(ns, proto, host, port, what)
        if got is not None:
            return got
        time.sleep(0.1)
    raise AssertionError(f"{proto} {host}:{port} {what} from {ns}: no answer")


def pings(ns: str, host: str) -> bool:
    return in_ns(ns, "ping", "-c1", "-W1", host).returncode == 0


def addresses(ns: str) -> set[str]:
    out = in_ns(ns, "ip", "-4", "-o", "addr", "show").stdout
    return {line.split()[3].split("/")[0] for line in out.splitlines()}


def root_ruleset() -> str:
    return subprocess.run(["nft", "list", "ruleset"], capture_output=True, text=True,
                          check=True).stdout


def netns_of_pid(pid: int) -> int:
    return os.stat(f"/proc/{pid}/ns/net").st_ino


def pid_of(lab: str, owner: str) -> int:
    journal = Path("/run/netlab/labs") / lab / "journal"
    for line in journal.read_text().splitlines():
        kind, _, rest = line.partition(" ")
        if kind == "pid" and rest.split(" ", 1)[1].startswith(owner + "/"):
            return int(rest.split(" ", 1)[0])
    raise AssertionError(f"no process of {owner} in {journal}")


# ------------------------------------------------------------------------ the lesson, one node


def test_docker_modes_lesson(lab_name):
    before = root_ruleset()
    netlab("up", str(SCENARIOS / "docker-modes.yaml"), "--name", lab_name)
    node, out = f"{lab_name}-node1", f"{lab_name}-outside"
    none, bridge = f"{lab_name}-c-none", f"{lab_name}-c-bridge"
    node_ip = "192.168.1.11"

    # none: lo and nothing else; its server answers on its own localhost, and nothing more.
    assert addresses(none) == {"127.0.0.1"}
    links = in_ns(none, "ip", "-o", "link").stdout.splitlines()
    assert [line.split(":")[1].strip() for line in links] == ["lo"]
    assert answer(none, "tcp", "127.0.0.1", 80, "hostname") == "c-none"
    assert not pings(none, node_ip)
    assert ask(none, "tcp", "203.0.113.10", 80, "hostname") is None
    # host: the process lives in the node's namespace and answers on the node's IP, port 80.
    assert netns_of_pid(pid_of(lab_name, "c-host")) == os.stat(f"/run/netns/{node}").st_ino
    assert netns_of_pid(pid_of(lab_name, "c-none")) != os.stat(f"/run/netns/{node}").st_ino
    assert answer(out, "tcp", node_ip, 80, "hostname") == "c-host"
    # so none's `-p 80:80` published nothing: node1:80 is the host container, not c-none ...
    assert ask(out, "tcp", node_ip, 80, "hostname") != "c-none"
    # ... and host mode's `-p 82:80` is ignored.
    assert ask(out, "tcp", node_ip, 82, "hostname") is None

    # bridge: node1:81 is DNAT'd to the container's port 80 from outside the node and from the
    # node itself (output chain); the client's address is kept.
    assert answer(out, "tcp", node_ip, 81, "hostname") == "c-bridge"
    assert answer(out, "tcp", node_ip, 81, "clientip").startswith("192.168.1.254:")
    assert answer(node, "tcp", node_ip, 81, "hostname") == "c-bridge"
    assert ask(out, "tcp", node_ip, 83, "hostname") is None      # a port nobody published
    # bridge goes out through NAT: the outside world sees the node's address, not 172.17.0.2.
    assert addresses(bridge) == {"127.0.0.1", "172.17.0.2"}
    seen = answer(bridge, "tcp", "203.0.113.10", 80, "clientip")
    assert seen.rsplit(":", 1)[0] == node_ip, seen
    # without NAT (straight from the outside's own lo) it would see another address: control.
    assert answer(out, "tcp", "203.0.113.10", 80, "clientip").startswith("203.0.113.10:")

    # The rules are readable nft rules inside the node; the root ruleset is untouched.
    rules = in_ns(node, "nft", "list", "ruleset").stdout
    assert "table ip docker-nat" in rules
    assert "tcp dport 81 dnat to 172.17.0.2:80" in rules
    assert 'ip saddr 172.17.0.0/16 oifname != "docker0" masquerade' in rules
    assert "dport 80 " not in rules and "dport 82 " not in rules  # none and host publish nothing
    assert root_ruleset() == before

    netlab("down", lab_name)
    assert leftovers(lab_name) == []
    assert root_ruleset() == before


# ------------------------------------------------------------------------ across nodes, with pods


def test_published_ports_tcp_and_udp_across_nodes_and_pods(lab_name):
    netlab("up", str(SCENARIOS / "mixed.yaml"), "--name", lab_name)
    data = json.loads(netlab("show", lab_name, "--json").stdout)
    pods = {p["name"]: p for p in data["pods"]}
    cont = {c["name"]: c for c in data["containers"]}
    assert {n: c["mode"] for n, c in cont.items()} == {
        "island": "none", "nginx": "bridge", "agent": "host", "cache": "bridge"}
    assert pods["exporter"]["mode"] == "host" and pods["web"]["mode"] == "pod"
    assert data["docker0"] == {"node1": {"cidr": "172.17.0.0/16", "address": "172.17.0.1"},
                               "node2": {"cidr": "172.18.0.0/16", "address": "172.18.0.1"}}
    assert cont["nginx"]["ports"] == ["192.168.1.11:8081->8080/tcp", "192.168.1.11:5353->8080/udp"]
    assert cont["island"]["ports"] == [] and cont["island"]["ignored_ports"] == ["9090:8080/tcp"]
    assert all(c["status"] == "Running" for c in cont.values()), cont
    node1, node2 = f"{lab_name}-node1", f"{lab_name}-node2"
    n1, n2 = "192.168.1.11", "192.168.1.12"

    clients = [(node2, n2), (pods["client"]["namespace"], pods["client"]["ip"]),
               (pods["web"]["namespace"], pods["web"]["ip"])]
    for ns, ip in clients:
        # TCP 8081 -> nginx:8080 and UDP 5353 -> nginx:8080; the container sees the client.
        assert answer(ns, "tcp", n1, 8081, "hostname") == "nginx"
        assert answer(ns, "tcp", n1, 8081, "clientip").rsplit(":", 1)[0] == ip
        assert answer(ns, "udp", n1, 5353, "hostname") == "nginx"
        assert answer(ns, "udp", n1, 5353, "clientip").rsplit(":", 1)[0] == ip
    # Only what was published, with the protocol it was published with.
    assert ask(node2, "udp", n1, 8081, "hostname") is None
    assert ask(node2, "tcp", n1, 5353, "hostname") is None
    assert ask(node2, "tcp", n1, 8080, "hostname") is None
    # The other node's docker0 has its own subnet; its published port works from node1.
    assert answer(node1, "tcp", n2, 8082, "hostname") == "cache"

    # The container's address is reachable on its own node (control) but not from another node.
    assert answer(node1, "tcp", "172.17.0.2", 8080, "hostname") == "nginx"
    assert pings(node1, "172.17.0.2")
    assert not pings(node2, "172.17.0.2")
    assert ask(node2, "tcp", "172.17.0.2", 8080, "hostname") is None
    assert ask(pods["client"]["namespace"], "tcp", "172.17.0.2", 8080, "hostname") is None

    # NAT out: each bridge container is seen outside with its own node's address.
    for name, ip in (("nginx", n1), ("cache", n2)):
        seen = answer(cont[name]["namespace"], "tcp", "203.0.113.10", 80, "clientip")
        assert seen.rsplit(":", 1)[0] == ip, (name, seen)

    # none: an island, and its published 9090 does nothing.
    island = cont["island"]["namespace"]
    assert answer(island, "tcp", "127.0.0.1", 8080, "hostname") == "island"
    assert addresses(island) == {"127.0.0.1"}
    assert not pings(island, n1) and not pings(node1, "172.17.0.3")
    assert ask(node2, "tcp", n1, 9090, "hostname") is None

    # host mode: agent answers on node1's IP at its own port 9000, not at the ignored 9001;
    # the hostNetwork pod answers on node2's IP, with no NAT either way.
    assert answer(node2, "tcp", n1, 9000, "clientip").rsplit(":", 1)[0] == n2
    assert ask(node2, "tcp", n1, 9001, "hostname") is None
    assert cont["agent"]["ip"] == n1 and pods["exporter"]["ip"] == n2
    assert answer(pods["web"]["namespace"], "tcp", n2, 9100, "hostname") == "exporter"
    assert netns_of_pid(pid_of(lab_name, "exporter")) == os.stat(f"/run/netns/{node2}").st_ino
    assert not os.path.exists(f"/run/netns/{lab_name}-exporter")
    assert not os.path.exists(f"/run/netns/{lab_name}-agent")


# ------------------------------------------------------------------------ docker_rules, executed


def holds(e: docker_rules.Expectation) -> tuple[bool, str]:
    """Run one expectation from docker_rules in the kernel: (it holds, what was seen)."""
    if e.kind == "addresses":
        got = addresses(e.src_ns)
        ok = set(e.addresses) <= got and (not e.only or got == set(e.addresses))
        return ok, str(sorted(got))
    if e.kind == "ping":
        got = pings(e.src_ns, e.dst)
        return got == e.reachable, f"ping {'ok' if got else 'failed'}"
    if not e.reachable:
        got = ask(e.src_ns, e.kind, e.dst, e.port, "hostname")
        return got != e.answered_by, f"answered by {got}"
    got = answer(e.src_ns, e.kind, e.dst, e.port, "hostname")
    if got != e.answered_by:
        return False, f"answered by {got}"
    if e.seen_source:
        seen = answer(e.src_ns, e.kind, e.dst, e.port, "clientip")
        return seen.rsplit(":", 1)[0] == e.seen_source, f"server saw {seen}"
    return True, got


@pytest.mark.parametrize("scenario", ["mixed.yaml", "docker-modes.yaml"])
def test_docker_rules_hold_in_the_kernel(scenario):
    lab = unique_name("dk")
    try:
        netlab("up", str(SCENARIOS / scenario), "--name", lab)
        exps = docker_rules.expectations(model.load(SCENARIOS / scenario, lab))
        assert {e.reachable for e in exps} == {True, False}
        # Positive ones first: they wait for the servers, so a negative one cannot pass only
        # because a server had not started yet.
        failed = []
        for e in sorted(exps, key=lambda e: not e.reachable):
            ok, seen = holds(e)
            if not ok:
                failed.append(f"{e.rule}: {e.src} -> {e.kind} {e.dst}:{e.port} "
                              f"expected reachable={e.reachable} by {e.answered_by}: {seen}")
        assert failed == []
    finally:
        netlab("down", lab, check=False)
        assert leftovers(lab) == []


# ------------------------------------------------------------------------ down and bad input


def test_down_removes_every_nft_table(lab_name):
    before = root_ruleset()
    netlab("up", str(SCENARIOS / "mixed.yaml"), "--name", lab_name)
    for node in ("node1", "node2"):
        assert "table ip docker-nat" in in_ns(f"{lab_name}-{node}", "nft", "list", "tables").stdout
    assert root_ruleset() == before
    netlab("down", lab_name)
    # The tables lived only in the lab's namespaces, which are gone.
    assert not os.path.exists(f"/run/netns/{lab_name}-node1")
    assert leftovers(lab_name) == []
    assert root_ruleset() == before
    assert "not up; nothing to do" in netlab("down", lab_name).stdout


def test_bad_container_is_refused_before_the_kernel(lab_name, tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("nodes:\n  - name: node1\ncontainers:\n  - name: web\n    node: node3\n"
                   "    image: netexec\n")
    r = netlab("up", str(bad), "--name", lab_name, check=False)
    assert r.returncode == 2
    assert f"{bad}:5: container 'web' is on unknown node 'node3'" in r.stderr
    assert "did you mean 'node1'?" in r.stderr
    assert leftovers(lab_name) == []


def test_failing_nft_rolls_the_whole_up_back(lab_name, tmp_path):
    fake = tmp_path / "nft"
    fake.write_text("#!/bin/sh\necho 'Error: fake nft refuses' >&2\nexit 1\n")
    fake.chmod(0o755)
    r = netlab("up", str(SCENARIOS / "docker-modes.yaml"), "--name", lab_name, check=False,
               env={"PATH": f"{tmp_path}:{os.environ['PATH']}"})
    assert r.returncode == 1, r.stderr
    assert f"nft -f -` failed: Error: fake nft refuses" in r.stderr
    assert "everything it made was removed" in r.stderr
    assert leftovers(lab_name) == []

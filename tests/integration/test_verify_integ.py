"""verify on every shipped scenario as root, joined with the Docker modes, the VXLAN overlay and
graph --verify: each scenario passes completely; a pod MTU too large for the overlay, a published
port that stops working and a missing MASQUERADE fail exactly the checks that prove them."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest

from conftest import SCENARIOS, leftovers, netlab, requires_root, unique_name, lab_fixture, verify_json

pytestmark = requires_root

# The scenarios that break a rule on purpose have tests of their own (cni-ipmasq: test_cni_lab).
BROKEN_ON_PURPOSE = {"cni-ipmasq.yaml"}
SHIPPED = sorted(p.name for p in SCENARIOS.glob("*.yaml")      # scenarios/ is netlab/scenarios
                 if p.name not in BROKEN_ON_PURPOSE)


lab = lab_fixture("ig")
verify = verify_json


def sh(*argv: str, stdin: str | None = None) -> None:
    subprocess.run(argv, input=stdin, text=True, check=True, capture_output=True, timeout=20)


@pytest.mark.parametrize("scenario", SHIPPED)
def test_every_shipped_scenario_passes_verify_completely(scenario):
    name = unique_name("ig")
    try:
        netlab("up", str(SCENARIOS / scenario), "--name", name)
        code, data = verify(name)
        assert [r for r in data["results"] if not r["ok"]] == []
        assert code == 0 and data["lab"] == name and data["failed"] == 0
        assert data["checks"] == data["passed"] == len(data["results"]) > 0
        assert all(r["reproduce"] and r["expected"] and r["observed"] for r in data["results"])
    finally:
        netlab("down", name, check=False)
    assert leftovers(name) == [], f"lab {name} left things behind"


def test_docker_rules_show_in_verify_positive_and_negative(lab):
    netlab("up", str(SCENARIOS / "docker-modes.yaml"), "--name", lab)
    text = netlab("verify", lab, "-v").stdout
    # -p 80:80 on the none container publishes nothing: a passing negative check (node1:80 is
    # answered, but by the host-mode container)
    row = next(line for line in text.splitlines() if "no answer from c-none" in line
               and line.startswith("docker-published-port  node1"))
    assert "answered by c-host" in row and " pass " in row
    code, data = verify(lab)
    by = {(r["rule"], r["from"], r["target"]): r for r in data["results"]}
    nat = by[("docker-bridge", "c-bridge", "http://203.0.113.10:80/clientip")]
    assert nat["ok"] and nat["expected"] == nat["observed"] == "sees 192.168.1.11"
    published = by[("docker-published-port", "outside", "http://192.168.1.11:81/hostname")]
    assert published["ok"] and published["observed"] == "'c-bridge'"
    assert {r["rule"] for r in data["results"]} == {"docker-none", "docker-bridge", "docker-host",
                                                    "docker-published-port"}

    # Docker's NAT removed on node1: NAT out and the published port fail, and say why
    sh("ip", "netns", "exec", f"{lab}-node1", "nft", "delete", "table", "ip", "docker-nat")
    code, data = verify(lab)
    failed = {(r["rule"], r["from"], r["target"]): r["reason"] for r in data["results"]
              if not r["ok"]}
    assert code == 1
    assert set(failed) == {("docker-bridge", "c-bridge", "http://203.0.113.10:80/hostname"),
                           ("docker-bridge", "c-bridge", "http://203.0.113.10:80/clientip"),
                           ("docker-published-port", "outside", "http://192.168.1.11:81/hostname"),
                           ("docker-published-port", "outside", "http://192.168.1.11:81/clientip")}
    assert all("MASQUERADE" in why for (rule, *_), why in failed.items() if rule == "docker-bridge")
    assert "-p 81:80/tcp: DNAT node 192.168.1.11:81 to 172.17.0.2:80" in \
        failed[("docker-published-port", "outside", "http://192.168.1.11:81/hostname")]


def test_mixed_udp_port_and_host_network_pod(lab):
    netlab("up", str(SCENARIOS / "mixed.yaml"), "--name", lab)
    code, data = verify(lab, "--only", "docker-published-port", "--only", "docker-host",
                        "--only", "pod-pod-same-node")
    assert code == 0, [r for r in data["results"] if not r["ok"]]
    udp = [r for r in data["results"] if r["method"] == "udp"]
    assert udp and all("socat" in r["reproduce"] for r in udp)
    assert {r["observed"] for r in udp if r["from"] == "client"} == {"'nginx'", "sees 10.244.2.2"}
    exporter = [r for r in data["results"] if "exporter" in (r["from"], r["to"])]
    assert exporter and all(r["ok"] for r in exporter)
    # node1's DNAT rules flushed: nginx's published ports (TCP and UDP) stop answering
    sh("ip", "netns", "exec", f"{lab}-node1", "nft", "flush", "chain", "ip", "docker-nat",
       "docker")
    code, data = verify(lab, "--only", "docker-published-port", "--from", "client")
    assert code == 1
    bad = {(r["method"], r["target"]) for r in data["results"] if not r["ok"]}
    assert ("udp", "192.168.1.11") in bad and ("http", "http://192.168.1.11:8081/hostname") in bad
    assert all(r["ok"] for r in data["results"] if "8082" in r["target"])   # node2's cache


def test_mtu_too_large_for_the_overlay_fails_the_mtu_checks_from_that_pod(lab):
    netlab("up", str(SCENARIOS / "overlay.yaml"), "--name", lab)
    code, data = verify(lab, "--only", "mtu")
    assert code == 0 and data["checks"] == 6
    assert {r["observed"] for r in data["results"]} == {"1422 B: reply"}
    # the pod's MTU back to Ethernet's 1500, at both ends of its veth, as a CNI that forgot VXLAN
    sh("ip", "-n", f"{lab}-web", "link", "set", "eth0", "mtu", "1500")
    sh("ip", "-n", f"{lab}-node1", "link", "set", "veth-web", "mtu", "1500")
    code, data = verify(lab, "--only", "mtu")
    assert code == 1
    failed = {(r["from"], r["to"]): r["reason"] for r in data["results"] if not r["ok"]}
    assert set(failed) == {("web", "api"), ("web", "db")}
    for why in failed.values():
        assert f"eth0 in {lab}-web has MTU 1500, the lab's pods 1450" in why
        assert "1472-byte ping with DF set" in why
        # the node's ICMP "Frag needed", or (once the kernel has cached it) ping's local error
        assert re.search(r"(Frag needed and DF set|message too long).*mtu ?= ?1450", why), why
    # the reproduce command shows the same thing by hand
    [repro] = {r["reproduce"] for r in data["results"] if (r["from"], r["to"]) == ("web", "api")}
    out = subprocess.run(repro, shell=True, capture_output=True, text=True, timeout=20)
    assert out.returncode != 0 and re.search(r"mtu ?= ?1450", out.stdout + out.stderr)


def test_verify_then_graph_verify_colours_the_picture(lab, tmp_path):
    netlab("up", str(SCENARIOS / "mixed.yaml"), "--name", lab)
    code, data = verify(lab)
    assert code == 0
    saved = json.loads(Path(f"/run/netlab/labs/{lab}/verify.json").read_text())
    assert saved["results"] == data["results"]
    out = tmp_path / "x.svg"
    r = netlab("graph", lab, "--verify", "-o", str(out))
    assert f"verify: {data['checks']} of {data['checks']} checks passed" in r.stdout + r.stderr
    assert out.read_text().lstrip().startswith(("<?xml", "<svg"))
    dot = netlab("graph", lab, "--verify", "--format", "dot").stdout
    assert "verify: " in dot and "checks passed" in dot
    # a failure shows in the next picture
    sh("ip", "-n", f"{lab}-node1", "route", "del", "10.244.2.0/24")
    code, data = verify(lab, "--only", "pod-pod-cross-node")
    assert code == 1
    r = netlab("graph", lab, "--verify", "-o", str(out))
    assert f"verify: {data['passed']} of {data['checks']} checks passed" in r.stdout + r.stderr


def test_a_link_down_on_the_way_is_named_by_the_trace(lab):
    netlab("up", "--name", lab)
    sh("ip", "-n", f"{lab}-node2", "link", "set", "veth-api", "down")   # routes all still there
    code, data = verify(lab, "--only", "pod-pod-cross-node", "--from", "web")
    assert code == 1
    failed = {(r["to"], r["method"]): r["reason"] for r in data["results"] if not r["ok"]}
    assert set(failed) == {("api", "ping"), ("api", "http")}
    for why in failed.values():
        assert f"the packet stops: interface {lab}-node2 veth-api on the way is down" in why, why

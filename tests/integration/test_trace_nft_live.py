"""netlab trace through the kernel's nft rules, on real labs: a Docker published port followed
into its container, a hand-added drop naming its rule, a kube-proxy table traced to the
endpoints real curl reaches. Every trace is checked against what real traffic does."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

from conftest import SCENARIOS, in_ns, lab_fixture, netlab, requires_root
from netlab.view import nft

pytestmark = requires_root
lab = lab_fixture("trc")       # a unique trc-XXXXXXXX lab, taken down and checked after the test
FIXTURES = Path(__file__).resolve().parent.parent / "unit" / "nft"
sys.path.insert(0, str(FIXTURES))
import capture  # noqa: E402  (tests/unit/nft/capture.py: loads a ruleset in a fresh namespace)


def netns() -> set[str]:
    return set(os.listdir("/run/netns")) if os.path.isdir("/run/netns") else set()


def test_trc_fixtures_are_what_the_real_nft_lists():
    before = netns()
    for name in ("docker", "kubeproxy", "netpol", "iptables"):
        if name == "iptables":
            as_json, as_text = capture.capture((FIXTURES / "iptables.rules").read_text(),
                                               ("iptables-restore",))
        else:
            as_json, as_text = capture.capture((FIXTURES / f"{name}.nft").read_text())
        live = nft.parse(as_json, as_text)
        stored = nft.parse((FIXTURES / f"{name}.json").read_text(),
                           (FIXTURES / f"{name}.txt").read_text())
        assert live == stored, f"{name}: run tests/unit/nft/capture.py again"
        assert live.chains and all(r.text for c in live.chains for r in c.rules)
    assert {n for n in netns() - before if n.startswith("trc-cap-")} == set()


def curl(ns: str, url: str, tries: int = 30) -> subprocess.CompletedProcess:
    for _ in range(tries):
        r = in_ns(ns, "curl", "-s", "--max-time", "2", url)
        if r.returncode == 0:
            return r
    return r


def test_trc_published_port_followed_into_the_container_and_a_drop_named(lab):
    netlab("up", str(SCENARIOS / "mixed.yaml"), "--name", lab)
    out = netlab("trace", lab, "client", "192.168.1.11", "--port", "8081").stdout
    assert f"trace in lab {lab}: client -> 192.168.1.11 (192.168.1.11, tcp port 8081)" in out
    assert ("   dnat     192.168.1.11:8081 -> 172.17.0.2:8080 by `tcp dport 8081 dnat to "
            "172.17.0.2:8080 comment \"nginx 8081:8080/tcp\"` (chain docker, table ip "
            "docker-nat)") in out
    assert f"4. {lab}-nginx (container nginx)" in out
    assert out.rstrip().endswith("arrived at 172.17.0.2:8080 (sent to 192.168.1.11:8081) "
                                 "in 4 namespaces")
    # The kernel agrees: the container answers on node1's published port.
    assert curl(f"{lab}-client", "http://192.168.1.11:8081/hostname").stdout.strip() == "nginx"
    data = json.loads(netlab("trace", lab, "client", "192.168.1.11", "--port", "5353",
                             "--udp", "--json").stdout)
    assert data["arrived"] and data["final"] == "172.17.0.2:8080" and data["proto"] == "udp"
    # A ping to the node is not DNAT'd: it ends in node1.
    data = json.loads(netlab("trace", lab, "client", "node1", "--json").stdout)
    assert data["hops"][-1]["ns"] == f"{lab}-node1" and data["final"] == "192.168.1.11"

    # A drop added by hand in node1's forward hook stops the trace at that rule.
    subprocess.run(["ip", "netns", "exec", f"{lab}-node1", "nft", "-f", "-"], text=True,
                   check=True, input="table inet trc-block {\n chain forward {\n"
                   "  type filter hook forward priority filter; policy accept;\n"
                   "  ip daddr 172.17.0.2 tcp dport 8080 drop comment \"trc: no nginx\"\n"
                   " }\n}\n")
    r = netlab("trace", lab, "client", "192.168.1.11", "--port", "8081", check=False)
    assert r.returncode == 1
    assert (f"STOPPED: dropped in {lab}-node1 by `ip daddr 172.17.0.2 tcp dport 8080 drop "
            f"comment \"trc: no nginx\"` (chain forward, table inet trc-block)") in r.stdout
    assert (f"the packet from client does not arrive at 172.17.0.2:8080: it stops in "
            f"{lab}-node1") in r.stderr
    assert curl(f"{lab}-client", "http://192.168.1.11:8081/hostname", tries=1).returncode != 0
    # The drop is for TCP: the UDP port still arrives, and so does node1 itself (output).
    assert netlab("trace", lab, "client", "192.168.1.11", "--port", "5353", "--udp").returncode == 0
    r = netlab("trace", lab, "client", "node1", "--udp", check=False)
    assert r.returncode == 2 and "--udp needs --port N" in r.stderr


def test_trc_kube_proxy_clusterip_and_nodeport_traced_to_real_endpoints(lab):
    """kubeproxy.nft (the kube-proxy table of wt-kubeproxy's ruleset(): Service web
    10.96.0.50:80, NodePort 30080, endpoints web 10.244.1.2:8080 and api 10.244.2.2:8080) loaded
    into every node of three-node.yaml: trace names both endpoints and follows the first; real
    curl reaches only those endpoints, and sees the source kube-proxy's masquerade gives it."""
    netlab("up", str(SCENARIOS / "three-node.yaml"), "--name", lab)
    for node in ("node1", "node2", "node3"):
        subprocess.run(["ip", "netns", "exec", f"{lab}-{node}", "nft", "-f",
                        str(FIXTURES / "kubeproxy.nft")], check=True)
    out = netlab("trace", lab, "db", "10.96.0.50", "--port", "80").stdout
    assert ("   choice   2 candidates: 10.244.1.2:8080 (accept, numgen random mod 2: 0, "
            "followed); 10.244.2.2:8080 (accept, numgen random mod 2: 1)") in out
    assert f"4. {lab}-web (pod web)" in out
    assert out.rstrip().endswith("arrived at 10.244.1.2:8080 (sent to 10.96.0.50:80) in 4 "
                                 "namespaces")
    seen = {curl(f"{lab}-db", "http://10.96.0.50/hostname").stdout.strip() for _ in range(12)}
    assert seen <= {"web", "api"} and seen, seen

    out = netlab("trace", lab, "node3", "node1", "--port", "30080").stdout
    snat = re.search(r"snat     192\.168\.1\.13 -> (\S+) by `masquerade fully-random`", out)
    assert snat and snat.group(1) == "10.244.1.1", out      # to web: by node1's cni0
    seen = {curl(f"{lab}-node3", "http://192.168.1.11:30080/clientip").stdout.strip()
            .rsplit(":", 1)[0] for _ in range(12)}
    # web sees node1's cni0 address (the trace's first candidate), api node1's eth0 address
    assert seen <= {"10.244.1.1", "192.168.1.11"} and seen, seen
    r = netlab("trace", lab, "db", "10.96.0.60", "--port", "80", check=False)
    assert r.returncode == 1 and "no route to 10.96.0.60" in r.stdout


def test_trc_verify_names_the_rule_that_drops_a_probe(lab):
    """A drop added by hand in node3's forward hook: verify's failed HTTP checks to db say
    which rule dropped them, cross-node (routed) and same-node (bridged, when bridge netfilter
    passes bridged frames to the node's hooks, as a new namespace does on this kernel)."""
    netlab("up", str(SCENARIOS / "three-node.yaml"), "--name", lab)
    subprocess.run(["ip", "netns", "exec", f"{lab}-node3", "nft", "-f", "-"], text=True,
                   check=True, input="table inet trc-block {\n chain forward {\n"
                   "  type filter hook forward priority filter; policy accept;\n"
                   "  ip daddr 10.244.3.2 tcp dport 8080 drop comment \"trc: db closed\"\n"
                   " }\n}\n")
    proc = netlab("verify", lab, "--json", check=False)
    assert proc.returncode == 1, proc.stderr
    failed = [r for r in json.loads(proc.stdout)["results"] if not r["ok"]]
    rule = (f"the packet stops: dropped in {lab}-node3 by `ip daddr 10.244.3.2 tcp dport 8080 "
            f"drop comment \"trc: db closed\"` (chain forward, table inet trc-block)")
    assert failed and all(r["to"] == "db" and r["method"] == "http" for r in failed)
    assert all(rule in r["reason"] for r in failed), [r["reason"] for r in failed]
    assert {"web", "api", "node1"} <= {r["from"] for r in failed}
    bridged = in_ns(f"{lab}-node3", "cat", "/proc/sys/net/bridge/bridge-nf-call-iptables")
    assert ("cache" in {r["from"] for r in failed}) == (bridged.stdout.strip() == "1")

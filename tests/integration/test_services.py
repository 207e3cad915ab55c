"""Services for real: scenarios/services.yaml brought up, every svc-* rule proven with packets;
then broken on purpose (an endpoint chain flushed, masquerade removed, bridge netfilter off, an
endpoint's server stopped) and verify fails exactly there, naming why; pods scaled and deleted and
verify follows; port-forward; the root namespace untouched; nothing left after down."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request

from conftest import ROOT, in_ns, lab_fixture, leftovers, netlab, requires_root, verify_json
from test_rootns import differences, root_snapshot

from netlab.runtime.state import LabState

pytestmark = requires_root
lab = lab_fixture("svc")
SCENARIO = str(ROOT / "scenarios" / "services.yaml")
SVC_RULES = ["svc-pod-clusterip", "svc-node-clusterip", "svc-nodeport", "svc-outside",
             "svc-endpoints", "svc-clientip", "svc-local", "svc-cluster-snat", "svc-affinity",
             "svc-hairpin", "svc-no-endpoints"]


def up(name: str) -> None:
    netlab("up", SCENARIO, "--name", name)


def svc_report(name: str, *rules: str) -> tuple[int, list[dict]]:
    args = [a for r in (rules or SVC_RULES) for a in ("--only", r)]
    code, report = verify_json(name, *args)
    return code, report["results"]


def failures(results: list[dict]) -> list[dict]:
    return [r for r in results if not r["ok"]]


def get_json(name: str, kind: str, ns: str = "shop") -> dict:
    return json.loads(netlab("get", name, kind, "-n", ns, "-o", "json").stdout)


def web_pods(name: str) -> dict[str, str]:
    return {p["metadata"]["name"]: p["status"]["podIP"] for p in get_json(name, "pods")["items"]}


def test_services_scenario_verifies_and_leaves_the_root_namespace_alone(lab):
    before = root_snapshot()
    up(lab)
    netlab("scale", lab, "deployment/web", "--replicas", "4")
    netlab("scale", lab, "deployment/web", "--replicas", "3")
    during = root_snapshot()
    code, results = svc_report(lab)
    assert code == 0, [(r["rule"], r["from"], r["to"], r["reason"]) for r in failures(results)]
    assert {r["rule"] for r in results} == set(SVC_RULES)
    # Every node has kube-proxy's table, and bridge netfilter on, explicitly.
    for node in ("node1", "node2"):
        table = in_ns(f"{lab}-{node}", "nft", "list", "table", "ip", "kube-proxy").stdout
        assert "numgen random mod 3" in table and "masquerade fully-random" in table
        assert in_ns(f"{lab}-{node}", "sysctl", "-n",
                     "net.bridge.bridge-nf-call-iptables").stdout.strip() == "1"
    show = netlab("show", lab).stdout
    assert "10.96.0.50" in show and "announced by a route on the outside world's router" in show
    svc = netlab("get", lab, "svc", "-n", "shop").stdout
    assert "NAME" in svc and "CLUSTER-IP" in svc and "80:30080/TCP" in svc
    netlab("down", lab)
    after = root_snapshot()
    assert differences(before, during) == [] and differences(before, after) == []
    assert leftovers(lab) == []


def test_flushed_endpoint_chain_is_named(lab):
    up(lab)
    eps = [e for e in get_json(lab, "endpoints")["items"] if e["metadata"]["name"] == "web"][0]
    victim = eps["subsets"][0]["addresses"][0]
    table = in_ns(f"{lab}-node1", "nft", "list", "table", "ip", "kube-proxy").stdout
    chain = next(line.split()[1] for line in table.splitlines()
                 if line.strip().startswith("chain endpoint-") and "/tcp/http__" + victim["ip"]
                 in line)
    r = in_ns(f"{lab}-node1", "nft", "flush", "chain", "ip", "kube-proxy", chain)
    assert r.returncode == 0, r.stderr
    code, results = svc_report(lab, "svc-endpoints")
    bad = [r for r in failures(results) if r["from"] == "client"]
    assert code == 1 and bad
    assert any(victim["targetRef"]["name"] in r["reason"] and chain in r["reason"] and
               "dnat" in r["reason"] for r in bad), bad
    # From node2 the table is whole: client2's check passes.
    assert all(r["ok"] for r in results if r["from"] == "client2")


def test_masquerade_removed_is_named(lab):
    up(lab)
    r = in_ns(f"{lab}-node1", "nft", "flush", "chain", "ip", "kube-proxy", "masquerading")
    assert r.returncode == 0, r.stderr
    code, results = svc_report(lab, "svc-cluster-snat", "svc-hairpin")
    bad = failures(results)
    assert code == 1
    assert any(r["rule"] == "svc-cluster-snat" and r["to"].startswith("node1:") and
               "masquerade missing" in r["reason"] for r in bad), [(r["to"], r["reason"]) for r in bad]
    # node2's masquerade is whole: its NodePort still SNATs.
    assert all(r["ok"] for r in results if r["rule"] == "svc-cluster-snat"
               and r["to"].startswith("node2:"))


def test_bridge_netfilter_off_breaks_same_node_endpoints_and_is_named(lab):
    up(lab)
    r = in_ns(f"{lab}-node1", "sysctl", "-qw", "net.bridge.bridge-nf-call-iptables=0")
    assert r.returncode == 0
    code, results = svc_report(lab, "svc-endpoints")
    bad = [r for r in failures(results) if r["from"] == "client"]
    assert code == 1 and bad
    assert any("bridge netfilter is off" in r["reason"] for r in bad), bad
    # The switch is per namespace: node2 (and so client2) is unaffected.
    assert all(r["ok"] for r in results if r["from"] == "client2")


def test_stopped_endpoint_server_is_named(lab):
    up(lab)
    pods = web_pods(lab)
    victim = sorted(pods)[0]
    pid = next(pid for pid, what in LabState(lab).journal().pids.items()
               if what.startswith(victim + "/"))
    os.kill(pid, signal.SIGTERM)
    code, results = svc_report(lab, "svc-endpoints")
    assert code == 1
    assert any(victim in r["reason"] and "server is not running" in r["reason"]
               for r in failures(results)), failures(results)


def test_scale_and_delete_change_the_endpoints_and_verify_follows(lab):
    up(lab)
    netlab("scale", lab, "deployment/web", "--replicas", "5")
    pods = web_pods(lab)
    assert len(pods) == 5
    eps = [e for e in get_json(lab, "endpoints")["items"] if e["metadata"]["name"] == "web"][0]
    assert {a["ip"] for a in eps["subsets"][0]["addresses"]} == set(pods.values())
    code, results = svc_report(lab, "svc-endpoints", "svc-pod-clusterip")
    assert code == 0, failures(results)
    answered = {n for r in results if r["rule"] == "svc-endpoints" for n in pods
                if n in r["observed"]}
    assert answered == set(pods)

    victim = sorted(pods)[0]
    out = netlab("delete", lab, f"pod/{victim}").stdout
    after = web_pods(lab)
    assert victim not in after and len(after) == 5
    new = (set(after) - set(pods)).pop()
    assert new in out and after[new] not in pods.values()     # a new name and a new address
    assert not os.path.exists(f"/run/netns/{lab}-{victim}")
    code, results = svc_report(lab, "svc-endpoints")
    assert code == 0, failures(results)

    netlab("scale", lab, "deployment/web", "--replicas", "2")
    assert len(web_pods(lab)) == 2
    # The idle Service gets an endpoint: it stops refusing and answers.
    netlab("scale", lab, "deployment/idle", "--replicas", "1")
    code, results = svc_report(lab, "svc-endpoints", "svc-no-endpoints")
    assert code == 0, failures(results)
    assert any(r["to"] == "svc/idle:80" for r in results if r["rule"] == "svc-endpoints")
    assert not [r for r in results if r["rule"] == "svc-no-endpoints"]
    # up again is harmless: the lab is up as it is now.
    assert "already up" in netlab("up", SCENARIO, "--name", lab).stdout
    assert len(web_pods(lab)) == 2
    netlab("down", lab)
    assert leftovers(lab) == []


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_port_forward_reaches_a_service_and_a_pod_from_loopback(lab):
    up(lab)
    port = _free_port()
    proc = subprocess.Popen([sys.executable, "-m", "netlab", "port-forward", lab, "svc/web",
                             f"{port}:80"], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        assert "Forwarding from 127.0.0.1" in proc.stdout.readline()
        names = set()
        for _ in range(30):
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/hostname", timeout=5) as r:
                names.add(r.read().decode())
        assert names and names <= set(web_pods(lab))
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=10)
    pod = sorted(web_pods(lab))[0]
    port = _free_port()
    proc = subprocess.Popen([sys.executable, "-m", "netlab", "port-forward", lab, f"pod/{pod}",
                             f"{port}:8080"], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        proc.stdout.readline()
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/hostname", timeout=5) as r:
            assert r.read().decode() == pod
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=10)
    # It listened on loopback only.
    with socket.socket() as s:
        s.settimeout(1)
        assert s.connect_ex(("127.0.0.1", port)) != 0
    time.sleep(0)


def test_masquerade_all_lives_without_bridge_netfilter(lab, tmp_path):
    text = (ROOT / "scenarios" / "services.yaml").read_text().replace(
        "outside: true", "outside: true\nkubeProxy: {masqueradeAll: true}")
    path = tmp_path / "masq.yaml"
    path.write_text(text)
    netlab("up", str(path), "--name", lab)
    for node in ("node1", "node2"):
        assert in_ns(f"{lab}-{node}", "sysctl", "-qw",
                     "net.bridge.bridge-nf-call-iptables=0").returncode == 0
    code, results = svc_report(lab, "svc-endpoints", "svc-pod-clusterip")
    assert code == 0, failures(results)
    # The price: the endpoint sees the node's cni0 address, not the client pod's.
    seen = in_ns(f"{lab}-client", "curl", "-s", "http://10.96.0.50/clientip").stdout
    assert seen.split(":")[0] in ("10.244.1.1", "192.168.1.11")


CRASH = """
import os, sys
from netlab.core.ops import NetnsAdd
from netlab.runtime import lifecycle, scale
real = lifecycle._apply
def apply(kern, state, op):
    real(kern, state, op)
    if isinstance(op, NetnsAdd):
        os._exit(9)          # killed right after making a new pod's namespace
lifecycle._apply = apply
scale.scale(sys.argv[1], "web", 5)
"""


def test_a_scale_killed_half_way_leaves_nothing_after_down(lab):
    up(lab)
    before = set(web_pods(lab))
    r = subprocess.run([sys.executable, "-c", CRASH, lab], cwd=ROOT, capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 9, r.stderr
    made = [ns for ns in os.listdir("/run/netns") if ns.startswith(f"{lab}-web-")
            and ns[len(lab) + 1:] not in before]
    assert made                                 # the new pod's namespace exists ...
    assert set(web_pods(lab)) == before         # ... but the lab's pods are those of before
    netlab("scale", lab, "deployment/web", "--replicas", "5")     # and scale works again
    assert len(web_pods(lab)) == 5
    code, results = svc_report(lab, "svc-endpoints")
    assert code == 0, failures(results)
    netlab("down", lab)
    assert leftovers(lab) == []


def test_deleting_a_udp_endpoint_flushes_its_stale_conntrack_entry(lab):
    """A UDP 'connection' is a conntrack entry that outlives the rules: the same client port keeps
    going to the old endpoint until kube-proxy deletes the entry (conntrack -D), as delete does."""
    up(lab)

    def ask() -> str:
        r = subprocess.run(["ip", "netns", "exec", f"{lab}-client", "socat", "-t1", "-T2", "-",
                            "UDP:10.96.0.50:53,sourceport=40053"], input="hostname\n",
                           capture_output=True, text=True, timeout=20)
        return r.stdout.strip()
    first = ask()
    assert first in web_pods(lab)
    assert ask() == first           # the same source port: the same conntrack entry, same pod
    out = netlab("delete", lab, f"pod/{first}").stdout
    assert "stale UDP conntrack entries deleted" in out, out
    second = ask()
    assert second in web_pods(lab) and second != first

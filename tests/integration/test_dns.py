"""Cluster DNS on the real kernel: scenarios/dns.yaml up, every dns rule passes, `nslookup web`
answers the ClusterIP; broken on purpose (the DNS server stopped, the kube-dns Service's
kube-proxy entries removed, a pod's resolv.conf without its search path) verify fails exactly
there and names the reason; records follow scale; nothing is left in /etc/netns after down and
after a kill -9 of up followed by `netlab clean`; the host's /etc/resolv.conf is never changed."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from netlab import model
from netlab.features import services
from netlab.runtime import dnsserver
from netlab.runtime.state import LabState

from conftest import ROOT, lab_fixture, leftovers, netlab, requires_root, unique_name, \
    verify_json

pytestmark = requires_root
lab = lab_fixture("dnw")
SCENARIO = str(ROOT / "netlab" / "scenarios" / "dns.yaml")
STATE = Path("/run/netlab/labs")


def host_resolv() -> bytes:
    try:
        return Path("/etc/resolv.conf").read_bytes()
    except FileNotFoundError:
        return b""


def etc_left(name: str) -> list[str]:
    return sorted(d for d in os.listdir("/etc/netns") if d.startswith(name + "-")) \
        if os.path.isdir("/etc/netns") else []


def dns_results(report: dict) -> list[dict]:
    return [r for r in report["results"] if r["rule"].startswith("dns-")]


def failures(report: dict) -> list[dict]:
    return [r for r in report["results"] if not r["ok"]]


def dns_pod(name: str):
    lab_ = model.load(SCENARIO, name)
    return lab_, lab_.pod(lab_.dns.pod)


def test_dns_lab_resolves_and_verify_names_each_break(lab):
    before = host_resolv()
    netlab("up", SCENARIO, "--name", lab)
    the_lab, pod = dns_pod(lab)
    web = next(s for s in the_lab.services if s.name == "web" and s.namespace == "default")

    code, report = verify_json(lab)
    assert code == 0, failures(report)
    rules = {r["rule"] for r in dns_results(report)}
    assert rules == {"dns-service", "dns-scope", "dns-pod", "dns-srv", "dns-headless",
                     "dns-nxdomain", "dns-server"}
    out = netlab("exec", lab, "client", "--", "nslookup", "web").stdout
    assert "Server:\t\t10.96.0.10" in out and f"Address: {web.cluster_ip}" in out, out
    # a short name is namespace scope: from shop, `web` is not default/web
    shop = subprocess.run(["ip", "netns", "exec", f"{lab}-shopper", "nslookup", "web"],
                          capture_output=True, text=True)
    assert web.cluster_ip not in shop.stdout and "NXDOMAIN" in shop.stdout, shop.stdout

    # 1. the DNS server stopped: every dns check fails, naming the stopped server; nothing else
    pids = subprocess.run(["ip", "netns", "pids", pod.ns], capture_output=True,
                          text=True).stdout.split()
    assert pids
    for pid in pids:
        os.kill(int(pid), signal.SIGKILL)
    code, report = verify_json(lab)
    bad = failures(report)
    assert code == 1 and bad and {r["rule"] for r in bad} <= {r for r in rules}
    # dig still asks (its failure is the symptom); the reason is what the pod's namespace holds
    assert all(f"no answer from kube-dns {the_lab.dns.service_ip}" in r["reason"]
               and f"nothing listens on udp/53 in {pod.ns}" in r["reason"]
               and "dnsmasq not running" in r["reason"] for r in bad), bad[0]
    assert len(bad) == len(dns_results(report))
    st = LabState(lab)          # started again as netlab does after `scale` (journaled)
    st.reopen()
    try:
        dnsserver.restart(st, the_lab)
    finally:
        st.close()
    assert verify_json(lab)[0] == 0

    # 1b. the server runs but does not answer (stopped): the reason says it runs and where the
    # rules are, so the server is what is left to look at
    pid = int(subprocess.run(["ip", "netns", "pids", pod.ns], capture_output=True,
                             text=True).stdout.split()[0])
    os.kill(pid, signal.SIGSTOP)
    try:
        code, report = verify_json(lab, "--only", "dns-server")
    finally:
        os.kill(pid, signal.SIGCONT)
    bad = failures(report)
    assert code == 1 and bad and all("runs and" in r["reason"] for r in bad), bad[0]
    assert verify_json(lab)[0] == 0

    # 2. kube-proxy's entries for the kube-dns Service removed in node1: the clients of node1
    # time out, and the reason names the missing map entry
    node1 = the_lab.node("node1")
    subprocess.run(["ip", "netns", "exec", node1.ns, "nft", "delete", "element", "ip",
                    "kube-proxy", "service-ips", "{ 10.96.0.10 . udp . 53 }"], check=True)
    code, report = verify_json(lab)
    bad = failures(report)
    assert code == 1 and bad
    on_node1 = {p.name for p in the_lab.pods if p.node == "node1"} | {"node1"}
    assert {r["from"] for r in bad} <= on_node1, {r["from"] for r in bad}
    assert all("no entry for 10.96.0.10 . udp . 53" in r["reason"] for r in bad), bad[0]
    assert any(r["from"] == "client" for r in bad)
    subprocess.run(["ip", "netns", "exec", node1.ns, "nft", "-f", "-"], check=True, text=True,
                   input=services.rulesets(the_lab)["node1"])
    assert verify_json(lab)[0] == 0

    # 3. the client's resolv.conf without its search path: its short names fail, saying so;
    # its FQDNs still resolve
    path = Path(f"/etc/netns/{lab}-client/resolv.conf")
    good = path.read_text()
    path.write_text("nameserver 10.96.0.10\noptions ndots:5\n")
    code, report = verify_json(lab)
    bad = failures(report)
    assert code == 1 and bad and {r["from"] for r in bad} == {"client"}
    assert all("has no search path" in r["reason"] for r in bad), bad[0]
    ok_fqdn = [r for r in report["results"] if r["from"] == "client" and r["ok"]
               and r["to"].endswith(".svc.cluster.local") and r["rule"] == "dns-service"]
    assert ok_fqdn
    path.write_text(good)
    assert verify_json(lab)[0] == 0

    netlab("down", lab)
    assert etc_left(lab) == []
    assert host_resolv() == before


def test_records_follow_scale(lab):
    netlab("up", SCENARIO, "--name", lab)

    def db() -> list[str]:
        out = subprocess.run(["ip", "netns", "exec", f"{lab}-client", "dig", "+short",
                              "db.shop.svc.cluster.local"], capture_output=True, text=True)
        return sorted(out.stdout.split())

    assert len(db()) == 2
    netlab("scale", lab, "deployment/shop/db", "--replicas", "3")
    assert len(db()) == 3
    assert len(etc_left(lab)) == 11     # 2 nodes, 9 pods (the new db one among them)
    assert verify_json(lab, "--only", "dns-headless", "--only", "dns-server")[0] == 0
    netlab("scale", lab, "deployment/shop/db", "--replicas", "1")
    assert len(db()) == 1
    assert len(etc_left(lab)) == 9
    assert verify_json(lab, "--only", "dns-headless", "--only", "dns-srv")[0] == 0
    # a deleted pod is replaced by a new one (new name, new address): the record follows
    gone = db()[0]
    pods = netlab("get", lab, "pods", "-n", "shop", "-o", "wide").stdout
    name = next(line.split()[0] for line in pods.splitlines() if gone in line.split())
    netlab("delete", lab, f"pod/{name}")
    now = db()
    assert len(now) == 1 and now != [gone], now
    assert not Path(f"/etc/netns/{lab}-{name}").exists()
    assert verify_json(lab, "--only", "dns-headless", "--only", "dns-server")[0] == 0
    netlab("down", lab)
    assert etc_left(lab) == []


def test_kill_9_of_up_then_clean_leaves_no_etc_netns(runs_clean):
    before = host_resolv()
    for trial in range(3):
        name = unique_name("dnw")
        proc = subprocess.Popen([sys.executable, "-m", "netlab", "up", SCENARIO, "--name", name],
                                cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        # killed once some /etc/netns files are written (the journal holds them), or at the end
        while proc.poll() is None and len(etc_left(name)) < 1 + 3 * trial:
            time.sleep(0.001)
        proc.kill()
        proc.wait()
        netlab("clean")
        assert leftovers(name) == [], trial
        assert etc_left(name) == [], trial
    assert host_resolv() == before


def test_clean_removes_etc_netns_of_a_lab_whose_record_is_lost(runs_clean):
    name = unique_name("dnw")
    netlab("up", SCENARIO, "--name", name)
    assert len(etc_left(name)) == 10
    shutil.rmtree(STATE / name)   # the journal lost: the namespaces' marks are what is left
    netlab("clean")
    assert leftovers(name) == []
    assert etc_left(name) == []


def test_etc_netns_of_a_namespace_netlab_did_not_make_is_kept(lab):
    """A dir of the lab's name pattern but of no namespace of the lab's is never removed."""
    other = Path(f"/etc/netns/{lab}-not-ours")
    other.mkdir(parents=True)
    try:
        (other / "resolv.conf").write_text("nameserver 192.0.2.1\n")
        netlab("up", SCENARIO, "--name", lab)
        netlab("down", lab)
        assert (other / "resolv.conf").read_text() == "nameserver 192.0.2.1\n"
        assert etc_left(lab) == [f"{lab}-not-ours"]
    finally:
        shutil.rmtree(other)
    assert etc_left(lab) == []


def test_dns_off_without_services_has_no_etc_netns(lab):
    netlab("up", str(ROOT / "netlab" / "scenarios" / "three-node.yaml"), "--name", lab)
    try:
        assert etc_left(lab) == []
    finally:
        netlab("down", lab)


def resolv_files(name: str) -> dict[str, str]:
    return {d.replace(name, "LAB", 1): (Path("/etc/netns") / d / "resolv.conf").read_text()
            for d in etc_left(name)}


def test_plan_script_writes_the_same_files_and_serves_the_same_names(tmp_path, unrecorded_lab):
    """The plan's script (bash, no netlab) writes the same /etc/netns files and runs a DNS server
    that answers as up's does; `down` of a lab netlab has no record of removes its files too (by
    its marked namespaces)."""
    by_up, by_script = unique_name("dnw-pup"), unique_name("dnw-psh")
    try:
        netlab("up", SCENARIO, "--name", by_up)
        script = tmp_path / "lab.sh"
        script.write_text(netlab("plan", SCENARIO, "--name", by_script).stdout)
        run = subprocess.run(["bash", str(script)], capture_output=True, text=True, timeout=120)
        assert run.returncode == 0, run.stderr
        assert resolv_files(by_up) == resolv_files(by_script) and len(resolv_files(by_up)) == 10
        for name in (by_up, by_script):
            for _ in range(100):      # the script does not wait for its server
                out = subprocess.run(["ip", "netns", "exec", f"{name}-client", "dig", "+short",
                                      "+search", "web"], capture_output=True, text=True).stdout
                if out.strip():
                    break
                time.sleep(0.05)
            assert out.split() == ["10.96.0.2"], (name, out)
    finally:
        netlab("down", by_up, check=False)
        netlab("down", by_script, check=False)
    assert leftovers(by_up) == [] and leftovers(by_script) == []
    assert etc_left(by_up) == [] and etc_left(by_script) == []

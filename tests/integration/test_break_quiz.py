"""The break-it exercises as a learner does them, end to end on real labs: `netlab break --random
--seed N` tells only a symptom, `netlab hint` three times gets stronger, the learner fixes the lab
by hand with ip, nft or sysctl, and `netlab check` grades it (and writes JUnit); the journal keeps
the seed, the fault and the time; a seed gives the same exercise again; `down` leaves nothing."""

from __future__ import annotations

import os
import subprocess
import xml.etree.ElementTree as ET

import pytest

from breakit import by_hand, seed_for, until_ok
from conftest import SCENARIOS, lab_fixture, leftovers, netlab, requires_root
from netlab import exercises as E, model
from netlab.runtime.state import LabState

pytestmark = requires_root

lab = lab_fixture("brkq")

THREE = str(SCENARIOS / "three-node.yaml")


# What a learner types to repair each fault, given the lab and the fault's target.
FIXES = {
    "route-deleted": lambda L, t: (f"ip -n {L.node(t).ns} route add "
                                   f"{L.nodes[(L.nodes.index(L.node(t)) + 1) % 3].pod_cidr} via "
                                   f"{L.nodes[(L.nodes.index(L.node(t)) + 1) % 3].ip} dev eth0"),
    "forward-drop": lambda L, t: (f"ip netns exec {L.node(t).ns} nft "
                                  f"'chain inet filter forward {{ policy accept; }}'"),
    "ip-forward-off": lambda L, t: f"ip netns exec {L.node(t).ns} sysctl -qw net.ipv4.ip_forward=1",
    "veth-down": lambda L, t: f"ip -n {L.node(L.pod(t).node).ns} link set {L.pod(t).host_veth} up",
}


@pytest.mark.parametrize("fault", list(FIXES))
def test_round_trip_break_hint_fix_by_hand_check(lab, fault, tmp_path):
    netlab("up", THREE, "--name", lab)
    the_lab = model.load(THREE, lab)
    seed, target = seed_for(the_lab, fault)

    told = netlab("break", lab, "--random", "--seed", str(seed)).stdout
    assert "Symptom:" in told and fault not in told and f"seed {seed}" in told
    record = LabState(lab).journal().faults[-1]
    assert (record["fault"], record["on"], record["seed"], record["hidden"]) == \
        (fault, target, seed, True)

    broken = E.fault_of(fault).make(the_lab, target)
    hints = [netlab("hint", lab).stdout for _ in range(4)]
    assert "checks fail" in hints[0] and broken.ns not in hints[0].split("for example")[0]
    assert f"the packet stops in namespace {broken.ns}" in hints[1] and "look with" not in hints[1]
    assert f"look with: {broken.look}" in hints[2]
    assert "hint 3 of 3" in hints[3]          # no stronger hint than the third

    assert netlab("check", lab, check=False).returncode == 1    # not fixed yet
    by_hand(FIXES[fault](the_lab, target))
    done = until_ok("check", lab, "--junit", str(tmp_path / "grade.xml"))
    assert f"The fault was {fault} on {target}" in done.stdout and "with 3 hints" in done.stdout
    finished = LabState(lab).journal()
    assert finished.faults == [] and finished.finished[-1]["ended"] == "fixed"
    assert finished.finished[-1]["seconds"] >= 0 and finished.finished[-1]["seed"] == seed
    root = ET.parse(tmp_path / "grade.xml").getroot()
    assert root.get("failures") == "0"
    props = {p.get("name"): p.get("value") for p in root.iter("property")}
    assert props["fault"] == fault and props["seed"] == str(seed) and props["hints"] == "3"


def test_round_trip_policy_blocks_dns_fixed_with_an_nft_rule_for_dns(lab):
    """The NetworkPolicy exercise: a default-deny egress policy on namespace shop that forgets
    DNS. The learner inserts, in each pod's egress chain, the rule the policy lacks (DNS to the
    DNS pod), as Broken.fix says, and `netlab check` grades it fixed."""
    path = str(SCENARIOS / "netpol-dns.yaml")
    netlab("up", path, "--name", lab)
    the_lab = model.load(path, lab)
    seed, target = seed_for(the_lab, "policy-blocks-dns")
    assert target == "shop"
    told = netlab("break", lab, "--random", "--seed", str(seed)).stdout
    assert "Symptom:" in told and "policy-blocks-dns" not in told \
        and "client cannot resolve web.shop.svc.cluster.local" in told

    broken = E.fault_of("policy-blocks-dns").make(the_lab, target)
    hints = [netlab("hint", lab).stdout for _ in range(3)]
    assert "dns-" in hints[0] and broken.ns not in hints[0].split("for example")[0]
    assert f"the packet stops in namespace {broken.ns}" in hints[1]
    assert f"look with: {broken.look}" in hints[2]
    dig = f"ip netns exec {lab}-client dig +search +time=1 +tries=1 web"
    assert "timed out" in subprocess.run(dig, shell=True, capture_output=True, text=True).stdout

    assert netlab("check", lab, check=False).returncode == 1    # not fixed yet
    assert "egress.shop.client" in broken.fix and "dport 53" in broken.fix
    by_hand(broken.fix)
    answer = subprocess.run(dig, shell=True, capture_output=True, text=True).stdout
    assert "status: NOERROR" in answer and "web.shop.svc.cluster.local." in answer
    done = until_ok("check", lab)
    assert f"The fault was policy-blocks-dns on {target}" in done.stdout, done.stdout
    assert LabState(lab).journal().finished[-1]["ended"] == "fixed"


def test_a_seed_gives_the_same_exercise_and_undo_restores(lab):
    netlab("up", THREE, "--name", lab)
    picked = []
    for _ in range(2):
        netlab("break", lab, "--random", "--seed", "42")
        record = LabState(lab).journal().faults[-1]
        picked.append((record["fault"], record["on"]))
        netlab("break", lab, "--undo")
    assert picked[0] == picked[1] == E.choose(model.load(THREE, lab), 42)
    ended = LabState(lab).journal().finished
    assert [e["ended"] for e in ended] == ["unfault", "unfault"]
    assert until_ok("verify", lab, "--json").returncode == 0


def test_a_second_fault_is_refused_and_check_grades_a_failure_in_junit(lab, tmp_path):
    netlab("up", THREE, "--name", lab)
    netlab("break", lab, "veth-down", "--on", "db")
    again = netlab("break", lab, "route-deleted", check=False)
    assert again.returncode == 1 and "already has fault veth-down on db" in again.stderr
    graded = netlab("check", lab, "--junit", str(tmp_path / "g.xml"), check=False)
    assert graded.returncode == 1 and "not yet" in graded.stdout
    root = ET.parse(tmp_path / "g.xml").getroot()
    assert root.get("failures") == "1"
    netlab("break", lab, "--undo")


def test_undo_after_a_fix_by_hand_skips_what_is_already_back(lab):
    netlab("up", THREE, "--name", lab)
    netlab("break", lab, "route-deleted", "--on", "node3")
    the_lab = model.load(THREE, lab)
    by_hand(f"ip -n {the_lab.node('node3').ns} route add 10.244.1.0/24 via 192.168.1.11")
    assert "undid route-deleted on node3" in netlab("break", lab, "--undo").stdout
    assert until_ok("verify", lab, "--json").returncode == 0
    assert "nothing to undo" in netlab("break", lab, "--undo").stdout


kd_lab = lab_fixture("kd")

DNS = str(SCENARIOS / "dns.yaml")


def dnsmasq_of(lab: str) -> list[int]:
    """Live dnsmasq processes serving this lab's config, wherever they run (started by netlab or
    by hand: a hand-started one carries no NETLAB_LAB mark, so leftovers() would miss it)."""
    conf = f"/run/netlab/labs/{lab}/dns/dnsmasq.conf".encode()
    found = []
    for pid in (p for p in os.listdir("/proc") if p.isdigit()):
        try:
            argv = open(f"/proc/{pid}/cmdline", "rb").read().split(b"\0")
            stat = open(f"/proc/{pid}/stat", "rb").read().rsplit(b")", 1)[1].split()[0]
        except OSError:
            continue
        if b"--conf-file=" + conf in argv and stat != b"Z":
            found.append(int(pid))
    return found


def test_kube_dns_down_round_trip_dnsmasq_started_again_by_hand(kd_lab):
    netlab("up", DNS, "--name", kd_lab)
    the_lab = model.load(DNS, kd_lab)
    seed, target = seed_for(the_lab, "kube-dns-down")
    assert target == the_lab.dns.pod
    before = dnsmasq_of(kd_lab)
    assert len(before) == 1

    told = netlab("break", kd_lab, "--random", "--seed", str(seed)).stdout
    assert "Symptom:" in told and "kube-dns-down" not in told and "cannot resolve" in told
    assert dnsmasq_of(kd_lab) == []
    broken = E.fault_of("kube-dns-down").make(the_lab, target)
    hints = [netlab("hint", kd_lab).stdout for _ in range(3)]
    assert "dns-service" in hints[0] and f"namespace {broken.ns}" in hints[1]
    assert f"look with: {broken.look}" in hints[2]
    # the engineer's look: nothing on udp/53 in the DNS pod's namespace
    assert subprocess.run(broken.look, shell=True, capture_output=True, text=True,
                          timeout=10).stdout.count(":53 ") == 0
    assert netlab("check", kd_lab, check=False).returncode == 1

    by_hand(broken.fix)        # ip netns exec NS setsid -f /usr/sbin/dnsmasq --conf-file=...
    done = until_ok("check", kd_lab)
    assert f"The fault was kube-dns-down on {target}" in done.stdout
    assert LabState(kd_lab).journal().finished[-1]["ended"] == "fixed"
    by_hand_pids = dnsmasq_of(kd_lab)
    assert len(by_hand_pids) == 1 and by_hand_pids != before

    # down stops the dnsmasq started by hand too: it runs in the lab's namespace
    netlab("down", kd_lab)
    assert dnsmasq_of(kd_lab) == []


def test_kube_dns_down_undo_records_the_new_dnsmasq_and_down_after_break_leaves_nothing(kd_lab):
    netlab("up", DNS, "--name", kd_lab)
    the_lab = model.load(DNS, kd_lab)
    pod = the_lab.pod(the_lab.dns.pod)
    netlab("break", kd_lab, "kube-dns-down")
    assert dnsmasq_of(kd_lab) == []
    netlab("break", kd_lab, "--undo")
    now = dnsmasq_of(kd_lab)
    pids = LabState(kd_lab).journal().pids
    assert len(now) == 1 and pids[now[0]] == f"{pod.name}/{pod.containers[0].name}"
    assert list(pids)[-1] == now[0]           # the last one recorded: verify waits on it
    assert until_ok("verify", kd_lab, "--json").returncode == 0

    netlab("break", kd_lab, "kube-dns-down")
    assert dnsmasq_of(kd_lab) == []
    netlab("down", kd_lab)
    assert dnsmasq_of(kd_lab) == [] and leftovers(kd_lab) == []

"""The break-it exercises' pure parts: the fault catalogue against the shipped scenarios (targets,
operations and their inverse, the checks each fault breaks), the seed's choice, the journal's
records, the JUnit grade and the comparison of a hand-built lab with its plan."""

from __future__ import annotations

import os
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from netlab import exercises as E, model
from netlab.core import ops as P
from netlab.core.lab import state_dir
from netlab.features import FAULTS
from netlab.verify import engine
from netlab.view import snapshot as S

ROOT = Path(__file__).resolve().parents[2]
SCEN = ROOT / "scenarios"


def load(name: str):
    return model.load(str(SCEN / f"{name}.yaml"))


def test_every_fault_applies_somewhere_and_undoes_what_it_does():
    labs = [load(n) for n in ("three-node", "overlay", "docker-modes", "mixed", "same-node", "dns",
                              "ingress",
                              "netpol-dns")]
    for name, fault in FAULTS.items():
        assert fault.summary and fault.on in ("node", "pod", "container", "path", "namespace"), name
        applied = [(lab, t) for lab in labs for t in fault.targets(lab)]
        assert applied, f"{name} applies to no shipped scenario"
        for lab, target in applied:
            b = fault.make(lab, target)
            assert b.ops and b.undo and b.ns in lab.namespaces and b.obj and b.look, name
            # a file of the lab's own (WriteFile) has no namespace: it is in the state directory
            assert all(op.ns == b.ns or op.ns in lab.namespaces if hasattr(op, "ns") else
                       op.path.startswith(state_dir(lab.name) + "/")
                       for op in b.ops + b.undo)


def test_overlay_faults_only_on_vxlan_and_host_gw_route_only_on_host_gw():
    three, overlay = load("three-node"), load("overlay")
    for name in ("mtu-1500", "neigh-missing", "fdb-missing"):
        assert FAULTS[name].targets(three) == [] and FAULTS[name].targets(overlay)
    assert FAULTS["route-deleted"].targets(overlay) == []
    assert FAULTS["dnat-missing"].targets(three) == []


def test_route_deleted_breaks_the_26_checks_between_node1s_side_and_node2s_pods():
    lab = load("three-node")
    broken = E.expected(lab, "route-deleted", "node1", engine.derive(lab))
    side1, pods2 = {"node1", "web", "frontend"}, {"api", "worker"}
    assert len(broken) == 26
    assert all((c.src in side1 and c.dst in pods2) or (c.src in pods2 and c.dst in side1)
               for c in broken)


def test_forwarding_faults_spare_what_the_node_sends_and_receives_itself():
    lab = load("three-node")
    checks = engine.derive(lab)
    off = E.expected(lab, "ip-forward-off", "node1", checks)
    assert off and not any({c.src, c.dst} <= {"web", "frontend"} for c in off)   # bridged
    assert not any(c.src == "node1" or c.dst == "node1" for c in off)
    assert not any(c.method in ("addr",) or c.target == "localhost" for c in off)


def test_masquerade_breaks_only_no_nat_requests_from_the_nodes_pods():
    lab = load("three-node")
    broken = E.expected(lab, "masquerade", "node2", engine.derive(lab))
    assert broken and all(c.method == "http" and c.nat is False and c.src in ("api", "worker")
                          for c in broken)
    assert not any(c.dst in ("node2", "api", "worker") for c in broken)


def test_a_seed_chooses_the_same_exercise_and_seeds_differ():
    lab = load("three-node")
    assert E.choose(lab, 7) == E.choose(lab, 7)
    assert len({E.choose(lab, s) for s in range(50)}) > 5
    assert all(E.choose(lab, s) in E.choices(lab) for s in range(20))


def test_unknown_fault_and_target_are_usage_errors():
    lab = load("three-node")
    with pytest.raises(Exception) as e:
        E.fault_of("nope")
    assert e.value.code == 2
    with pytest.raises(Exception) as e:
        E.target_of(lab, FAULTS["veth-down"], "node1")
    assert e.value.code == 2 and "use one of web" in e.value.message


def test_symptoms_tell_what_is_seen_not_the_cause():
    lab = load("three-node")
    assert E.symptom(lab, "veth-down", "db").startswith("db cannot reach ")
    assert "sees the wrong client address" in E.symptom(lab, "masquerade", "node1")
    assert "large packets" in E.symptom(load("overlay"), "mtu-1500", "web")
    assert E.symptom(load("netpol-dns"), "policy-blocks-dns", "shop").startswith(
        "client cannot resolve web.shop.svc.cluster.local (and 22 more")


def test_ops_round_trip_through_the_journal_and_render_as_commands():
    ops = [P.RouteDel("x-n1", "10.244.2.0/24", "192.168.1.12", "eth0"), P.LinkDown("x-n1", "veth-a"),
           P.AddrDel("x-n1", "cni0", "10.244.1.1", 24), P.NeighDel("x-n1", "flannel.1", "10.244.2.0"),
           P.NeighReplace("x-n1", "flannel.1", "10.244.2.0", "0a:58:c0:a8:01:0c"),
           P.FdbDel("x-n1", "flannel.1", "0a:58:c0:a8:01:0c", "192.168.1.12"),
           P.Spawn("x-p", "p", "c", ("sleep", "1")), P.NftApply("x-n1", "table ip t {}\n")]
    assert [P.from_record(P.as_record(op)) for op in ops] == ops
    assert ops[0].ip() == "ip -n x-n1 route del 10.244.2.0/24 via 192.168.1.12 dev eth0"
    assert ops[4].ip() == ("ip -n x-n1 neigh replace 10.244.2.0 lladdr 0a:58:c0:a8:01:0c dev "
                           "flannel.1 nud permanent")
    assert ops[5].ip() == "bridge -n x-n1 fdb del 0a:58:c0:a8:01:0c dev flannel.1 dst 192.168.1.12 self"


def test_journal_keeps_faults_hints_and_their_end(tmp_path, monkeypatch):
    from netlab.runtime import state
    monkeypatch.setattr(state, "ROOT", tmp_path)
    s = state.LabState("x")
    s.begin("s.yaml", "text")
    s.record("netns x-a")
    s.record("complete")
    s.close()
    s.add_record("fault", {"fault": "veth-down", "on": "web", "at": 1.0, "seed": 3})
    s.add_record("hint", {"level": 1})
    s.add_record("hint", {"level": 2})
    j = s.journal()
    assert j.complete and j.namespaces == ["x-a"] and j.faults[0]["hints"] == 2
    s.add_record("fixed", {"seconds": 12.5})
    j = s.journal()
    assert j.faults == [] and j.finished == [{"fault": "veth-down", "on": "web", "at": 1.0,
                                              "seed": 3, "hints": 2, "ended": "fixed",
                                              "seconds": 12.5}]


def test_junit_hides_the_fault_until_it_is_fixed():
    failed = E.CheckResult("x", False, "veth-down", "web", 5.0, 1, 9, [], 150)
    root = ET.fromstring(E.junit(failed).split("?>", 1)[1])
    props = {p.get("name"): p.get("value") for p in root.iter("property")}
    assert root.get("failures") == "1" and props["fault"] == "hidden" and props["seed"] == "9"
    fixed = E.CheckResult("x", True, "veth-down", "web", 5.0, 1, 9, [], 150)
    root = ET.fromstring(E.junit(fixed).split("?>", 1)[1])
    assert root.get("failures") == "0"
    assert {p.get("name"): p.get("value") for p in root.iter("property")}["fault"] == "veth-down"


def test_differences_name_what_a_hand_built_lab_lacks():
    lab = load("three-node")
    want = S.of_plan(lab)
    assert E.differences(want, want) == []
    node1 = want.ns(f"{lab.name}-node1")
    broken = S.Namespace(node1.name, tuple(i if i.name != "cni0" else S.Iface("cni0", "bridge", False)
                                           for i in node1.ifaces),
                         tuple(r for r in node1.routes if r.dst != "10.244.2.0/24"), False)
    have = S.Snapshot(tuple(broken if n.name == node1.name else n for n in want.namespaces
                            if n.name != f"{lab.name}-db"), lab.name)
    diffs = E.differences(want, have)
    assert f"namespace {lab.name}-db is missing (ip netns add {lab.name}-db)" in diffs
    assert f"{node1.name}: route `10.244.2.0/24 via 192.168.1.12 dev eth0` is missing" in diffs
    assert any("cni0 is down" in d for d in diffs) and any("lacks the address 10.244.1.1/24" in d
                                                           for d in diffs)
    assert f"{node1.name}: net.ipv4.ip_forward is 0, the plan has 1" in diffs


def test_break_list_prints_one_line_per_fault_without_root():
    out = subprocess.run([sys.executable, "-m", "netlab", "break", "--list"], capture_output=True,
                         text=True, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})
    lines = out.stdout.splitlines()
    assert out.returncode == 0 and len(lines) == len(FAULTS)
    assert [line.split()[0] for line in lines] == list(FAULTS)


def test_bridge_nf_off_must_fail_some_checks_and_may_fail_those_left_to_kube_proxy():
    lab = load("same-node")
    assert FAULTS["bridge-nf-off"].targets(lab) == ["node1"]
    checks = engine.derive(lab)
    broken = E.expected(lab, "bridge-nf-off", "node1", checks)
    assert sorted(c.rule for c in broken) == ["svc-clientip", "svc-endpoints", "svc-pod-clusterip"]
    assert {c.src for c in broken} == {"client"}      # not node1 itself, not node2's client
    assert E.uncertain(lab, "bridge-nf-off", "node1", checks) == []
    # services.yaml: a node's client calls Services with endpoints on its node and elsewhere: the
    # checks of mode "all" must fail, the others are left to kube-proxy's random choice
    lab = load("services")
    checks = engine.derive(lab)
    must = E.expected(lab, "bridge-nf-off", "node1", checks)
    may = E.uncertain(lab, "bridge-nf-off", "node1", checks)
    assert must and may and not {id(c) for c in must} & {id(c) for c in may}
    assert {c.data[0] for c in must} == {"all"}
    assert all(c.data[4] == "services-node1" for c in must + may if c.method == "svc")


def test_endpoint_chain_missing_flushes_one_chain_and_undoes_with_the_reload():
    from netlab.features.services import Services
    lab = load("dns")
    b = FAULTS["endpoint-chain-missing"].make(lab, "web")
    assert b.ops[0].ruleset == f"flush chain ip kube-proxy {b.obj}\n"
    assert list(b.undo) == [op for op in Services().reload(lab) if op.ns == b.ns]
    broken = E.expected(lab, "endpoint-chain-missing", "web", engine.derive(lab))
    assert {c.data[4] for c in broken} == {b.ns} and {c.dst for c in broken} == {"svc/web:80"}


def test_hairpin_off_breaks_only_the_pods_own_hairpin_checks():
    lab = load("services")
    target = FAULTS["hairpin-off"].targets(lab)[0]
    broken = E.expected(lab, "hairpin-off", target, engine.derive(lab))
    assert broken and all(c.rule == "svc-hairpin" and c.src == target for c in broken)


def test_resolv_no_search_breaks_the_short_names_of_one_pod():
    lab = load("dns")
    b = FAULTS["resolv-no-search"].make(lab, "shopper")
    assert "search" not in b.ops[0].text and "search" in b.undo[0].text
    broken = E.expected(lab, "resolv-no-search", "shopper", engine.derive(lab))
    assert broken and all(c.src == "shopper" and not c.target.endswith(".cluster.local")
                          for c in broken)

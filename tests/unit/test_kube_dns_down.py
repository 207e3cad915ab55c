"""The fault kube-dns-down's pure parts: where it applies, its Stop and the Spawn that undoes it (the
plan's own), the checks it breaks (every one that needs the DNS pod's server, nothing else), the Stop
op's record and shell form, and the DNS judge's reason when nothing listens on udp/53."""

from __future__ import annotations

import subprocess
from pathlib import Path

from netlab import exercises as E, model, plan
from netlab.core import ops as P
from netlab.features import FAULTS, PROBES
from netlab.features.dns import rules as R
from netlab.verify import engine
from netlab.verify.judging import blocked

ROOT = Path(__file__).resolve().parents[2]
SCEN = ROOT / "scenarios"
FAULT = FAULTS["kube-dns-down"]


def load(name: str):
    return model.load(str(SCEN / f"{name}.yaml"), "kdu")


def test_it_applies_to_the_dns_pod_of_a_lab_with_cluster_dns_only():
    lab = load("dns")
    assert FAULT.targets(lab) == [lab.dns.pod] and FAULT.on == "pod" and FAULT.lesson == "DNS"
    for name in ("three-node", "services", "same-node"):      # no cluster DNS
        assert FAULT.targets(load(name)) == []


def test_it_stops_dnsmasq_and_the_undo_is_the_plans_own_spawn():
    lab = load("dns")
    pod = lab.pod(lab.dns.pod)
    b = FAULT.make(lab, pod.name)
    spawns = [op for op in plan.build(lab) if isinstance(op, P.Spawn) and op.owner == pod.name]
    assert b.undo == tuple(spawns) and b.ops == (P.Stop.of(spawns[0]),)
    assert b.ops[0].argv[0] == "/usr/sbin/dnsmasq" and (b.ns, b.obj) == (pod.ns, "dnsmasq")
    assert b.fix == spawns[0].ip() and b.look == f"ip netns exec {pod.ns} ss -lunp"


def test_it_breaks_every_dns_check_and_nothing_else():
    lab = load("dns")
    checks = engine.derive(lab)
    broken = E.expected(lab, "kube-dns-down", lab.dns.pod, checks)
    dns = [c for c in checks if c.method == R.METHOD]
    assert broken == dns and len(dns) > 50
    assert {c.rule for c in broken} == set(R.RULES)
    # the DNS pod still pings and is pinged, and still asks others as a client
    spared = [c for c in checks if lab.dns.pod in (c.src, c.dst) and c.method != R.METHOD]
    assert spared and not any(FAULT.breaks(lab, lab.dns.pod, c) for c in spared)
    assert "cannot resolve" in E.symptom(lab, "kube-dns-down", lab.dns.pod)


def test_the_stop_op_goes_through_the_journal_and_its_script_kills_by_command_line(tmp_path):
    stop = P.Stop("kdu-p", "p", "c", ("/bin/sleep", "30"))
    assert P.from_record(P.as_record(stop)) == stop and P.Stop in P.UNDO_OPS
    assert stop.ip() == ("for p in $(ip netns pids kdu-p); do if [ \"$(tr '\\0' ' ' "
                         "</proc/$p/cmdline)\" = '/bin/sleep 30 ' ]; then kill $p; fi; done")
    # the loop's test, as sh runs it, on a process of our own (no namespace needed for that part)
    proc = subprocess.Popen(["/bin/sleep", "30"])
    try:
        test = stop.ip().split("; do ", 1)[1].split("; then")[0].removeprefix("if ")
        script = f"p={proc.pid}; {test} && echo match"
        assert subprocess.run(["sh", "-c", script], capture_output=True, text=True).stdout == \
            "match\n"
    finally:
        proc.kill()
        proc.wait()


def test_a_dns_check_asks_even_when_its_server_is_down_others_do_not_run():
    lab = load("dns")
    checks = engine.derive(lab)
    dns = next(c for c in checks if c.method == R.METHOD)
    http = next(c for c in checks if c.method == "http" and c.server is not None)
    problems = {dns.server: "server down", http.server: "server down"}
    assert not blocked(dns, problems, PROBES) and blocked(http, problems, PROBES)
    assert not blocked(http, {}, PROBES)


def test_no_answer_names_the_dns_pods_namespace_udp_53_and_dnsmasq(monkeypatch):
    lab = load("dns")
    c = next(c for c in engine.derive(lab) if c.method == R.METHOD and c.src == "client")
    dns_ns = lab.pod(lab.dns.pod).ns
    monkeypatch.setattr(R, "read_resolv", lambda ns: "search default.svc.cluster.local svc.cluster."
                        "local cluster.local\nnameserver 10.96.0.10\noptions ndots:5\n")
    monkeypatch.setattr(R, "udp_listens", lambda ns, port: False)
    monkeypatch.setattr(R, "_pids", lambda ns: [])
    out = R.parse_dig(";; communications error to 10.96.0.10#53: connection refused\n"
                      ";; no servers could be reached\n", "A")
    r = R.judge(c, out)
    assert not r.ok
    assert r.reason == (f"no answer from kube-dns 10.96.0.10 (connection refused): nothing listens "
                        f"on udp/53 in {dns_ns} (dnsmasq not running: no process in the "
                        f"namespace): look with `ip netns exec {dns_ns} ss -lunp`")
    monkeypatch.setattr(R, "_pids", lambda ns: ["4242"])
    monkeypatch.setattr(R, "_comm", lambda pid: "dnsmasq")
    assert "(dnsmasq runs but does not listen there)" in R.judge(c, out).reason
    # something listens: the reason looks further (the Service's rules), not at the server
    monkeypatch.setattr(R, "udp_listens", lambda ns, port: True)
    monkeypatch.setattr(R, "_service_rules", lambda ns, ip: "")
    assert "udp/53" not in R.judge(c, out).reason


def test_the_journal_keeps_a_reused_pid_as_its_last_record(tmp_path, monkeypatch):
    from netlab.runtime import state
    monkeypatch.setattr(state, "ROOT", tmp_path)
    s = state.LabState("kdu")
    s.begin("s.yaml", "text")
    for line in ("pid 10 dns/coredns", "pid 11 web/server", "pid 10 web/sidecar",
                 "pid 12 dns/coredns"):
        s.record(line)
    s.close()
    pids = s.journal().pids
    assert list(pids.items()) == [(11, "web/server"), (10, "web/sidecar"), (12, "dns/coredns")]

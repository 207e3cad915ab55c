"""NetworkPolicy as a feature of a real lab (`netlab up`): the shipped scenario verifies; the
upstream Netpol cases, reloaded one after another into one lab, each give the observed matrix
the model and upstream's table give; a rule deleted by hand fails exactly the pairs it governed
(`without_rule` predicts them); scale and delete bring every node's table along; and the root
namespace's ruleset is what it was.
"""

from __future__ import annotations

import json
import re
import subprocess
from dataclasses import replace
from pathlib import Path

import pytest

from conftest import ROOT, in_ns, lab_fixture, leftovers, netlab, requires_root, verify_json
from test_rootns import differences, root_snapshot

from netlab import model
from netlab.features import netpol as NP
from netlab.features.netpol.verify import observed_tables, probed_ports
from netlab.runtime import running
from netlab.verify import engine as V

pytestmark = requires_root
lab = lab_fixture("npw")
SCENARIO = ROOT / "scenarios" / "netpol.yaml"


def failures(results):
    return [(r["rule"], r["from"], r["to"], r["observed"], r["reason"])
            for r in results if not r["ok"]]


def test_shipped_scenario_verifies_and_root_namespace_is_unchanged(lab):
    before = root_snapshot()
    netlab("up", str(SCENARIO), "--name", lab)
    during = root_snapshot()
    code, report = verify_json(lab)
    assert code == 0, failures(report["results"])
    rules = {r["rule"] for r in report["results"]}
    assert {"policy", "pod-pod-same-node", "pod-pod-cross-node"} <= rules
    policy = [r for r in report["results"] if r["rule"] == "policy"]
    # both verdicts occur, so the rule can fail either way
    assert {r["expected"] for r in policy} == {"connects", "no connection"}
    for node in ("node1", "node2", "node3"):
        table = in_ns(f"{lab}-{node}", "nft", "list", "table", "inet", "netlab-netpol").stdout
        assert "hook forward priority filter" in table
        assert in_ns(f"{lab}-{node}", "sysctl", "-n",
                     "net.bridge.bridge-nf-call-iptables").stdout.strip() == "1"
    out = netlab("verify", lab, "--only", "policy", "--policy-matrix").stdout
    assert "TCP/80" in out and "UDP/81" in out and "!" not in out.split("TCP/")[1]
    # trace stops at the drop rule, naming the policy
    t = netlab("trace", lab, "z-a", "x-b", check=False)
    assert t.returncode == 1 and "x/default-deny-ingress" in t.stdout + t.stderr
    netlab("down", lab)
    after = root_snapshot()
    assert differences(before, during) == [] and differences(before, after) == []
    assert leftovers(lab) == []


def test_deleting_one_rule_fails_exactly_the_pairs_it_governed(lab):
    netlab("up", str(SCENARIO), "--name", lab)
    the_lab = running.load_up(lab)
    pols = the_lab.network_policies
    nss, pods, nodes = NP.cluster(the_lab)
    listing = in_ns(f"{lab}-node1", "nft", "-a", "list", "chain", "inet", "netlab-netpol",
                    "ingress.x.x-a").stdout
    [line] = [ln for ln in listing.splitlines() if '"x/allow-y-to-a ingress rule 1"' in ln]
    handle = line.rsplit("# handle ", 1)[1].strip()
    r = in_ns(f"{lab}-node1", "nft", "delete", "rule", "inet", "netlab-netpol", "ingress.x.x-a",
              "handle", handle)
    assert r.returncode == 0, r.stderr
    without = NP.without_rule(pols, "x/allow-y-to-a", "ingress", 1)
    predicted = set()
    for port, proto in probed_ports(pols, pods):
        a = NP.matrix(pols, nss, pods, port, proto, nodes)
        b = NP.matrix(without, nss, pods, port, proto, nodes)
        predicted |= {(s.split("/")[1], d.split("/")[1], port, proto)
                      for (s, d), ok in a.allowed.items() if ok != b.allowed[s, d] and s != d}
    assert predicted == {("y-a", "x-a", 80, "TCP"), ("y-b", "x-a", 80, "TCP"),
                         ("y-c", "x-a", 80, "TCP")}
    code, report = verify_json(lab, "--only", "policy")
    failed = [r for r in report["results"] if not r["ok"]]
    got = {(r["from"], r["to"], int(re.search(r":(\d+)(/|$)", r["reproduce"]).group(1)),
            "UDP" if "UDP:" in r["reproduce"] else "TCP") for r in failed}
    assert code == 1 and got == predicted
    assert all("allowed by x/allow-y-to-a ingress rule 1" in r["reason"] for r in failed)


# ---------------------------------------------------------------- the upstream cases

CASES = ["test_default_deny_ingress", "test_default_deny_all",
         "test_allow_from_pods_in_server_namespace_by_pod_selector",
         "test_allow_only_from_other_namespace_by_namespace_selector",
         "test_pod_selector_or_namespace_selector", "test_pod_selector_and_namespace_selector",
         "test_ports", "test_stacked_policies_overlapping_pod_selectors",
         "test_ingress_on_one_named_port", "test_egress_on_one_named_port",
         "test_deny_egress_from_all_pods_in_a_namespace",
         "test_client_side_egress_deny_wins_over_server_allow",
         "test_egress_to_cidr_with_except",
         "test_ip_in_both_cidr_and_except_is_allowed_by_another_rule",
         "test_tcp_not_allowed_when_policy_names_only_udp", "test_any_port_on_a_specific_protocol"]


def cases_lab_text(name: str) -> dict:
    """The unit cases' cluster as a scenario: the same nodes, placements and addresses."""
    from tests.unit import test_netpol_cases as C
    servers = [{"name": f"s{p}", "image": "netexec", "port": p,
                "ports": [{"containerPort": p, "name": f"serve-{p}-tcp"},
                          {"containerPort": p, "name": f"serve-{p}-udp", "protocol": "UDP"}]}
               for p in (80, 81)]
    return {"name": name, "network": {"underlay": "192.168.1.0/24", "podCIDR": "10.244.0.0/16"},
            "nodes": [{"name": n, "ip": ip} for n, ip in C.NODES.items()],
            "namespaces": list(C.NSS),
            "pods": [{"name": f"{p.namespace}-{p.name}", "namespace": p.namespace, "node": p.node,
                      "ip": p.ip, "labels": dict(p.labels), "containers": servers}
                     for p in C.PODS]}


def recorded_cases():
    """Each case's policies and (port, proto, upstream table), as its unit test states them."""
    from tests.unit import test_netpol_cases as C
    out = []
    for name in CASES:
        calls = []
        real = C.assert_matrix
        C.assert_matrix = lambda pols, reach, port, proto="TCP": calls.append(
            (pols, port, proto, reach.table()))
        try:
            getattr(C, name)()
        finally:
            C.assert_matrix = real
        groups: dict = {}
        for pols, port, proto, table in calls:
            groups.setdefault(json.dumps(pols, sort_keys=True), []).append((port, proto, table))
        out += [(name, json.loads(k), v) for k, v in groups.items()]
    return out


def test_upstream_cases_end_to_end(lab, tmp_path):
    text = cases_lab_text(lab)
    path = tmp_path / "cases.yaml"
    path.write_text(json.dumps(text, indent=1))   # JSON is YAML, without aliases
    netlab("up", str(path), "--name", lab)
    base = running.load_up(lab)
    ran = set()
    for case, pols, tables in recorded_cases():
        # reload the lab's tables with this case's policies (as a scenario edit would)
        scenario = json.dumps({**text, "networkPolicies": pols}, indent=1)
        new = model.parse(scenario, str(path), lab)
        new = replace(base, parts={**base.parts, "network_policies": new.network_policies})
        for op in NP.NetworkPolicies().reload(new):
            r = subprocess.run(["ip", "netns", "exec", op.ns, "nft", "-f", "-"],
                               input=op.ruleset, capture_output=True, text=True, timeout=30)
            assert r.returncode == 0, r.stderr
        report = V.run(new, V.derive(new, ["policy"]))
        bad = [(r.check.src, r.check.dst, r.check.port, r.check.data[0], r.observed, r.reason)
               for r in report.results if not r.ok]
        assert not bad, f"{case}: observed differs from the model\n" + \
            observed_tables(new, report.results) + "\n".join(map(str, bad[:20]))
        # the observed matrix is upstream's table, entry for entry
        observed = {}
        for r in report.results:
            c = r.check
            want = c.expect == "reachable"
            observed[c.port, c.data[0], c.data[1], c.data[2]] = want if r.ok else not want
        short = {p.id: f"{p.namespace}/{p.name.split('-', 1)[1]}" for p in NP.cluster(new)[1]}
        for port, proto, table in tables:
            got = {(short[s], short[d]): ok for (pp, pr, s, d), ok in observed.items()
                   if pp == port and pr == proto}
            if not got:
                continue               # a port no policy names and no pod serves (82)
            want = {k: v for k, v in table.items() if k[0] != k[1]}
            assert got == want, f"{case} {proto}/{port}: " + str(
                sorted(k for k in want if got.get(k) != want[k]))
            ran.add(case)
    assert len(ran) >= 12, ran


# ---------------------------------------------------------------- scale and delete

SCALE = """name: {name}
network: {{underlay: 192.168.1.0/24, podCIDR: 10.244.0.0/16}}
nodes:
  - {{name: node1, ip: 192.168.1.11}}
  - {{name: node2, ip: 192.168.1.12}}
namespaces: [default, shop]
deployments:
  - name: web
    namespace: shop
    replicas: 1
    labels: {{app: web}}
    containers: [{{name: s, image: netexec, port: 80}}]
pods:
  - {{name: client, node: node1, labels: {{role: client}}}}
  - {{name: other, node: node2, labels: {{role: other}}}}
networkPolicies:
  - name: web-from-client
    namespace: shop
    podSelector: {{matchLabels: {{app: web}}}}
    ingress:
      - from: [{{namespaceSelector: {{}}, podSelector: {{matchLabels: {{role: client}}}}}}]
        ports: [{{port: 80}}]
"""


def test_rules_follow_scale_and_delete(lab, tmp_path):
    path = tmp_path / "scale.yaml"
    path.write_text(SCALE.format(name=lab))
    netlab("up", str(path), "--name", lab)
    netlab("scale", lab, "deployment/shop/web", "--replicas", "3")
    now = running.load_up(lab)
    web = [p for p in now.pods if p.deployment == "web"]
    assert len(web) == 3 and {p.node for p in web} == {"node1", "node2"}
    for p in web:
        chain = in_ns(f"{lab}-{p.node}", "nft", "list", "chain", "inet", "netlab-netpol",
                      f"ingress.shop.{p.name}")
        assert chain.returncode == 0 and "shop/web-from-client ingress rule 1" in chain.stdout
    code, report = verify_json(lab, "--only", "policy")
    assert code == 0, failures(report["results"])
    verdicts = {(r["from"], r["to"]): r["expected"] for r in report["results"]}
    assert all(verdicts[("client", p.name)] == "connects" for p in web)
    assert all(verdicts[("other", p.name)] == "no connection" for p in web)
    victim = web[0]
    netlab("delete", lab, f"pod/{victim.name}")
    after = running.load_up(lab)
    assert victim.name not in {p.name for p in after.pods}
    table = in_ns(f"{lab}-{victim.node}", "nft", "list", "table", "inet", "netlab-netpol").stdout
    assert f"ingress.shop.{victim.name}" not in table
    code, report = verify_json(lab, "--only", "policy")
    assert code == 0, failures(report["results"])

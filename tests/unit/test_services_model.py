"""Services, pure: deployments and their pod names, allocation, endpoints, the kube-proxy ruleset
in the plan, the live pods after scale/delete, verify's checks and judge, and the CLI's rows."""

from __future__ import annotations

from pathlib import Path

import pytest

from netlab import model, plan
from netlab.cli import kube
from netlab.core.ops import HairpinOn, NftApply, Sysctl
from netlab.features import deployments as D
from netlab.features import kubeproxy, services, svcchecks
from netlab.features.svcchecks import SvcOut, judge
from netlab.runtime import scale

ROOT = Path(__file__).resolve().parents[2]
SCENARIO = (ROOT / "scenarios" / "services.yaml").read_text()


def lab(text: str = SCENARIO, live=None):
    return model.parse(text, "services.yaml", "svc-unit", live=live)


def test_deployment_pods_are_named_like_kubernetes_and_spread_round_robin():
    l = lab()
    web = [p for p in l.pods if p.deployment == "web"]
    assert len(web) == 3 and [p.node for p in web] == ["node1", "node2", "node1"]
    h = web[0].name.split("-")[1]
    assert all(p.name.startswith(f"web-{h}-") and len(p.name.split("-")[2]) == 5 for p in web)
    assert set(h + "".join(p.name.split("-")[2] for p in web)) <= set(D.SAFE_ALPHABET)
    assert dict(web[0].labels) == {"app": "web", "pod-template-hash": h}
    assert all(p.namespace == "shop" and p.ns == f"svc-unit-{p.name}" for p in web)
    assert [p.name for p in lab().pods] == [p.name for p in l.pods]      # deterministic
    assert {n.name for n in l.kube_namespaces} == {"default", "kube-system", "shop"}
    assert ("kubernetes.io/metadata.name", "shop") in l.kube_namespaces[2].labels


def test_allocation_clusterip_nodeport_and_loadbalancer():
    by = {s.name: s for s in lab().services}
    assert by["web"].cluster_ip == "10.96.0.50"
    assert by["web-local"].cluster_ip == "10.96.0.2"     # .1 is the API's, .10 kube-dns's
    assert [p.node_port for p in by["web"].ports] == [30080, 30000]
    assert by["web-local"].load_balancer_ip == "203.0.113.201"
    assert by["web-local"].announced_by == "node1"
    assert by["api"].ports[0].node_port is None


def test_endpoints_follow_selector_namespace_and_named_ports():
    l = lab()
    eps = services.all_endpoints(l)
    web = {p.ip for p in l.pods if p.deployment == "web"}
    assert {e.ip for e in eps["shop/web"]} == web
    assert {(e.port, e.port_name) for e in eps["shop/web"]} == {(8080, "http"), (8080, "dns")}
    assert eps["default/idle"] == ()
    assert all(e.pod.startswith("api-") for e in eps["default/api"])


def test_plan_has_bridge_netfilter_hairpin_and_one_nft_transaction_per_node():
    l = lab()
    ops = plan.build(l)
    assert [o.ns for o in ops if isinstance(o, Sysctl) and o.key == services.BRIDGE_NF] == \
        [n.ns for n in l.nodes]
    assert {o.ifname for o in ops if isinstance(o, HairpinOn)} == \
        {p.host_veth for p in l.pods}
    nft = [o for o in ops if isinstance(o, NftApply)]
    assert [o.ns for o in nft] == [n.ns for n in l.nodes]
    text = nft[0].ruleset
    assert text.startswith("add table ip kube-proxy\ndelete table ip kube-proxy\n")
    assert "numgen random mod 3 vmap" in text
    assert "masquerade fully-random" in text
    assert 'add element ip kube-proxy no-endpoint-services { 10.96.0.4 . tcp . 80 comment ' \
           '"default/idle" : goto reject-chain }' in text
    assert "update @affinity-" in text                      # ClientIP affinity
    assert "short-circuit pod traffic" in text              # Local policy
    script = plan.script(l, ops)
    assert "sysctl -qw net.bridge.bridge-nf-call-iptables=1" in script
    assert "type bridge_slave hairpin on" in script
    assert "ip -n svc-unit-outside route add 203.0.113.201/32 via 192.168.1.11 dev eth0" in script


def test_scenarios_without_services_get_no_services_ops():
    l = model.load(ROOT / "scenarios" / "three-node.yaml")
    assert l.services == () and l.deployments == ()
    assert not [o for o in plan.build(l) if isinstance(o, (HairpinOn, NftApply))]


def test_masquerade_all_needs_no_bridge_netfilter():
    l = lab(SCENARIO.replace("outside: true", "outside: true\nkubeProxy: {masqueradeAll: true}"))
    assert not [o for o in plan.build(l) if isinstance(o, Sysctl) and "bridge" in o.key]
    assert services.Services().needs(l).checks == []
    assert not svcchecks.rule_clientip(l)


def test_preflight_names_a_missing_br_netfilter(monkeypatch, tmp_path):
    """A stock Debian host: br_netfilter is a module not loaded, /proc/sys/net/bridge is absent."""
    from netlab.core.errors import NetlabError
    from netlab.runtime import preflight
    monkeypatch.setattr(services, "BRIDGE_NF_PATH", str(tmp_path / "absent"))
    problem = services.bridge_netfilter_problem()
    assert "modprobe br_netfilter" in problem and "masqueradeAll" in problem
    assert "its own node would lose the replies" in problem
    with pytest.raises(NetlabError, match="br_netfilter module is not loaded"):
        preflight.check(lab())
    monkeypatch.setattr(services, "BRIDGE_NF_PATH", str(tmp_path))
    assert services.bridge_netfilter_problem() == ""


def test_svcclient_lines_parse():
    out = svcchecks.parse_client("ok\tweb-a\nerr\trefused\nok\tweb-b\n")
    assert out.answers == ["web-a", "", "web-b"] and out.errors == ["", "refused", ""]


def test_live_pods_override_the_scenario_and_new_pods_get_new_addresses():
    l = lab()
    live = scale.live_of(l, {})
    d = next(d for d in l.deployments if d.name == "web")
    gone = next(p for p in l.pods if p.deployment == "web")
    entry = live["deployments"][d.key]
    entry["pods"] = [q for q in entry["pods"] if q[0] != gone.name]
    live["retired"].append(gone.ip)
    scale._add(l, live, d, 1)
    new = lab(live=live)
    names = [p.name for p in new.pods if p.deployment == "web"]
    assert gone.name not in names and len(names) == 3
    added = new.pod(names[-1])
    assert added.ip != gone.ip and added.node == gone.node      # the node with fewest pods
    kept = {p.name: p.ip for p in l.pods if p.name != gone.name}
    assert all(new.pod(n).ip == ip for n, ip in kept.items())
    ops = scale.pod_ops(plan.build(new), [added])
    assert ops and all(getattr(o, "ns", "") in (added.ns, new.node(added.node).ns) for o in ops)


def test_stale_udp_flushes_removed_endpoints():
    l = lab()
    eps = services.all_endpoints(l)
    gone = eps["shop/web"][0].ip
    fewer = {k: tuple(e for e in v if e.ip != gone) for k, v in eps.items()}
    cmds = kubeproxy.stale_udp(l.services, eps, l.services, fewer)
    assert ("conntrack", "-D", "--orig-dst", "10.96.0.50", "--dst-nat", gone, "-p", "udp") in cmds


def test_verify_rules_cover_every_granular_check():
    l = lab()
    rules = {c.rule for r in svcchecks.RULES.values() for c in r(l)}
    assert rules == set(svcchecks.RULES)
    refuse = [c for c in svcchecks.rule_no_endpoints(l)]
    assert refuse and all(c.data[0] == "refuse" and c.target == "10.96.0.4" for c in refuse)
    local = svcchecks.rule_local(l)
    assert {c.data[0] for c in local} == {"all", "clientip"}   # every node has a web pod
    c = svcchecks.rule_endpoints(l)[0]
    assert "for i in $(seq" in c.reproduce and "curl -s" in c.reproduce


def _check(mode="all"):
    l = lab()
    return next(c for c in svcchecks.rule_endpoints(l) if c.data[1] == "tcp"), l


def test_judge_passes_when_every_endpoint_answers_and_names_a_stranger():
    c, l = _check()
    names = [e.pod for e in c.data[3]]
    assert judge(c, SvcOut(names, [""] * len(names))).ok
    r = judge(c, SvcOut(names + ["client"], [""] * (len(names) + 1)))
    assert not r.ok and "client answered but is not an endpoint" in r.reason


def test_judge_affinity_and_refusal():
    l = lab()
    c = svcchecks.rule_affinity(l)[0]
    one = c.data[3][0].pod
    assert judge(c, SvcOut([one] * 10, [""] * 10)).ok
    r = judge(c, SvcOut([one, c.data[3][1].pod] * 5, [""] * 10))
    assert not r.ok and "affinity" in r.reason
    c = svcchecks.rule_no_endpoints(l)[0]
    assert judge(c, SvcOut(["", ""], ["refused", "refused"])).ok


def test_cli_rows_have_kubectls_columns():
    l = lab()
    cols, rows = kube.svc_rows(l, 0, 125, "shop", False)
    assert cols == ("NAME", "TYPE", "CLUSTER-IP", "EXTERNAL-IP", "PORT(S)", "AGE")
    assert rows[0] == ("web", "NodePort", "10.96.0.50", "<none>", "80:30080/TCP,53:30000/UDP",
                       "2m")
    assert rows[1][3] == "203.0.113.201"
    cols, rows = kube.pod_rows(l, {}, {}, 0, "shop", True)
    assert cols == ("NAME", "READY", "STATUS", "RESTARTS", "AGE", "IP", "NODE")
    assert rows[0][1:3] == ("0/1", "Error") and len(rows) == 3
    cols, rows = kube.endpoints_rows(l, 0, 0, None)
    assert dict((r[0], r[1]) for r in rows)["idle"] == "<none>"
    assert kube.age(45) == "45s" and kube.age(7200) == "2h" and kube.age(3 * 86400) == "3d"
    assert kube.as_json(l, "svc", "shop")["items"][0]["spec"]["clusterIP"] == "10.96.0.50"


@pytest.mark.parametrize("bad,expect", [
    ("selector: {app: api}", "matches no pod"),
])
def test_selector_in_another_namespace_matches_nothing(bad, expect):
    text = SCENARIO.replace("    selector: {app: web}\n    ports:\n      - {name: http",
                            "    selector: {app: api}\n    ports:\n      - {name: http", 1)
    with pytest.raises(model.ScenarioError) as e:
        lab(text)
    assert expect in str(e.value)


def test_chain_bodies_from_nft_list_output_also_when_flushed():
    from netlab.features.svcprobe import _chain
    table = ("table ip kube-proxy {\n\tchain masquerading {\n\t}\n\n"
             "\tchain mark-for-masquerade {\n\t\tmeta mark set meta mark | 0x00004000\n\t}\n"
             "\tchain endpoint-X {\n\t\tupdate @affinity-X { ip saddr }\n"
             "\t\tmeta l4proto tcp dnat to 10.244.1.3:8080\n\t}\n}\n")
    assert _chain(table, "masquerading") == ""
    assert "dnat to 10.244.1.3:8080" in _chain(table, "endpoint-X")
    assert _chain(table, "endpoint-Y") is None

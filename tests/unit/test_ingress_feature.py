"""The ingress feature, pure: scenarios/ingress.yaml becomes a controller pod, its Service, an
nginx.conf written into the lab's state before nginx starts, backend pods answering every path,
and verify checks from the outside world and a pod; bad sections are refused at their line; the
judge names what broke."""

from __future__ import annotations

from pathlib import Path

import pytest

from netlab import model, plan
from netlab.core.errors import ScenarioError
from netlab.core.lab import state_dir
from netlab.core.ops import Spawn, WriteFile
from netlab.features import RULES, svcchecks
from netlab.features import ingress as I
from netlab.features.ingress import checks as K

ROOT = Path(__file__).resolve().parents[2]
SCENARIO = ROOT / "scenarios" / "ingress.yaml"
TEXT = SCENARIO.read_text()


@pytest.fixture(scope="module")
def lab():
    return model.parse(TEXT, str(SCENARIO), name="ingw-unit")


def test_the_controller_is_a_pod_on_node1_with_its_own_namespace(lab):
    ctl = lab.ingress
    pod = lab.pod(ctl.pod)
    assert ctl.pod.startswith("ingress-nginx-controller-") and pod.node == "node1"
    assert pod.ip == "10.244.1.254" and pod.namespace == I.NAMESPACE
    assert dict(pod.labels) == {"app.kubernetes.io/name": "ingress-nginx"}
    assert pod.ns == f"ingw-unit-{ctl.pod}" and pod.ns in lab.namespaces
    assert pod.containers[0].argv[0] == "/usr/sbin/nginx"
    assert ctl.conf_path == f"{state_dir('ingw-unit')}/ingress/nginx.conf"
    assert I.NAMESPACE in {n.name for n in lab.kube_namespaces}


def test_its_service_is_a_local_loadbalancer_with_outside_else_a_nodeport(lab):
    svc = I.service_of(lab)
    assert (svc.type, svc.external_traffic_policy) == ("LoadBalancer", "Local")
    assert svc.load_balancer_ip == "203.0.113.201" and svc.announced_by == "node1"
    assert [p.port for p in svc.ports] == [80]
    assert I.address_of(lab) == ("203.0.113.201", {80: 80})
    bare = TEXT.replace("outside: true", "").replace("  loadBalancerPool:", "  #")
    nolb = model.parse(bare, "x.yaml", name="ingw-unit2")
    svc = I.service_of(nolb)
    assert svc.type == "NodePort" and svc.load_balancer_ip is None
    assert I.address_of(nolb) == ("192.168.1.11", {80: svc.ports[0].node_port})


def test_a_gateway_listener_port_is_a_port_of_the_service():
    text = TEXT.replace("listeners: [{name: http, protocol: HTTP, port: 80,",
                        "listeners: [{name: http, protocol: HTTP, port: 8081,")
    lab = model.parse(text, "x.yaml", name="ingw-unit3")
    assert [(p.name, p.port) for p in I.service_of(lab).ports] == [("http", 80),
                                                                  ("http-8081", 8081)]
    assert "listen 8081" in I.conf_text(lab)


def test_the_plan_writes_the_conf_before_nginx_starts_with_clusterip_upstreams(lab):
    ops = plan.build(lab)
    writes = [i for i, op in enumerate(ops) if isinstance(op, WriteFile)
              and op.path == lab.ingress.conf_path]
    starts = [i for i, op in enumerate(ops) if isinstance(op, Spawn) and op.owner == lab.ingress.pod]
    assert len(writes) == 1 and len(starts) == 1 and writes[0] < starts[0]
    text = ops[writes[0]].text
    assert text == I.conf_text(lab)
    api = next(s for s in lab.services if s.key == "shop/api")
    assert f"server {api.cluster_ip}:80 max_fails=0;" in text
    assert f"pid {state_dir('ingw-unit')}/ingress/nginx.pid;" in text
    assert "/var/log/nginx" not in text and "/var/lib/nginx" not in text


def test_backend_pods_answer_every_path_others_do_not(lab):
    for p in lab.pods:
        argv = p.containers[0].argv if p.containers else ()
        behind = p.deployment in ("api", "web", "web-v2", "fallback")
        assert ("--any-path" in argv) == behind, p.name


def test_no_sections_no_controller():
    lab = model.load(ROOT / "scenarios" / "services.yaml", name="ingw-unit4")
    assert lab.ingress is None
    assert not any(p.namespace == I.NAMESPACE for p in lab.pods)
    assert RULES["ingress"](lab) == [] and RULES["gateway"](lab) == []


def test_the_services_rules_leave_the_controllers_service_to_ingress(lab):
    keys = {c.dst for rule in svcchecks.RULES.values() for c in rule(lab)}
    assert not any(I.SERVICE in k for k in keys)
    assert any("svc/api" in k for k in keys)


def test_checks_from_outside_and_a_pod_with_host_headers(lab):
    ing, gw = RULES["ingress"](lab), RULES["gateway"](lab)
    assert {c.src for c in ing} == {"outside", "client"} == {c.src for c in gw}
    to = {c.dst for c in ing}
    assert {"shop.example.com/api", "shop.example.com/api/x", "shop.example.com/apix",
            "shop.example.com/login", "shop.example.com/login/x", "unknown.invalid/"} <= to
    apix = next(c for c in ing if c.dst == "shop.example.com/apix")
    assert apix.data[3][0][0] == "shop/fallback"         # Prefix: path elements only
    login_x = next(c for c in ing if c.dst == "shop.example.com/login/x")
    assert login_x.data[3][0][0] == "shop/fallback"      # Exact: not a longer path
    weights = [c for c in gw if c.data[0] == "weights"]
    assert [c.src for c in weights] == ["outside"]       # one client measures a split
    assert weights[0].reproduce.startswith("for i in $(seq 100); do ip netns exec ingw-unit-"
                                           "outside curl -s -H 'Host: beta.example.com' ")
    canary = next(c for c in gw if c.data[2] == (("x-canary", "1"),) and c.src == "client")
    assert "-H 'x-canary: 1'" in canary.reproduce and canary.target == "203.0.113.201"
    xff = [c for c in ing if c.data[0] == "xff"]
    assert {c.sees[0] for c in xff} == {"192.168.1.254", lab.pod("client").ip}


def _check(lab, rule, to, src="outside"):
    return next(c for c in RULES[rule](lab) if c.dst == to and c.src == src)


def test_judge_names_a_backend_without_endpoints_and_a_wrong_backend(lab):
    c = _check(lab, "ingress", "shop.example.com/api")
    api = sorted(c.data[3][0][2])
    ok = K.judge(c, K.Answers([200, 200], [api[0], api[1]]))
    assert ok.ok
    wrong = K.judge(c, K.Answers([200, 200], [api[0], "fallback-x"]))
    assert not wrong.ok and "expected Service shop/api" in wrong.reason
    # the same check once shop/api has no endpoints (the model after `scale --replicas 0`)
    empty = c.__class__(**{**c.__dict__, "data": (c.data[0], c.data[1], c.data[2],
                                                  (("shop/api", 1, frozenset()),)) + c.data[4:]})
    bad = K.judge(empty, K.Answers([502, 502], ["", ""]))
    assert not bad.ok and "Service shop/api has no endpoints" in bad.reason


def test_judge_weights_within_the_tolerance(lab):
    c = next(c for c in RULES["gateway"](lab) if c.data[0] == "weights")
    web = sorted(next(ps for svc, _, ps in c.data[3] if svc == "shop/web"))
    v2 = sorted(next(ps for svc, _, ps in c.data[3] if svc == "shop/web-v2"))
    assert K.judge(c, K.Answers([200] * 100, [web[0]] * 88 + [v2[0]] * 12)).ok
    off = K.judge(c, K.Answers([200] * 100, [web[0]] * 70 + [v2[0]] * 30))
    assert not off.ok and "shop/web got 70% of 100 requests, its weight says 90%" in off.reason


def test_judge_xff_and_parse_curl(lab):
    c = next(c for c in RULES["ingress"](lab) if c.data[0] == "xff" and c.src == "outside")
    codes, bodies = K.parse_curl("Host: x\nX-Forwarded-For: 192.168.1.254\n@@200@@\n")
    assert codes == [200] and K.judge(c, K.Answers(codes, bodies)).ok
    snat = K.judge(c, K.Answers([200], ["X-Forwarded-For: 192.168.1.11"]))
    assert not snat.ok and "not the client's 192.168.1.254" in snat.reason
    assert K.parse_curl("a\n@@404@@\n\n@@000@@\n") == ([404, 0], ["a", ""])


@pytest.mark.parametrize("fragment, fix", [
    ("name: shop-api", "no Service 'shop-api'"),
    ("ingressClassName: traefik", "has no controller here"),
])
def test_bad_sections_are_refused_at_their_line(fragment, fix):
    text = TEXT.replace("name: api, port: {number: 80}", fragment.replace("name: ", "name: ")
                        + ", port: {number: 80}") if "shop-api" in fragment else \
        TEXT.replace("ingressClassName: nginx", fragment)
    with pytest.raises(ScenarioError) as e:
        model.parse(text, "ingress.yaml", name="ingw-unit5")
    want = next(i for i, line in enumerate(text.splitlines(), 1)
                if fragment.split(":")[0] in line and fragment.split(": ")[1] in line)
    assert e.value.line == want and fix in e.value.message


def test_get_rows_have_kubectls_columns(lab):
    from netlab.cli import kube
    cols, rows = kube.route_rows(lab, "ingress", 0.0, 90.0, "shop")
    assert cols == ("NAME", "CLASS", "HOSTS", "ADDRESS", "PORTS", "AGE")
    assert rows == [("shop", "nginx", "shop.example.com", "203.0.113.201", "80", "1m")]
    cols, rows = kube.route_rows(lab, "httproute", 0.0, 5.0, "shop")
    assert rows == [("canary", '["beta.example.com"]', "True (Accepted)", "5s")]
    assert kube.route_rows(lab, "gateway", 0.0, 5.0, "default")[1] == []
    assert kube.as_json(lab, "gateway", "shop")["items"][0]["spec"]["listeners"][0]["hostname"] \
        == "*.example.com"

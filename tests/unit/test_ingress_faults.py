"""The Ingress fault ingress-path-type and the live conf verify reads back, pure: the targets of
scenarios/ingress.yaml and why others are left out, the operations (the flipped conf, nginx's
reload) and their inverse, the checks it breaks from the flipped routing table, and the parser of
a live nginx.conf that matches requests as the routing table does and names the location that
differs from the model's."""

from __future__ import annotations

from pathlib import Path

from netlab import exercises as E, model
from netlab.core import ops as P
from netlab.features import FAULTS
from netlab.features import ingress as I
from netlab.features.ingress import live as L
from netlab.features.ingress.faults import flipped, paths
from netlab.features.ingress.table import pick
from netlab.verify import engine

ROOT = Path(__file__).resolve().parents[2]
SCENARIO = ROOT / "scenarios" / "ingress.yaml"
TEXT = SCENARIO.read_text()
FAULT = FAULTS["ingress-path-type"]


def lab_of(text: str = TEXT):
    return model.parse(text, str(SCENARIO), name="ifu")


def test_the_shipped_scenarios_paths_are_its_targets_and_others_have_none():
    lab = lab_of()
    assert FAULT.targets(lab) == ["shop/api", "shop/login"]
    assert FAULT.targets(model.load(str(ROOT / "scenarios" / "three-node.yaml"))) == []
    assert E.target_of(lab, FAULT, None) == "shop/api"


def test_flip_changes_one_path_type_only():
    cfg = lab_of().ingress.config
    at = paths(cfg)["shop/api"]
    after = flipped(cfg, at).ingresses[0].rules[0].http.paths
    assert [p.pathType for p in after] == ["Exact", "Exact"]
    assert [p.pathType for p in flipped(cfg, paths(cfg)["shop/login"]).ingresses[0].rules[0]
            .http.paths] == ["Prefix", "Prefix"]
    assert cfg.ingresses[0].rules[0].http.paths[0].pathType == "Prefix"     # the model is intact


def test_root_and_trailing_slash_paths_are_no_targets():
    text = TEXT.replace("- {path: /api, pathType: Prefix,", "- {path: /api/, pathType: Prefix,")
    text = text.replace("- {path: /login, pathType: Exact,", "- {path: /, pathType: Prefix,")
    lab = lab_of(text)
    assert paths(lab.ingress.config) == {}
    assert FAULT.targets(lab) == []


def test_a_flip_left_to_kube_proxys_choice_is_no_target():
    # fallback now selects the api pods: /api/x flipped to the default backend may still be
    # answered by a pod of shop/api, so that check's outcome is not certain
    text = TEXT.replace("- {name: fallback, namespace: shop, selector: {app: fallback},",
                        "- {name: fallback, namespace: shop, selector: {app: api},")
    assert FAULT.targets(lab_of(text)) == ["shop/login"]


def test_it_breaks_the_requests_below_the_path_from_every_client():
    lab = lab_of()
    checks = engine.derive(lab)
    api = E.expected(lab, FAULT.name, "shop/api", checks)
    assert {(c.src, c.dst) for c in api} == {("outside", "shop.example.com/api/x"),
                                            ("client", "shop.example.com/api/x")}
    login = E.expected(lab, FAULT.name, "shop/login", checks)
    assert {(c.src, c.dst) for c in login} == {("outside", "shop.example.com/login/x"),
                                              ("client", "shop.example.com/login/x")}
    assert E.symptom(lab, FAULT.name, "shop/api") == (
        "curl shop.example.com/api/x from outside is not answered by Service shop/api "
        "(and 1 more checks fail)")


def test_make_writes_the_flipped_conf_and_reloads_undo_writes_the_models():
    lab = lab_of()
    b = FAULT.make(lab, "shop/api")
    ctl, ns = lab.ingress, lab.pod(lab.ingress.pod).ns
    write, reload = b.ops
    assert isinstance(write, P.WriteFile) and write.path == ctl.conf_path
    assert "location /api/ {" not in write.text and "location = /api {" in write.text
    assert "# Exact /api -> shop/api:80" in write.text
    assert b.undo == (P.WriteFile(ctl.conf_path, I.conf_text(lab)), reload)
    assert (b.ns, b.obj) == (ns, "location /api/")
    assert reload.ip() == (f"ip netns exec {ns} /usr/sbin/nginx -c {ctl.conf_path} "
                           f"-p {ctl.state}/ -e {ctl.state}/error.log -s reload")
    assert b.fix == f"netlab show ifu ingress shop --config > {ctl.conf_path} && {reload.ip()}"
    assert "-T -q | grep" in b.look and b.look.startswith(f"ip netns exec {ns} /usr/sbin/nginx")
    # the journal keeps them as plain data
    assert [P.from_record(P.as_record(op)) for op in b.ops + b.undo] == list(b.ops + b.undo)
    added = FAULT.make(lab, "shop/login").ops[0].text
    assert "location /login/ {" in added and "location /login/ {" not in I.conf_text(lab)


# ---------------------------------------------------------------- the live conf


def test_tokens_follow_nginxs_grammar():
    assert L._tokens('a ${x}y {b "c d" \'e;f\';} # g;\nh;') == \
        ["a", "${x}y", "{", "b", "c d", "e;f", ";", "}", "h", ";"]


def test_the_models_conf_parses_into_its_servers_and_locations():
    text = I.conf_text(lab_of())
    servers = {(s.port, s.host): s for s in L.parse(text)}
    assert set(servers) == {(80, None), (80, "*.example.com"), (80, "beta.example.com"),
                            (80, "shop.example.com")}
    shop = servers[(80, "shop.example.com")]
    assert [(lc.line, lc.does) for lc in shop.locations] == [
        ("location /", "proxy_pass http://shop-fallback-80"),
        ("location = /api", "proxy_pass http://shop-api-80"),
        ("location /api/", "proxy_pass http://shop-api-80"),
        ("location = /login", "proxy_pass http://shop-web-80")]
    assert servers[(80, "*.example.com")].locations[0].does == "return 404"
    # the same conf on one line, comments gone, parses the same
    flat = " ".join(line.split("#")[0] for line in text.splitlines())
    assert L.parse(flat) == L.parse(text)


def test_pick_takes_the_same_location_in_the_conf_as_in_the_routing_table():
    lab = lab_of()
    table, live = I.table_of(lab), L.parse(I.conf_text(lab))
    for host in ("shop.example.com", "beta.example.com", "x.example.com", "nobody.test"):
        for path in ("/", "/api", "/api/x", "/apix", "/login", "/login/x"):
            want = pick(table.servers, 80, host, path)
            got = pick(live, 80, host, path)
            assert (got[0].host, got[1].op, got[1].path) == \
                (want[0].host, want[1].op, want[1].path), (host, path)


def test_mismatch_names_the_location_that_took_the_request_and_the_models():
    lab = lab_of()
    model_text = I.conf_text(lab)
    assert L.mismatch(model_text, model_text, "ns", 80, "shop.example.com", "/api/x") == ""
    removed = FAULT.make(lab, "shop/api").ops[0].text
    assert L.mismatch(removed, model_text, "ns", 80, "shop.example.com", "/api/x") == (
        "the live nginx.conf in ns takes shop.example.com/api/x by `location /` (proxy_pass "
        "http://shop-fallback-80); the model's is `location /api/` (proxy_pass "
        "http://shop-api-80), missing there")
    assert L.mismatch(removed, model_text, "ns", 80, "shop.example.com", "/api") == ""
    added = FAULT.make(lab, "shop/login").ops[0].text
    assert L.mismatch(added, model_text, "ns", 80, "shop.example.com:80", "/login/x") == (
        "the live nginx.conf in ns takes shop.example.com/login/x by `location /login/` "
        "(proxy_pass http://shop-web-80), a location the model does not have; the model's is "
        "`location /` (proxy_pass http://shop-fallback-80)")
    other = model_text.replace("proxy_pass http://shop-api-80;", "return 404;", 1)
    assert L.mismatch(other, model_text, "ns", 80, "shop.example.com", "/api") == (
        "`location = /api` of the live nginx.conf in ns does return 404 for shop.example.com/api, "
        "the model's does proxy_pass http://shop-api-80")


def test_every_ingress_check_knows_where_the_live_conf_is():
    lab = lab_of()
    ctl = lab.ingress
    for c in engine.derive(lab):
        if c.method == "ingress":
            live = c.data[8]
            assert (live.ns, live.conf, live.state, live.port) == \
                (lab.pod(ctl.pod).ns, ctl.conf_path, ctl.state, 80)
            assert live.model == I.conf_text(lab)
            assert L.explain(live, c.data[1], c.path) == ""     # no such namespace: says nothing


def test_judge_adds_the_live_location_to_a_wrong_answer_only_when_the_conf_differs(monkeypatch):
    from netlab.features.ingress import checks as K
    lab = lab_of()
    c = next(c for c in engine.derive(lab) if c.method == "ingress" and c.src == "outside"
             and c.dst == "shop.example.com/api/x")
    monkeypatch.setattr(L, "read", lambda live: (FAULT.make(lab, "shop/api").ops[0].text, ""))
    wrong = K.judge(c, K.Answers([200, 200], ["fallback-x", "fallback-x"]))
    assert not wrong.ok and wrong.reason.startswith("fallback-x (no backend pod) answered, "
                                                    "expected Service shop/api; the live nginx")
    assert "by `location /`" in wrong.reason and "`location /api/`" in wrong.reason
    lost = K.judge(c, K.Answers([404, 404], ["", ""]))
    assert lost.reason.startswith("nginx answered 404") and "`location /api/`" in lost.reason
    monkeypatch.setattr(L, "read", lambda live: (I.conf_text(lab), ""))
    assert K.judge(c, K.Answers([200, 200], ["fallback-x"] * 2)).reason == \
        "fallback-x (no backend pod) answered, expected Service shop/api"
    monkeypatch.setattr(L, "read", lambda live: (None, 'nginx: [emerg] unexpected "}"'))
    assert K.judge(c, K.Answers([404, 404], ["", ""])).reason.endswith(
        f"; `nginx -T` in {lab.pod(lab.ingress.pod).ns} fails: nginx: [emerg] unexpected \"}}\"")

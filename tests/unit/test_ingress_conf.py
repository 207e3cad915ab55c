"""Pure tests of netlab.ingress: the specs' validation, Gateway attachment, precedence and the
nginx.conf text. The integration test proves a real nginx routes by the same text."""

from __future__ import annotations

import copy

import pytest
from pydantic import ValidationError

from netlab import ingress
from netlab.ingress import IngressConfig, build_table, intersect_hostnames, nginx_conf


def validate(*args):
    return [p.message for p in ingress.validate(*args)]

IPS = {"api": "10.96.0.11", "web": "10.96.0.12", "web-v2": "10.96.0.13", "fallback": "10.96.0.14"}


def resolve(ns, service, port):
    return f"{IPS[service]}:{port}" if service in IPS else None


def svc(name, port=80):
    return {"service": {"name": name, "port": {"number": port}}}


ISSUE = {
    "ingresses": [{
        "name": "shop", "namespace": "shop", "ingressClassName": "nginx",
        "defaultBackend": svc("fallback"),
        "rules": [{"host": "shop.example.com", "http": {"paths": [
            {"path": "/api", "pathType": "Prefix", "backend": svc("api")},
            {"path": "/login", "pathType": "Exact", "backend": svc("web")}]}}]}],
    "gateways": [{"name": "edge", "gatewayClassName": "netlab", "listeners": [
        {"name": "http", "protocol": "HTTP", "port": 80, "hostname": "*.example.com"}]}],
    "httproutes": [{
        "name": "canary", "parentRefs": [{"name": "edge"}], "hostnames": ["beta.example.com"],
        "rules": [
            {"matches": [{"path": {"type": "PathPrefix", "value": "/"},
                          "headers": [{"name": "x-canary", "value": "1"}]}],
             "backendRefs": [{"name": "web-v2", "port": 80}]},
            {"backendRefs": [{"name": "web", "port": 80, "weight": 90},
                             {"name": "web-v2", "port": 80, "weight": 10}]}]}],
}


def cfg(doc=None) -> IngressConfig:
    return IngressConfig.model_validate(ISSUE if doc is None else doc)


def conf(doc=None, **kw) -> str:
    return nginx_conf(build_table(cfg(doc), resolve, **kw), "/run/netlab/labs/x/ingress")


def block(text: str, start: str) -> str:
    """The text of one `{ ... }` block, from the line that opens it."""
    i = text.index(start)
    depth, j = 0, text.index("{", i)
    for j in range(j, len(text)):
        depth += {"{": 1, "}": -1}.get(text[j], 0)
        if depth == 0:
            return text[i:j + 1]
    raise AssertionError("unbalanced")


# ---------------------------------------------------------------- validation

def test_issue_scenario_is_valid():
    assert validate(cfg()) == []


def test_unknown_field_is_refused():
    doc = copy.deepcopy(ISSUE)
    doc["ingresses"][0]["rules"][0]["http"]["paths"][0]["pathtype"] = "Prefix"
    with pytest.raises(ValidationError, match="pathtype"):
        cfg(doc)


@pytest.mark.parametrize("port, fine", [({"number": 80}, True), ({"name": "http"}, True),
                                        ({}, False), ({"number": 80, "name": "http"}, False)])
def test_service_port_is_number_or_name(port, fine):
    doc = {"ingresses": [{"name": "a", "defaultBackend": {"service": {"name": "w", "port": port}}}]}
    if fine:
        cfg(doc)
    else:
        with pytest.raises(ValidationError, match="number: 80` or `name: http"):
            cfg(doc)


@pytest.mark.parametrize("path, says", [("api", "must start with '/'"),
                                        ("/a b", "characters"), ("/a//b", "empty"),
                                        ("/a/../b", "'..'"), ("/a;b", "characters")])
def test_bad_paths_name_the_fix(path, says):
    doc = {"ingresses": [{"name": "a", "rules": [{"http": {"paths": [
        {"path": path, "pathType": "Prefix", "backend": svc("web")}]}}]}]}
    with pytest.raises(ValidationError, match=says):
        cfg(doc)


def test_bad_host_and_pathtype():
    with pytest.raises(ValidationError, match="not a host name"):
        cfg({"ingresses": [{"name": "a", "rules": [{"host": "Shop_Example"}]}]})
    with pytest.raises(ValidationError, match="Exact"):
        cfg({"ingresses": [{"name": "a", "rules": [{"http": {"paths": [
            {"path": "/", "pathType": "Regex", "backend": svc("web")}]}}]}]})


def test_class_names_are_ours():
    doc = copy.deepcopy(ISSUE)
    doc["ingresses"][0]["ingressClassName"] = "traefik"
    doc["gateways"][0]["gatewayClassName"] = "istio"
    errors = validate(cfg(doc))
    assert any("ingressClassName 'traefik'" in e and "ingressClassName: nginx" in e for e in errors)
    assert any("gatewayClassName 'istio'" in e and "`netlab`" in e for e in errors)


def test_duplicate_path_and_second_default_backend():
    doc = copy.deepcopy(ISSUE)
    doc["ingresses"][0]["rules"][0]["http"]["paths"].append(
        {"path": "/api/", "pathType": "Prefix", "backend": svc("web")})
    doc["ingresses"].append({"name": "other", "namespace": "shop", "defaultBackend": svc("web")})
    errors = validate(cfg(doc))
    assert any("/api/ (Prefix) is already routed" in e and "remove one" in e for e in errors)
    assert any("defaultBackend is already given" in e for e in errors)


def test_unknown_parent_and_service_and_port():
    doc = copy.deepcopy(ISSUE)
    doc["httproutes"][0]["parentRefs"] = [{"name": "edgee"}]
    services = {("shop", "api"): {80}, ("shop", "web"): {80, "http"}, ("shop", "fallback"): {80},
                ("default", "web"): {80}, ("default", "web-v2"): {8080}}
    errors = validate(cfg(doc), services)
    assert any("parentRef 'edgee'" in e and "default/edge" in e for e in errors)
    assert any("Service default/web-v2 has no port 80" in e for e in errors)
    doc["ingresses"][0]["defaultBackend"] = svc("fallbak")
    assert any("no Service 'fallbak'" in e and "fallback" in e
               for e in validate(cfg(doc), services))


def test_header_matched_twice_and_bad_header_name():
    doc = copy.deepcopy(ISSUE)
    doc["httproutes"][0]["rules"][0]["matches"][0]["headers"].append(
        {"name": "X-Canary", "value": "2"})
    assert any("matched twice" in e for e in validate(cfg(doc)))
    doc["httproutes"][0]["rules"][0]["matches"][0]["headers"] = [{"name": "x_canary", "value": "1"}]
    with pytest.raises(ValidationError, match="drops header names with '_'"):
        cfg(doc)


def test_problems_say_where():
    doc = copy.deepcopy(ISSUE)
    doc["httproutes"][0]["parentRefs"] = [{"name": "edgee"}]
    doc["gateways"][0]["listeners"][0]["hostname"] = "*.com"
    locs = [p.loc for p in ingress.validate(cfg(doc))]
    assert ("httproutes", 0, "parentRefs", 0) in locs
    assert ("gateways", 0, "listeners", 0, "hostname") in locs


def test_conflicting_listeners():
    doc = copy.deepcopy(ISSUE)
    doc["gateways"][0]["listeners"].append({"name": "http2", "port": 80,
                                            "hostname": "*.example.com"})
    assert any("Conflicted" in e for e in validate(cfg(doc)))


# ---------------------------------------------------------------- Gateway attachment

@pytest.mark.parametrize("listener, route, got", [
    (None, [], [None]),
    (None, ["a.example.com"], ["a.example.com"]),
    ("*.example.com", [], ["*.example.com"]),
    ("*.example.com", ["beta.example.com"], ["beta.example.com"]),
    ("*.example.com", ["a.b.example.com"], ["a.b.example.com"]),
    ("*.example.com", ["example.com"], None),
    ("*.example.com", ["other.test"], None),
    ("foo.example.com", ["*.example.com"], ["foo.example.com"]),
    ("*.example.com", ["*.a.example.com"], ["*.a.example.com"]),
    ("*.a.example.com", ["*.example.com"], ["*.a.example.com"]),
    ("foo.example.com", ["bar.example.com"], None),
])
def test_hostname_intersection(listener, route, got):
    assert intersect_hostnames(listener, route) == got


def statuses(doc):
    return [(s.route, s.accepted, s.reason) for s in build_table(cfg(doc), resolve).statuses]


def test_route_no_listener_hostname_allows_is_refused():
    doc = copy.deepcopy(ISSUE)
    doc["httproutes"][0]["hostnames"] = ["beta.other.test"]
    assert statuses(doc) == [("default/canary", False, "NoMatchingListenerHostname")]
    text = conf(doc)
    assert "beta.other.test" not in text and "web-v2" not in text


def test_route_from_other_namespace_not_allowed_unless_all():
    doc = copy.deepcopy(ISSUE)
    doc["httproutes"][0]["namespace"] = "team"
    doc["httproutes"][0]["parentRefs"] = [{"name": "edge", "namespace": "default"}]
    assert statuses(doc) == [("team/canary", False, "NotAllowedByListeners")]
    doc["gateways"][0]["listeners"][0]["allowedRoutes"] = {"namespaces": {"from": "All"}}
    assert statuses(doc) == [("team/canary", True, "Accepted")]
    assert "team-web-v2-80" in conf(doc)


def test_wrong_section_name_is_no_matching_parent():
    doc = copy.deepcopy(ISSUE)
    doc["httproutes"][0]["parentRefs"] = [{"name": "edge", "sectionName": "https"}]
    assert statuses(doc) == [("default/canary", False, "NoMatchingParent")]


def test_listener_kinds_without_httproute():
    doc = copy.deepcopy(ISSUE)
    doc["gateways"][0]["listeners"][0]["allowedRoutes"] = {"kinds": [{"kind": "GRPCRoute"}]}
    assert statuses(doc) == [("default/canary", False, "NotAllowedByListeners")]


# ---------------------------------------------------------------- the nginx.conf text

def test_conf_runs_inside_its_state_dir():
    text = conf()
    for line in ("daemon off;", "master_process on;", "pid /run/netlab/labs/x/ingress/nginx.pid;",
                 "error_log /run/netlab/labs/x/ingress/error.log",
                 "access_log /run/netlab/labs/x/ingress/access.log",
                 "client_body_temp_path /run/netlab/labs/x/ingress/client-body;",
                 "proxy_temp_path ", "fastcgi_temp_path ", "uwsgi_temp_path ", "scgi_temp_path "):
        assert line in text
    assert "/var/" not in text
    assert "include /" not in text and "mime.types" not in text


def test_forwarding_headers():
    text = conf()
    assert "proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;" in text
    assert "proxy_set_header X-Real-IP $remote_addr;" in text
    assert "proxy_set_header Host $best_http_host;" in text


def test_one_server_per_host_and_a_default_server():
    text = conf()
    shop = block(text, "server {\n        listen 80;\n        server_name shop.example.com;")
    assert "location = /api {" in shop and "location /api/ {" in shop
    assert "location = /login {" in shop and "location /login/" not in shop
    assert "location /api {" not in shop           # that would match /apix
    assert "proxy_pass http://shop-api-80;" in block(shop, "location /api/ {")
    assert "proxy_pass http://shop-fallback-80;" in block(shop, "location / {")
    default = block(text, "server {\n        listen 80 default_server;")
    assert "server_name _;" in default and "shop-fallback-80" in default
    assert "server 10.96.0.11:80 max_fails=0;" in block(text, "upstream shop-api-80 {")


def test_no_default_backend_means_404():
    doc = copy.deepcopy(ISSUE)
    del doc["ingresses"][0]["defaultBackend"]
    text = conf(doc)
    assert "return 404;" in block(text, "server {\n        listen 80 default_server;")
    shop = block(text, "server_name shop.example.com;")
    assert "return 404;" in block(shop, "location / {")


def test_trailing_slash_prefix_is_the_same_prefix():
    doc = {"ingresses": [{"name": "a", "rules": [{"host": "h.test", "http": {"paths": [
        {"path": "/api/", "pathType": "Prefix", "backend": svc("api")}]}}]}]}
    text = conf(doc)
    assert "location = /api {" in text and "location /api/ {" in text


def test_implementation_specific_is_plain_nginx_prefix():
    doc = {"ingresses": [{"name": "a", "rules": [{"host": "h.test", "http": {"paths": [
        {"path": "/static", "pathType": "ImplementationSpecific", "backend": svc("web")}]}}]}]}
    text = conf(doc)
    assert "location /static {" in text and "location = /static" not in text


def test_ingress_wildcard_host_is_one_label():
    doc = {"ingresses": [{"name": "a", "rules": [{"host": "*.foo.com", "http": {"paths": [
        {"path": "/", "pathType": "Prefix", "backend": svc("web")}]}}]}]}
    assert "server_name ~^[^.]+\\.foo\\.com$;" in conf(doc)


def test_gateway_wildcard_listener_gets_a_404_server():
    srv = block(conf(), "server_name *.example.com;")
    assert "return 404;" in srv


def test_header_match_and_weights():
    text = conf()
    assert "map $http_x_canary $header_0 {" in text
    assert '"~^1$" 1;' in block(text, "map $http_x_canary $header_0 {")
    beta = block(text, "server_name beta.example.com;")
    var = beta.split("proxy_pass http://")[1].split(";")[0]
    m = block(text, f'map "$header_0" {var} {{')
    assert '"~^1$" default-web-v2-80;' in m
    split = "split-default-web-80-w90-default-web-v2-80-w10"
    assert f"default {split};" in m
    up = block(text, f"upstream {split} {{")
    assert "server 10.96.0.12:80 weight=90" in up and "server 10.96.0.13:80 weight=10" in up
    assert "worker_processes 1;" in text and "proxy_next_upstream off;" in text


def route(*rules, hostnames=("h.example.com",)):
    return {"gateways": [{"name": "g", "gatewayClassName": "netlab",
                          "listeners": [{"name": "l", "port": 80}]}],
            "httproutes": [{"name": "r", "parentRefs": [{"name": "g"}],
                            "hostnames": list(hostnames), "rules": list(rules)}]}


def rule(service, kind="PathPrefix", value="/", headers=()):
    return {"matches": [{"path": {"type": kind, "value": value},
                         "headers": [{"name": n, "value": v} for n, v in headers]}],
            "backendRefs": [{"name": service, "port": 80}]}


def candidates(doc, host, op, path):
    table = build_table(cfg(doc), resolve)
    srv = next(s for s in table.servers if s.host == host)
    loc = next(lc for lc in srv.locations if (lc.op, lc.path) == (op, path))
    return [(c.kind, c.path, c.headers, c.backends[0].service if c.backends else c.status)
            for c in loc.candidates]


def test_precedence_exact_then_longest_prefix_then_most_headers():
    doc = route(rule("fallback", headers=[("a", "1")]),
                rule("web", headers=[("a", "1"), ("b", "2")]),
                rule("api", value="/api"),
                rule("web-v2", kind="Exact", value="/api"))
    # /api itself: the Exact match first, and it always matches: nothing after it.
    assert candidates(doc, "h.example.com", "=", "/api") == [("Exact", "/api", (), "web-v2")]
    # /api/...: the longer prefix without headers beats / with headers.
    assert candidates(doc, "h.example.com", "", "/api/") == [("Prefix", "/api", (), "api")]
    # elsewhere: two headers before one, then 404 (no rule matched).
    assert candidates(doc, "h.example.com", "", "/") == [
        ("Prefix", "/", (("a", "1"), ("b", "2")), "web"),
        ("Prefix", "/", (("a", "1"),), "fallback"),
        ("Prefix", "/", (), 404)]


def test_tie_goes_to_the_first_rule():
    doc = route(rule("web", headers=[("a", "1")]), rule("api", headers=[("b", "1")]))
    got = candidates(doc, "h.example.com", "", "/")
    assert [c[3] for c in got] == ["web", "api", 404]
    text = conf(doc)
    m = block(text, 'map "$header_0$header_1"')
    assert m.index('"~^1.$" default-web-80;') < m.index('"~^.1$" default-api-80;')
    assert "default 404;" in m
    loc = block(block(text, "server_name h.example.com;"), "location / {")
    assert 'if ($route_' in loc and "return 404;" in loc


def test_rule_without_matches_takes_every_path():
    doc = route({"matches": [], "backendRefs": [{"name": "web", "port": 80}]})
    assert candidates(doc, "h.example.com", "", "/") == [("Prefix", "/", (), "web")]


def test_invalid_backends_answer_500_in_gateway_and_503_in_ingress():
    doc = route({"backendRefs": [{"name": "nope", "port": 80}]})
    assert "return 500;" in conf(doc)
    doc = route({"backendRefs": [{"name": "web", "port": 80, "weight": 0}]})
    assert "return 500;" in conf(doc)
    doc = route({"backendRefs": [{"name": "web", "port": 80, "weight": 3},
                                 {"name": "nope", "port": 80, "weight": 1}]})
    text = conf(doc)
    assert "server unix:/run/netlab/labs/x/ingress/invalid-backend.sock weight=1" in text
    assert "listen unix:/run/netlab/labs/x/ingress/invalid-backend.sock;" in text
    doc = {"ingresses": [{"name": "a", "rules": [{"host": "h.test", "http": {"paths": [
        {"path": "/", "pathType": "Prefix", "backend": svc("nope")}]}}]}]}
    assert "return 503;" in conf(doc)


def test_gateway_on_its_own_port():
    doc = route(rule("web"))
    doc["gateways"][0]["listeners"][0]["port"] = 8080
    text = conf(doc)
    assert "listen 8080;" in text and "listen 8080 default_server;" in text
    assert "listen 80;" not in text and "listen 80 " not in text


def test_routes_tables():
    c = cfg()
    head, rows = ingress.routes_table("ingress", c, address="203.0.113.10", age="5m")
    assert head == ["NAME", "CLASS", "HOSTS", "ADDRESS", "PORTS", "AGE"]
    assert rows == [["shop", "nginx", "shop.example.com", "203.0.113.10", "80", "5m"]]
    head, rows = ingress.routes_table("gateway", c, address="203.0.113.10")
    assert head[:4] == ["NAME", "CLASS", "ADDRESS", "PROGRAMMED"]
    assert rows[0][:4] == ["edge", "netlab", "203.0.113.10", "True"]
    table = build_table(c, resolve)
    head, rows = ingress.routes_table("httproute", c, statuses=table.statuses)
    assert head[:2] == ["NAME", "HOSTNAMES"]
    assert rows[0][:3] == ["canary", '["beta.example.com"]', "True (Accepted)"]


def test_nginx_argv():
    assert ingress.nginx_argv("/s/nginx.conf", "/s") == [
        "/usr/sbin/nginx", "-c", "/s/nginx.conf", "-p", "/s/", "-e", "/s/error.log"]


def test_describe_names_every_route():
    lines = ingress.describe(build_table(cfg(), resolve))
    assert "shop.example.com:80 location /api/ -> shop/api:80 (10.96.0.11:80)" in lines
    assert any(line.startswith("beta.example.com:80 location / [x-canary: 1] -> default/web-v2")
               for line in lines)


def test_route_request_follows_nginx_order():
    doc = copy.deepcopy(ISSUE)
    doc["ingresses"][0]["rules"].append({"host": "*.foo.com", "http": {"paths": [
        {"path": "/", "pathType": "Prefix", "backend": svc("web")}]}})
    table = build_table(cfg(doc), resolve)

    def to(host, path, headers=None):
        c = ingress.route_request(table, 80, host, path, headers)
        return c.status or ",".join(b.service for b in c.backends)

    assert to("shop.example.com", "/api") == "api"
    assert to("Shop.Example.com:80", "/api/x") == "api"
    assert to("shop.example.com", "/apix") == "fallback"
    assert to("shop.example.com", "/login/") == "fallback"
    assert to("beta.example.com", "/x", {"X-Canary": "1"}) == "web-v2"
    assert to("beta.example.com", "/x", {"x-canary": "true"}) == "web,web-v2"
    assert to("other.example.com", "/") == 404              # the listener's own 404 server
    assert to("bar.foo.com", "/") == "web"                  # one label under *.foo.com
    assert to("baz.bar.foo.com", "/") == "fallback"         # two labels: not the Ingress wildcard
    assert to("nobody.test", "/") == "fallback"
    with pytest.raises(ValueError, match="nothing listens on port 81"):
        ingress.route_request(table, 81, "x", "/")


def test_probes_cover_every_rule():
    table = build_table(cfg(), resolve)
    got = {(p.host, p.path, p.headers): (p.services, p.status)
           for p in ingress.probes(cfg(), table)}
    assert got[("shop.example.com", "/api", ())] == ((("shop/api", 1),), None)
    assert got[("shop.example.com", "/apix", ())] == ((("shop/fallback", 1),), None)
    assert got[("shop.example.com", "/login/x", ())] == ((("shop/fallback", 1),), None)
    assert got[("unknown.invalid", "/", ())] == ((("shop/fallback", 1),), None)
    assert got[("beta.example.com", "/", (("x-canary", "1"),))] == ((("default/web-v2", 1),), None)
    assert got[("beta.example.com", "/", ())] == ((("default/web", 90), ("default/web-v2", 10)),
                                                  None)

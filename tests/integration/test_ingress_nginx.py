"""A real nginx routes by the nginx.conf netlab writes: host, Prefix/Exact paths, headers, weights.

Built by hand (the lead wires it into labs later): one bridge namespace, an "ingress pod" running
Debian's nginx with netlab's conf, four backend pods running netexec (api, web, web-v2, fallback),
and a client. There is no kube-proxy here, so the upstream each Service resolves to is its one
pod's IP:8080, standing in for the ClusterIP:port a lab would give.
"""

from __future__ import annotations

import copy
import os
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from pathlib import Path

import pytest

from netlab import ingress

ROOT = Path(__file__).resolve().parents[2]
NETEXEC = ROOT / "netlab" / "netexec.py"

pytestmark = pytest.mark.skipif(os.geteuid() != 0 or not Path(ingress.NGINX).exists(),
                                reason="needs root and Debian's nginx")

PODS = {"ing": "10.77.0.2", "api": "10.77.0.11", "web": "10.77.0.12", "web-v2": "10.77.0.13",
        "fallback": "10.77.0.14", "cli": "10.77.0.100"}

SCENARIO = {
    "ingresses": [{
        "name": "shop", "namespace": "shop", "ingressClassName": "nginx",
        "defaultBackend": {"service": {"name": "fallback", "port": {"number": 80}}},
        "rules": [
            {"host": "shop.example.com", "http": {"paths": [
                {"path": "/api", "pathType": "Prefix",
                 "backend": {"service": {"name": "api", "port": {"number": 80}}}},
                {"path": "/api/v2", "pathType": "Prefix",
                 "backend": {"service": {"name": "web", "port": {"number": 80}}}},
                {"path": "/login", "pathType": "Exact",
                 "backend": {"service": {"name": "web", "port": {"number": 80}}}},
                {"path": "/static", "pathType": "ImplementationSpecific",
                 "backend": {"service": {"name": "web-v2", "port": {"number": 80}}}}]}},
            {"host": "www.example.com", "http": {"paths": [
                {"path": "/", "pathType": "Prefix",
                 "backend": {"service": {"name": "web", "port": {"number": 80}}}}]}}]}],
    "gateways": [{"name": "edge", "gatewayClassName": "netlab", "listeners": [
        {"name": "http", "protocol": "HTTP", "port": 80, "hostname": "*.example.com"}]}],
    "httproutes": [
        {"name": "canary", "parentRefs": [{"name": "edge"}], "hostnames": ["beta.example.com"],
         "rules": [
             {"matches": [{"path": {"type": "PathPrefix", "value": "/"},
                           "headers": [{"name": "x-canary", "value": "1"}]}],
              "backendRefs": [{"name": "web-v2", "port": 80}]},
             {"backendRefs": [{"name": "web", "port": 80, "weight": 90},
                              {"name": "web-v2", "port": 80, "weight": 10}]}]},
        {"name": "stray", "parentRefs": [{"name": "edge"}], "hostnames": ["other.test"],
         "rules": [{"backendRefs": [{"name": "api", "port": 80}]}]}],
}


def resolve(ns: str, service: str, port) -> str | None:
    return f"{PODS[service]}:8080" if service in PODS and port == 80 else None


def sh(*argv: str, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(argv)}: {proc.stderr}")
    return proc


def nginx_files() -> list[str]:
    out = []
    for d in ("/var/log/nginx", "/var/lib/nginx"):
        for p in sorted(Path(d).rglob("*")) if Path(d).exists() else []:
            st = p.stat()
            out.append(f"{p} {st.st_size} {st.st_mtime_ns}")
    out.append(f"/run/nginx.pid {Path('/run/nginx.pid').exists()}")
    return out


def root_links() -> set[str]:
    return {line.split(":")[1].strip().split("@")[0]
            for line in sh("ip", "-o", "link", "show").stdout.splitlines()}


class Env:
    def __init__(self, tmp: Path):
        self.tag = f"ting-{uuid.uuid4().hex[:6]}"
        self.ns = {role: f"{self.tag}-{role}" for role in ["br", *PODS]}
        self.tmp = tmp
        self.procs: dict[str, subprocess.Popen] = {}
        self.made: list[str] = []

    def up(self) -> None:
        br = self.ns["br"]
        for ns in self.ns.values():
            sh("ip", "netns", "add", ns)
            self.made.append(ns)
            sh("ip", "-n", ns, "link", "set", "lo", "up")
        sh("ip", "-n", br, "link", "add", "br0", "type", "bridge")
        sh("ip", "-n", br, "link", "set", "br0", "up")
        for i, (role, ip) in enumerate(PODS.items()):
            # Both ends are made inside our namespaces: nothing passes through the root one.
            sh("ip", "-n", br, "link", "add", f"v{i}", "type", "veth", "peer", "name", "eth0",
               "netns", self.ns[role])
            sh("ip", "-n", br, "link", "set", f"v{i}", "master", "br0", "up")
            sh("ip", "-n", self.ns[role], "addr", "add", f"{ip}/24", "dev", "eth0")
            sh("ip", "-n", self.ns[role], "link", "set", "eth0", "up")
        for role in ("api", "web", "web-v2", "fallback"):
            self.start(role, ["ip", "netns", "exec", self.ns[role], sys.executable, "-I", "-S",
                              str(NETEXEC), "--port", "8080", "--name", role, "--any-path"])
        for role in ("api", "web", "web-v2", "fallback"):
            self.wait(f"http://{PODS[role]}:8080/healthz")

    def start(self, key: str, argv: list[str]) -> subprocess.Popen:
        p = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        self.procs[key] = p
        return p

    def curl(self, url: str, *args: str) -> tuple[int, str]:
        out = sh("ip", "netns", "exec", self.ns["cli"], "curl", "-s", "-m", "5",
                 "-w", "\n%{http_code}", *args, url, check=False).stdout
        body, _, code = out.rpartition("\n")
        return int(code or 0), body

    def wait(self, url: str, *args: str) -> None:
        for _ in range(100):
            if self.curl(url, *args)[0] != 0:
                return
            time.sleep(0.05)
        raise AssertionError(f"nothing answers {url}")

    def nginx(self, key: str, cfg: ingress.IngressConfig, port: int) -> Path:
        state = self.tmp / key
        state.mkdir()
        conf = state / "nginx.conf"
        conf.write_text(ingress.nginx_conf(ingress.build_table(cfg, resolve, listen_port=port),
                                           str(state)))
        ok, said = ingress.check_conf(str(conf), str(state), netns=self.ns["ing"])
        assert ok, said
        self.start(key, ["ip", "netns", "exec", self.ns["ing"],
                         *ingress.nginx_argv(str(conf), str(state))])
        self.wait(f"http://{PODS['ing']}:{port}/", "-H", "Host: probe.test")
        return state

    def pids(self, ns: str) -> list[str]:
        return sh("ip", "netns", "pids", ns, check=False).stdout.split()

    def down(self) -> list[str]:
        for p in self.procs.values():
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in self.procs.values():
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        left = [f"process {pid} in {ns}" for ns in self.made for pid in self.pids(ns)]
        for ns in reversed(self.made):
            sh("ip", "netns", "del", ns, check=False)
        left += [f"netns {ns}" for ns in os.listdir("/run/netns") if ns.startswith(self.tag)]
        self.made = []
        return left


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    before_files, before_links = nginx_files(), root_links()
    e = Env(tmp_path_factory.mktemp("ting-ingress"))
    try:
        e.up()
        cfg = ingress.IngressConfig.model_validate(SCENARIO)
        assert [str(p) for p in ingress.validate(cfg)] == []
        e.state = e.nginx("nginx-a", cfg, 80)
        # The same rules without the defaultBackend, on a second nginx: unknown hosts get 404.
        bare = dict(SCENARIO, ingresses=[{k: v for k, v in SCENARIO["ingresses"][0].items()
                                          if k != "defaultBackend"}], gateways=[], httproutes=[])
        e.state_b = e.nginx("nginx-b", ingress.IngressConfig.model_validate(bare), 8081)
        yield e
    finally:
        left = e.down()
    assert left == [] and nginx_files() == before_files and root_links() == before_links


def who(env: Env, host: str, path: str, *headers: str, port: int = 80) -> tuple[int, str]:
    args = ["-H", f"Host: {host}"]
    for h in headers:
        args += ["-H", h]
    return env.curl(f"http://{PODS['ing']}:{port}{path}", *args)


def test_host_routing(env):
    assert who(env, "shop.example.com", "/api") == (200, "api")
    assert who(env, "www.example.com", "/api") == (200, "web")
    assert who(env, "www.example.com:80", "/anything") == (200, "web")   # Host's port: ignored


def test_prefix_matches_path_elements_only(env):
    assert who(env, "shop.example.com", "/api") == (200, "api")
    assert who(env, "shop.example.com", "/api/") == (200, "api")
    assert who(env, "shop.example.com", "/api/x") == (200, "api")
    assert who(env, "shop.example.com", "/apix") == (200, "fallback")


def test_longest_path_wins(env):
    assert who(env, "shop.example.com", "/api/v2") == (200, "web")
    assert who(env, "shop.example.com", "/api/v2/users") == (200, "web")
    assert who(env, "shop.example.com", "/api/v2x") == (200, "api")


def test_exact_matches_only_itself(env):
    assert who(env, "shop.example.com", "/login") == (200, "web")
    assert who(env, "shop.example.com", "/login/") == (200, "fallback")
    assert who(env, "shop.example.com", "/login/x") == (200, "fallback")


def test_implementation_specific_is_nginx_plain_prefix(env):
    # ingress-nginx's ImplementationSpecific is nginx's own prefix: /static matches /staticx too.
    assert who(env, "shop.example.com", "/static/a.css") == (200, "web-v2")
    assert who(env, "shop.example.com", "/staticx") == (200, "web-v2")


def test_unknown_host_gets_default_backend_or_404(env):
    assert who(env, "nobody.test", "/") == (200, "fallback")
    assert who(env, "nobody.test", "/", port=8081)[0] == 404
    assert who(env, "shop.example.com", "/nothing", port=8081)[0] == 404
    assert who(env, "shop.example.com", "/api/x", port=8081) == (200, "api")


def test_gateway_listener_without_route_answers_404(env):
    assert who(env, "unknown.example.com", "/")[0] == 404


def test_refused_route_is_not_programmed(env):
    table = ingress.build_table(ingress.IngressConfig.model_validate(SCENARIO), resolve)
    stray = [s for s in table.statuses if s.route == "default/stray"]
    assert [(s.accepted, s.reason) for s in stray] == [(False, "NoMatchingListenerHostname")]
    # nginx never heard of other.test: it lands on the default server, not on api.
    assert who(env, "other.test", "/") == (200, "fallback")


def test_header_match_goes_to_canary(env):
    for _ in range(20):
        assert who(env, "beta.example.com", "/", "x-canary: 1") == (200, "web-v2")
    assert who(env, "beta.example.com", "/", "X-Canary: 1") == (200, "web-v2")   # name: any case


def test_weights_split_90_10(env):
    n = 200
    urls = [f"http://{PODS['ing']}/hostname"] * n
    out = sh("ip", "netns", "exec", env.ns["cli"], "curl", "-s", "-m", "20", "-w", "\n",
             "-H", "Host: beta.example.com", "-H", "x-canary: 2", *urls).stdout
    counts = Counter(out.split())
    # Expected 180/20. nginx's smooth weighted round robin gives it exactly with one worker (a
    # random split would have a standard deviation of ~4.2); allow +-10, so 50/10 (167/33) fails.
    assert sum(counts.values()) == n, counts
    assert abs(counts["web"] - 180) <= 10 and abs(counts["web-v2"] - 20) <= 10, counts


def test_x_forwarded_for_carries_the_client(env):
    code, headers = who(env, "nobody.test", "/headers")
    assert code == 200
    lines = {k.lower(): v.strip() for k, _, v in (h.partition(":") for h in headers.splitlines())}
    assert lines["x-forwarded-for"] == PODS["cli"]
    assert lines["x-real-ip"] == PODS["cli"]
    assert lines["host"] == "nobody.test"
    code, headers = who(env, "nobody.test", "/headers", "X-Forwarded-For: 192.0.2.7")
    assert f"X-Forwarded-For: 192.0.2.7, {PODS['cli']}" in headers


def test_access_log_in_state_dir(env):
    log = (env.state / "access.log").read_text()
    assert "shop.example.com" in log and PODS["cli"] in log


def test_nginx_answers_every_probe_as_route_request_predicts(env):
    cfg = ingress.IngressConfig.model_validate(SCENARIO)
    table = ingress.build_table(cfg, resolve)
    checked = 0
    for pr in ingress.probes(cfg, table):
        code, body = who(env, pr.host, pr.path, *(f"{n}: {v}" for n, v in pr.headers),
                         port=pr.port)
        if pr.status:
            assert code == pr.status, pr
        else:
            assert code == 200 and body in {s.split("/")[1] for s, _ in pr.services}, (pr, body)
        checked += 1
    assert checked >= 15


def test_check_conf_reports_nginx_errors(env, tmp_path):
    conf = tmp_path / "broken.conf"
    text = ingress.nginx_conf(ingress.build_table(
        ingress.IngressConfig.model_validate(SCENARIO), resolve), str(tmp_path))
    conf.write_text(text.replace("proxy_pass http://shop-api-80;", "proxy_pas http://x;", 1))
    ok, said = ingress.check_conf(str(conf), str(tmp_path), netns=env.ns["ing"])
    assert not ok and 'unknown directive "proxy_pas"' in said


def test_stop_leaves_nothing(tmp_path):
    """Its own pods and nginx (so it can run on any xdist worker): stopped, nothing is left."""
    before_files, before_links = nginx_files(), root_links()
    e = Env(tmp_path)
    try:
        e.up()
        state = e.nginx("nginx", ingress.IngressConfig.model_validate(SCENARIO), 80)
        assert who(e, "shop.example.com", "/api/x") == (200, "api")
        # A path type changed (Prefix -> Exact): rewrite the conf, SIGHUP, and /api/x moves.
        doc = copy.deepcopy(SCENARIO)
        doc["ingresses"][0]["rules"][0]["http"]["paths"][0]["pathType"] = "Exact"
        table = ingress.build_table(ingress.IngressConfig.model_validate(doc), resolve)
        (state / "nginx.conf").write_text(ingress.nginx_conf(table, str(state)))
        assert ingress.check_conf(str(state / "nginx.conf"), str(state), netns=e.ns["ing"])[0]
        e.procs["nginx"].send_signal(signal.SIGHUP)
        for _ in range(100):
            if who(e, "shop.example.com", "/api/x") == (200, "fallback"):
                break
            time.sleep(0.05)
        assert who(e, "shop.example.com", "/api/x") == (200, "fallback")
        assert who(e, "shop.example.com", "/api") == (200, "api")
        master = e.procs["nginx"].pid
        workers = [p for p in e.pids(e.ns["ing"])
                   if Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()[1]
                   == str(master)]
        assert workers, "nginx has no worker"
    finally:
        left = e.down()
    assert left == []
    for pid in [str(master), *workers]:
        assert not Path(f"/proc/{pid}").exists() or b"nginx" not in Path(
            f"/proc/{pid}/cmdline").read_bytes()
    assert nginx_files() == before_files
    assert root_links() == before_links
    written = {p.name for p in state.iterdir()}
    assert {"nginx.conf", "access.log", "error.log", "proxy-temp"} <= written

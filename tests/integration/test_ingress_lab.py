"""Ingress and Gateway API for real: scenarios/ingress.yaml brought up, a real nginx in pod
ingress-nginx/ingress-nginx-controller-* behind a LoadBalancer Service, every `ingress` and
`gateway` rule proven with curl from the outside world and from a pod; then broken on purpose
(a path type changed in the running nginx, a backend Service left without endpoints, nginx
stopped) and verify fails exactly there, naming why; the plan script writes the same nginx.conf;
down leaves no nginx, no file outside the lab's state directory and nothing in the root namespace.
"""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

from conftest import ROOT, lab_fixture, leftovers, netlab, requires_root, verify_json
from test_rootns import differences, root_snapshot

from netlab import model
from netlab.features import ingress as I

pytestmark = requires_root
lab = lab_fixture("ingw")
SCENARIO = str(ROOT / "scenarios" / "ingress.yaml")
RULES = ("--only", "ingress", "--only", "gateway")


def nginx_files() -> list[str]:
    """What a stray nginx would write outside a lab: Debian's log, lib and pid paths."""
    out = []
    for d in ("/var/log/nginx", "/var/lib/nginx"):
        for p in sorted(Path(d).rglob("*")) if Path(d).exists() else []:
            st = p.stat()
            out.append(f"{p} {st.st_size} {st.st_mtime_ns}")
    return out + [f"/run/nginx.pid {Path('/run/nginx.pid').exists()}"]


def nginx_pids(name: str) -> list[int]:
    """nginx processes (master and workers) of this lab: their command line names its state."""
    mark = f"/run/netlab/labs/{name}/".encode()
    out = []
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                cmd = Path(f"/proc/{pid}/cmdline").read_bytes()
            except OSError:
                continue
            if b"nginx" in cmd and (mark in cmd or b"nginx: worker" in cmd and
                                    _parent_is_ours(int(pid), mark)):
                out.append(int(pid))
    return out


def _parent_is_ours(pid: int, mark: bytes) -> bool:
    try:
        ppid = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
        return mark in Path(f"/proc/{ppid}/cmdline").read_bytes()
    except (OSError, ValueError, IndexError):
        return False


def report(name: str, *args: str) -> tuple[int, list[dict]]:
    code, rep = verify_json(name, *(args or RULES))
    return code, rep["results"]


def failed(results: list[dict]) -> list[dict]:
    return [r for r in results if not r["ok"]]


def master_pid(name: str) -> int:
    return int(Path(f"/run/netlab/labs/{name}/ingress/nginx.pid").read_text())


def reload_with(name: str, text: str) -> None:
    """Replace the running nginx's conf and SIGHUP it; wait until the new workers serve."""
    conf = Path(f"/run/netlab/labs/{name}/ingress/nginx.conf")
    conf.write_text(text)
    pid = master_pid(name)
    old = set(nginx_pids(name)) - {pid}
    os.kill(pid, signal.SIGHUP)
    for _ in range(100):
        if old and not (set(nginx_pids(name)) & old):
            return
        time.sleep(0.05)
    raise AssertionError("nginx did not reload")


def test_ingress_scenario_verifies_and_down_leaves_nothing(lab):
    before, files_before = root_snapshot(), nginx_files()
    netlab("up", SCENARIO, "--name", lab)
    during = root_snapshot()
    code, results = report(lab)
    assert code == 0, [(r["from"], r["to"], r["reason"]) for r in failed(results)]
    assert {r["rule"] for r in results} == {"ingress", "gateway"}
    assert {r["from"] for r in results} == {"outside", "client"}
    assert any(r["expected"].startswith("X-Forwarded-For") for r in results)
    assert any("%±" in r["expected"] for r in results)          # the canary's weights
    assert all(r["reproduce"].startswith(("ip netns exec", "for i in")) for r in results)
    # The whole lab verifies: the controller's Service and pod do not upset the other rules.
    code, _ = verify_json(lab)
    assert code == 0
    # The running file, `show --config` and the plan script's heredoc are one text.
    conf = Path(f"/run/netlab/labs/{lab}/ingress/nginx.conf").read_text()
    assert netlab("show", lab, "ingress", "shop", "--config").stdout == conf
    script = netlab("plan", SCENARIO, "--name", lab).stdout
    head = f"cat > /run/netlab/labs/{lab}/ingress/nginx.conf <<'EOF'\n"
    assert script.split(head, 1)[1].split("\nEOF\n", 1)[0] == conf.rstrip()
    assert "location = /login" in conf and "location /api/" in conf and "weight=90" in conf
    get = netlab("get", lab, "ingress", "-n", "shop").stdout
    assert "shop.example.com" in get and "203.0.113.201" in get and "CLASS" in get
    assert "True (Accepted)" in netlab("get", lab, "httproute", "-n", "shop").stdout
    shown = netlab("show", lab).stdout
    assert "ingress controller ingress-nginx/ingress-nginx-controller-" in shown
    assert json.loads(netlab("show", lab, "--json").stdout)["ingress"]["address"] == \
        "203.0.113.201"
    assert len(nginx_pids(lab)) >= 2                         # master and worker
    netlab("down", lab)
    assert nginx_pids(lab) == [] and nginx_files() == files_before
    assert differences(before, during) == [] and differences(before, root_snapshot()) == []
    assert leftovers(lab) == []


def test_verify_fails_exactly_where_it_is_broken(lab):
    netlab("up", SCENARIO, "--name", lab)
    assert report(lab)[0] == 0

    # A path type changed: the running nginx serves /api as Exact, the scenario says Prefix.
    spec = model.load(SCENARIO, name=lab)
    conf = Path(f"/run/netlab/labs/{lab}/ingress/nginx.conf").read_text()
    text = Path(SCENARIO).read_text()
    changed = text.replace("{path: /api, pathType: Prefix", "{path: /api, pathType: Exact")
    assert changed != text
    exact = I.conf_text(model.parse(changed, SCENARIO, name=lab))
    assert "location /api/ {" in conf and "location /api/ {" not in exact
    reload_with(lab, exact)
    code, results = report(lab)
    bad = failed(results)
    assert code == 1 and {r["to"] for r in bad} == {"shop.example.com/api/x"}, bad
    assert {r["from"] for r in bad} == {"outside", "client"}
    assert all("fallback" in r["observed"] and "expected Service shop/api" in r["reason"]
               for r in bad)
    reload_with(lab, conf)
    assert report(lab)[0] == 0

    # A backend Service with no endpoints: nginx gets refused by kube-proxy and answers 502.
    netlab("scale", lab, "deployment/api", "--replicas", "0")
    code, results = report(lab)
    bad = failed(results)
    assert code == 1 and {r["to"] for r in bad} == {"shop.example.com/api",
                                                    "shop.example.com/api/x"}, bad
    assert all("Service shop/api has no endpoints" in r["reason"] for r in bad)
    netlab("scale", lab, "deployment/api", "--replicas", "2")
    assert report(lab)[0] == 0

    # nginx stopped: every ingress and gateway check fails, saying so; nothing else does.
    os.kill(master_pid(lab), signal.SIGTERM)
    for _ in range(100):
        if not nginx_pids(lab):
            break
        time.sleep(0.05)
    code, rep = verify_json(lab)
    bad = failed(rep["results"])
    assert code == 1 and {r["rule"] for r in bad} == {"ingress", "gateway"}
    assert len(bad) == len([r for r in rep["results"] if r["rule"] in ("ingress", "gateway")])
    assert all("nginx is not running" in r["reason"] for r in bad)
    assert spec.ingress.pod in bad[0]["reason"]
    netlab("down", lab)
    assert leftovers(lab) == []

"""Pods wired through CNI (network.cni: netlab and reference) in a real lab: the same verify
results as netlab's own netlink path, the ipMasq pitfall failing exactly the no-NAT checks and
naming the rule, `netlab cni` running the chain by hand, and nothing left in /var/lib/cni,
/etc/cni or the root namespace."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from conftest import SCENARIOS, in_ns, leftovers, netlab, requires_root, unique_name, verify_json

pytestmark = requires_root
DEFAULT = SCENARIOS / "three-node.yaml"


def _with_cni(tmp_path: Path, mode: str) -> Path:
    text = DEFAULT.read_text().replace("network:\n", f"network:\n  cni: {mode}\n", 1)
    path = tmp_path / f"cni-{mode}.yaml"
    path.write_text(text)
    return path


def _outcomes(data: dict) -> set:
    return {(r["rule"], r["from"], r["to"], r["method"], r["target"], r["ok"])
            for r in data["results"]}


def _root_state() -> tuple[str, str, str]:
    nft = subprocess.run(["nft", "list", "ruleset"], capture_output=True, text=True).stdout
    links = subprocess.run(["ip", "-br", "link"], capture_output=True, text=True).stdout
    return nft, links, Path("/proc/sys/net/ipv4/ip_forward").read_text()


def _cni_dirs() -> list[str]:
    return [d for d in ("/var/lib/cni", "/etc/cni") if os.path.exists(d)]


@pytest.fixture(scope="module")
def builtin_results():
    name = unique_name("cnb")
    try:
        netlab("up", str(DEFAULT), "--name", name)
        code, data = verify_json(name)
        assert code == 0, [r for r in data["results"] if not r["ok"]]
        yield {(rule, a, b, m, t.replace(name, "LAB"), ok)
               for rule, a, b, m, t, ok in _outcomes(data)}
    finally:
        netlab("down", name, check=False)
    assert leftovers(name) == []


@pytest.mark.parametrize("mode", ["netlab", "reference"])
def test_cni_modes_verify_like_builtin(mode, tmp_path, builtin_results):
    before, dirs = _root_state(), _cni_dirs()
    name = unique_name(f"cn{mode[0]}")
    try:
        netlab("up", str(_with_cni(tmp_path, mode)), "--name", name)
        conflists = list(Path(f"/run/netlab/labs/{name}/net.d").rglob("*.conflist"))
        assert len(conflists) == 3
        types = [p["type"] for p in json.loads(conflists[0].read_text())["plugins"]]
        assert types == (["netlab-cni", "portmap"] if mode == "netlab"
                         else ["bridge", "portmap", "loopback"])
        code, data = verify_json(name)
        assert code == 0, [r for r in data["results"] if not r["ok"]]
        got = {(rule, a, b, m, t.replace(name, "LAB"), ok) for rule, a, b, m, t, ok in _outcomes(data)}
        assert got == builtin_results
        show = netlab("show", name).stdout
        assert "CNI: pods wired by" in show and str(conflists[0]).rsplit("/", 3)[0] in show
        assert _root_state() == before
    finally:
        netlab("down", name, check=False)
    assert leftovers(name) == [] and _cni_dirs() == dirs
    assert _root_state() == before


def test_ipmasq_fails_exactly_the_no_nat_checks_and_names_the_rule():
    name = unique_name("cnm")
    try:
        netlab("up", str(SCENARIOS / "cni-ipmasq.yaml"), "--name", name)
        code, data = verify_json(name)
        assert code == 1
        failed = [r for r in data["results"] if not r["ok"]]
        # Only what leaves a node is masqueraded: a pod to a pod or to the node of another node.
        node_of = {"web": "node1", "api": "node2", "db": "node2", "node1": "node1",
                   "node2": "node2"}
        expected = {(r["rule"], r["from"], r["to"]) for r in data["results"]
                    if r["method"] == "http" and r["target"].endswith("/clientip")
                    and node_of.get(r["from"]) != node_of.get(r["to"])
                    and r["from"] in ("web", "api", "db")}
        assert {(r["rule"], r["from"], r["to"]) for r in failed} == expected and expected
        for r in failed:
            assert "NAT: the server saw 192.168.1." in r["reason"]
            assert "jumps to chain CNI-" in r["reason"] and "masquerade" in r["reason"]
    finally:
        netlab("down", name, check=False)
    assert leftovers(name) == []


def test_cni_command_runs_the_chain_by_hand(tmp_path):
    name = unique_name("cnc")
    try:
        netlab("up", str(_with_cni(tmp_path, "reference")), "--name", name)
        ns = f"{name}-api"
        out = netlab("cni", name, "check", "api").stdout
        assert "CNI_COMMAND=CHECK" in out and "/usr/lib/cni/bridge" in out and "# exit 0" in out
        out = netlab("cni", name, "del", "api").stdout
        assert "CNI_COMMAND=DEL" in out and "eth0" not in in_ns(ns, "ip", "-br", "link").stdout
        again = netlab("cni", name, "add", "api").stdout
        assert '"address": "10.244.2.2/24"' in again
        assert "10.244.2.2/24" in in_ns(ns, "ip", "-br", "addr").stdout
        twice = netlab("cni", name, "add", "api", check=False)
        assert twice.returncode == 2 and "already has its network" in twice.stderr
        code, data = verify_json(name)
        assert code == 0, [r for r in data["results"] if not r["ok"]]
        bad = netlab("cni", name, "add", "nosuchpod", check=False)
        assert bad.returncode == 2 and "has no pod 'nosuchpod'" in bad.stderr
    finally:
        netlab("down", name, check=False)
    assert leftovers(name) == []


def test_ipmasq_without_the_reference_plugins_is_refused(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text(DEFAULT.read_text().replace("network:\n", "network:\n  ipMasq: true\n", 1))
    r = netlab("plan", str(path), check=False)
    assert r.returncode == 2 and "bad.yaml:" in r.stderr and "cni: reference" in r.stderr

"""The batched netlink path of `up`: failures name their step, other appliers see a flushed kernel,
and a lab larger than one batch comes up whole."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass

import pytest
from conftest import ROOT, leftovers, netlab, requires_root, unique_name

from netlab import model, plan
from netlab.runtime import kernel, lifecycle
from netlab.core import errors

sys.path.insert(0, str(ROOT / "bench"))
import gen  # noqa: E402

pytestmark = requires_root


def test_a_failed_batched_step_is_named_and_rolled_back(monkeypatch):
    name = unique_name("sp")
    lab = model.load(None, name)
    web = lab.pod("web")
    bad = plan.RouteAdd(web.ns, "10.99.0.0/16", "10.200.0.1", "eth0")  # gateway not on any link
    real_build = plan.build

    def build(the_lab):
        ops = real_build(the_lab)
        at = max(i for i, op in enumerate(ops) if isinstance(op, plan.RouteAdd)
                 and op.dst == "default") + 1
        return ops[:at] + [bad] + ops[at:]

    monkeypatch.setattr(plan, "build", build)
    try:
        with pytest.raises(errors.KernelError) as failed:
            lifecycle.up(lab)
        step = build(lab).index(bad) + 1
        assert f"failed at step {step} of " in failed.value.message
        assert bad.ip() in failed.value.message and "unreachable" in failed.value.message
        assert "everything it made was removed" in failed.value.message
    finally:
        netlab("down", name, check=False)
    assert leftovers(name) == []


@dataclass(frozen=True)
class ShowAddr:
    """An operation the batch does not know, applied the plain pyroute2 way."""
    ns: str
    ifname: str

    def ip(self) -> str:
        return f"ip -n {self.ns} addr show dev {self.ifname}"


def test_an_applier_the_batch_does_not_know_sees_every_earlier_step_done(monkeypatch):
    name = unique_name("sp")
    lab = model.load(None, name)
    seen = []

    def show_addr(kern, op):
        addrs = kern.sock(op.ns).addr("dump", index=kern.index(op.ns, op.ifname))
        seen.append([a.get("address") for a in addrs if a["family"] == 2])

    real_build = plan.build
    monkeypatch.setattr(plan, "build", lambda the_lab: real_build(the_lab) + [
        ShowAddr(p.ns, "eth0") for p in the_lab.pods])
    monkeypatch.setitem(kernel.Kernel._appliers, ShowAddr, show_addr)
    try:
        lifecycle.up(lab)
        assert seen == [[p.ip] for p in lab.pods]
    finally:
        lifecycle.down(name)
    assert leftovers(name) == []


def ip_json(ns: str, *args: str):
    return json.loads(subprocess.run(["ip", "-j", "-n", ns, *args], capture_output=True,
                                     text=True, check=True).stdout or "[]")


def test_a_lab_bigger_than_one_batch_comes_up_whole(lab_name, tmp_path):
    scenario = tmp_path / "big.yaml"
    scenario.write_text(gen.scenario(2, 120))   # 120 pods a node: > batch.MAX_QUEUE requests
    netlab("up", str(scenario), "--name", lab_name, "--json")
    lab = model.load(scenario, lab_name)
    for node in lab.nodes:
        ports = [link for link in ip_json(node.ns, "link", "show", "master", "cni0")]
        assert len(ports) == 120 and all("UP" in link["flags"] for link in ports)
    for pod in lab.pods:
        addrs = [(i["local"], i["prefixlen"]) for a in ip_json(pod.ns, "-4", "addr", "show", "eth0")
                 for i in a["addr_info"]]
        assert addrs == [(pod.ip, 24)]
        assert [r["gateway"] for r in ip_json(pod.ns, "route", "show", "default")] == \
            [lab.node(pod.node).gateway]
    first, last = lab.pods[0], lab.pods[-1]
    ping = subprocess.run(["ip", "netns", "exec", first.ns, "ping", "-c1", "-W2", last.ip],
                          capture_output=True, text=True)
    assert ping.returncode == 0, ping.stdout + ping.stderr
    netlab("down", lab_name)
    assert leftovers(lab_name) == []


def test_veths_both_ways_between_two_namespaces_are_made_in_order():
    """A's queue waits for B's and then B's for A's: the batch sends them in an order that works."""
    lab = unique_name("sp")
    a, b = f"{lab}-a", f"{lab}-b"
    ops = [plan.NetnsAdd(a, lab), plan.NetnsAdd(b, lab),
           plan.VethAdd(a, "ab", b, "ba"), plan.AddrAdd(b, "ba", "10.9.0.2", 30),
           plan.LinkUp(b, "ba"),
           plan.VethAdd(b, "bx", a, "xb"), plan.LinkUp(a, "xb"), plan.LinkUp(a, "ab"),
           plan.AddrAdd(a, "ab", "10.9.0.1", 30), plan.LinkUp(b, "bx")]
    try:
        with kernel.Kernel() as kern:
            for op in ops:
                kern.apply(op)
        links = {(ns, link["ifname"]): link for ns in (a, b) for link in ip_json(ns, "link", "show")}
        assert all("UP" in links[key]["flags"] for key in
                   [(a, "ab"), (a, "xb"), (b, "ba"), (b, "bx")])
        ping = subprocess.run(["ip", "netns", "exec", a, "ping", "-c1", "-W2", "10.9.0.2"],
                              capture_output=True, text=True)
        assert ping.returncode == 0, ping.stdout
    finally:
        kernel.remove_netns(a)
        kernel.remove_netns(b)
    assert not kernel.netns_exists(a) and not kernel.netns_exists(b)

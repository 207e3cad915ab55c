"""The plan of a lab whose pods are wired through CNI (pure): a conflist per node in the lab's
state, one CniAdd per pod through that node's chain, and no netlink veth of netlab's own."""

from __future__ import annotations

import json

from conftest import SCENARIOS
from netlab import model, plan

TEXT = (SCENARIOS / "three-node.yaml").read_text()


def _lab(mode: str, extra: str = ""):
    return model.parse(TEXT.replace("network:\n", f"network:\n  cni: {mode}\n{extra}", 1),
                       "t.yaml", "cnit")


def test_reference_plan_writes_a_conflist_per_node_and_adds_each_pod():
    lab = _lab("reference")
    ops = plan.build(lab)
    files = [op for op in ops if isinstance(op, plan.WriteFile)]
    adds = [op for op in ops if isinstance(op, plan.CniAdd)]
    assert [f.path for f in files] == [f"/run/netlab/labs/cnit/net.d/node{i}/10-cbr0.conflist"
                                       for i in (1, 2, 3)]
    conflist = json.loads(files[0].text)
    assert [p["type"] for p in conflist["plugins"]] == ["bridge", "portmap", "loopback"]
    assert conflist["plugins"][0]["ipam"]["dataDir"] == "/run/netlab/labs/cnit/cni/node1/ipam"
    assert sorted(a.owner for a in adds) == sorted(p.name for p in lab.pods)
    assert not any(isinstance(op, plan.VethAdd) and op.peer == "eth0" and op.ns != lab.underlay_ns
                   for op in ops)
    web = next(a for a in adds if a.owner == "web")
    env, plugin, stdin = web.calls[0]
    assert dict(env)["CNI_NETNS"] == "/run/netns/cnit-web" and plugin == "/usr/lib/cni/bridge"
    assert json.loads(stdin)["runtimeConfig"] == {"ips": ["10.244.1.2/24"]}
    portmap = json.loads(web.calls[1][2])
    assert portmap["prevResult"]["ips"][0]["address"] == "10.244.1.2/24"
    text = web.ip()
    assert "ip netns exec cnit-node1 /usr/lib/cni/bridge" in text and "CNI_COMMAND=ADD" in text


def test_netlab_mode_chains_netlab_cni_with_portmap_and_keeps_vxlan_mtu():
    lab = model.parse(TEXT.replace("network:\n", "network:\n  cni: netlab\n", 1)
                      .replace("backend: host-gw", "backend: vxlan"), "t.yaml", "cnit")
    conflist = json.loads(next(op for op in plan.build(lab) if isinstance(op, plan.WriteFile)).text)
    assert [p["type"] for p in conflist["plugins"]] == ["netlab-cni", "portmap"]
    assert conflist["plugins"][0]["mtu"] == 1450


def test_builtin_has_no_cni_ops():
    ops = plan.build(model.parse(TEXT, "t.yaml", "cnit"))
    assert not any(isinstance(op, (plan.WriteFile, plan.CniAdd)) for op in ops)

"""The pure parts of netlab-cni and the chain runner: request and config parsing with the spec's
error codes, IPAM over a dict, result building and merging, drift, libcni-style config injection,
and the conflists netlab writes. No kernel, no root."""

from __future__ import annotations

import json

import pytest

from netlab.runtime import cni_chain as C
from netlab.runtime import cni_plugin as P


def conf(**over) -> dict:
    base = {"cniVersion": "1.0.0", "name": "netlab", "type": "netlab-cni", "bridge": "cni0",
            "mtu": 1500, "ipam": {"subnet": "10.244.1.0/24", "gateway": "10.244.1.1",
                                  "dataDir": "/run/netlab/labs/x/cni"}}
    ipam = over.pop("ipam", None)
    if ipam:
        base["ipam"] = {**base["ipam"], **ipam}
    return {**base, **over}


def code(fn, *args) -> int:
    with pytest.raises(P.CniError) as e:
        fn(*args)
    return e.value.code


ENV = {"CNI_COMMAND": "ADD", "CNI_CONTAINERID": "abc", "CNI_NETNS": "/run/netns/p",
       "CNI_IFNAME": "eth0", "CNI_PATH": "/usr/lib/cni:/opt/netlab/bin"}


def test_parse_env():
    req = P.parse_env({**ENV, "CNI_ARGS": "IgnoreUnknown=1;K8S_POD_NAME=web"})
    assert req.command == "ADD" and req.path == ("/usr/lib/cni", "/opt/netlab/bin")
    assert dict(req.args) == {"IgnoreUnknown": "1", "K8S_POD_NAME": "web"}
    assert code(P.parse_env, {**ENV, "CNI_COMMAND": "FROB"}) == 4
    assert code(P.parse_env, {k: v for k, v in ENV.items() if k != "CNI_NETNS"}) == 4
    assert code(P.parse_env, {**ENV, "CNI_IFNAME": "a-name-far-too-long"}) == 4
    assert code(P.parse_env, {**ENV, "CNI_CONTAINERID": "-bad"}) == 4
    assert code(P.parse_env, {**ENV, "CNI_ARGS": "novalue"}) == 4
    # DEL needs no netns; VERSION needs nothing but the command.
    assert P.parse_env({**ENV, "CNI_COMMAND": "DEL", "CNI_NETNS": ""}).netns == ""
    assert P.parse_env({"CNI_COMMAND": "VERSION"}).command == "VERSION"


def test_parse_config_codes():
    c = P.parse_config(conf())
    assert (str(c.subnet), str(c.gateway), c.mtu, c.bridge) == ("10.244.1.0/24", "10.244.1.1", 1500, "cni0")
    assert (str(c.range_start), str(c.range_end)) == ("10.244.1.1", "10.244.1.254")
    assert code(P.parse_config, conf(cniVersion="0.4.0")) == 1
    assert code(P.parse_config, {k: v for k, v in conf().items() if k != "cniVersion"}) == 1
    assert code(P.parse_config, conf(bridgee="x")) == 2
    assert code(P.parse_config, conf(ipam={"rangeStrat": "10.244.1.5"})) == 2
    for bad in [conf(ipam={"subnet": "10.244.1.1/24"}), conf(ipam={"gateway": "10.244.2.1"}),
                conf(ipam={"dataDir": "relative/dir"}), conf(mtu=10), conf(mtu="1500"),
                conf(bridge="a/b"), conf(name=""), conf(ipam={"rangeStart": "10.244.2.5"}),
                conf(ipam={"type": "host-local"}), conf(prevResult=[]),
                conf(runtimeConfig={"ips": ["10.244.1.5/24", "10.244.1.6/24"]}),
                {k: v for k, v in conf().items() if k != "ipam"}]:
        assert code(P.parse_config, bad) == 7, bad
    assert code(P.decode, b"{oops") == 6
    assert code(P.decode, b"[1]") == 6
    assert P.parse_config(conf(runtimeConfig={"ips": ["10.244.1.9/24"]})).requested_ip == "10.244.1.9"


def test_version_and_error_json():
    assert P.run({"CNI_COMMAND": "VERSION"}, b'{"cniVersion": "1.1.0"}') == (
        0, {"cniVersion": "1.1.0", "supportedVersions": ["1.0.0", "1.1.0"]})
    rc, out = P.run(ENV, json.dumps(conf(cniVersion="0.3.1")).encode())
    assert rc == 1 and out["code"] == 1 and out["msg"] == "incompatible CNI versions"
    assert out["cniVersion"] == "1.1.0"     # the plugin's own, as the config's is not spoken
    rc, out = P.run(ENV, json.dumps(conf(ipam={"subnet": "bad"})).encode())
    assert rc == 1 and out["code"] == 7 and out["cniVersion"] == "1.0.0"
    assert set(out) == {"cniVersion", "code", "msg", "details"}


def test_ipam_round_robin_requested_release_gc_free():
    c = P.parse_config(conf(ipam={"subnet": "10.244.1.0/29"}))    # hosts .1-.6, gateway .1
    assert [str(a) for a in P.pool(c)] == [f"10.244.1.{i}" for i in range(2, 7)]
    s = {"allocations": {}}
    s, a = P.ipam_allocate(s, c, "c1/eth0", {"containerID": "c1"})
    s, b = P.ipam_allocate(s, c, "c2/eth0", {"containerID": "c2"})
    assert (a, b) == ("10.244.1.2", "10.244.1.3")
    assert code(P.ipam_allocate, s, c, "c1/eth0", {}) == 100
    s, gone = P.ipam_release(s, "c1/eth0")
    assert gone["ip"] == "10.244.1.2" and P.ipam_release(s, "c1/eth0")[1] is None
    s, d = P.ipam_allocate(s, c, "c3/eth0", {})
    assert d == "10.244.1.4"                  # round-robin: .2 is not handed straight back
    s, e = P.ipam_allocate(s, c, "c4/eth0", {}, requested="10.244.1.6")
    assert e == "10.244.1.6"
    assert code(P.ipam_allocate, s, c, "c5/eth0", {}, "10.244.1.6") == 101   # taken
    assert code(P.ipam_allocate, s, c, "c5/eth0", {}, "10.244.1.1") == 101   # the gateway
    assert P.ipam_free(s, c) == 2
    s, _ = P.ipam_allocate(s, c, "c5/eth0", {})
    s, _ = P.ipam_allocate(s, c, "c6/eth0", {})
    assert P.ipam_free(s, c) == 0 and code(P.ipam_allocate, s, c, "c7/eth0", {}) == 101
    s, dropped = P.ipam_gc(s, {"c2/eth0"})
    assert list(s["allocations"]) == ["c2/eth0"] and len(dropped) == 4


def test_build_result_merges_after_prev_result():
    c = P.parse_config(conf(prevResult={"cniVersion": "1.0.0",
                                        "interfaces": [{"name": "lo", "sandbox": "/run/netns/p"}],
                                        "ips": [{"address": "127.0.0.1/8", "interface": 0}],
                                        "dns": {"nameservers": ["10.96.0.10"]}}))
    att = P.Attachment("cni0", "aa:aa:aa:aa:aa:aa", "veth12345678", "bb:bb:bb:bb:bb:bb", "eth0",
                       "cc:cc:cc:cc:cc:cc", "/run/netns/p", "10.244.1.2")
    r = P.build_result(c, att)
    assert [i["name"] for i in r["interfaces"]] == ["lo", "cni0", "veth12345678", "eth0"]
    assert r["ips"][1] == {"address": "10.244.1.2/24", "gateway": "10.244.1.1", "interface": 3}
    assert r["dns"] == {"nameservers": ["10.96.0.10"]} and "mtu" not in r["interfaces"][3]
    r11 = P.build_result(P.parse_config(conf(cniVersion="1.1.0")), att)
    assert r11["interfaces"][2]["mtu"] == 1500 and r11["ips"][0]["interface"] == 2


def test_expected_and_drift():
    att = P.Attachment("cni0", "m0", "vethx", "m1", "eth0", "m2", "/run/netns/p", "10.244.1.2")
    res = P.build_result(P.parse_config(conf()), att)
    req = P.parse_env({**ENV, "CNI_COMMAND": "CHECK", "CNI_NETNS": "/run/netns/p"})
    exp = P.expected_from(P.parse_config(conf(prevResult=res)), req)
    assert (exp.address, exp.gateway, exp.default_route) == ("10.244.1.2/24", "10.244.1.1", True)
    good = {"mac": "m2", "up": True, "addresses": ["10.244.1.2/24"], "default_via": ["10.244.1.1"]}
    assert P.drift(exp, good, "10.244.1.2") == []
    assert P.drift(exp, None, "10.244.1.2") == ["interface eth0 is missing"]
    bad = dict(good, addresses=[], default_via=[], up=False)
    assert len(P.drift(exp, bad, None)) == 4
    assert code(P.expected_from, P.parse_config(conf()), req) == 7


def test_host_veth_name_is_stable_and_short():
    n = P.host_veth_name("3f6940ab5ab43bc522569d15b23f8c1bbde1d7678b080398506924fc01d72755", "eth0")
    assert n == P.host_veth_name("3f6940ab5ab43bc522569d15b23f8c1bbde1d7678b080398506924fc01d72755",
                                 "eth0")
    assert n.startswith("veth") and len(n) == 12 and P.valid_ifname(n)
    assert n != P.host_veth_name("3f6940ab5ab43bc522569d15b23f8c1bbde1d7678b080398506924fc01d72755",
                                 "net1")


def test_plugin_config_injects_as_libcni():
    cl = C.netlab_conflist("10.244.1.0/24", "10.244.1.1", "/s/cni")
    caps = {"portMappings": [{"hostPort": 80, "containerPort": 8080, "protocol": "tcp"}],
            "ips": ["10.244.1.5/24"], "bandwidth": {}}
    first = C.plugin_config(cl, cl["plugins"][0], None, caps)
    assert first["name"] == "netlab" and first["cniVersion"] == "1.0.0"
    assert first["runtimeConfig"] == {"ips": ["10.244.1.5/24"]} and "prevResult" not in first
    second = C.plugin_config(cl, cl["plugins"][1], {"cniVersion": "1.0.0"}, caps)
    assert second["runtimeConfig"] == {"portMappings": caps["portMappings"]}
    assert second["prevResult"] == {"cniVersion": "1.0.0"}
    assert "runtimeConfig" not in C.plugin_config(cl, cl["plugins"][1], None, None)
    # The plugin's own section, as netlab-cni validates it, with name and version injected.
    P.parse_config(first)


def test_versions_env_and_cni_args():
    assert C.list_version({"cniVersion": "1.0.0", "cniVersions": ["1.0.0", "1.1.0", "9.9.9"]}) == "1.1.0"
    assert C.list_version({"cniVersion": "1.0.0"}) == "1.0.0"
    env = C.plugin_env("ADD", "c1", "/run/netns/p", "eth0", ["/a", "/b"], "X=1")
    assert env == {"CNI_COMMAND": "ADD", "CNI_CONTAINERID": "c1", "CNI_NETNS": "/run/netns/p",
                   "CNI_IFNAME": "eth0", "CNI_ARGS": "X=1", "CNI_PATH": "/a:/b"}
    assert C.plugin_env("GC", "c1", "/n", "eth0", ["/a"]) == {"CNI_COMMAND": "GC", "CNI_PATH": "/a"}
    args = C.kubelet_cni_args("default", "web", "c1", "10.244.1.5")
    assert P.parse_cni_args(args)[-1] == ("IP", "10.244.1.5")


def test_reference_conflist_is_flannel_shaped():
    cl = C.reference_conflist("10.244.1.0/24", "10.244.1.1", "/s/cni", range_start="10.244.1.10")
    assert [p["type"] for p in cl["plugins"]] == ["bridge", "portmap", "loopback"]
    br = cl["plugins"][0]
    assert br["isGateway"] and br["isDefaultGateway"] and br["hairpinMode"] and br["ipMasq"] is False
    assert br["ipam"] == {"type": "host-local", "dataDir": "/s/cni", "ranges": [[{
        "subnet": "10.244.1.0/24", "gateway": "10.244.1.1", "rangeStart": "10.244.1.10"}]]}
    assert cl["plugins"][1]["capabilities"] == {"portMappings": True}
    assert C.reference_conflist("10.244.1.0/24", "10.244.1.1", "/s", ip_masq=True)["plugins"][0]["ipMasq"]


def test_render_call_is_a_runnable_command():
    call = C.Call("bridge", ["ip", "netns", "exec", "lab-node1", "/usr/lib/cni/bridge"],
                  {"CNI_COMMAND": "ADD", "CNI_ARGS": "A=1;B=2"}, {"cniVersion": "1.0.0"}, 0,
                  '{"cniVersion": "1.0.0"}', "")
    text = C.render_call(call)
    assert text.startswith("CNI_COMMAND=ADD CNI_ARGS='A=1;B=2' \\\n  ip netns exec lab-node1 /usr/lib/cni/bridge <<'EOF'")
    assert "# exit 0" in text and call.to_dict()["response"] == {"cniVersion": "1.0.0"}


def test_files_in_the_state(tmp_path):
    cl = C.netlab_conflist("10.244.1.0/24", "10.244.1.1", str(tmp_path / "cni"))
    path = C.write_conflist(str(tmp_path), cl, node="node1")
    assert path == str(tmp_path / "net.d" / "node1" / "10-netlab.conflist")
    assert json.loads(open(path).read()) == cl
    assert C.conflist_path(str(tmp_path), "netlab", "node1") == path
    assert C.conflist_path(str(tmp_path), "netlab") == str(tmp_path / "net.d" / "10-netlab.conflist")
    C.save_result(str(tmp_path), "netlab", "c1", "eth0", {"cniVersion": "1.0.0"})
    assert C.load_result(str(tmp_path), "netlab", "c1", "eth0") == {"cniVersion": "1.0.0"}
    C.drop_result(str(tmp_path), "netlab", "c1", "eth0")
    C.drop_result(str(tmp_path), "netlab", "c1", "eth0")
    assert C.load_result(str(tmp_path), "netlab", "c1", "eth0") is None


def test_locked_state_on_disk_goes_away_with_the_last_allocation(tmp_path):
    c = P.parse_config(conf(ipam={"dataDir": str(tmp_path)}))
    with P.locked_state(c) as holder:
        holder["state"], ip = P.ipam_allocate(holder["state"], c, "c1/eth0", {"containerID": "c1"})
    saved = json.loads((tmp_path / "netlab" / "allocations.json").read_text())
    assert saved["allocations"]["c1/eth0"]["ip"] == ip == "10.244.1.2"
    with pytest.raises(P.CniError):
        with P.locked_state(c) as holder:
            holder["state"], _ = P.ipam_release(holder["state"], "c1/eth0")
            raise P.CniError(P.E_KERNEL, "a failed ADD's rollback is written back too")
    assert list(tmp_path.iterdir()) == []


def test_node_conflist_keeps_each_nodes_ipam_apart():
    a = C.node_conflist("netlab", "/run/netlab/labs/x", "node1", "10.244.1.0/24", "10.244.1.1")
    b = C.node_conflist("reference", "/run/netlab/labs/x", "node2", "10.244.2.0/24", "10.244.2.1",
                        ip_masq=True)
    assert a["plugins"][0]["ipam"]["dataDir"] == "/run/netlab/labs/x/cni/node1/ipam"
    assert b["plugins"][0]["ipam"]["dataDir"] == "/run/netlab/labs/x/cni/node2/ipam"
    assert b["plugins"][0]["ipMasq"] is True
    with pytest.raises(Exception):
        C.node_conflist("netlab", "/s", "n", "10.244.1.0/24", "10.244.1.1", ip_masq=True)
    with pytest.raises(Exception):
        C.node_conflist("calico", "/s", "n", "10.244.1.0/24", "10.244.1.1")


SAVE = r"""# Generated by iptables-save v1.8.9 (nf_tables)
*nat
:POSTROUTING ACCEPT [0:0]
:CNI-68f1f1eeb62cad3d0bdd579c - [0:0]
-A POSTROUTING -m comment --comment "CNI portfwd requiring masquerade" -j CNI-HOSTPORT-MASQ
-A POSTROUTING -s 10.244.1.7/32 -m comment --comment "name: \"cbr0\" id: \"c1\"" -j CNI-68f1f1eeb62cad3d0bdd579c
-A CNI-68f1f1eeb62cad3d0bdd579c -d 10.244.1.0/24 -m comment --comment "name: \"cbr0\" id: \"c1\"" -j ACCEPT
-A CNI-68f1f1eeb62cad3d0bdd579c ! -d 224.0.0.0/4 -m comment --comment "name: \"cbr0\" id: \"c1\"" -j MASQUERADE
-A CNI-HOSTPORT-MASQ -m mark --mark 0x2000/0x2000 -j MASQUERADE
COMMIT
"""


def test_masquerade_rules_for_names_the_jump_and_the_rule():
    rules = C.masquerade_rules_for(SAVE, "10.244.1.7")
    assert len(rules) == 2
    assert rules[0].startswith("-A POSTROUTING -s 10.244.1.7/32") and rules[1].endswith("-j MASQUERADE")
    assert C.masquerade_rules_for(SAVE, "10.244.1.8") == []
    assert C.masquerade_rules_for("", "10.244.1.7") == []


def test_reading_a_result():
    att = P.Attachment("cni0", "m0", "veth1234abcd", "m1", "eth0", "m2", "/run/netns/lab-web",
                       "10.244.1.5")
    res = P.build_result(P.parse_config(conf()), att)
    assert C.result_address(res, "/run/netns/lab-web") == "10.244.1.5/24"
    assert C.result_address(res, "/run/netns/other") is None
    assert C.result_host_veth(res) == "veth1234abcd"

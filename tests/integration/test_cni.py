"""The CNI protocol for real, with no lab around it: netlab-cni and Debian's reference plugins run
inside a "node" namespace, wiring "pod" namespaces, each test making and removing its own.

netlab-cni runs from this worktree through a small wrapper in CNI_PATH (as an installed
`netlab-cni` entry point would), always through `ip netns exec <node>` as the runtime runs it.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from conftest import requires_root
from netlab.runtime import cni_chain as C
from netlab.runtime.cni_plugin import host_veth_name
from netlab.core.errors import NetlabError

pytestmark = requires_root

ROOT = Path(__file__).resolve().parent.parent.parent
REFERENCE = "/usr/lib/cni"


def sh(*argv: str, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(argv)}: {proc.returncode} {proc.stdout} {proc.stderr}")
    return proc


@pytest.fixture(scope="module")
def cni_bin(tmp_path_factory) -> str:
    d = tmp_path_factory.mktemp("cni-bin")
    wrapper = d / "netlab-cni"
    wrapper.write_text(f"#!/bin/sh\nPYTHONPATH={ROOT} exec {sys.executable} -m netlab.runtime.cni_plugin\n")
    wrapper.chmod(0o755)
    return str(d)


class Spaces:
    """A node namespace and pod namespaces, all named tcni-<random>-..., removed at the end."""

    def __init__(self) -> None:
        self.prefix = f"tcni-{uuid.uuid4().hex[:6]}"
        self.made: list[str] = []
        self.node = self.add("node")

    def add(self, what: str) -> str:
        ns = f"{self.prefix}-{what}"
        sh("ip", "netns", "add", ns)
        self.made.append(ns)
        sh("ip", "-n", ns, "link", "set", "lo", "up") if what == "node" else None
        return ns

    def remove(self, ns: str) -> None:
        sh("ip", "netns", "del", ns, check=False)

    def left(self) -> list[str]:
        return [ns for ns in os.listdir("/run/netns") if ns.startswith(self.prefix)]


@pytest.fixture
def spaces():
    s = Spaces()
    yield s
    for ns in s.made:
        s.remove(ns)
    assert s.left() == []


@pytest.fixture
def data_dir(tmp_path):
    d = tmp_path / "cni"
    d.mkdir()
    yield d


def conf(data_dir, version="1.0.0", subnet="10.244.1.0/24", gateway="10.244.1.1", **extra) -> dict:
    ipam = {"subnet": subnet, "gateway": gateway, "dataDir": str(data_dir)}
    ipam.update(extra.pop("ipam", {}))
    return {"cniVersion": version, "name": "netlab", "type": "netlab-cni", "bridge": "cni0",
            "mtu": 1500, "ipam": ipam, **extra}


def plugin(cni_bin, node, command, config, cid="c1", pod=None, ifname="eth0", raw=None):
    """Run netlab-cni once inside the node namespace; (exit code, parsed stdout or None)."""
    env = {"CNI_COMMAND": command, "CNI_PATH": f"{REFERENCE}:{cni_bin}", "PATH": os.environ["PATH"]}
    if command not in ("VERSION", "GC", "STATUS"):
        env.update({"CNI_CONTAINERID": cid, "CNI_IFNAME": ifname,
                    "CNI_NETNS": f"/run/netns/{pod}" if pod else "/run/netns/none-such"})
    stdin = raw if raw is not None else json.dumps(config).encode()
    proc = subprocess.run(["ip", "netns", "exec", node, f"{cni_bin}/netlab-cni"], input=stdin,
                          capture_output=True, env=env, timeout=60)
    out = proc.stdout.decode().strip()
    return proc.returncode, (json.loads(out) if out else None)


def addrs(ns: str, dev: str = "eth0") -> list[str]:
    data = json.loads(sh("ip", "-n", ns, "-j", "addr", "show", "dev", dev).stdout)
    return [f"{a['local']}/{a['prefixlen']}" for a in data[0]["addr_info"] if a["family"] == "inet"]


def ping(ns: str, dst: str) -> bool:
    """One ping answered, in up to 5 tries. The kernel's ARP table is one for every namespace
    (gc_thresh3, 1024 by default): other labs on the machine can fill it, and then a new neighbour
    entry fails ("neighbor table overflow") until the forced GC frees one, so a try may be lost."""
    for _ in range(5):
        if sh("ip", "netns", "exec", ns, "ping", "-c1", "-W1", dst, check=False).returncode == 0:
            return True
        time.sleep(0.5)
    entries = re.search(r"entries (\d+)", sh("ip", "-s", "ntable", "show", "name", "arp_cache").stdout)
    print(f"ping {ns} -> {dst} failed; ARP table entries (all namespaces): "
          f"{entries.group(1) if entries else '?'} of gc_thresh3")
    return False


def links(ns: str) -> set[str]:
    return {l["ifname"] for l in json.loads(sh("ip", "-n", ns, "-j", "link").stdout)}


def files(d) -> list[str]:
    return sorted(str(p.relative_to(d)) for p in Path(d).rglob("*"))


# ---------------------------------------------------------------- netlab-cni, verb by verb

def test_add_twice_is_an_error_and_del_twice_succeeds(cni_bin, spaces, data_dir):
    pod = spaces.add("pod")
    c = conf(data_dir)
    rc, res = plugin(cni_bin, spaces.node, "ADD", c, pod=pod)
    assert rc == 0, res
    assert res["cniVersion"] == "1.0.0"
    ip = res["ips"][0]
    itf = res["interfaces"][ip["interface"]]
    assert itf == {"name": "eth0", "mac": itf["mac"], "sandbox": f"/run/netns/{pod}"}
    assert ip["address"] == "10.244.1.2/24" and ip["gateway"] == "10.244.1.1"
    assert res["routes"] == [{"dst": "0.0.0.0/0", "gw": "10.244.1.1"}]
    assert addrs(pod) == ["10.244.1.2/24"]
    assert "default via 10.244.1.1 dev eth0" in sh("ip", "-n", pod, "route").stdout
    host = host_veth_name("c1", "eth0")
    assert host in links(spaces.node) and len(host) <= 15
    assert "10.244.1.1/24" in addrs(spaces.node, "cni0")
    assert f"master cni0" in sh("ip", "-n", spaces.node, "link", "show", host).stdout
    assert ping(pod, "10.244.1.1")

    rc, err = plugin(cni_bin, spaces.node, "ADD", c, pod=pod)
    assert rc != 0 and err["code"] == 100 and "c1/eth0" in err["details"], err
    assert addrs(pod) == ["10.244.1.2/24"]          # the failed ADD changed nothing

    assert plugin(cni_bin, spaces.node, "DEL", c, pod=pod) == (0, None)
    assert plugin(cni_bin, spaces.node, "DEL", c, pod=pod) == (0, None)
    assert host not in links(spaces.node) and "eth0" not in links(pod)
    assert files(data_dir) == []


def test_del_of_an_unknown_container_and_of_a_gone_namespace(cni_bin, spaces, data_dir):
    c = conf(data_dir)
    assert plugin(cni_bin, spaces.node, "DEL", c, cid="never-seen", pod="no-such-ns") == (0, None)
    pod = spaces.add("pod")
    assert plugin(cni_bin, spaces.node, "ADD", c, pod=pod)[0] == 0
    spaces.remove(pod)                                # the pod's namespace is gone first
    assert plugin(cni_bin, spaces.node, "DEL", c, pod=pod) == (0, None)
    assert host_veth_name("c1", "eth0") not in links(spaces.node)
    assert files(data_dir) == []


def test_check_reports_drift(cni_bin, spaces, data_dir):
    pod = spaces.add("pod")
    c = conf(data_dir)
    rc, res = plugin(cni_bin, spaces.node, "ADD", c, pod=pod)
    assert rc == 0
    checked = dict(c, prevResult=res)
    assert plugin(cni_bin, spaces.node, "CHECK", checked, pod=pod) == (0, None)

    sh("ip", "-n", pod, "addr", "del", "10.244.1.2/24", "dev", "eth0")
    rc, err = plugin(cni_bin, spaces.node, "CHECK", checked, pod=pod)
    assert rc != 0 and err["code"] == 102, err
    assert "address 10.244.1.2/24 is missing on eth0" in err["details"]
    assert "default route via 10.244.1.1 is missing" in err["details"]   # went with the address

    sh("ip", "-n", pod, "addr", "add", "10.244.1.2/24", "dev", "eth0")
    rc, err = plugin(cni_bin, spaces.node, "CHECK", checked, pod=pod)
    assert rc != 0 and err["details"] == "default route via 10.244.1.1 is missing", err
    sh("ip", "-n", pod, "route", "add", "default", "via", "10.244.1.1")
    assert plugin(cni_bin, spaces.node, "CHECK", checked, pod=pod) == (0, None)

    sh("ip", "-n", spaces.node, "link", "del", host_veth_name("c1", "eth0"))
    rc, err = plugin(cni_bin, spaces.node, "CHECK", checked, pod=pod)
    assert rc != 0 and "interface eth0 is missing" in err["details"], err

    assert plugin(cni_bin, spaces.node, "CHECK", c, pod=pod)[1]["code"] == 7   # no prevResult
    assert plugin(cni_bin, spaces.node, "DEL", c, pod=pod) == (0, None)
    assert files(data_dir) == []


def test_version_lists_the_supported_versions(cni_bin, spaces):
    assert plugin(cni_bin, spaces.node, "VERSION", None, raw=b'{"cniVersion":"1.0.0"}') == (
        0, {"cniVersion": "1.0.0", "supportedVersions": ["1.0.0", "1.1.0"]})
    rc, out = plugin(cni_bin, spaces.node, "VERSION", None, raw=b"")
    assert rc == 0 and out["supportedVersions"] == ["1.0.0", "1.1.0"]


def test_errors_carry_the_spec_codes(cni_bin, spaces, data_dir):
    pod = spaces.add("pod")
    node = spaces.node
    rc, err = plugin(cni_bin, node, "ADD", conf(data_dir, version="0.3.1"), pod=pod)
    assert rc != 0 and err["code"] == 1 and err["msg"] == "incompatible CNI versions", err
    assert '"0.3.1"' in err["details"]
    rc, err = plugin(cni_bin, node, "ADD", conf(data_dir, subnet="10.244.1.1/24"), pod=pod)
    assert rc != 0 and err["code"] == 7 and "ipam.subnet" in err["details"], err
    rc, err = plugin(cni_bin, node, "ADD", conf(data_dir, gateway="10.9.9.9"), pod=pod)
    assert rc != 0 and err["code"] == 7, err
    rc, err = plugin(cni_bin, node, "ADD", conf(data_dir, brigde="cni0"), pod=pod)
    assert rc != 0 and err["code"] == 2 and err["details"].startswith("brigde"), err
    rc, err = plugin(cni_bin, node, "ADD", None, pod=pod, raw=b"{not json")
    assert rc != 0 and err["code"] == 6, err
    rc, err = plugin(cni_bin, node, "ADD", conf(data_dir), pod=pod, ifname="a/b")
    assert rc != 0 and err["code"] == 4, err
    rc, err = plugin(cni_bin, node, "ADD", conf(data_dir), cid="", pod=pod)
    assert rc != 0 and err["code"] == 4 and "CNI_CONTAINERID" in err["msg"], err
    rc, err = plugin(cni_bin, node, "ADD", conf(data_dir), pod="no-such-pod")
    assert rc != 0 and err["code"] == 3, err
    assert "eth0" not in links(pod) and files(data_dir) == []

    # The kernel refuses (the pod has an eth0 already): the ADD is rolled back, address released.
    sh("ip", "-n", pod, "link", "add", "eth0", "type", "veth", "peer", "name", "other")
    rc, err = plugin(cni_bin, node, "ADD", conf(data_dir), pod=pod)
    assert rc != 0 and err["code"] == 104 and err["details"] == "File exists", err
    assert host_veth_name("c1", "eth0") not in links(node) and files(data_dir) == []


def test_status_and_gc_of_spec_1_1(cni_bin, spaces, data_dir):
    pods = [spaces.add("pod1"), spaces.add("pod2")]
    c = conf(data_dir, version="1.1.0", subnet="10.244.1.0/29",
             ipam={"rangeStart": "10.244.1.2", "rangeEnd": "10.244.1.3"})
    assert plugin(cni_bin, spaces.node, "STATUS", c) == (0, None)
    for i, pod in enumerate(pods):
        rc, res = plugin(cni_bin, spaces.node, "ADD", c, cid=f"c{i}", pod=pod)
        assert rc == 0 and res["interfaces"][2]["mtu"] == 1500     # 1.1.0 results carry mtu
    rc, err = plugin(cni_bin, spaces.node, "STATUS", c)
    assert rc != 0 and err["code"] == 50, err
    rc, err = plugin(cni_bin, spaces.node, "STATUS", dict(c, cniVersion="1.0.0"))
    assert rc != 0 and err["code"] == 1, err                      # STATUS is 1.1.0 only

    kept = dict(c, **{"cni.dev/valid-attachments": [{"containerID": "c0", "ifname": "eth0"}]})
    assert plugin(cni_bin, spaces.node, "GC", kept) == (0, None)
    assert host_veth_name("c1", "eth0") not in links(spaces.node)
    assert "eth0" not in links(pods[1]) and addrs(pods[0]) == ["10.244.1.2/29"]
    assert plugin(cni_bin, spaces.node, "STATUS", c) == (0, None)
    state = json.loads((data_dir / "netlab" / "allocations.json").read_text())
    assert list(state["allocations"]) == ["c0/eth0"]
    assert plugin(cni_bin, spaces.node, "GC", dict(c, **{"cni.dev/valid-attachments": []})) == (0, None)
    assert files(data_dir) == []


def test_refuses_a_namespace_that_is_not_a_named_one(cni_bin, spaces, data_dir):
    """Run in an anonymous namespace (unshare), as it would be run by mistake on the host: refused
    before anything is made (and if it were not, only that throwaway namespace would see it)."""
    pod = spaces.add("pod")
    env = {"CNI_COMMAND": "ADD", "CNI_CONTAINERID": "c1", "CNI_IFNAME": "eth0",
           "CNI_NETNS": f"/run/netns/{pod}", "CNI_PATH": cni_bin, "PATH": os.environ["PATH"]}
    proc = subprocess.run(["unshare", "--net", f"{cni_bin}/netlab-cni"],
                          input=json.dumps(conf(data_dir)).encode(), capture_output=True, env=env,
                          timeout=60)
    assert proc.returncode != 0 and json.loads(proc.stdout)["code"] == 103, proc.stdout
    assert "eth0" not in links(pod) and files(data_dir) == []
    with pytest.raises(NetlabError, match="node's namespace"):
        C.run_chain("ADD", C.netlab_conflist("10.244.1.0/24", "10.244.1.1", str(data_dir)),
                    "c1", f"/run/netns/{pod}", "eth0", "", [REFERENCE, cni_bin])


# ---------------------------------------------------------------- chains, as libcni runs them

def conflist_for(mode: str, data_dir, ip_masq: bool = False) -> dict:
    if mode == "netlab":
        return C.netlab_conflist("10.244.1.0/24", "10.244.1.1", str(data_dir))
    return C.reference_conflist("10.244.1.0/24", "10.244.1.1", str(data_dir), ip_masq=ip_masq)


def ip_files(d) -> list[str]:
    """IPAM allocations left: netlab-cni's state file, host-local's one file per address."""
    return [f for f in files(d) if f.endswith("allocations.json") or re.search(r"/\d+\.\d+\.\d+\.\d+$", f)]


@pytest.mark.parametrize("mode", ["netlab", "reference"])
def test_chain_wires_two_pods_that_ping(mode, cni_bin, spaces, data_dir):
    path = [REFERENCE, cni_bin]
    cl = conflist_for(mode, data_dir)
    pods = [spaces.add("pod1"), spaces.add("pod2")]
    results = []
    for i, pod in enumerate(pods):
        r = C.add(cl, f"c{i}", f"/run/netns/{pod}", "eth0", spaces.node, path,
                  cni_args=C.kubelet_cni_args("default", f"pod{i}", f"c{i}"),
                  capability_args={"ips": [f"10.244.1.{10 + i}/24"]})
        assert [c.plugin for c in r.calls] == [p["type"] for p in cl["plugins"]]
        assert all(c.rc == 0 for c in r.calls)
        # Each plugin after the first got the result before it as prevResult.
        for before, after in zip(r.calls, r.calls[1:]):
            assert after.stdin["prevResult"] == before.response()
        results.append(r.result)
        assert addrs(pod) == [f"10.244.1.{10 + i}/24"]
        assert C.result_address(r.result, f"/run/netns/{pod}") == f"10.244.1.{10 + i}/24"
        assert C.result_host_veth(r.result) in links(spaces.node)
    if mode == "reference":
        assert "UP" in sh("ip", "-n", pods[0], "link", "show", "lo").stdout   # the loopback plugin
    assert ping(pods[0], "10.244.1.1") and ping(pods[1], "10.244.1.1")
    assert ping(pods[0], "10.244.1.11") and ping(pods[1], "10.244.1.10")
    for i, pod in enumerate(pods):
        C.check(cl, f"c{i}", f"/run/netns/{pod}", "eth0", spaces.node, results[i], path)
    for i, pod in enumerate(pods):
        d = C.delete(cl, f"c{i}", f"/run/netns/{pod}", "eth0", spaces.node, results[i], path)
        assert [c.plugin for c in d.calls] == [p["type"] for p in reversed(cl["plugins"])]
        C.delete(cl, f"c{i}", f"/run/netns/{pod}", "eth0", spaces.node, results[i], path)  # twice
    assert "eth0" not in links(pods[0]) and ip_files(data_dir) == []


def test_netlab_cni_then_portmap_passes_the_result_through(cni_bin, spaces, data_dir):
    path = [REFERENCE, cni_bin]
    cl = C.netlab_conflist("10.244.1.0/24", "10.244.1.1", str(data_dir))
    pod = spaces.add("pod")
    mappings = {"portMappings": [{"hostPort": 8080, "containerPort": 80, "protocol": "tcp"}]}
    r = C.add(cl, "c1", f"/run/netns/{pod}", "eth0", spaces.node, path, capability_args=mappings)
    ours, portmap = r.calls
    assert portmap.plugin == "portmap" and portmap.stdin["prevResult"] == ours.response()
    assert portmap.stdin["runtimeConfig"] == mappings
    assert portmap.response() == ours.response() == r.result
    rules = sh("ip", "netns", "exec", spaces.node, "iptables-save", "-t", "nat").stdout
    assert "--to-destination 10.244.1.2:80" in rules

    # The host port works: the node's own address, port 8080, reaches the pod's port 80.
    server = subprocess.Popen(["ip", "netns", "exec", pod, sys.executable, "-m", "http.server",
                               "80", "--bind", "10.244.1.2"], stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    try:
        for _ in range(50):
            got = sh("ip", "netns", "exec", spaces.node, "curl", "-s", "-m", "2", "-o", "/dev/null",
                     "-w", "%{http_code}", "http://10.244.1.1:8080/", check=False)
            if got.stdout == "200":
                break
            time.sleep(0.1)
        assert got.stdout == "200", got
    finally:
        server.terminate()
        server.wait(timeout=10)

    # Debian's portmap (1.1.1) CHECKs an IPv6 DNAT chain it never made for an IPv4-only pod
    # (containernetworking/plugins#819): that one failure is expected from it, nothing else.
    try:
        C.check(cl, "c1", f"/run/netns/{pod}", "eth0", spaces.node, r.result, path,
                capability_args=mappings)
    except C.ChainError as e:
        assert e.call.plugin == "portmap" and "could not check ipv6 dnat" in str(e), e
        assert [c.rc for c in e.calls] == [0, 1]         # netlab-cni's CHECK passed
    C.delete(cl, "c1", f"/run/netns/{pod}", "eth0", spaces.node, r.result, path,
             capability_args=mappings)
    rules = sh("ip", "netns", "exec", spaces.node, "iptables-save", "-t", "nat").stdout
    assert "10.244.1.2" not in rules and ip_files(data_dir) == []


def test_chain_check_fails_after_a_hand_made_change(cni_bin, spaces, data_dir):
    path = [REFERENCE, cni_bin]
    cl = C.netlab_conflist("10.244.1.0/24", "10.244.1.1", str(data_dir))
    pod = spaces.add("pod")
    r = C.add(cl, "c1", f"/run/netns/{pod}", "eth0", spaces.node, path)
    sh("ip", "-n", pod, "addr", "del", "10.244.1.2/24", "dev", "eth0")
    with pytest.raises(C.ChainError) as e:
        C.check(cl, "c1", f"/run/netns/{pod}", "eth0", spaces.node, r.result, path)
    assert e.value.call.plugin == "netlab-cni" and e.value.error["code"] == 102
    assert "10.244.1.2/24" in str(e.value)
    C.delete(cl, "c1", f"/run/netns/{pod}", "eth0", spaces.node, r.result, path)
    assert ip_files(data_dir) == []


def test_reference_ipmasq_rule_lives_in_the_node_namespace_only(cni_bin, spaces, data_dir):
    root_before, root_links = sh("nft", "list", "ruleset").stdout, links_root()
    path = [REFERENCE, cni_bin]
    cl = conflist_for("reference", data_dir, ip_masq=True)
    pod = spaces.add("pod")
    r = C.add(cl, "c1", f"/run/netns/{pod}", "eth0", spaces.node, path)
    ip = r.result["ips"][0]["address"].split("/")[0]
    node_rules = sh("ip", "netns", "exec", spaces.node, "iptables-save", "-t", "nat").stdout
    masq = [l for l in node_rules.splitlines() if "-j MASQUERADE" in l and 'id: \\"c1\\"' in l]
    assert masq, node_rules
    named = C.masquerade_rules_for(node_rules, ip)
    assert named[0].startswith(f"-A POSTROUTING -s {ip}/32") and named[1] == masq[0]
    assert sh("nft", "list", "ruleset").stdout == root_before
    assert not {"cni0", host_veth_name("c1", "eth0")} & (links_root() - root_links)
    C.delete(cl, "c1", f"/run/netns/{pod}", "eth0", spaces.node, r.result, path)
    node_rules = sh("ip", "netns", "exec", spaces.node, "iptables-save", "-t", "nat").stdout
    assert "MASQUERADE" not in node_rules and ip_files(data_dir) == []
    assert sh("nft", "list", "ruleset").stdout == root_before


def links_root() -> set[str]:
    return {l["ifname"] for l in json.loads(sh("ip", "-j", "link").stdout)}


@pytest.mark.parametrize("mode", ["netlab", "reference"])
def test_concurrent_adds_on_one_node_get_distinct_addresses(mode, cni_bin, spaces, data_dir):
    """Kubelet may ADD different pods at once: the IPAM lock keeps their addresses apart, and the
    first ADDs racing to make the bridge all succeed."""
    from concurrent.futures import ThreadPoolExecutor
    path = [REFERENCE, cni_bin]
    cl = conflist_for(mode, data_dir)
    pods = [spaces.add(f"pod{i}") for i in range(8)]

    def one(i):
        return C.add(cl, f"c{i}", f"/run/netns/{pods[i]}", "eth0", spaces.node, path).result

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(one, range(8)))
    ips = [r["ips"][0]["address"] for r in results]
    assert len(set(ips)) == 8 and all(addrs(p) == [ip] for p, ip in zip(pods, ips))
    assert ping(pods[0], ips[7].split("/")[0])
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda i: C.delete(cl, f"c{i}", f"/run/netns/{pods[i]}", "eth0", spaces.node,
                                         results[i], path), range(8)))
    assert ip_files(data_dir) == []


@pytest.mark.parametrize("mode", ["netlab", "reference"])
def test_chain_uses_a_bridge_the_node_already_has(mode, cni_bin, spaces, data_dir):
    """A lab's node may have made cni0 with the gateway address already (as `builtin` does): both
    plugins take it as it is."""
    sh("ip", "-n", spaces.node, "link", "add", "cni0", "type", "bridge")
    sh("ip", "-n", spaces.node, "addr", "add", "10.244.1.1/24", "dev", "cni0")
    sh("ip", "-n", spaces.node, "link", "set", "cni0", "up")
    path = [REFERENCE, cni_bin]
    cl = conflist_for(mode, data_dir)
    pod = spaces.add("pod")
    r = C.add(cl, "c1", f"/run/netns/{pod}", "eth0", spaces.node, path)
    assert addrs(spaces.node, "cni0") == ["10.244.1.1/24"] and ping(pod, "10.244.1.1")
    C.delete(cl, "c1", f"/run/netns/{pod}", "eth0", spaces.node, r.result, path)
    assert ip_files(data_dir) == []

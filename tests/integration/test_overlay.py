"""Cross-node networking end to end as root: host-gw and the VXLAN overlay on a routed underlay.

Real pods, ping, curl and tcpdump inside the lab's namespaces; every lab is named `ov-...` and
every test proves nothing of it is left.
"""

from __future__ import annotations

import json
import os
import select
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from conftest import SCENARIOS, leftovers, netlab, requires_root, unique_name, curl, in_ns
from netlab import model
from netlab.features import vxlan

pytestmark = requires_root

HOST_GW = SCENARIOS / "three-node.yaml"
VXLAN = SCENARIOS / "overlay.yaml"


@pytest.fixture
def ov_name():
    """A unique `ov-` lab name; afterwards the lab is taken down and nothing of it may be left."""
    names = []

    def make() -> str:
        names.append(unique_name("ov"))
        return names[-1]

    yield make
    for name in names:
        netlab("down", name, check=False)
    for name in names:
        assert leftovers(name) == [], f"lab {name} left things behind"


def ping(ns: str, ip: str, size: int | None = None, tries: int = 3) -> bool:
    """One echo answered, out of a bounded number of tries: when other labs on the machine fill
    the kernel's neighbour table (global to all namespaces) a send can fail with ENOBUFS."""
    extra = ["-M", "do", "-s", str(size)] if size is not None else []
    return any(in_ns(ns, "ping", "-c1", "-W1", *extra, ip).returncode == 0 for _ in range(tries))


def up(path: Path, name: str) -> model.Lab:
    netlab("up", str(path), "--name", name)
    return model.load(path, name)


@pytest.mark.parametrize("scenario,backend,mtu", [(HOST_GW, "host-gw", 1500),
                                                  (VXLAN, "vxlan", 1450)])
def test_every_pod_reaches_every_pod_without_nat(ov_name, scenario, backend, mtu):
    lab = up(scenario, ov_name())
    shown = json.loads(netlab("show", lab.name, "--json").stdout)
    assert (shown["backend"], shown["mtu"]) == (backend, mtu)
    assert {p.node for p in lab.pods} == {n.name for n in lab.nodes}  # pods on every node
    for src in lab.pods:
        for dst in lab.pods:
            if src is not dst:
                seen = curl(src.ns, f"http://{dst.ip}:8080/clientip")
                assert seen.rsplit(":", 1)[0] == src.ip, f"{dst.name} saw {seen}, not {src.ip}"
    link = json.loads(in_ns(lab.pods[0].ns, "ip", "-j", "link", "show", "eth0").stdout)[0]
    assert link["mtu"] == mtu


@pytest.mark.parametrize("scenario", [HOST_GW, VXLAN])
def test_largest_ping_crosses_nodes_and_one_byte_more_does_not(ov_name, scenario):
    lab = up(scenario, ov_name())
    size = model.largest_ping_payload(lab)
    assert size == lab.mtu - 28
    src = lab.pods[0]
    crossing = [p for p in lab.pods if p.node != src.node]
    assert crossing
    for dst in crossing:
        assert ping(src.ns, dst.ip, size), f"{size}-byte ping {src.name} -> {dst.name} with DF"
        assert not ping(src.ns, dst.ip, size + 1), f"{size + 1} bytes should not fit MTU {lab.mtu}"


def test_a_pod_mtu_wrong_for_the_overlay_is_caught(ov_name):
    """A pod left at the underlay's 1500 on vxlan: its largest ping no longer crosses nodes."""
    lab = up(VXLAN, ov_name())
    src = lab.pods[0]
    dst = next(p for p in lab.pods if p.node != src.node)
    node = lab.node(src.node)
    assert ping(src.ns, dst.ip, model.largest_ping_payload(lab))
    for ns, dev in ((src.ns, "eth0"), (node.ns, src.host_veth)):
        assert in_ns(ns, "ip", "link", "set", "dev", dev, "mtu", "1500").returncode == 0
    assert not ping(src.ns, dst.ip, 1500 - 28)


def capture(ns: str, dev: str, bpf: str, count: int, during) -> str:
    """tcpdump inside ns (bounded by -c and a timeout) while `during()` sends the traffic."""
    proc = subprocess.Popen(["ip", "netns", "exec", ns, "timeout", "15", "tcpdump", "-i", dev,
                             "-nn", "-l", "-c", str(count), bpf],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        # tcpdump says "listening on" once its socket is open: only then is traffic seen.
        said = b""
        while b"listening on" not in said:
            ready, _, _ = select.select([proc.stderr], [], [], 10)
            chunk = os.read(proc.stderr.fileno(), 4096) if ready else b""
            assert chunk, f"tcpdump in {ns} did not start: {said!r}"
            said += chunk
        during()
        out, _ = proc.communicate(timeout=20)
    finally:
        proc.kill()
        proc.wait()
    return out.decode()


def test_vxlan_capture_on_the_underlay_shows_udp_4789_with_pod_addresses_inside(ov_name):
    lab = up(VXLAN, ov_name())
    src, dst = lab.pod("web"), lab.pod("db")                  # node1 (segment 1), node3 (segment 2)
    n1, n3 = lab.node(src.node), lab.node(dst.node)
    assert n1.segment != n3.segment
    # The router's port on node1's segment carries the overlay between the segments.
    out = capture(lab.router_ns, "eth0", "udp port 4789", 2,
                  lambda: in_ns(src.ns, "ping", "-c5", "-i0.2", "-W1", dst.ip))
    assert f"{n1.ip}." in out and f"> {n3.ip}.4789: VXLAN" in out, out
    assert f"{src.ip} > {dst.ip}: ICMP echo request" in out, out


def test_host_gw_capture_on_the_underlay_shows_pod_addresses_bare(ov_name):
    lab = up(HOST_GW, ov_name())
    src, dst = lab.pod("web"), lab.pod("api")                 # node1, node2
    uplink = lab.node(src.node).uplink
    out = capture(lab.underlay_ns, uplink, "icmp or udp port 4789", 2,
                  lambda: in_ns(src.ns, "ping", "-c5", "-i0.2", "-W1", dst.ip))
    assert f"{src.ip} > {dst.ip}: ICMP echo request" in out, out
    assert "VXLAN" not in out and ".4789" not in out, out


def fdb(ns: str) -> list[dict]:
    return json.loads(in_ns(ns, "bridge", "-j", "fdb", "show", "dev", vxlan.VXLAN_DEV).stdout)


def test_deleting_one_nodes_fdb_entries_breaks_exactly_the_checks_crossing_it(ov_name):
    lab = up(VXLAN, ov_name())
    pairs = [(s, d) for s in lab.pods for d in lab.pods if s is not d]

    def reach() -> dict:
        with ThreadPoolExecutor(8) as pool:
            return dict(zip([(s.name, d.name) for s, d in pairs],
                            pool.map(lambda sd: ping(sd[0].ns, sd[1].ip), pairs)))

    assert all(reach().values())
    cut = lab.node("node3")
    entries = fdb(cut.ns)
    assert sorted(e["dst"] for e in entries) == sorted(n.ip for n in lab.nodes if n is not cut)
    for e in entries:
        r = in_ns(cut.ns, "bridge", "fdb", "del", e["mac"], "dev", vxlan.VXLAN_DEV, "dst", e["dst"])
        assert r.returncode == 0, r.stderr
    assert fdb(cut.ns) == []
    node_of = {p.name: p.node for p in lab.pods}
    expected = {(s, d): (node_of[s] == cut.name) == (node_of[d] == cut.name) for s, d in reach()}
    assert reach() == expected
    assert not all(expected.values()) and any(v for k, v in expected.items()
                                              if node_of[k[0]] != node_of[k[1]])


def kernel_state(lab: model.Lab) -> dict:
    """Links, addresses, routes, neighbours and vxlan fdb of every namespace of a lab, by the
    namespace's name within the lab (random MACs and ifindexes left out)."""
    state = {}
    for ns in lab.namespaces:
        links = []
        for link in json.loads(in_ns(ns, "ip", "-d", "-j", "link", "show").stdout):
            info = link.get("linkinfo", {})
            kind = info.get("info_kind")
            # set up or not (the flag), not operstate: a bridge's settles a moment later
            links.append((link["ifname"], kind, link["mtu"], "UP" in link.get("flags", []),
                          link.get("master"), link.get("ifalias", "").split(":")[0],
                          link["address"] if kind == "vxlan" else None,
                          json.dumps(info.get("info_data"), sort_keys=True)
                          if kind == "vxlan" else None))
        addrs = [(a["ifname"], i["local"], i["prefixlen"])
                 for a in json.loads(in_ns(ns, "ip", "-j", "-4", "addr", "show").stdout)
                 for i in a["addr_info"]]
        routes = [json.dumps(r, sort_keys=True)
                  for r in json.loads(in_ns(ns, "ip", "-j", "-4", "route", "show").stdout)]
        neigh = [(n["dst"], n.get("lladdr"), n["dev"])
                 for n in json.loads(in_ns(ns, "ip", "-j", "neigh", "show", "nud",
                                           "permanent").stdout)]
        fdbs = [(f["mac"], f.get("dst"), f.get("state")) for f in json.loads(
            in_ns(ns, "bridge", "-j", "fdb", "show").stdout) if f.get("dst")]
        forward = in_ns(ns, "sysctl", "-n", "net.ipv4.ip_forward").stdout.strip()
        state[ns.removeprefix(lab.name + "-")] = {
            "links": sorted(links, key=str), "addrs": sorted(addrs), "routes": sorted(routes),
            "neigh": sorted(neigh), "fdb": sorted(fdbs, key=str), "forward": forward}
    return state


@pytest.mark.parametrize("scenario", [VXLAN, HOST_GW])
def test_plan_script_builds_the_same_overlay_as_up(ov_name, scenario, unrecorded_lab):
    by_up = up(scenario, ov_name())
    by_script = model.load(scenario, ov_name())
    script = netlab("plan", str(scenario), "--name", by_script.name).stdout
    r = subprocess.run(["bash", "-c", script], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    a, b = kernel_state(by_up), kernel_state(by_script)
    assert a.keys() == b.keys()
    for ns in a:
        assert a[ns] == b[ns], ns
    if scenario == VXLAN:
        assert [f for f in a["node1"]["fdb"]] and ("flannel.1", "vxlan", 1450) in [
            link[:3] for link in a["node1"]["links"]]


def test_host_gw_on_a_routed_underlay_is_refused_before_touching_the_kernel(tmp_path, ov_name):
    name = ov_name()
    text = VXLAN.read_text().replace("backend: vxlan", "backend: host-gw")
    path = tmp_path / "routed-host-gw.yaml"
    path.write_text(text)
    line = next(i for i, s in enumerate(text.splitlines(), 1) if "backend: host-gw" in s)
    r = netlab("up", str(path), "--name", name, check=False)
    assert r.returncode == 2, r.stderr
    assert r.stderr.count("\n") == 1
    assert f"{path}:{line}: " in r.stderr
    assert "node1, node2 (192.168.1.0/24) and node3 (192.168.2.0/24) share no segment" in r.stderr
    assert "use backend: vxlan or put them on one segment" in r.stderr
    assert leftovers(name) == []

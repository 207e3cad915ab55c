"""`netlab up --node` on three stand-in VMs: namespaces joined by a bridge, each with its node IP
on eth1 as Vagrant's private network gives it. netlab runs inside each (nsenter --net), builds
that node's part in the "VM's" own namespace, and pods talk across the "VMs" with no NAT."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT, SCENARIOS, leftovers, requires_root, unique_name

pytestmark = requires_root

# The scenarios the Vagrantfile's multi-machine mode uses (NODES=3 vagrant up).
SCENARIO_OF = {"host-gw": SCENARIOS / "vagrant-nodes.yaml", "vxlan": SCENARIOS / "vagrant-overlay.yaml"}
NODES = {"node1": "192.168.56.11", "node2": "192.168.56.12", "node3": "192.168.56.13"}


def sh(*argv: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(argv, capture_output=True, text=True, check=check, timeout=60)


def in_vm(vm: str, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    """`netlab ARGS` run inside a stand-in VM (its network namespace only, as on a real host)."""
    proc = subprocess.run(["nsenter", f"--net=/run/netns/{vm}", "--", sys.executable, "-m",
                           "netlab", *args], capture_output=True, text=True, timeout=180, cwd=ROOT)
    if check and proc.returncode != 0:
        raise AssertionError(f"in {vm}: netlab {' '.join(args)} exited {proc.returncode}\n"
                             f"{proc.stdout}\n{proc.stderr}")
    return proc


def look(vm: str) -> dict:
    """What a stand-in VM's namespace holds: links, addresses, routes, forwarding."""
    return {"links": sh("ip", "-n", vm, "-br", "link").stdout,
            "addrs": sh("ip", "-n", vm, "-br", "addr").stdout,
            "routes": sh("ip", "-n", vm, "route").stdout,
            "neigh": sh("ip", "-n", vm, "neigh", "show", "nud", "permanent").stdout,
            "forward": sh("nsenter", f"--net=/run/netns/{vm}", "--", "cat",
                          "/proc/sys/net/ipv4/ip_forward").stdout}


@pytest.fixture
def vms():
    """Three stand-in VMs on one switch (a bridge in a fourth namespace); removed afterwards."""
    name = unique_name("vg")
    switch, vms = f"{name}-sw", {n: f"{name}-{n}" for n in NODES}
    try:
        sh("ip", "netns", "add", switch)
        sh("ip", "-n", switch, "link", "add", "br0", "type", "bridge")
        sh("ip", "-n", switch, "link", "set", "br0", "up")
        for k, (node, vm) in enumerate(vms.items(), 1):
            sh("ip", "netns", "add", vm)
            sh("ip", "-n", vm, "link", "set", "lo", "up")
            sh("ip", "-n", switch, "link", "add", f"port{k}", "type", "veth", "peer", "name",
               "eth1", "netns", vm)
            sh("ip", "-n", switch, "link", "set", f"port{k}", "master", "br0", "up")
            sh("ip", "-n", vm, "addr", "add", f"{NODES[node]}/24", "dev", "eth1")
            sh("ip", "-n", vm, "link", "set", "eth1", "up")
        yield name, vms
    finally:
        for ns in [*vms.values(), switch]:
            sh("ip", "netns", "del", ns, check=False)
    assert leftovers(name) == []
    assert not [p for p in Path("/run/netlab/labs").glob(f"{name}@*")], "node state left"


def pod_curl(pod_ns: str, url: str) -> str:
    return sh("ip", "netns", "exec", pod_ns, "curl", "-s", "--max-time", "5", url).stdout.strip()


@pytest.mark.parametrize("backend", ["host-gw", "vxlan"])
def test_one_node_per_vm(vms, backend):
    name, vm = vms
    scenario = SCENARIO_OF[backend]
    before = {n: look(v) for n, v in vm.items()}
    try:
        for node, v in vm.items():
            r = in_vm(v, "up", str(scenario), "--name", name, "--node", node, "--underlay", "eth1")
            assert f"node {node} of lab {name} is up" in r.stdout
        # The node's part is in the VM's own namespace: cni0, and the way to the other nodes.
        # Its pods' namespaces bear the node's mark, so nothing that takes down the lab <name>
        # as a whole (down, clean) takes them.
        assert f"alias netlab:{name}@node1" in sh("ip", "-n", f"{name}-web", "-d", "link", "show",
                                                  "lo").stdout
        routes = sh("ip", "-n", vm["node1"], "route").stdout
        assert "10.244.1.0/24 dev cni0" in routes
        if backend == "host-gw":
            assert "10.244.2.0/24 via 192.168.56.12 dev eth1" in routes
        else:
            assert "10.244.2.0/24 via 10.244.2.0 dev flannel.1 onlink" in routes
            assert "vxlan id 1 local 192.168.56.11 dev eth1" in \
                sh("ip", "-n", vm["node1"], "-d", "link", "show", "flannel.1").stdout
        # Across the "VMs" with no NAT: each server sees the client pod's own address.
        assert pod_curl(f"{name}-web", "http://10.244.2.2:8080/clientip").startswith("10.244.1.2:")
        assert pod_curl(f"{name}-api", "http://10.244.3.2:8080/clientip").startswith("10.244.2.2:")
        assert pod_curl(f"{name}-db", "http://10.244.1.2:8080/clientip").startswith("10.244.3.2:")
        # verify on one VM checks from its node and pods to the pods and nodes of all of them.
        r = in_vm(vm["node1"], "verify", name, "--node", "node1", "--json")   # exit 0: all pass
        checks = json.loads(r.stdout)["results"]
        cross = {(c["from"], c["to"]) for c in checks
                 if c["rule"] == "pod-pod-cross-node" and c["method"] == "http" and c["ok"]}
        assert cross == {("web", "api"), ("web", "db")}
        assert {c["from"] for c in checks} == {"web", "node1"}
        # show, status and exec name the node on this host as <lab>@<node>
        assert "web   1/1    Running  10.244.1.2  node1" in in_vm(vm["node1"], "show",
                                                                 f"{name}@node1").stdout
        assert f"{name}@node3" in in_vm(vm["node3"], "status").stdout
        assert "10.244.1.0/24 dev cni0" in in_vm(vm["node1"], "exec", f"{name}@node1", "node1",
                                                 "--", "ip", "route").stdout
        # up twice is harmless
        assert "already up" in in_vm(vm["node2"], "up", str(scenario), "--name", name, "--node",
                                     "node2").stdout
    finally:
        for node, v in vm.items():
            in_vm(v, "down", name, "--node", node, check=False)
    for node, v in vm.items():
        assert look(v) == before[node], f"{v} is not as it was"
    assert in_vm(vm["node1"], "down", name, "--node", "node1").returncode == 0   # twice: harmless


def test_node_ip_missing_is_refused(vms):
    name, vm = vms
    scenario = SCENARIO_OF["host-gw"]
    before = look(vm["node2"])
    # node1's address is not on node2's "VM": refused, exit 2, nothing touched.
    r = in_vm(vm["node2"], "up", str(scenario), "--name", name, "--node", "node1", check=False)
    assert r.returncode == 2
    assert "eth1 does not have node1's address 192.168.56.11" in r.stderr
    r = in_vm(vm["node2"], "up", str(scenario), "--name", name, "--node", "node2", "--underlay",
              "eth7", check=False)
    assert r.returncode == 2 and "no device eth7" in r.stderr
    assert look(vm["node2"]) == before
    assert not Path(f"/run/netlab/labs/{name}@node1").exists()


def test_failed_node_up_rolls_back(vms):
    """A route the host already has makes `up --node` fail half-way: what it made is removed,
    forwarding is back to what it was, and the host's own route is left alone."""
    name, vm = vms
    v = vm["node1"]
    sh("ip", "-n", v, "route", "add", "10.244.3.0/24", "via", "192.168.56.13", "dev", "eth1")
    before = look(v)
    r = in_vm(v, "up", str(SCENARIO_OF["host-gw"]), "--name", name, "--node", "node1", check=False)
    assert r.returncode == 1, r.stderr
    assert "ip route add 10.244.3.0/24 via 192.168.56.13 dev eth1" in r.stderr
    assert "everything it made was removed" in r.stderr
    assert look(v) == before
    assert not Path(f"/run/netlab/labs/{name}@node1").exists()

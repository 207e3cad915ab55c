"""plan.build_node: the part of one node built on a real host, in the namespace netlab runs in."""

from netlab import model, plan
from tests.conftest import SCENARIOS


def _lab(backend: str = "host-gw"):
    text = (SCENARIOS / "three-node.yaml").read_text().replace("backend: host-gw",
                                                               f"backend: {backend}")
    return model.parse(text, "three-node.yaml")


def test_host_gw_node_ops_are_here_and_only_its_own():
    lab = _lab()
    ops = plan.build_node(lab, "node2", "eth1")
    here = [op for op in ops if op.ns == plan.HERE]
    assert plan.BridgeAdd(plan.HERE, "cni0") in ops
    assert plan.RouteAdd(plan.HERE, "10.244.1.0/24", "192.168.1.11", "eth1") in ops
    assert plan.RouteAdd(plan.HERE, "10.244.3.0/24", "192.168.1.13", "eth1") in ops
    assert plan.Sysctl(plan.HERE, "net.ipv4.ip_forward", "1") in ops
    # only node2's pods get namespaces; no node, underlay or other pod namespace
    assert [op.ns for op in ops if isinstance(op, plan.NetnsAdd)] == ["three-node-api",
                                                                       "three-node-worker"]
    assert not any(op.ns in ("three-node-node2", "three-node-underlay") for op in ops)
    # the script is plain iproute2 on this host: no `-n ''`, no `ip netns exec ''`
    text = "\n".join(op.ip() for op in here)
    assert "ip link add cni0 type bridge" in text
    assert "ip route add 10.244.1.0/24 via 192.168.1.11 dev eth1" in text
    assert "''" not in text and "sysctl -qw net.ipv4.ip_forward=1" in text


def test_vxlan_node_uses_the_underlay_device():
    ops = plan.build_node(_lab("vxlan"), "node1", "enp0s8")
    vx = next(op for op in ops if isinstance(op, plan.VxlanAdd))
    assert (vx.ns, vx.local, vx.dev) == (plan.HERE, "192.168.1.11", "enp0s8")
    assert any(isinstance(op, plan.FdbAppend) and op.dst == "192.168.1.12" for op in ops)
    assert vx.ip().startswith("ip link add flannel.1 ")
    assert not any(isinstance(op, plan.RouteAdd) and op.ns == plan.HERE for op in ops)


def test_named_namespaces_still_render_with_n():
    assert plan.BridgeAdd("x-node1", "cni0").ip() == "ip -n x-node1 link add cni0 type bridge"


def test_on_vxlan_a_node_reaches_other_nodes_pods_from_flannel_1():
    from netlab import verify as V
    lab = _lab("vxlan")
    from netlab.features.pods import rule_node_to_pod
    checks = [c for c in rule_node_to_pod(lab) if c.method == "http" and c.src == "node1"]
    seen = {c.dst: c.sees[0] for c in checks}
    assert seen["web"] == "10.244.1.1"       # its own pod: from cni0
    assert seen["api"] == "10.244.1.0"       # another node's pod: from flannel.1 (vtep /32)


def test_verify_on_a_node_host_runs_only_its_own_checks_here():
    from netlab import verify
    from netlab.runtime import nodehost
    checks = verify.derive_node(nodehost.local_lab(_lab(), "node2"), "node2")
    assert {c.src for c in checks} == {"node2", "api", "worker"}
    assert {c.ns for c in checks if c.src == "node2"} == {plan.HERE}
    assert {c.dst for c in checks if c.rule == "pod-pod-cross-node"} == {"web", "frontend", "db",
                                                                         "cache"}
    # servers on other hosts are not waited for here; this host's are
    assert all(c.server is None for c in checks if c.dst in ("web", "db"))
    assert any(c.server is not None for c in checks if c.dst == "worker")

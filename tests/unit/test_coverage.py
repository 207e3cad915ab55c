"""verify's modes, pure: every pair up to 100 pods, a covering set above it."""

from bench.gen import scenario
from netlab import model
from netlab.verify import coverage as C
from netlab.verify import engine


def lab(nodes, pods):
    return model.parse(scenario(nodes, pods, netexec=True, name="scl-c"), "<test>")


def test_mode_by_size_and_flags():
    assert C.choose(6).mesh and C.choose(100).mesh
    assert not C.choose(101).mesh and C.choose(101).rounds == 1
    assert C.choose(1000, mesh=True).mesh
    assert C.choose(10, sample=3) == C.Cover(False, 3)


def test_between_and_within_cover_every_member():
    a, b = list(range(7)), list("xyz")
    pairs = C.between(a, b, C.Cover(False, 1))
    assert {x for x, _ in pairs} == set(a) and {y for _, y in pairs} == set(b)
    assert len(pairs) == 7
    assert len(C.between(a, b, C.MESH)) == 21
    ring = C.within(a, C.Cover(False, 2))
    assert len(ring) == 14 and all(x != y for x, y in ring)
    assert {x for x, _ in ring} == {y for _, y in ring} == set(a)


def test_covering_checks_every_pod_both_ways_every_node_pair_every_rule():
    big = lab(5, 30)                                  # 150 pods: covering by default
    cover = C.choose(len(big.pods))
    checks = engine.derive(big, cover=cover)
    mesh = engine.derive(big, cover=C.MESH)
    assert len(checks) < len(mesh) / 10
    assert {c.rule for c in checks} == {c.rule for c in mesh}
    pods = {p.name for p in big.pods}
    node_of = {p.name: p.node for p in big.pods}
    for rule in ("pod-pod-same-node", "pod-pod-cross-node"):
        mine = [c for c in checks if c.rule == rule]
        assert {c.src for c in mine} == pods and {c.dst for c in mine} == pods
    cross = {(node_of[c.src], node_of[c.dst]) for c in checks if c.rule == "pod-pod-cross-node"}
    nodes = [n.name for n in big.nodes]
    assert cross == {(a, b) for a in nodes for b in nodes if a != b}
    to_pod = {(c.src, node_of[c.dst]) for c in checks if c.rule == "node-to-pod"}
    assert to_pod == {(a, b) for a in nodes for b in nodes}
    assert {c.dst for c in checks if c.rule == "node-to-pod"} == pods
    to_node = {(node_of[c.src], c.dst) for c in checks if c.rule == "pod-to-node"}
    assert to_node == {(a, b) for a in nodes for b in nodes}
    assert {c.src for c in checks if c.rule == "pod-to-node"} == pods


def test_small_lab_mode_is_the_mesh():
    small = lab(3, 2)
    assert engine.derive(small) == engine.derive(small, cover=C.MESH)

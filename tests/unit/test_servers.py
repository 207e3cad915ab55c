"""Shared servers, pure: a big lab's single-server pods get one server process per node."""

from bench.gen import scenario
from netlab import model, plan
from netlab.core import servers as S
from netlab.core.ops import Spawn


def lab(nodes, pods):
    return model.parse(scenario(nodes, pods, netexec=True, name="scl-s"), "<test>")


def test_small_lab_keeps_a_process_per_pod():
    small = lab(3, 2)
    assert S.served(small) == {}
    assert sum(isinstance(op, Spawn) and op.owner.startswith("p") for op in plan.build(small)) == 6


def test_big_lab_has_one_shared_server_per_node_with_every_pod():
    big = lab(5, 10)
    spawns = [op for op in plan.build(big) if isinstance(op, Spawn)]
    shared = [op for op in spawns if op.name == S.SHARED]
    assert [op.owner for op in shared] == [n.name for n in big.nodes]
    assert not [op for op in spawns if op.owner in S.served(big)]
    first = shared[0]
    assert first.ns == big.node("n1").ns
    pods = [first.argv[i + 1] for i, a in enumerate(first.argv) if a == "--pod"]
    assert pods == [f"{p.ns}:{p.name}:8080" for p in big.pods_on("n1")]

"""Which pairs verify checks: every pair in small labs (the mesh), a covering set in big ones.

Checking every pod pair is quadratic: a million pairs at 1,000 pods. Above MESH_UP_TO pods verify
covers instead: every pod is both a source and a target, every ordered pair of nodes is crossed
(pod to pod, node to pod, pod to node), and every rule runs. Between two groups A and B (the pods
of two nodes, or the nodes and one node's pods) it takes `rounds` rotations: pair i goes from
A[i % |A|] to B[(i + r) % |B|] for i below max(|A|, |B|), so each member of either group appears;
inside one group (the pods of one node) each pod checks the next `rounds` pods after it, a ring.
`--mesh` forces every pair; `--sample N` sets the rounds (N targets per source and group).

Pure: the rules of features/pods.py ask `between` and `within` for their pairs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence, TypeVar

MESH_UP_TO = 100    # pods: the default lab and a 10 x 10 lab are checked pair by pair

S = TypeVar("S")
T = TypeVar("T")


@dataclass(frozen=True)
class Cover:
    mesh: bool = True
    rounds: int = 1

    @property
    def name(self) -> str:
        return "mesh" if self.mesh else "covering"

    def describe(self) -> str:
        if self.mesh:
            return "mesh: every pair"
        return (f"covering: every pod to {self.rounds} pod{'s' * (self.rounds > 1)} on every node "
                f"and from {self.rounds} on every node, every node pair (--mesh: every pair)")


MESH = Cover()


def choose(pods: int, mesh: bool = False, sample: Optional[int] = None) -> Cover:
    """The mode a lab of `pods` pods gets: every pair up to MESH_UP_TO pods (or with --mesh),
    else covering with `sample` rounds (1 by default)."""
    if mesh:
        return MESH
    if sample is not None:
        return Cover(False, max(1, sample))
    return MESH if pods <= MESH_UP_TO else Cover(False, 1)


def between(a: Sequence[S], b: Sequence[T], cover: Cover = MESH) -> list[tuple[S, T]]:
    """Pairs from group `a` to a different group `b`."""
    if not a or not b:
        return []
    if cover.mesh or cover.rounds >= len(b):
        return [(x, y) for x in a for y in b]
    seen: dict[tuple[int, int], None] = {}
    for r in range(cover.rounds):
        for i in range(max(len(a), len(b))):
            seen[(i % len(a), (i + r) % len(b))] = None
    return [(a[i], b[j]) for i, j in seen]


def within(group: Sequence[S], cover: Cover = MESH) -> list[tuple[S, S]]:
    """Pairs between different members of one group."""
    k = len(group)
    if cover.mesh or cover.rounds >= k - 1:
        return [(x, y) for x in group for y in group if x is not y]
    return [(group[i], group[(i + 1 + r) % k]) for i in range(k) for r in range(cover.rounds)]


def mesh_pairs(pods: int, nodes: int) -> int:
    """How many pairs the mesh checks (pod to pod, node to pod, pod to node)."""
    return pods * (pods - 1) + 2 * pods * nodes

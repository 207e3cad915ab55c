"""Shared servers: in a big lab, one netexec process per node serves every single-server pod of
that node, each on a listening socket made inside the pod's own namespace.

A socket belongs to the network namespace it was created in, whatever the namespace of the process
that holds it later: the shared server enters each pod's namespace (setns), opens, binds and
listens, and comes back (netexec.py --pod). A pod then costs a socket, not a Python process of
about 12 MB. Small labs (under SHARED_FROM pods: every lesson scenario) keep a real process in
each pod, as `ip netns pids` shows it; pods with several containers always keep theirs.

Pure: `coalesce` rewrites the plan's Spawn operations, `served` says which pods it took.
"""

from __future__ import annotations

import sys

from .lab import NETEXEC, Lab
from .ops import NETEXEC_PY, Spawn

SHARED_FROM = 50         # pods: from this size, single-server pods share their node's server
SHARED = "pod-servers"   # the shared server's container name, on its node


def served(lab: Lab) -> dict[str, str]:
    """{pod: node} of the pods whose server is their node's shared one."""
    if len(lab.pods) < SHARED_FROM:
        return {}
    return {p.name: p.node for p in lab.pods if not p.host_network and len(p.containers) == 1
            and p.containers[0].image == NETEXEC and p.containers[0].port}


def coalesce(lab: Lab, ops: list) -> list:
    """The plan with the Spawns of served pods replaced by one shared server per node (where the
    node's first one was)."""
    pods = served(lab)
    if not pods:
        return ops
    by_node: dict[str, list[str]] = {}
    first: dict[str, int] = {}
    out: list = []
    for op in ops:
        if isinstance(op, Spawn) and op.owner in pods:
            node = pods[op.owner]
            pod = lab.pod(op.owner)
            by_node.setdefault(node, []).append(f"{pod.ns}:{pod.name}:{pod.containers[0].port}")
            if node not in first:
                first[node] = len(out)
                out.append(None)
            continue
        out.append(op)
    for node, at in first.items():
        argv = [sys.executable, "-I", "-S", NETEXEC_PY]
        for spec in by_node[node]:
            argv += ["--pod", spec]
        out[at] = Spawn(lab.node(node).ns, node, SHARED, tuple(argv))
    return out


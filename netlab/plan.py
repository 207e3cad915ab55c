"""The plan: from a Lab to the ordered operations that build it. Pure: no kernel, no files.

Every feature adds its operations to each phase in turn (core.feature.PHASES, features.FEATURES),
after the namespaces, which come first. The operations themselves are in core.ops; each knows its
iproute2 equivalent, so the plan renders as a shell script (`netlab plan`).
"""

from __future__ import annotations

from .core.feature import PHASES
from .core.lab import Lab
from .core.ops import (HERE, MARK, AddrAdd, BridgeAdd, FdbAppend, LinkAddress, LinkMtu, LinkUp,
                       NeighAdd, NeighPermanent,
                       NetnsAdd, NftApply, OnlinkRouteAdd, Op, RouteAdd, Spawn, Sysctl, VethAdd,
                       VxlanAdd, WriteFile, CniAdd, argv_of, script)
from .core import servers
from .features import FEATURES

__all__ = ["build", "build_node", "node_key", "script", "HERE", "MARK", "Op", "AddrAdd",
           "BridgeAdd", "FdbAppend", "LinkAddress", "LinkMtu", "LinkUp", "NeighAdd",
           "NeighPermanent", "NetnsAdd", "NftApply", "OnlinkRouteAdd", "RouteAdd", "Spawn",
           "Sysctl", "VethAdd", "VxlanAdd", "WriteFile", "CniAdd", "argv_of"]


def build(lab: Lab) -> list[Op]:
    """Every operation that brings `lab` up, in an order the kernel accepts."""
    ops: list[Op] = [NetnsAdd(ns, lab.name) for ns in lab.namespaces]
    for phase in PHASES:
        for feature in FEATURES:
            ops += feature.ops(lab, phase)
    # A big lab's single-server pods share one server process per node (core/servers.py).
    return servers.coalesce(lab, ops)


def node_key(lab: str, node: str) -> str:
    """The name of one node of a lab on a host: its state directory and its namespaces' mark."""
    return f"{lab}@{node}"


def build_node(lab: Lab, name: str, underlay: str) -> list[Op]:
    """The part of `lab` that node `name` holds, built on this host (`netlab up --node`): cni0,
    forwarding, the routes or the overlay to the other nodes live in the host's own namespace
    (HERE), reached over its `underlay` device; the node's pods get their own namespaces as usual.
    Between underlay segments the real network routes (no router namespace here)."""
    node = lab.node(name)
    # Marked "<lab>@<node>", not "<lab>": a whole-lab `down`/clean of <lab> never takes them.
    ops: list[Op] = [NetnsAdd(p.ns, node_key(lab.name, name))
                     for p in lab.pods_on(name) if not p.host_network]
    for phase in PHASES:
        for feature in FEATURES:
            ops += feature.node_ops(lab, node, underlay, phase)
    return ops

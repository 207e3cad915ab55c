"""The command line of a node on a real host (`--node`): up, down and verify, rendered."""

from __future__ import annotations

import dataclasses
import time
from typing import Optional

from .. import model
from ..core.errors import NetlabError
from ..runtime import nodehost, state
from ..verify import engine as V
from .console import out


def up(lab: model.Lab, node: str, underlay: str, as_json: bool) -> None:
    started = time.monotonic()
    result = nodehost.up(lab, node, underlay)
    took = time.monotonic() - started
    if as_json:
        out.print_json(data={"lab": lab.name, "node": node, "already_up": result.already_up,
                             "operations": result.operations, "seconds": round(took, 3)})
        return
    pods = [p.name for p in lab.pods_on(node)]
    if result.already_up:
        out.print(f"node {node} of lab {lab.name} is already up here; nothing changed")
    else:
        out.print(f"node {node} of lab {lab.name} is up on this host ({underlay} "
                  f"{lab.node(node).ip}, backend {lab.backend}): cni0 "
                  f"{lab.node(node).gateway}, pods {', '.join(pods) or 'none'}; "
                  f"{result.operations} operations in {took:.2f}s")
    out.print(f"Next: sudo netlab verify    sudo netlab down {lab.name} --node {node}")


def down(lab: Optional[str], node: str, as_json: bool) -> None:
    name = lab
    if name is None:
        mine = [n.rsplit("@", 1)[0] for n in state.labs() if n.endswith("@" + node)]
        if not mine:
            out.print(f"no lab has node {node} up here; nothing to do")
            return
        if len(mine) > 1:
            raise NetlabError(f"{len(mine)} labs have node {node} up here ({', '.join(mine)}): "
                              f"name the one you mean")
        name = mine[0]
    result = nodehost.down(name, node)
    if as_json:
        out.print_json(data={"lab": name, "node": node, "namespaces": result.namespaces,
                             "processes": result.processes})
    elif not result.namespaces and not result.processes:
        out.print(f"node {node} of lab {name} is not up here; nothing to do")
    else:
        out.print(f"node {node} of lab {name} is down: removed {len(result.namespaces)} pod "
                  f"namespaces and what it added to this host, stopped {result.processes} processes")


def verify(name: str, only):
    """The report of verify on this host's node: its own checks, to pods on every node."""
    lab_name, node = name.rsplit("@", 1)
    info = state.LabState(name).info()
    if not info:
        raise NetlabError(f"node {node} of lab {lab_name} is not up here: see `netlab status`")
    lab = model.parse(info["text"], info.get("source", "<scenario>"), lab_name)
    checks = V.derive_node(nodehost.local_lab(lab, node), node, only)
    return V.run(dataclasses.replace(nodehost.local_lab(lab, node), name=name), checks)

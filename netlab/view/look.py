"""The glue of `netlab graph` and `netlab trace`: what to look at, and its snapshot.

A target that is an existing file is a scenario, drawn from its plan (no root, no kernel); any
other word is the name of a lab that is up, read from the kernel. Verify's results are read from
the lab's state directory (verify.json), when verify has run.
"""

from __future__ import annotations

import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from . import graph as G
from .. import model
from ..runtime import lifecycle, running, state
from . import snapshot
from . import trace as T
from ..core.errors import NetlabError

VERIFY_FILE = "verify.json"


@dataclass
class Picture:
    lab: model.Lab
    graph: G.Graph
    live: bool
    verify_note: str = ""


def _live_snapshot(lab: model.Lab) -> snapshot.Snapshot:
    if os.geteuid() != 0:
        raise NetlabError(f"reading lab {lab.name} from the kernel needs root: run it with sudo "
                          f"(or give a scenario file to draw its plan without root)")
    from ..runtime import kernel  # only for live labs: drawing a scenario needs no pyroute2 socket
    return kernel.observe(list(lifecycle.lab_namespaces(state.LabState(lab.name))) or
                          list(lab.namespaces), lab.name)


def live_snapshot(lab: model.Lab) -> snapshot.Snapshot:
    return _live_snapshot(lab)


def target_lab(target: Optional[str], name: Optional[str]) -> tuple[model.Lab, bool]:
    """(Lab, live?) for a scenario path or a lab name that is up; the only lab when None (the
    default scenario when no lab is up)."""
    if target is not None and Path(target).is_file():
        return model.load(target, name), False
    if target is None and not state.labs():
        return model.load(None, name), False   # nothing is up: the default scenario's plan
    if target is not None and ("/" in target or target.endswith((".yaml", ".yml"))):
        model.load(target, name)  # raises the file error, naming the path
    lab_name = state.only_lab(target)
    if not state.LabState(lab_name).exists():
        raise NetlabError(f"'{lab_name}' is neither a scenario file nor a lab that is up: give a "
                          f"scenario path (e.g. scenarios/three-node.yaml) or see `netlab status`")
    return running.load_up(lab_name), True


def results_path(lab: str) -> Path:
    return state.LabState(lab).dir / VERIFY_FILE


def picture(target: Optional[str], name: Optional[str] = None, verify: bool = False) -> Picture:
    lab, live = target_lab(target, name)
    snap = _live_snapshot(lab) if live else snapshot.of_plan(lab)
    results, note = None, ""
    if verify:
        results = G.read_results(results_path(lab.name))
        if results is None:
            note = (f"verify has not run for lab {lab.name} (no {results_path(lab.name)}): run "
                    f"`sudo netlab verify {lab.name}` first; drawing without colours")
    return Picture(lab, G.build(lab, snap, results), live, note)


# ---------------------------------------------------------------- trace


def _place(lab: model.Lab, who: str, as_source: bool) -> tuple[str, str]:
    """A pod, node or container name -> (namespace, ip); an address is fine as a destination."""
    for obj in list(lab.pods) + list(lab.nodes) + list(getattr(lab, "containers", ())):
        if obj.name == who:
            ns = getattr(obj, "ns", None)
            if getattr(obj, "host_network", False) or not ns:
                ns = lab.node(obj.node).ns
            return ns, getattr(obj, "ip", None) or ""
    if not as_source:
        try:
            ipaddress.IPv4Address(who)
            return "", who
        except ValueError:
            pass
    known = ", ".join([p.name for p in lab.pods] + [n.name for n in lab.nodes])
    what = "FROM is a pod or node" if as_source else "TO is a pod, node or IPv4 address"
    raise NetlabError(f"lab {lab.name} has no pod or node '{who}': {what}; use one of {known}")


def trace(args: list[str], port: Optional[int] = None,
          proto: Optional[str] = None) -> tuple[model.Lab, T.Trace, dict[str, str]]:
    """`[LAB] FROM TO` -> the Lab, the live trace, and labels of its namespaces. Without a
    port the packet is a ping; with one, TCP (or `proto` "udp") to that port."""
    if len(args) == 3:
        lab_name, frm, to = args
    elif len(args) == 2:
        lab_name, (frm, to) = state.only_lab(None), args
    else:
        raise NetlabError("usage: sudo netlab trace [LAB] FROM TO (e.g. netlab trace web db)")
    lab = running.load_up(lab_name)
    src_ns, _ = _place(lab, frm, True)
    _, dst_ip = _place(lab, to, False)
    if not dst_ip:
        raise NetlabError(f"'{to}' has no address to trace to (a container in none mode?)")
    names = {ns: f"{kind} {name}" for ns, (kind, name) in G.roles(lab).items()}
    return lab, live_trace(lab, src_ns, dst_ip, port=port, proto=proto), names


def live_trace(lab: model.Lab, src_ns: str, dst_ip: str,
               snap: Optional[snapshot.Snapshot] = None, port: Optional[int] = None,
               proto: Optional[str] = None) -> T.Trace:
    """The path from a namespace of a lab that is up to an address, as the kernel routes it
    and its nft rules rewrite or drop it (for `netlab trace`, and for verify to say where a
    failed probe's packet stopped; verify passes one snapshot, `live_snapshot`, for all its
    traces). A ping without `port`; TCP to `port`, or UDP with proto="udp"."""
    from ..runtime import kernel
    snap = snap or _live_snapshot(lab)

    def find(ns: snapshot.Namespace, dst: str) -> snapshot.Lookup:
        return T.from_route_get(ns, dst, kernel.route_get(ns.name, dst))

    return T.walk(snap, src_ns, dst_ip, find, snapshot.of_plan(lab), port=port, proto=proto)

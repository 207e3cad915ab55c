"""`netlab show`: a lab's nodes and pods like `kubectl get nodes,pods -o wide`, then what each
feature adds (Docker's containers and ports, the outside world, Services...)."""

from __future__ import annotations

from ..core.lab import Lab
from ..features import FEATURES
from ..runtime import running
from .console import out, table


def data(lab: Lab) -> dict:
    status = running.status(lab)
    statuses = running.pod_status(lab)
    base = {
        "lab": lab.name, "source": lab.source, "backend": lab.backend, "underlay": lab.underlay,
        "mtu": lab.mtu, "segments": list(lab.segments), "router": lab.router_ns or None,
        "nodes": [{"name": n.name, "namespace": n.ns, "ip": n.ip, "podCIDR": n.pod_cidr,
                   "cni0": n.gateway, "pods": len(lab.pods_on(n.name))} for n in lab.nodes],
        "pods": [{"name": s.pod.name, "namespace": s.pod.ns, "ip": s.pod.ip, "node": s.pod.node,
                  "mode": "host" if s.pod.host_network else "pod",
                  "ready": f"{s.running}/{len(s.pod.containers)}", "status": _status_word(s),
                  "containers": [c.name for c in s.pod.containers]} for s in statuses],
    }
    for feature in FEATURES:
        base.update(feature.show(lab, status))
    return base


def _status_word(s: running.PodStatus) -> str:
    if not s.present:
        return "Missing"
    return "Running" if s.running == len(s.pod.containers) else "Degraded"


SUMMARY_FROM = 50   # pods: a lab this big is summarised after `up` (counts per node)


def render(lab: Lab, full: bool = True) -> None:
    """The lab's tables; `full=False`: the nodes with their pod counts, and the pods only as a
    count (rich tables of a thousand rows take longer than the lab itself)."""
    d = data(lab)
    out.print(f"lab {lab.name} from {lab.source}; underlay {lab.underlay}; backend {lab.backend}; "
              f"pod MTU {lab.mtu}\n")
    if lab.router_ns:
        out.print(f"segments joined by router {lab.router_ns} at {', '.join(lab.router_ips)}\n")
    nodes = table("NODE", "IP", "POD SUBNET", "CNI0", "PODS", "NAMESPACE")
    for n in d["nodes"]:
        nodes.add_row(n["name"], n["ip"], n["podCIDR"], n["cni0"], str(n["pods"]), n["namespace"])
    out.print(nodes)
    out.print()
    if not full:
        counts = sorted({n["pods"] for n in d["nodes"]})
        each = f"{counts[0]} per node" if len(counts) == 1 else f"{counts[0]} to {counts[-1]} per node"
        running = sum(p["status"] == "Running" for p in d["pods"])
        out.print(f"{len(d['pods'])} pods ({each}), {running} running: `sudo netlab show "
                  f"{lab.name}` lists every pod")
        _render_features(d)
        return
    pods = table("NAME", "READY", "STATUS", "IP", "NODE", "MODE", "CONTAINERS", "NAMESPACE")
    for p in d["pods"]:
        pods.add_row(p["name"], p["ready"], p["status"], p["ip"], p["node"], p["mode"],
                     ",".join(p["containers"]) or "-", p["namespace"])
    for feature in FEATURES:
        for row in feature.rows(d):
            pods.add_row(*row)
    out.print(pods)
    _render_features(d)


def _render_features(d: dict) -> None:
    for feature in FEATURES:
        for item in feature.render(d):
            if isinstance(item, tuple):   # (columns, rows): a table
                columns, rows = item
                t = table(*columns)
                for row in rows:
                    t.add_row(*row)
                item = t
            out.print(item)

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


ROUTE_KINDS = ("ingress", "ing", "gateway", "httproute")


def show_route(lab: Lab, kind: str, name: str, config: bool) -> None:
    """One Ingress, Gateway or HTTPRoute: its routes as nginx has them, or (--config) the whole
    nginx.conf the lab's one controller serves it with (the file in the lab's state)."""
    from ..core.errors import NetlabError
    from ..features import ingress as I
    kind = "ingress" if kind == "ing" else kind
    cfg = lab.ingress.config if lab.ingress is not None else None
    objs = {"ingress": cfg.ingresses, "gateway": cfg.gateways,
            "httproute": cfg.httproutes}[kind] if cfg else []
    obj = next((o for o in objs if o.name == name), None)
    if obj is None:
        known = ", ".join(o.name for o in objs) or "none"
        raise NetlabError(f"lab {lab.name} has no {kind} {name!r}: known: {known}")
    if config:
        import sys
        sys.stdout.write(I.conf_text(lab))      # exactly the file, no console wrapping
        return
    source = {"ingress": f"ingress {obj.namespace}/{obj.name}",
              "httproute": f"httproute {obj.namespace}/{obj.name}"}.get(kind)
    table_ = I.table_of(lab)
    out.print(f"{kind} {obj.namespace}/{obj.name}, served by {I.NAMESPACE}/{lab.ingress.pod} "
              f"({lab.ingress.conf_path})", markup=False)
    for srv in table_.servers:
        for loc in srv.locations:
            for c in loc.candidates:
                if source is None or c.source.startswith(source):
                    hdr = "".join(f" [{n}: {v}]" for n, v in c.headers)
                    out.print(f"  {srv.host or '*'}:{srv.port} location "
                              f"{loc.op + ' ' if loc.op else ''}{loc.path}{hdr} -> "
                              f"{I.C._describe_backends(c)}  ({c.source})",
                              markup=False, highlight=False, soft_wrap=True)
    for st in table_.statuses:
        if kind == "httproute" and st.route == f"{obj.namespace}/{obj.name}":
            out.print(f"  parent {st.parent}: Accepted={st.accepted} ({st.reason}): {st.message}",
                      markup=False)

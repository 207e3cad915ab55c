"""The picture of a lab: a graph built from a Snapshot, rendered as DOT, Mermaid, SVG or PNG.

Pure but for `render_image` (which runs Graphviz `dot`): the same Snapshot structure comes from the
plan (what `up` builds) or from the kernel (what is there), so both pictures are drawn by one code
path and can be compared. Namespaces are boxes (a pod's inside its node's), bridges and addressed
interfaces are shapes, veth pairs are lines labelled with both ends' names, host-gw routes between
nodes are dashed arrows, VXLAN tunnels bold lines. With verify results, pods and links are coloured
by the checks that crossed them.
"""

from __future__ import annotations

import json
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from . import trace as T
from ..core.errors import NetlabError
from ..core.lab import Lab
from .snapshot import Iface, Namespace, Snapshot

FORMATS = ("svg", "png", "dot", "mermaid")
PASS, FAIL, MIXED = "passed", "failed", "mixed"
COLOURS = {PASS: "#2e7d32", FAIL: "#c62828", MIXED: "#ef6c00"}
FILL = {"node": "#f5f7fa", "pod": "#e8f0fe", "underlay": "#fff8e1", "container": "#f3e5f5",
        "router": "#ede7f6"}


@dataclass
class Cluster:
    id: str
    label: str
    kind: str                          # node, pod, container, underlay, router, namespace
    parent: Optional[str] = None       # the id of the cluster it is drawn inside
    status: Optional[str] = None       # passed / failed / mixed after verify


@dataclass
class GNode:
    id: str                            # "<namespace without lab prefix>/<ifname>"
    label: str
    kind: str                          # bridge, iface, vxlan, containers
    cluster: str
    up: bool = True


@dataclass
class Edge:
    a: str
    b: str
    label: str
    kind: str                          # veth, route, tunnel
    ends: tuple = ()                   # the (ns, ifname) pairs it stands for
    status: Optional[str] = None


@dataclass
class Graph:
    title: str
    clusters: list[Cluster] = field(default_factory=list)
    nodes: list[GNode] = field(default_factory=list)
    edges: list[Edge] = field(default_factory=list)
    note: str = ""


# ---------------------------------------------------------------- building


def roles(lab: Lab) -> dict[str, tuple[str, str]]:
    """namespace -> (kind, name) from the model; features merged later are read by getattr."""
    roles = {lab.underlay_ns: ("underlay", "underlay")}
    router = getattr(lab, "router_ns", "")
    if router:
        roles[router] = ("router", "router")
    outside = getattr(lab, "outside", None)
    if getattr(outside, "ns", None):
        roles[outside.ns] = ("router", "outside")
    roles.update({n.ns: ("node", n.name) for n in lab.nodes})
    roles.update({p.ns: ("pod", p.name) for p in lab.pods if getattr(p, "ns", None)
                  and not getattr(p, "host_network", False)})
    for c in getattr(lab, "containers", ()):
        if getattr(c, "ns", None) and c.ns not in roles:
            roles[c.ns] = ("container", c.name)
    return roles


def _short(lab: str, ns: str) -> str:
    return ns[len(lab) + 1:] if ns.startswith(lab + "-") else ns


def _processes(lab: Lab) -> dict[str, list[str]]:
    """namespace -> lines naming the containers running there, with their network mode."""
    out: dict[str, list[str]] = {}
    for p in lab.pods:
        ns = lab.node(p.node).ns if getattr(p, "host_network", False) else p.ns
        for c in p.containers:
            what = f":{c.port}" if c.port else ""
            run = f"{c.image} {what}" if c.image else " ".join(c.argv)[:24]
            who = f"pod {p.name} (hostNetwork) " if getattr(p, "host_network", False) else ""
            out.setdefault(ns, []).append(f"{who}{c.name}: {run}")
    for c in getattr(lab, "containers", ()):
        if getattr(c, "ns", None):
            out.setdefault(c.ns, []).append(f"{c.name} [{getattr(c, 'mode', '?')} mode]")
    return out


def build(lab: Lab, snap: Snapshot, results: Optional[list[dict]] = None) -> Graph:
    """The picture of a lab from a snapshot (plan or kernel); `results` are verify's checks."""
    role = roles(lab)
    short = lambda ns: _short(lab.name, ns)  # noqa: E731
    g = Graph(title=f"lab {lab.name}")
    kinds = {ns.name: role.get(ns.name, ("namespace", short(ns.name)))[0] for ns in snap.namespaces}

    # A namespace whose every veth leads into one node namespace is drawn inside that node.
    def parent(ns: Namespace) -> Optional[str]:
        if kinds[ns.name] in ("node", "underlay", "router"):
            return None
        peers = {i.peer[0] for i in ns.ifaces if i.peer}
        node_of = next((p.node for p in lab.pods if p.ns == ns.name), None) or \
            next((c.node for c in getattr(lab, "containers", ()) if getattr(c, "ns", None) == ns.name),
                 None)
        if len(peers) == 1 and kinds.get(next(iter(peers))) == "node":
            return "cluster_" + short(next(iter(peers)))
        return "cluster_" + node_of if node_of else None

    procs = _processes(lab)
    for ns in snap.namespaces:
        kind, name = role.get(ns.name, ("namespace", short(ns.name)))
        head = {"node": f"node {name}", "pod": f"pod {name}", "container": f"container {name}",
                "underlay": "underlay (the switch between the nodes)"}.get(kind, name)
        extra = [r.text() for r in ns.routes if r.via and r.dst == "default"]
        if kind in ("node", "router") and ns.forwarding:
            extra.append("ip_forward=1")
        cid = "cluster_" + short(ns.name)
        g.clusters.append(Cluster(cid, "\n".join([f"{head}  ({ns.name})"] + extra), kind,
                                  parent(ns)))
        for i in ns.ifaces:
            if _drawn(ns, i):
                g.nodes.append(GNode(f"{short(ns.name)}/{i.name}", _iface_label(i),
                                     "bridge" if i.kind == "bridge" else
                                     "vxlan" if i.kind == "vxlan" else "iface", cid, i.up))
        table = [r.text() for r in ns.routes if r.via and r.dst != "default"]
        if table and kind in ("node", "router"):
            g.nodes.append(GNode(f"{short(ns.name)}/routes", "\n".join(["routes"] + table),
                                 "routes", cid))
        if procs.get(ns.name):
            g.nodes.append(GNode(f"{short(ns.name)}/containers", "\n".join(
                ["containers" + (" (one shared netns)" if kind == "pod" else "")] +
                procs[ns.name]), "containers", cid))

    def rep(ns_name: str, ifname: str) -> str:
        """The shape standing for a link: its bridge when it is a bridge port."""
        i = snap.ns(ns_name).iface(ifname)
        return f"{short(ns_name)}/{i.master if i.master else ifname}"

    seen = set()
    for ns in snap.namespaces:
        for i in ns.ifaces:
            if i.kind != "veth" or not i.peer or snap.ns(i.peer[0]) is None \
                    or snap.ns(i.peer[0]).iface(i.peer[1]) is None:
                continue
            key = frozenset({(ns.name, i.name), i.peer})
            if key in seen:
                continue
            seen.add(key)
            a, b = (ns.name, i.name), i.peer
            if not i.master and snap.ns(b[0]).iface(b[1]).master:
                a, b = b, a   # draw from the bridge side, down to the namespace
            g.edges.append(Edge(rep(*a), rep(*b), f"{a[1]} \u2194 {b[1]}", "veth", (a, b)))

    for ns in snap.namespaces:
        for r in ns.routes:
            if not r.via or r.dst == "default":
                continue
            owner = snap.owner(r.via)
            if owner is None or owner[0].name == ns.name:
                continue
            g.edges.append(Edge(f"{short(ns.name)}/{r.dev}", rep(owner[0].name, owner[1].name),
                                r.dst, "route", ((ns.name, r.dev),)))

    if getattr(lab, "backend", "") == "vxlan":
        tunnels = [(ns, i) for ns in snap.namespaces for i in ns.ifaces if i.kind == "vxlan"]
        for k, (ns_a, a) in enumerate(tunnels):
            for ns_b, b in tunnels[k + 1:]:
                if a.vni == b.vni:
                    g.edges.append(Edge(f"{short(ns_a.name)}/{a.name}", f"{short(ns_b.name)}/{b.name}",
                                        f"VXLAN {a.vni}: {_uplink_ip(ns_a)} \u2194 {_uplink_ip(ns_b)}",
                                        "tunnel", ((ns_a.name, a.name), (ns_b.name, b.name))))
    if results is not None:
        _colour(g, lab, snap, results)
    return g


def _drawn(ns: Namespace, i: Iface) -> bool:
    """lo and bridge ports are not shapes of their own (a port is drawn as its bridge)."""
    if i.kind == "loopback":
        return False
    master = ns.iface(i.master) if i.master else None
    return not (master is not None and master.kind == "bridge")


def _iface_label(i: Iface) -> str:
    kind = {"bridge": " (bridge)", "vxlan": f" (vxlan {i.vni})"}.get(i.kind, "")
    lines = [i.name + kind] + list(i.addrs)
    if not i.up:
        lines.append("DOWN")
    return "\n".join(lines)


def _uplink_ip(ns: Namespace) -> str:
    eth0 = ns.iface("eth0")
    return eth0.ips[0] if eth0 and eth0.ips else ns.name


# ---------------------------------------------------------------- verify results


def read_results(path: Path) -> Optional[list[dict]]:
    """verify.json as a list of {rule, src, dst, passed}; None when verify has not run.

    Accepted: a JSON list of checks, or verify's --json report (an object whose "results" is that
    list); a check names its ends src/dst (or from/to) and its outcome passed (or ok)."""
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as e:
        raise NetlabError(f"{path}: not a verify results file ({e}): run `sudo netlab verify` "
                          f"again", 1) from None
    if isinstance(data, dict):
        data = data.get("results")
    rows = []
    for r in data if isinstance(data, list) else [None]:
        if not isinstance(r, dict) or ("passed" not in r and "ok" not in r):
            raise NetlabError(f"{path}: expected a JSON list of {{rule, src, dst, passed}}: run "
                              f"`sudo netlab verify` again", 1)
        rows.append({**r, "rule": r.get("rule", ""), "src": r.get("src", r.get("from")),
                     "dst": r.get("dst", r.get("to")), "passed": bool(r.get("passed", r.get("ok")))})
    return rows


def _place(lab: Lab, snap: Snapshot, who: str) -> tuple[Optional[str], Optional[str]]:
    """A check's src or dst (pod, node or container name, or an address) -> (namespace, ip)."""
    for obj in list(lab.pods) + list(lab.nodes) + list(getattr(lab, "containers", ())):
        if obj.name == who:
            ns = getattr(obj, "ns", None)
            ip = getattr(obj, "ip", None)
            if getattr(obj, "host_network", False):
                ns = lab.node(obj.node).ns
            return ns, ip
    owner = snap.owner(who) if who and who.count(".") == 3 else None
    return (owner[0].name, who) if owner else (None, who if who and who.count(".") == 3 else None)


def _merge(old: Optional[str], passed: bool) -> str:
    new = PASS if passed else FAIL
    return new if old in (None, new) else MIXED


def _colour(g: Graph, lab: Lab, snap: Snapshot, results: list[dict]) -> None:
    """Each pod and link takes the colour of the checks that went through it."""
    by_ns = {c.id: c for c in g.clusters}
    edge_of = {}
    for e in g.edges:
        if e.kind == "veth":
            edge_of[frozenset(e.ends)] = e
    for r in results:
        passed = bool(r.get("passed"))
        src_ns, _ = _place(lab, snap, str(r.get("src", "")))
        dst_ns, dst_ip = _place(lab, snap, str(r.get("dst", "")))
        touched = {ns for ns in (src_ns, dst_ns) if ns}
        if src_ns and dst_ip and snap.ns(src_ns):
            walk = T.walk(snap, src_ns, dst_ip)
            for hop in walk.hops:
                touched.add(hop.ns)
                ends = [tuple(c.split(" ")[0].split(":", 1)) for c in hop.crossed]
                for a, b in zip(ends, ends[1:]):
                    e = edge_of.get(frozenset({a, b}))
                    if e is not None:
                        e.status = _merge(e.status, passed)
        for ns in touched:
            c = by_ns.get("cluster_" + _short(lab.name, ns))
            if c is not None and c.kind in ("pod", "container", "node"):
                if c.kind == "node" and ns not in (src_ns, dst_ns):
                    continue
                c.status = _merge(c.status, passed)
    failed = sum(not r.get("passed") for r in results)
    g.note = f"verify: {len(results) - failed} of {len(results)} checks passed"


# ---------------------------------------------------------------- rendering


def _q(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def _tree(g: Graph) -> tuple[dict, dict]:
    """Clusters by parent, and shapes by cluster: the nesting both renderers walk."""
    children: dict[Optional[str], list[Cluster]] = {}
    for c in g.clusters:
        children.setdefault(c.parent, []).append(c)
    members: dict[str, list[GNode]] = {}
    for n in g.nodes:
        members.setdefault(n.cluster, []).append(n)
    return children, members


def to_dot(g: Graph) -> str:
    """Graphviz DOT text: clusters nested as drawn, one statement per line."""
    lines = ["graph lab {", f"  label={_q(g.title + (chr(10) + g.note if g.note else ''))};",
             "  labelloc=t; fontname=Helvetica; compound=true; nodesep=0.3;",
             '  node [fontname=Helvetica, fontsize=10, shape=box, style="rounded,filled", '
             'fillcolor=white];',
             "  edge [fontname=Helvetica, fontsize=9];"]
    children, members = _tree(g)

    def emit(c: Cluster, depth: int) -> None:
        pad = "  " * depth
        colour = COLOURS.get(c.status, "#607d8b")
        width = 3 if c.status else 1
        lines.append(f"{pad}subgraph {_q(c.id)} {{")
        lines.append(f"{pad}  label={_q(c.label)}; style=\"rounded,filled\"; "
                     f"fillcolor={_q(FILL.get(c.kind, '#fafafa'))}; color={_q(colour)}; "
                     f"penwidth={width};")
        for n in members.get(c.id, []):
            shape = {"bridge": "box3d", "vxlan": "cds", "containers": "note",
                     "routes": "note"}.get(n.kind, "box")
            style = '"rounded,filled"' if n.up else '"rounded,filled,dashed"'
            lines.append(f"{pad}  {_q(n.id)} [label={_q(n.label)}, shape={shape}, style={style}];")
        here = members.get(c.id, [])
        for top in (n for n in here if n.kind in ("iface", "vxlan")):
            for below in (n for n in here if n.kind in ("bridge", "routes")):
                lines.append(f"{pad}  {_q(top.id)} -- {_q(below.id)} [style=invis];")
        for child in children.get(c.id, []):
            emit(child, depth + 1)
        lines.append(f"{pad}}}")

    for c in children.get(None, []):
        emit(c, 1)
    for e in g.edges:
        attrs = [f"label={_q(e.label)}"]
        if e.kind == "route":
            attrs += ["style=dashed", "dir=forward", "constraint=false", 'color="#1565c0"',
                      'fontcolor="#1565c0"']
        elif e.kind == "tunnel":
            attrs += ["style=bold", 'color="#6a1b9a"', 'fontcolor="#6a1b9a"', "constraint=false"]
        if e.status:
            attrs += [f"color={_q(COLOURS[e.status])}", "penwidth=3"]
        lines.append(f"  {_q(e.a)} -- {_q(e.b)} [{', '.join(attrs)}];")
    lines.append("}")
    return "\n".join(lines) + "\n"


def _mid(text: str) -> str:
    return "n_" + "".join(ch if ch.isalnum() else "_" for ch in text)


def _mtext(text: str) -> str:
    return '"' + text.replace('"', "#quot;").replace("\n", "<br/>") + '"'


def to_mermaid(g: Graph) -> str:
    """Mermaid flowchart text (GitHub renders it in Markdown): subgraphs for namespaces."""
    lines = ["flowchart TB"]
    children, members = _tree(g)

    def emit(c: Cluster, depth: int) -> None:
        pad = "  " * depth
        lines.append(f"{pad}subgraph {_mid(c.id)}[{_mtext(c.label)}]")
        for n in members.get(c.id, []):
            left, right = {"bridge": ("[[", "]]"), "containers": (">", "]")}.get(n.kind, ("[", "]"))
            lines.append(f"{pad}  {_mid(n.id)}{left}{_mtext(n.label)}{right}")
        for child in children.get(c.id, []):
            emit(child, depth + 1)
        lines.append(f"{pad}end")

    for c in children.get(None, []):
        emit(c, 1)
    styles = []
    for k, e in enumerate(g.edges):
        arrow = {"route": "-.->", "tunnel": "==="}.get(e.kind, "---")
        lines.append(f"  {_mid(e.a)} {arrow}|{_mtext(e.label)}| {_mid(e.b)}")
        if e.status:
            styles.append(f"  linkStyle {k} stroke:{COLOURS[e.status]},stroke-width:3px")
    for c in g.clusters:
        if c.status:
            styles.append(f"  style {_mid(c.id)} stroke:{COLOURS[c.status]},stroke-width:3px")
    return "\n".join(lines + styles) + "\n"


def render_image(dot_text: str, fmt: str) -> bytes:
    """SVG or PNG by Graphviz `dot` (Debian package graphviz)."""
    try:
        r = subprocess.run(["dot", f"-T{fmt}"], input=dot_text.encode(), capture_output=True,
                           timeout=60)
    except FileNotFoundError:
        raise NetlabError("Graphviz `dot` is not installed: `sudo apt-get install graphviz` (or "
                          "run ./setup.sh), or use --format dot or --format mermaid") from None
    if r.returncode != 0:
        raise NetlabError(f"dot -T{fmt} failed: {r.stderr.decode(errors='replace').strip()}", 1)
    return r.stdout


def render(g: Graph, fmt: str) -> bytes:
    if fmt == "dot":
        return to_dot(g).encode()
    if fmt == "mermaid":
        return to_mermaid(g).encode()
    return render_image(to_dot(g), fmt)

"""Test helpers: read back what `netlab graph` drew, from its DOT or SVG, and what the plan says
should be drawn, derived from the plan's operations independently of netlab.graph."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET

from netlab import plan

_STR = r'"((?:[^"\\]|\\.)*)"'
NODE = re.compile(rf"^\s*{_STR} \[label={_STR}")
EDGE = re.compile(rf"^\s*{_STR} -- {_STR} \[(.*)\];$")
CLUSTER = re.compile(rf"^\s*subgraph {_STR} {{$")
LABEL = re.compile(rf"^\s*label={_STR};")


def _unq(s: str) -> str:
    return s.replace("\\n", "\n").replace('\\"', '"').replace("\\\\", "\\")


def parse_dot(text: str) -> dict:
    """{nodes: {id: label}, edges: {(a, b, label)}, clusters: {id: label}} of a netlab DOT."""
    nodes, edges, clusters = {}, set(), {}
    current = None
    for line in text.splitlines():
        if m := CLUSTER.match(line):
            current = m.group(1)
        elif current and (m := LABEL.match(line)):
            clusters[current] = _unq(m.group(1))
            current = None
        elif m := EDGE.match(line):
            if "style=invis" in m.group(3):
                continue
            label = re.search(rf"label={_STR}", m.group(3))
            edges.add((m.group(1), m.group(2), _unq(label.group(1)) if label else ""))
        elif m := NODE.match(line):
            nodes[m.group(1)] = _unq(m.group(2))
    return {"nodes": nodes, "edges": edges, "clusters": clusters}


def parse_svg(data: bytes) -> dict:
    """Graphviz SVG: {nodes: {title}, edges: {title}, clusters: {title}, text: [all text]}."""
    root = ET.fromstring(data)
    ns = "{http://www.w3.org/2000/svg}"
    out = {"nodes": set(), "edges": set(), "clusters": set(), "text": []}
    for g in root.iter(ns + "g"):
        kind = g.get("class")
        title = g.find(ns + "title")
        if kind in ("node", "edge", "cluster") and title is not None:
            out[kind + "s"].add(title.text)
    out["text"] = [t.text for t in root.iter(ns + "text") if t.text]
    return out


def expected(lab) -> dict:
    """What the picture must show, from the plan's operations: pods, IPs, bridges, veths, edges."""
    ops = plan.build(lab)
    short = lambda ns: ns[len(lab.name) + 1:]  # noqa: E731
    master = {(op.ns, op.ifname): op.master for op in ops
              if isinstance(op, plan.LinkUp) and op.master}
    owner = {op.address: (op.ns, op.ifname) for op in ops if isinstance(op, plan.AddrAdd)}

    def rep(ns, ifname):
        return f"{short(ns)}/{master.get((ns, ifname), ifname)}"

    veths, edges = [], set()
    for op in ops:
        if isinstance(op, plan.VethAdd):
            veths.append((op.ifname, op.peer))
            edges.add((frozenset({rep(op.ns, op.ifname), rep(op.peer_ns, op.peer)}), "veth"))
        elif isinstance(op, plan.CniAdd):   # the plugin chain's veth: eth0 to the node's cni0
            edges.add((frozenset({rep(op.ns, op.ifname), f"{short(op.node_ns)}/cni0"}), "veth"))
        elif all(hasattr(op, a) for a in ("ns", "dst", "via", "dev")) and op.dst != "default" \
                and owner.get(op.via, (op.ns,))[0] != op.ns:
            # RouteAdd, and route ops added by other features (an on-link route of an overlay)
            edges.add((frozenset({rep(op.ns, op.dev), rep(*owner[op.via])}), op.dst))
    if getattr(lab, "backend", "") == "vxlan":
        tunnels = [op for op in ops if hasattr(op, "vni") and hasattr(op, "ifname")]
        edges |= {(frozenset({rep(a.ns, a.ifname), rep(b.ns, b.ifname)}), "tunnel")
                  for i, a in enumerate(tunnels) for b in tunnels[i + 1:] if a.vni == b.vni}
    return {
        "pods": [p.name for p in lab.pods],
        "ips": [p.ip for p in lab.pods] + [n.ip for n in lab.nodes] + [n.gateway for n in lab.nodes],
        "bridges": {f"{short(op.ns)}/{op.ifname}" for op in ops if isinstance(op, plan.BridgeAdd)},
        "veths": veths,
        "edges": edges,
    }


def drawn_edges(parsed: dict) -> set:
    """The DOT's edges in the form of expected()['edges']: veth lines and route arrows."""
    out = set()
    for a, b, label in parsed["edges"]:
        kind = "tunnel" if label.startswith("VXLAN") else "veth" if "\u2194" in label else label
        out.add((frozenset({a, b}), kind))
    return out

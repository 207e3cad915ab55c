"""`netlab status`: the labs that are up, from their records alone (no parsing, no pyroute2).

It is what a prompt or a script runs often, so `python -m netlab status [--json]` reaches it
without Typer (netlab/__main__.py): Typer builds a pydantic adapter for each option it parses,
which alone costs more than this whole command.
"""

from __future__ import annotations

import json
import os
import sys
import time

from ..core.errors import NetlabError
from ..runtime import state


def rows() -> list[dict]:
    out = []
    for name in state.labs():
        info = state.LabState(name).info()
        try:
            nodes, pods, spaces = _counts(name, info)
            present = sum(os.path.exists(f"/run/netns/{ns}") for ns in spaces)
            out.append({"lab": name, "source": info.get("source", "?"), "nodes": nodes,
                        "pods": pods, "namespaces": f"{present}/{len(spaces)}",
                        "complete": state.LabState(name).journal().complete,
                        "age_s": int(time.time() - info.get("created", time.time()))})
        except NetlabError:
            out.append({"lab": name, "source": info.get("source", "?"), "nodes": 0, "pods": 0,
                        "namespaces": "?", "complete": False, "age_s": 0})
    return out


def _counts(name: str, info: dict) -> tuple[int, int, list[str]]:
    """A lab's nodes, pods and namespaces: from its record when `up` wrote them there (no
    parsing), else from its scenario parsed again."""
    summary = info.get("summary")
    if summary is not None:
        return summary["nodes"], summary["pods"], summary["namespaces"]
    from ..runtime import running
    lab = running.load_up(name)
    spaces = lab.namespaces if "@" not in name else tuple(p.ns for p in lab.pods)
    return len(lab.nodes), len(lab.pods), list(spaces)


def status(as_json: bool = False) -> None:
    found = rows()
    if as_json:
        sys.stdout.write(json.dumps(found, indent=2) + "\n")
        return
    if not found:
        print("no lab is up")
        return
    # Plain columns as the CLI's rich tables print them (two spaces apart): importing rich or the
    # cli package (Typer) would cost more than the rest of this command.
    table = [("LAB", "SCENARIO", "NODES", "PODS", "NAMESPACES", "STATE", "AGE")] + [
        (r["lab"], r["source"], str(r["nodes"]), str(r["pods"]), r["namespaces"],
         "up" if r["complete"] else "incomplete", f"{r['age_s']}s") for r in found]
    widths = [max(len(row[i]) for row in table) for i in range(len(table[0]))]
    for row in table:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths)))

"""Verify's results and how they are shown: a table, JSON, JUnit XML, and verify.json in the lab's
state (read by `netlab graph --verify`)."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field

from ..runtime.state import LabState
from .checks import Check


@dataclass
class Result:
    check: Check
    ok: bool
    observed: str
    reason: str = ""

    def as_dict(self) -> dict:
        c = self.check
        return {"rule": c.rule, "from": c.src, "to": c.dst, "method": c.method,
                "target": c.url if c.method == "http" else c.target, "expected": c.expected,
                "observed": self.observed, "ok": self.ok, "reason": self.reason,
                "reproduce": c.reproduce} | ({"name": c.label} if c.label else {})


@dataclass
class Report:
    lab: str
    results: list[Result] = field(default_factory=list)
    seconds: float = 0.0
    mode: str = ""           # which pairs ran (verify.coverage): "mesh: every pair", "covering: ..."
    pairs: int = 0           # how many (source, target) pairs the checks covered
    table_full: int = 0      # times the kernel's neighbour table was full while probing

    @property
    def failed(self) -> list[Result]:
        return [r for r in self.results if not r.ok]

    def summary(self) -> str:
        bad = len(self.failed)
        full = (f"; the kernel's neighbour table was full {self.table_full} times "
                f"(net.ipv4.neigh.default.gc_thresh3)" if self.table_full and bad else "")
        return (f"verify {self.lab}: {len(self.results)} checks, {len(self.results) - bad} passed, "
                f"{bad} failed in {self.seconds:.2f}s{full}")


COLUMNS = ("RULE", "FROM", "TO", "METHOD", "EXPECTED", "OBSERVED", "RESULT", "REPRODUCE")


def _row(r: Result) -> tuple[str, ...]:
    c = r.check
    method = f"{c.method} :{c.port}{c.path}" if c.method == "http" else c.method
    if c.method == "udp":
        method = f"udp :{c.port} {c.path}"
    return (c.rule, c.src, c.dst, method, c.expected, _short(r.observed), "pass" if r.ok else "FAIL",
            c.reproduce)


def _short(text: str, width: int = 40) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 1] + "…"


def _named(c: Check) -> str:
    # a scenario check by its name; a docker check's name ends its reason instead
    return c.label if c.label and not c.why else f"{c.src} -> {c.dst}"


def per_rule(report: Report) -> list[tuple[str, int, int]]:
    """(rule, checks, failed) in the order the rules ran."""
    counts: dict[str, list[int]] = {}
    for r in report.results:
        n = counts.setdefault(r.check.rule, [0, 0])
        n[0] += 1
        n[1] += not r.ok
    return [(rule, n, bad) for rule, (n, bad) in counts.items()]


def _table(rows: list[tuple[str, ...]], right: int = 0) -> list[str]:
    """Plain columns (fast for thousands of rows); the last `right` ones right-aligned. A left-
    aligned last column is not padded."""
    ncol = len(rows[0])
    widths = [max(len(row[i]) for row in rows) for i in range(ncol)]
    first = ncol - right
    return ["  ".join(cell.rjust(w) if i >= first else cell if i == ncol - 1 else cell.ljust(w)
                      for i, (cell, w) in enumerate(zip(row, widths))) for row in rows]


def render_text(report: Report, verbose: bool = False) -> str:
    """By default one line per rule, then every failure with its reason and the command that
    reproduces it, then the summary; `verbose`: every check's row instead of the rule lines."""
    if verbose:
        lines = _table([COLUMNS] + [_row(r) for r in report.results])
    else:
        lines = _table([("RULE", "CHECKS", "PASSED", "FAILED")] +
                       [(rule, str(n), str(n - bad), str(bad)) for rule, n, bad in per_rule(report)],
                       right=3)
    if report.mode:
        lines += ["", f"{report.pairs} pairs checked ({report.mode})"]
    failed = report.failed
    if failed:
        lines += ["", "Failures:"]
        lines += [f"  {r.check.rule} {_named(r.check)} "
                  f"({_row(r)[3]}): {r.reason}\n"
                  f"    reproduce: {r.check.reproduce}" for r in failed]
    lines += ["", report.summary()]
    return "\n".join(lines) + "\n"


def save(report: Report) -> None:
    """The report as verify.json in the lab's state directory, where `netlab graph --verify`
    reads it; written whole and renamed, so a reader never sees half of it."""
    path = LabState(report.lab).dir / "verify.json"
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(render_json(report), indent=1) + "\n")
    os.replace(tmp, path)


def render_json(report: Report) -> dict:
    return {"lab": report.lab, "checks": len(report.results),
            "passed": len(report.results) - len(report.failed), "failed": len(report.failed),
            "seconds": round(report.seconds, 3), "mode": report.mode, "pairs": report.pairs,
            "table_full": report.table_full,
            "rules": [{"rule": rule, "checks": n, "passed": n - bad, "failed": bad}
                      for rule, n, bad in per_rule(report)],
            "results": [r.as_dict() for r in report.results]}


def render_junit(report: Report) -> str:
    """JUnit XML: one testsuite per rule, one testcase per check (for workshop grading)."""
    import xml.etree.ElementTree as ET
    root = ET.Element("testsuites", name=f"netlab verify {report.lab}",
                      tests=str(len(report.results)), failures=str(len(report.failed)),
                      time=f"{report.seconds:.3f}")
    suites: dict[str, ET.Element] = {}
    for r in report.results:
        c = r.check
        suite = suites.get(c.rule)
        if suite is None:
            suite = suites[c.rule] = ET.SubElement(root, "testsuite", name=c.rule)
        case = ET.SubElement(suite, "testcase", classname=f"{report.lab}.{c.rule}",
                             name=f"{c.src} -> {c.dst} {_row(r)[3]}")
        if not r.ok:
            failure = ET.SubElement(case, "failure", message=r.reason, type="check")
            failure.text = f"expected {c.expected}, observed {r.observed}"
        ET.SubElement(case, "system-out").text = c.reproduce
    for suite in suites.values():
        cases = list(suite)
        suite.set("tests", str(len(cases)))
        suite.set("failures", str(sum(1 for case in cases if case.find("failure") is not None)))
    return ET.tostring(root, encoding="unicode", xml_declaration=True) + "\n"

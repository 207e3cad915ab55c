"""The break-it exercises on the command line: `netlab break`, `netlab hint`, `netlab check` and
`netlab adopt` (a lab built by hand). Thin: the work is in netlab.exercises."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import List, Optional

import typer

from ..core.errors import NetlabError
from ..runtime import state
from .console import need_root, out


def register(app: typer.Typer) -> None:
    app.command(name="break")(break_cmd)
    app.command()(hint)
    app.command()(check)
    app.command()(adopt)


def break_cmd(words: Optional[List[str]] = typer.Argument(None, metavar="[LAB] [FAULT]",
                                                          show_default=False,
                                                          help="The lab (may be left out when "
                                                               "only one is up) and the fault."),
              on: Optional[str] = typer.Option(None, "--on", metavar="PLACE",
                                               help="Where to apply it: the node, pod, "
                                                    "container, Ingress path or namespace "
                                                    "--list names (default: the first place "
                                                    "it applies to)."),
              list_: bool = typer.Option(False, "--list", help="List the faults, one a line."),
              undo_: bool = typer.Option(False, "--undo", help="Restore the healthy lab."),
              random_: bool = typer.Option(False, "--random",
                                           help="Quiz: a hidden fault; only its symptom is told."),
              seed: Optional[int] = typer.Option(None, "--seed", help="With --random: the same "
                                                                      "seed, the same exercise.")
              ) -> None:
    """Break a lab on purpose (one fault of the catalogue), for the learner to find and fix."""
    from .. import exercises as E
    words = list(words or [])
    if list_:
        faults = E.catalogue()
        width = max(map(len, faults))
        for name, f in faults.items():
            out.print(f"{name:{width}}  --on {f.on:9} {f.summary}", markup=False)
        return
    need_root("break")
    if undo_ or random_:
        if len(words) > 1:
            raise NetlabError("usage: netlab break [LAB] --undo | --random [--seed N]", 2)
        name = state.only_lab(words[0] if words else None)
        if undo_:
            done = E.undo(name)
            if not done:
                out.print(f"lab {name} has no fault applied; nothing to undo")
            for r in done:
                out.print(f"undid {r['fault']} on {r['on']} in lab {name}", markup=False)
            return
        applied, told = E.quiz(name, seed)
        out.print(f"lab {name} is broken (exercise seed {applied.seed}).\nSymptom: {told}\n"
                  f"Find the fault and fix it by hand (ip, nft, sysctl); `netlab hint` helps, "
                  f"`netlab check` grades.", markup=False)
        return
    if len(words) == 2:
        name, fault = words
    elif len(words) == 1:
        name, fault = state.only_lab(None), words[0]
    else:
        raise NetlabError("usage: netlab break [LAB] FAULT [--on PLACE] (see --list: a node, pod, container, path or namespace)", 2)
    applied = E.apply(name, fault, on)
    out.print(f"lab {name}: applied {fault} on {applied.on}:", markup=False)
    for op in applied.broken.ops:
        out.print(f"  {op.ip()}", markup=False)
    out.print(f"`netlab verify {name}` names it; `netlab break {name} --undo` restores the lab.",
              markup=False)


def hint(lab: Optional[str] = typer.Argument(None, metavar="[LAB]", show_default=False)) -> None:
    """A hint for the exercise running on a lab; each call gives a stronger one."""
    from .. import exercises as E
    need_root("hint")
    _level, lines = E.hint(state.only_lab(lab))
    out.print("\n".join(lines), markup=False)


def check(lab: Optional[str] = typer.Argument(None, metavar="[LAB]", show_default=False),
          junit: Optional[Path] = typer.Option(None, "--junit", metavar="FILE",
                                               help="Also write the result as JUnit XML.")
          ) -> None:
    """Whether your fix restored every rule (runs verify), and which fault it was; exit 1 if not."""
    from .. import exercises as E
    need_root("check")
    result = E.check(state.only_lab(lab))
    if junit is not None:
        try:
            junit.write_text(E.junit(result))
        except OSError as e:
            raise NetlabError(f"--junit: cannot write {junit}: {e.strerror}") from None
    if result.fixed:
        out.print(f"fixed: every one of {result.checks} checks passes. The fault was "
                  f"{result.fault} on {result.on} ({E.fault_of(result.fault).summary}); "
                  f"fixed in {result.seconds:.0f}s with {result.hints} hints.", markup=False)
        return
    out.print(f"not yet: {len(result.failed)} of {result.checks} checks fail:", markup=False)
    for r in result.failed[:10]:
        out.print(f"  {r.check.rule} {r.check.src} -> {r.check.dst} ({r.check.method}): "
                  f"{r.reason}", markup=False)
    raise typer.Exit(1)


def verify_by_hand(scenario: Path, name: Optional[str], only, source: Optional[str]):
    """`netlab verify SCENARIO --name LAB`: the rules proven on whatever the kernel holds under the
    lab's names, whoever built it (no journal needed); what differs from the plan goes to stderr
    first. Returns verify's report."""
    from .. import exercises as E, model
    from ..verify import engine as V
    lab = model.load(scenario, name)
    diffs = E.compare(lab)
    for line in diffs:
        print(f"netlab: {line}", file=sys.stderr)
    if diffs:
        print(f"netlab: lab {lab.name}: {len(diffs)} differences from the plan of {lab.source}",
              file=sys.stderr)
    return V.run(lab, V.derive(lab, only, source))


def adopt(scenario: Path = typer.Argument(..., metavar="SCENARIO",
                                          help="The scenario the lab was built from."),
          name: Optional[str] = typer.Option(None, "--name", "-n",
                                             help="Lab name (default: the scenario's `name:`)."),
          dry_run: bool = typer.Option(False, "--dry-run",
                                       help="Only compare; record nothing.")) -> None:
    """Take over a lab built by hand: say what differs from its plan, then record it."""
    # Built by a plan script or ip commands: recorded, verify, status, break and down see it.
    from .. import exercises as E, model
    lab = model.load(scenario, name)
    need_root("adopt")
    diffs = E.compare(lab)
    for line in diffs:
        out.print(f"  {line}", markup=False)
    out.print(f"lab {lab.name}: {len(diffs)} differences from the plan of {lab.source}",
              markup=False)
    if dry_run:
        return
    E.adopt(lab)
    out.print(f"lab {lab.name} is recorded: `netlab verify {lab.name}` proves its rules, "
              f"`netlab down {lab.name}` removes it", markup=False)

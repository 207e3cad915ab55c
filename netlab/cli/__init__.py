"""The command line: load, plan, apply, render. Thin on purpose; the work is in the other modules.

Errors of every kind arrive as NetlabError and leave through `main()` as one line on stderr and
the error's exit code (2 for bad input, usage or missing root; 1 for a failed step or check).
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import List, Optional

import typer

from ..core.errors import EXIT_USAGE, NetlabError
from ..runtime import state
from .console import need_root, out, table as _table

# Imported where a command needs them (a command pays only for what it uses: `--help` and
# `status` stay fast): model (pydantic and every feature), runtime.kernel (pyroute2), rich tables.

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  rich_markup_mode=None,  # plain click help: rich's formatter costs 0.05 s per run
                  help="Real Linux network labs from a scenario file, proven with real packets.")

ScenarioArg = typer.Argument(None, metavar="[SCENARIO]", show_default=False,
                             help="Scenario YAML (default: the three-node lab shipped with netlab).")
NameOpt = typer.Option(None, "--name", "-n", help="Lab name (default: the scenario's `name:`).")
LabArg = typer.Argument(None, metavar="[LAB]", show_default=False,
                        help="Lab name; may be left out when only one lab is up.")
JsonOpt = typer.Option(False, "--json", help="Print JSON for machines instead of tables.")
NodeOpt = typer.Option(None, "--node", metavar="NODE",
                       help="Only this node's part, built in this host's own network namespace "
                            "(one node per real machine or VM).")
UnderlayOpt = typer.Option("eth1", "--underlay", metavar="DEV",
                           help="With --node: the device that has the node's IP.")


# ---------------------------------------------------------------- commands


@app.command()
def up(scenario: Optional[Path] = ScenarioArg, name: Optional[str] = NameOpt,
       as_json: bool = JsonOpt, node: Optional[str] = NodeOpt,
       underlay: str = UnderlayOpt) -> None:
    """Build a lab in the kernel from a scenario (idempotent: a lab that is up is left as it is)."""
    from .. import model
    lab = model.load(scenario, name)
    need_root("up")
    from ..runtime import lifecycle, preflight
    preflight.check(lab)
    if node is not None:
        return _up_node(lab, node, underlay, as_json)
    started = time.monotonic()
    from .console import progress
    ops_guess = 6 * len(lab.pods) + 10 * len(lab.nodes)
    try:
        with progress(f"up {lab.name}", ops_guess >= PROGRESS_FROM) as tick:
            result = lifecycle.up(lab, progress=tick)
    except lifecycle.Interrupted as e:
        # Ctrl-C: the transaction has rolled back; say what, and exit as a shell does on SIGINT.
        print(f"netlab: interrupted: rolled back {e.what}: removed {len(e.undone.namespaces)} "
              f"namespaces, stopped {e.undone.processes} processes; nothing of it is left",
              file=sys.stderr)
        raise typer.Exit(130)
    took = time.monotonic() - started
    if as_json:
        out.print_json(data={"lab": lab.name, "already_up": result.already_up,
                             "operations": result.operations, "seconds": round(took, 3)})
        return
    if result.already_up:
        out.print(f"lab {lab.name} is already up; nothing changed")
    else:
        note = " (removed leftovers of an interrupted up first)" if result.cleaned_leftovers else ""
        nodes, pods = len(lab.nodes), len(lab.pods)
        out.print(f"lab {lab.name} is up: {nodes} node{'s' * (nodes != 1)}, "
                  f"{pods} pod{'s' * (pods != 1)}, "
                  f"{result.operations} operations in {took:.2f}s{note}")
    from . import showing as S
    S.render(lab, full=len(lab.pods) < S.SUMMARY_FROM)
    out.print(f"\nNext: sudo netlab verify {lab.name}    "
              f"sudo netlab exec {lab.name} {lab.pods[0].name if lab.pods else lab.nodes[0].name} "
              f"-- ip addr    sudo netlab down {lab.name}")


@app.command()
def down(lab: Optional[str] = LabArg, as_json: bool = JsonOpt,
         node: Optional[str] = NodeOpt) -> None:
    """Stop a lab's processes and remove everything it made (harmless when it is gone)."""
    need_root("down")
    if node is not None:
        return _down_node(lab, node, as_json)
    if lab is None and not state.labs():
        out.print("no lab is up; nothing to do")
        return
    name = state.only_lab(lab)
    from ..runtime import lifecycle
    result = lifecycle.down(name)
    if as_json:
        out.print_json(data={"lab": name, "namespaces": result.namespaces,
                             "processes": result.processes})
    elif result.namespaces:
        out.print(f"lab {name} is down: removed {len(result.namespaces)} namespaces, stopped "
                  f"{result.processes} processes")
    else:
        out.print(f"lab {name} is not up; nothing to do")


@app.command()
def clean(as_json: bool = JsonOpt) -> None:
    """Remove the leftovers of every lab (interrupted ups, lost records), found by netlab's marks."""
    need_root("clean")
    from ..runtime import clean as cleaning
    result = cleaning.clean()
    if as_json:
        out.print_json(data={"removed": {lab: {"namespaces": r.namespaces, "processes": r.processes}
                                         for lab, r in result.removed.items()},
                             "kept": result.kept, "busy": result.busy})
        return
    for lab, r in result.removed.items():
        out.print(f"lab {lab}: removed {len(r.namespaces)} namespaces, stopped {r.processes} "
                  f"processes")
    if not result.removed:
        out.print("nothing to clean")
    if result.kept:
        out.print(f"left up: {', '.join(result.kept)} (`sudo netlab down LAB` takes one down)")
    if result.busy:
        out.print(f"skipped, another netlab command holds them: {', '.join(result.busy)}")


@app.command()
def show(words: Optional[List[str]] = typer.Argument(None, metavar="[LAB] [ingress NAME]",
                                                    show_default=False),
         as_json: bool = JsonOpt,
         config: bool = typer.Option(False, "--config",
                                     help="With `ingress NAME`: print the nginx.conf.")) -> None:
    """List a lab's nodes and pods, like `kubectl get nodes,pods -o wide`; `show [LAB] ingress
    NAME --config` prints the nginx.conf the controller serves it with."""
    need_root("show")
    from . import showing as S
    from ..runtime import running
    words = list(words or [])
    lab, what = (words[0] if len(words) in (1, 3) else None), words[-2:] if len(words) >= 2 else []
    if len(words) > 3 or (what and what[0] not in S.ROUTE_KINDS):
        raise NetlabError("usage: netlab show [LAB] or netlab show [LAB] ingress|gateway|"
                          "httproute NAME [--config]")
    the_lab = running.load_up(state.only_lab(lab))
    if what:
        S.show_route(the_lab, what[0], what[1], config)
        return
    if as_json:
        out.print_json(data=S.data(the_lab))
    else:
        S.render(the_lab)


@app.command()
def status(as_json: bool = JsonOpt) -> None:
    """List the labs that are up."""
    from ..view.status import status as show_status
    show_status(as_json)


@app.command(name="plan")
def plan_cmd(scenario: Optional[Path] = ScenarioArg, name: Optional[str] = NameOpt,
             node: Optional[str] = NodeOpt, underlay: str = UnderlayOpt) -> None:
    """Print the iproute2 commands that `up` performs, as a runnable shell script (no root)."""
    from .. import model
    lab = model.load(scenario, name)
    if node is not None and node not in [n.name for n in lab.nodes]:
        raise NetlabError(f"--node {node}: lab {lab.name} has no node '{node}': use one of "
                          f"{', '.join(n.name for n in lab.nodes)}")
    from .. import plan
    ops = plan.build(lab) if node is None else plan.build_node(lab, node, underlay)
    sys.stdout.write(plan.script(lab, ops, node))


@app.command(name="exec", context_settings={"allow_extra_args": True,
                                            "ignore_unknown_options": True})
def exec_cmd(args: List[str] = typer.Argument(..., metavar="[LAB] POD|NODE [--] CMD...",
                                              help="Where to run, then the command.")) -> None:
    """Run a command inside a pod's (or node's) namespace, like `kubectl exec`; exits with its code."""
    need_root("exec")
    labs = state.labs()
    # `exec LAB POD ...` when the first word is a lab, unless that lab has a pod named like it
    # and the second word is none of its pods (`exec POD CMD...` in a lab of the same name).
    if len(args) >= 2 and args[0] in labs and (
            _target_ns(args[0], args[1]) or _target_ns(args[0], args[0]) is None):
        name, target, command = args[0], args[1], args[2:]
    else:
        name, target, command = state.only_lab(None), args[0], args[1:]
    ns = _target_ns(name, target)
    if ns is None:
        from ..core.lab import places
        from ..runtime import running
        known = ", ".join(p.name for p in places(running.load_up(name)))
        raise NetlabError(f"lab {name} has no pod or node '{target}': use one of {known}")
    if command[:1] == ["--"]:
        command = command[1:]
    command = command or [os.environ.get("SHELL", "/bin/sh")]
    from ..runtime import kernel  # only here: exec replaces this process inside the namespace
    kernel.enter_like_ip_netns_exec(ns)
    try:
        os.execvp(command[0], command)
    except FileNotFoundError:
        print(f"netlab: {command[0]}: command not found in {ns}", file=sys.stderr)
        raise typer.Exit(127)


def _target_ns(name: str, target: str) -> Optional[str]:
    from ..core.lab import places
    from ..runtime import running
    try:
        lab = running.load_up(name)
    except NetlabError:
        return None
    return next((p.ns for p in places(lab) if p.name == target), None)


@app.command()
def graph(target: Optional[str] = typer.Argument(None, metavar="[SCENARIO|LAB]", show_default=False,
                                                 help="A scenario file (draws its plan) or a lab "
                                                      "that is up (draws the kernel's state)."),
          output: Optional[Path] = typer.Option(None, "--output", "-o",
                                                help="Write here (default: stdout)."),
          fmt: Optional[str] = typer.Option(None, "--format", "-f",
                                            help="svg, png, dot or mermaid (default: from -o's "
                                                 "suffix, else svg)."),
          name: Optional[str] = NameOpt,
          verify: bool = typer.Option(False, "--verify", help="Colour pods and links by the "
                                                              "last `netlab verify`.")) -> None:
    """Draw the lab: namespaces, bridges, veth pairs, routes between nodes (Graphviz)."""
    from ..view import graph as G, look
    fmt = fmt or (output.suffix[1:] if output and output.suffix[1:] in G.FORMATS else
                  "mermaid" if output and output.suffix in (".mmd", ".mermaid") else "svg")
    if fmt not in G.FORMATS:
        raise NetlabError(f"--format {fmt}: use one of {', '.join(G.FORMATS)}")
    pic = look.picture(target, name, verify)
    data = G.render(pic.graph, fmt)
    if pic.verify_note:
        print(f"netlab: {pic.verify_note}", file=sys.stderr)
    if output is None:
        sys.stdout.buffer.write(data)
        sys.stdout.flush()
    else:
        output.write_bytes(data)
        what = "the kernel's state of lab" if pic.live else "the plan of lab"
        out.print(f"wrote {output} ({fmt}, {len(data)} bytes): {what} {pic.lab.name}"
                  f"{'; ' + pic.graph.note if pic.graph.note else ''}")


@app.command(context_settings={"allow_extra_args": False})
def trace(args: List[str] = typer.Argument(..., metavar="[LAB] FROM TO",
                                           help="FROM: a pod or node; TO: a pod, node or address."),
          port: Optional[int] = typer.Option(
              None, "--port", metavar="N", min=1, max=65535,
              help="Trace a TCP packet to port N (default: a ping)."),
          udp: bool = typer.Option(False, "--udp", help="With --port: a UDP packet."),
          as_json: bool = JsonOpt) -> None:
    """Show the path a packet takes, namespace by namespace, and where it stops (ip route get,
    and the nft rules on the way: DNAT follows the new destination, a drop names its rule)."""
    if udp and port is None:
        raise NetlabError("--udp needs --port N: the UDP port to trace to", EXIT_USAGE)
    need_root("trace")
    from ..view import look, trace as T
    lab, walked, names = look.trace(args, port, "udp" if udp else None)
    if as_json:
        out.print_json(data=walked.to_dict())
    else:
        what = "" if port is None else f", {'udp' if udp else 'tcp'} port {port}"
        out.print(f"trace in lab {lab.name}: {args[-2]} -> {args[-1]} ({walked.dst}{what})\n",
                  markup=False)
        out.print(T.render(walked, names), markup=False)
    if not walked.arrived:
        raise NetlabError(f"the packet from {args[-2]} does not arrive at "
                          f"{walked.final or walked.dst}: it stops in {walked.hops[-1].ns}", 1)


@app.command()
def verify(lab: Optional[str] = LabArg, as_json: bool = JsonOpt,
           junit: Optional[Path] = typer.Option(None, "--junit", metavar="FILE",
                                                help="Also write a JUnit XML report to FILE."),
           only: Optional[List[str]] = typer.Option(None, "--only", metavar="RULE",
                                                    help="Run only this rule (repeatable)."),
           source: Optional[str] = typer.Option(None, "--from", metavar="POD",
                                                help="Run only the checks from this pod or node."),
           mesh: bool = typer.Option(False, "--mesh", help="Check every pair, also in a big lab."),
           sample: Optional[int] = typer.Option(None, "--sample", metavar="N", min=1,
                                                help="Covering mode with N targets per source "
                                                     "and node (default above 100 pods: 1)."),
           verbose: bool = typer.Option(False, "--verbose", "-v", help="Print every check's row."),
           node: Optional[str] = NodeOpt, name: Optional[str] = NameOpt,
           policy_matrix: bool = typer.Option(
               False, "--policy-matrix", help="Also print NetworkPolicy's truth table per port: "
               "rows sources, columns targets, . allowed, X denied, ! not as the model says.")
           ) -> None:
    """Prove the lab's networking rules with real ping and curl; exit 1 if any check fails.

    Up to 100 pods every pair is checked; above, a covering set: every pod both source and
    target, every node pair, every rule (--mesh: every pair)."""
    # With a SCENARIO instead of a LAB: the lab built by hand from it (--name), without a record.
    from ..features import RULES
    from ..verify import engine as V
    unknown = [r for r in only or [] if r not in RULES]
    if unknown:
        raise NetlabError(f"--only: unknown rule '{unknown[0]}': use one of {', '.join(RULES)}")
    need_root("verify")
    if lab is not None and Path(lab).is_file():   # a lab built by hand (see cli.exercise)
        return _emit_report(_exercise.verify_by_hand(Path(lab), name, only or (), source),
                            as_json, junit)
    name = state.only_lab(f"{lab}@{node}" if lab and node else lab)
    if "@" in name:   # a node on this host (up --node): its own checks, to pods everywhere
        from . import node as node_cli
        return _emit_report(node_cli.verify(name, only or ()), as_json, junit, verbose)
    if not state.LabState(name).exists():
        raise NetlabError(f"lab {name} is not up: see `netlab status` (built by hand? "
                          f"`sudo netlab adopt SCENARIO --name {name}` takes it over)")
    from ..runtime import running
    the_lab = running.load_up(name)
    from ..core.lab import places
    names = [p.name for p in places(the_lab)]
    if source is not None and source not in names:
        raise NetlabError(f"--from: lab {name} has no pod or node '{source}': use one of "
                          f"{', '.join(names)}")
    from ..verify import coverage
    cover = coverage.choose(len(the_lab.pods), mesh, sample)
    checks = V.derive(the_lab, only or (), source, cover)
    from .console import progress
    with progress(f"verify {name}", len(checks) >= PROGRESS_FROM) as tick:
        report = V.run(the_lab, checks, cover=cover, progress=tick)
    from ..verify import report as R
    R.save(report)
    if not policy_matrix or as_json:
        return _emit_report(report, as_json, junit, verbose)
    from ..features.netpol.verify import observed_tables
    try:
        _emit_report(report, as_json, junit, verbose)
    finally:
        sys.stdout.write("\n" + (observed_tables(the_lab, report.results)
                                 or "no NetworkPolicy check ran (the lab has no policies)\n"))


PROGRESS_FROM = 1000   # checks (verify) or operations (up): below, no progress bar


def _emit_report(report, as_json: bool, junit: Optional[Path], verbose: bool = False) -> None:
    """Print a verify report (table or JSON), write its JUnit file, exit 1 if a check failed."""
    from ..verify import report as V
    if junit is not None:
        try:
            junit.write_text(V.render_junit(report))
        except OSError as e:
            raise NetlabError(f"--junit: cannot write {junit}: {e.strerror}") from None
    if as_json:
        import json
        sys.stdout.write(json.dumps(V.render_json(report), indent=1) + "\n")
    else:
        sys.stdout.write(V.render_text(report, verbose))
    if report.failed:
        raise typer.Exit(1)


def _up_node(lab, node: str, underlay: str, as_json: bool) -> None:
    from . import node as node_cli
    node_cli.up(lab, node, underlay, as_json)


def _down_node(lab: Optional[str], node: str, as_json: bool) -> None:
    from . import node as node_cli
    node_cli.down(lab, node, as_json)


# The commands of features, each in its own module of this package.
from .cni import cni as _cni  # noqa: E402
app.command(name="cni", context_settings={"allow_extra_args": False})(_cni)
from . import kube  # noqa: E402  (get, scale, delete, port-forward: kubectl's verbs)
kube.register(app)
from . import exercise as _exercise  # noqa: E402  (break, hint, check, adopt)
_exercise.register(app)


# ---------------------------------------------------------------- entry point


def main(argv: Optional[list[str]] = None) -> int:
    # Typer reports its own usage errors (exit 2) and exits; recent Typer vendors click, so netlab
    # catches only what is its own and the SystemExit Typer ends with.
    try:
        app(args=argv, prog_name="netlab", standalone_mode=True)
    except NetlabError as e:
        print(f"netlab: error: {e.message}", file=sys.stderr)
        return e.code
    except SystemExit as e:
        if e.code is None or isinstance(e.code, int):
            return e.code or 0
        print(e.code, file=sys.stderr)
        return 1
    return 0


def run() -> None:
    sys.exit(main())


if __name__ == "__main__":
    run()

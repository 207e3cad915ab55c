"""Break-it exercises: netlab breaks a lab that is up on purpose, the learner finds the fault, and
verify names it.

- `apply(name, fault, target)`: one fault of the catalogue (features.FAULTS) as a few operations,
  recorded in the lab's journal before they are applied (runtime.state), so `down` and `clean`
  remove the lab as ever and `undo` applies the recorded inverse.
- Quiz mode: `quiz(name, seed)` picks a fault and a target with random.Random(seed) among those
  that apply to the lab (so a seed gives the same exercise again) and says only its symptom;
  `hint(name)` gives progressively stronger hints; `check(name)` runs verify to learn whether the
  learner's own fix restored every rule, and records the time it took.
- `compare(lab)`: what the kernel holds under a lab's names against its plan, for a lab built by
  hand (`netlab plan > lab.sh; sh lab.sh`, or ip commands), and `adopt` to record such a lab so
  every other command sees it.

The pure parts (choose, symptom, expected, uncertain, junit) are apart from those that touch the kernel.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass, field
from typing import Optional

from .core import ops as P
from .core.errors import NetlabError
from .core.fault import Broken, Fault
from .core.lab import Lab
from .features import FAULTS

HINTS = 3   # 1: the failing checks; 2: the namespace where the packet stops; 3: the command


# ---------------------------------------------------------------- pure


def catalogue() -> dict[str, Fault]:
    return dict(FAULTS)


def fault_of(name: str) -> Fault:
    try:
        return FAULTS[name]
    except KeyError:
        raise NetlabError(f"no fault '{name}': see `netlab break --list` ({', '.join(FAULTS)})",
                          2) from None


def choices(lab: Lab) -> list[tuple[str, str]]:
    """Every (fault, target) that applies to this lab, in catalogue order."""
    return [(name, t) for name, f in FAULTS.items() for t in f.targets(lab)]


def choose(lab: Lab, seed: int) -> tuple[str, str]:
    """The exercise a seed gives for this lab: the same seed, the same fault and target."""
    options = choices(lab)
    if not options:
        raise NetlabError(f"no fault of the catalogue applies to lab {lab.name}", 1)
    return random.Random(seed).choice(options)


def target_of(lab: Lab, fault: Fault, on: Optional[str]) -> str:
    targets = fault.targets(lab)
    if not targets:
        raise NetlabError(f"fault {fault.name} does not apply to lab {lab.name} ({fault.summary})",
                          2)
    if on is None:
        return targets[0]
    if on not in targets:
        raise NetlabError(f"--on {on}: fault {fault.name} applies to a {fault.on} of lab "
                          f"{lab.name}: use one of {', '.join(targets)}", 2)
    return on


def expected(lab: Lab, fault: str, target: str, checks: list) -> list:
    """The checks the fault must break, from the model (what the tests assert verify fails)."""
    f = fault_of(fault)
    return [c for c in checks if f.breaks(lab, target, c)]


def uncertain(lab: Lab, fault: str, target: str, checks: list) -> list:
    """The checks the fault may break or not (kube-proxy's random endpoint choice decides)."""
    f = fault_of(fault)
    return [c for c in checks if f.outcome(lab, target, c) is None]


def symptom(lab: Lab, fault: str, target: str) -> str:
    """What a user of the lab would notice, without naming the cause."""
    from .verify import engine
    broken = expected(lab, fault, target, engine.derive(lab))
    if not broken:
        return "nothing obvious: run `netlab verify`"
    c = broken[0]
    more = f" (and {len(broken) - 1} more checks fail)" if len(broken) > 1 else ""
    if c.method == "mtu":
        return f"large packets from {c.src} to {c.dst} never arrive; small ones do{more}"
    if c.method == "dns":
        return f"{c.src} cannot resolve {c.target}{more}"
    if c.method == "http" and c.nat is False and not any(x.method == "ping" for x in broken):
        return (f"{c.dst} sees the wrong client address when {c.src} connects "
                f"(curl {c.url}){more}")
    if c.method == "ingress":
        return f"curl {c.dst} from {c.src} is not {c.expected}{more}"
    if c.asks:
        return f"{c.src} gets no answer at {c.target}:{c.port}{more}"
    if c.method == "dns":
        return f"{c.src} cannot resolve {c.target}{more}"
    return f"{c.src} cannot reach {c.dst}{more}"


# ---------------------------------------------------------------- the lab's record


@dataclass
class Applied:
    fault: str
    on: str
    broken: Broken
    hidden: bool = False
    seed: Optional[int] = None


def _record(fault: str, on: str, b: Broken, hidden: bool, seed: Optional[int]) -> dict:
    return {"fault": fault, "on": on, "ops": [P.as_record(o) for o in b.ops],
            "undo": [P.as_record(o) for o in b.undo], "ns": b.ns, "obj": b.obj, "look": b.look,
            "hidden": hidden, "seed": seed, "at": time.time()}


def _state(name: str):
    from .runtime.state import LabState
    state = LabState(name)
    if "@" in name:
        raise NetlabError("break works on a whole lab, not one node on a host (--node)", 2)
    if not state.exists() or not state.journal().complete:
        raise NetlabError(f"lab {name} is not up: see `netlab status`")
    return state


def active(name: str) -> Optional[dict]:
    """The fault applied to a lab and not undone or fixed yet (its journal record), or None."""
    from .runtime.state import LabState
    faults = LabState(name).journal().faults
    return faults[-1] if faults else None


def _run_ops(ops: list, state) -> None:
    from .runtime import kernel as K
    with K.Kernel() as kern:
        for op in ops:
            _apply_one(kern, op, state)


def _apply_one(kern, op, state) -> None:
    """One operation of a fault: a file of /etc/netns/<ns>/ (recorded in the journal when the lab
    came up, so `down` removes it) is written in place; a process is stopped or started again as
    `up` does it, its pid in the journal (runtime.lifecycle); a file of the lab's state directory
    is written; nginx reloads its conf; the rest goes to the kernel."""
    if isinstance(op, P.EtcNetnsFile):
        from .runtime import etcnetns
        etcnetns.write(op.ns, op.name, op.text)
        return
    if isinstance(op, (P.Spawn, P.Stop)):
        from .runtime import lifecycle
        lifecycle.process_op(kern, state, op)
        return
    if isinstance(op, P.WriteFile):
        state.write(op.path, op.text)
        return
    if isinstance(op, P.NginxReload):
        from .runtime import workloads
        workloads.reload_nginx(op.ns, op.argv)
        return
    kern.apply(op)


def apply(name: str, fault: str, on: Optional[str] = None, hidden: bool = False,
          seed: Optional[int] = None) -> Applied:
    """Break lab `name` with one fault: recorded in its journal first, then applied; a failure
    applies the undo and records it undone."""
    from .runtime.running import load_up
    state = _state(name)
    lab = load_up(name)
    f = fault_of(fault)
    target = target_of(lab, f, on)
    with state.lock(wait=True):
        current = active(name)
        if current is not None:
            what = "an exercise" if current.get("hidden") else \
                f"fault {current['fault']} on {current['on']}"
            raise NetlabError(f"lab {name} already has {what} applied: `netlab check {name}` or "
                              f"`netlab break {name} --undo` first", 1)
        broken = f.make(lab, target)
        state.add_record("fault", _record(fault, target, broken, hidden, seed))
        try:
            _run_ops(list(broken.ops), state)
        except BaseException:
            _undo_ops(list(broken.undo), state)
            state.add_record("unfault", {"at": time.time(), "failed": True})
            raise
    return Applied(fault, target, broken, hidden, seed)


def _undo_ops(ops: list, state) -> None:
    """The inverse operations, each on its own: one whose object is already back (the learner
    restored it by hand) is skipped, the others still run."""
    from .core.errors import KernelError
    from .runtime import kernel as K
    for op in ops:
        try:
            with K.Kernel() as kern:
                _apply_one(kern, op, state)
        except KernelError as e:
            if "File exists" not in e.message:
                raise


def undo(name: str) -> list[dict]:
    """Undo every fault applied to lab `name`, the last first; returns their records."""
    state = _state(name)
    done = []
    with state.lock(wait=True):
        for record in reversed(state.journal().faults):
            _undo_ops([P.from_record(o) for o in record["undo"]], state)
            state.add_record("unfault", {"at": time.time()})
            done.append(record)
    return done


def quiz(name: str, seed: Optional[int] = None) -> tuple[Applied, str]:
    """A hidden fault chosen by the seed (a fresh one when None); returns it and its symptom."""
    from .runtime.running import load_up
    lab = load_up(name)
    if seed is None:
        seed = random.SystemRandom().randrange(1, 1_000_000)
    fault, target = choose(lab, seed)
    applied = apply(name, fault, target, hidden=True, seed=seed)
    return applied, symptom(lab, fault, target)


# ---------------------------------------------------------------- hints and check


# Right after a fix by hand, the kernel may still hold what the fault left behind: a neighbour
# entry that began resolving while a veth was down fails the packets queued on it once its probes
# run out (3 x retrans_time, 1 s). So a check counts as failed when it fails again after that.
SETTLE = 3.0


def _verify(lab: Lab):
    from .verify import engine
    report = engine.run(lab, engine.derive(lab))
    if report.failed:
        time.sleep(SETTLE)
        again = {id(r.check): r for r in engine.run(lab, [r.check for r in report.failed]).results}
        report.results = [again.get(id(r.check), r) if not r.ok else r for r in report.results]
    return report


def hint(name: str) -> tuple[int, list[str]]:
    """The next hint (1 to 3) for the exercise running on lab `name`, as lines of text."""
    from .runtime.running import load_up
    state = _state(name)
    record = active(name)
    if record is None:
        raise NetlabError(f"no exercise is running on lab {name}: start one with "
                          f"`netlab break {name} --random`", 1)
    level = min(record.get("hints", 0) + 1, HINTS)
    lab = load_up(name)
    report = _verify(lab)
    failed = report.failed
    lines = [f"hint {level} of {HINTS}:"]
    if level == 1:
        lines.append(f"{len(failed)} of {len(report.results)} checks fail, for example:")
        lines += [f"  {r.check.rule}: {r.check.src} -> {r.check.dst} ({r.check.method}), "
                  f"reproduce: {r.check.reproduce}" for r in failed[:5]]
    else:
        lines.append(f"{len(failed)} of {len(report.results)} checks still fail")
    if level >= 2:
        lines.append(f"the packet stops in namespace {record['ns']}")
    if level >= 3:
        lines.append(f"look with: {record['look']}")
    with state.lock(wait=True):
        state.add_record("hint", {"level": level, "at": time.time()})
    return level, lines


@dataclass
class CheckResult:
    lab: str
    fixed: bool
    fault: str
    on: str
    seconds: float
    hints: int
    seed: Optional[int]
    failed: list = field(default_factory=list)   # verify's failed results
    checks: int = 0


def check(name: str) -> CheckResult:
    """Whether the learner's fix restored every rule (verify passes); recorded when it did."""
    from .runtime.running import load_up
    state = _state(name)
    record = active(name)
    if record is None:
        last = state.journal().finished
        if not last:
            raise NetlabError(f"no exercise is running on lab {name}: start one with "
                              f"`netlab break {name} --random`", 1)
        record = last[-1]
        report = _verify(load_up(name))
        return CheckResult(name, not report.failed, record["fault"], record["on"],
                           record.get("seconds", 0.0), record.get("hints", 0), record.get("seed"),
                           report.failed, len(report.results))
    report = _verify(load_up(name))
    seconds = time.time() - record["at"]
    result = CheckResult(name, not report.failed, record["fault"], record["on"], seconds,
                         record.get("hints", 0), record.get("seed"), report.failed,
                         len(report.results))
    if result.fixed:
        with state.lock(wait=True):
            state.add_record("fixed", {"at": time.time(), "seconds": round(seconds, 1)})
    return result


def junit(result: CheckResult) -> str:
    """The exercise as JUnit XML for grading: one testcase, failed until every rule passes."""
    import xml.etree.ElementTree as ET
    root = ET.Element("testsuites", name=f"netlab exercise {result.lab}", tests="1",
                      failures=str(int(not result.fixed)))
    suite = ET.SubElement(root, "testsuite", name="netlab-exercise", tests="1",
                          failures=str(int(not result.fixed)))
    props = ET.SubElement(suite, "properties")
    for key, value in (("lab", result.lab), ("seed", result.seed), ("hints", result.hints),
                       ("seconds", round(result.seconds, 1)),
                       ("fault", result.fault if result.fixed else "hidden")):
        ET.SubElement(props, "property", name=key, value=str(value))
    case = ET.SubElement(suite, "testcase", classname=f"{result.lab}.exercise",
                         name="fix the lab", time=f"{result.seconds:.1f}")
    if not result.fixed:
        failure = ET.SubElement(case, "failure", type="verify",
                                message=f"{len(result.failed)} of {result.checks} checks fail")
        failure.text = "\n".join(f"{r.check.rule} {r.check.src} -> {r.check.dst}: {r.reason}"
                                 for r in result.failed)
    return ET.tostring(root, encoding="unicode", xml_declaration=True) + "\n"


# ---------------------------------------------------------------- a lab built by hand


def differences(want, have) -> list[str]:
    """What the kernel's snapshot `have` lacks or holds differently from the plan's `want`
    (view.snapshot.Snapshot both): namespaces, interfaces, addresses, routes, forwarding. Pure."""
    out = []
    for ns in want.namespaces:
        h = have.ns(ns.name)
        if h is None:
            out.append(f"namespace {ns.name} is missing (ip netns add {ns.name})")
            continue
        for i in ns.ifaces:
            hi = h.iface(i.name)
            if hi is None:
                out.append(f"{ns.name}: interface {i.name} ({i.kind}) is missing")
                continue
            if i.up and not hi.up:
                out.append(f"{ns.name}: interface {i.name} is down (ip -n {ns.name} link set "
                           f"{i.name} up)")
            if i.master and hi.master != i.master:
                out.append(f"{ns.name}: interface {i.name} is not on {i.master} (ip -n {ns.name} "
                           f"link set {i.name} master {i.master})")
            for a in i.addrs:
                if a not in hi.addrs:
                    out.append(f"{ns.name}: {i.name} lacks the address {a} (ip -n {ns.name} addr "
                               f"add {a} dev {i.name})")
            for a in hi.addrs:
                if a not in i.addrs and i.kind != "loopback":
                    out.append(f"{ns.name}: {i.name} has the address {a}, not in the plan")
        have_routes = {(r.dst, r.via, r.dev) for r in h.routes}
        want_routes = {(r.dst, r.via, r.dev) for r in ns.routes}
        for r in ns.routes:
            if (r.dst, r.via, r.dev) not in have_routes:
                out.append(f"{ns.name}: route `{r.text()}` is missing")
        for r in h.routes:
            if (r.dst, r.via, r.dev) not in want_routes:
                out.append(f"{ns.name}: route `{r.text()}` is not in the plan")
        if ns.forwarding != h.forwarding:
            out.append(f"{ns.name}: net.ipv4.ip_forward is {int(h.forwarding)}, the plan has "
                       f"{int(ns.forwarding)}")
    return out


def compare(lab: Lab) -> list[str]:
    """What the kernel holds under the lab's names against the scenario's plan, whoever built it."""
    from .runtime import kernel as K
    from .view import snapshot
    return differences(snapshot.of_plan(lab), K.observe(list(lab.namespaces), lab.name))


def adopt(lab: Lab) -> list[str]:
    """Record a lab built by hand as up: its existing namespaces get netlab's mark and go in a
    journal, so verify, status, break and down work on it as on a lab netlab built."""
    from .runtime import kernel as K
    from .runtime.state import LabState
    state = LabState(lab.name)
    with state.lock(wait=True):
        if state.exists():
            raise NetlabError(f"lab {lab.name} is already recorded: see `netlab status`", 1)
        present = [ns for ns in lab.namespaces if K.netns_exists(ns)]
        if not present:
            raise NetlabError(f"no namespace of lab {lab.name} exists (looked for "
                              f"{', '.join(lab.namespaces[:3])}...): build it first", 1)
        for ns in present:
            owner = K.mark(ns)
            if owner not in (None, lab.name):
                raise NetlabError(f"namespace {ns} belongs to lab {owner}, not {lab.name}", 1)
        state.begin(lab.source, lab.text)
        try:
            for ns in present:
                state.record(f"netns {ns}")
                K.mark_netns(ns, lab.name)
            state.record("complete")
        finally:
            state.close()
    return present

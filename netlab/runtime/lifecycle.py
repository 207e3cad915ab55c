"""Bringing a lab up and down as a transaction: plan, record, apply, roll back on failure.

`up` records each namespace before creating it and each process once started; any failure (or
Ctrl-C) removes everything made so far. `down` stops every process inside the lab's namespaces and
removes the namespaces: the journal's, plus those that bear the lab's mark (after a lost journal).
"""

from __future__ import annotations

import signal
import threading
from dataclasses import dataclass, field
from typing import Callable, Optional

from ..core import ops as P
from ..core.errors import KernelError
from ..core.lab import Lab
from ..core.ops import EtcNetnsFile
from . import cni_chain, dnsserver, etcnetns
from . import kernel as K
from . import workloads
from .state import LabState


class Interrupted(KeyboardInterrupt):
    """Ctrl-C during `up`: everything made so far was removed; `undone` says what."""

    def __init__(self, what: str, undone: "DownResult"):
        super().__init__(what)
        self.what, self.undone = what, undone


UP_LOCK_WAIT = 60.0  # seconds an `up` waits for another command on the same lab


@dataclass
class UpResult:
    lab: Lab
    already_up: bool = False
    operations: int = 0
    cleaned_leftovers: bool = False


@dataclass
class DownResult:
    lab: str
    namespaces: list[str] = field(default_factory=list)
    processes: int = 0


def up(lab: Lab, make_kernel: Callable[[], K.Kernel] = K.Kernel,
       progress: Optional[Callable[[int, int], None]] = None) -> UpResult:
    """Bring `lab` up as a transaction; `progress(done, total)` hears of the operations applied."""
    state = LabState(lab.name)
    # A second `up` of the same lab waits for the first (then finds it up); refused after a while.
    with state.lock(timeout=UP_LOCK_WAIT):
        result = UpResult(lab)
        if state.exists():
            journal = state.journal()
            # After `scale` or `delete` the lab's pods are those of its journal, not the scenario's.
            from .. import model   # the features and their schemas: only `up` needs them
            now = model.parse(lab.text, lab.source, lab.name, live=journal.live) \
                if journal.live and state.info().get("text") == lab.text else lab
            if journal.complete and state.info().get("text") == lab.text and \
                    all(K.netns_exists(ns) for ns in now.namespaces):
                result.already_up = True
                return result
            if journal.complete and state.info().get("text") != lab.text:
                raise KernelError(f"lab {lab.name} is already up from another scenario "
                                  f"({state.info().get('source')}): `sudo netlab down {lab.name}` "
                                  f"first, or choose another name with --name")
            teardown(state)  # leftovers of an interrupted up
            result.cleaned_leftovers = True
        taken = [ns for ns in lab.namespaces if K.netns_exists(ns)]
        if taken:
            raise K.NetnsExists(taken[0])
        from .. import plan   # the features and their schemas: only `up` needs them
        ops = plan.build(lab)
        state.begin(lab.source, lab.text, {"nodes": len(lab.nodes), "pods": len(lab.pods),
                                           "namespaces": list(lab.namespaces)})
        transaction(state, ops, f"lab {lab.name}", _apply, teardown, make_kernel, progress)
        if getattr(lab, "dns", None) is not None:    # a query right after `up` is answered
            dnsserver.wait_listening(lab)
        result.operations = len(ops)
        return result


def transaction(state: LabState, ops: list, what: str, apply: Callable, teardown: Callable,
                make_kernel: Callable[[], K.Kernel] = K.Kernel,
                progress: Optional[Callable[[int, int], None]] = None) -> None:
    """Apply `ops` in order with `apply(kern, state, op)`; on any failure (or Ctrl-C) undo all with
    `teardown(state)` and raise an error naming the step (Ctrl-C: Interrupted, saying what was
    undone); on success record the lab complete."""
    every = max(1, len(ops) // 200)
    try:
        with make_kernel() as kern:
            for step, op in enumerate(ops, 1):
                if progress is not None and step % every == 0:
                    progress(step, len(ops))
                try:
                    apply(kern, state, op)
                    if step == len(ops):
                        flush(kern)
                except KernelError as e:
                    step = _step_of(ops, e, step)
                    raise KernelError(f"up of {what} failed at step {step} of {len(ops)}: "
                                      f"{e.message}; everything it made was removed") from None
        state.record("complete")
    except KeyboardInterrupt:
        # A second Ctrl-C must not cut the rollback short.
        old = signal.signal(signal.SIGINT, signal.SIG_IGN) if _main_thread() else None
        try:
            undone = teardown(state)
        finally:
            if old is not None:
                signal.signal(signal.SIGINT, old)
        raise Interrupted(what, undone) from None
    except BaseException:
        teardown(state)
        raise
    finally:
        state.close()


def _main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


def _apply(kern: K.Kernel, state: LabState, op: P.Op) -> None:
    if isinstance(op, P.NetnsAdd):
        state.record(f"netns {op.ns}")  # write-ahead: recorded before it exists
        try:
            kern.apply(op)
        except K.NetnsExists:
            state.record(f"forget {op.ns}")  # somebody else's: never ours to remove
            raise
        return
    if isinstance(op, P.Spawn):
        flush(kern)  # the pod's links and addresses are in place before its process starts
        pid = workloads.spawn(op.ns, op.argv, state.log_path(op.owner, op.name), state.lab)
        state.record(f"pid {pid} {op.owner}/{op.name}")
        return
    if isinstance(op, P.Stop):
        # what the journal says Spawn started, and the same command started there by hand
        workloads.stop(set(started(state, op)) | set(running(op.ns, op.argv)))
        return
    if isinstance(op, P.WriteFile):
        state.write(op.path, op.text)
        return
    if isinstance(op, EtcNetnsFile):
        state.record(f"etc {op.ns}")  # write-ahead: outside the state directory
        etcnetns.write(op.ns, op.name, op.text)
        return
    if isinstance(op, P.CniAdd):
        flush(kern)  # the node's cni0 and the pod's namespace are there before the plugins run
        state.record(f"cni {op.node_ns} {op.ns} {op.container_id} {op.ifname} {op.conflist}")
        cni_chain.add_op(str(state.dir), op)
        return
    kern.apply(op)


def started(state: LabState, op) -> list[int]:
    """The live processes the journal records as op.owner/op.name (what Spawn recorded), still
    inside op.ns: a pid recycled by a process elsewhere is not ours."""
    inode = K.netns_inode(op.ns)
    inside = workloads.pids_in([inode] if inode else [])
    what = f"{op.owner}/{op.name}"
    return [pid for pid, w in state.journal().pids.items() if w == what and pid in inside]


def process_op(kern: K.Kernel, state: LabState, op) -> None:
    """A Stop or Spawn on a lab that is up (a break-it fault, its undo): as `up` does it, the new
    pid recorded in the journal so `down` and `clean` stop it. A Spawn whose command already runs
    in its namespace (the learner started it again by hand) is skipped: a second dnsmasq would
    only fail to bind."""
    if isinstance(op, P.Spawn) and running(op.ns, op.argv):
        return
    state.reopen()
    try:
        _apply(kern, state, op)
    finally:
        state.close()


def running(ns: str, argv: tuple) -> list[int]:
    """The live processes in `ns` whose command line is `argv`."""
    inode = K.netns_inode(ns)
    want = ("\0".join(argv) + "\0").encode()
    out = []
    for pid in workloads.pids_in([inode] if inode else []):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                if f.read() == want:
                    out.append(pid)
        except OSError:
            pass
    return out


def flush(kern: K.Kernel) -> None:
    """The kernel may batch requests (kernel.Kernel): make it finish them."""
    flush = getattr(kern, "flush", None)
    if flush is not None:
        flush()


def _step_of(ops: list, error: KernelError, current: int) -> int:
    """The step that failed: a batched failure names its own operation (`error.op`)."""
    op = getattr(error, "op", None)
    try:
        return ops.index(op) + 1 if op is not None else current
    except ValueError:
        return current


def down(name: str) -> DownResult:
    state = LabState(name)
    with state.lock(wait=True):
        return teardown(state)


def lab_namespaces(state: LabState) -> list[str]:
    """The namespaces of a lab: those its journal names, and any that bears its mark.

    A journal entry is written before its namespace exists; if netlab died in between and somebody
    made a namespace of that name since, it bears no mark of this lab and is left alone. A plain
    file under /run/netns (killed before the mount) is no namespace and goes.
    """
    journal = state.journal().namespaces
    prefix = state.lab + "-"
    known = set(journal)
    others = [ns for ns in K.list_netns() if ns.startswith(prefix) and ns not in known]
    marked = K.marks([ns for ns in journal if K.netns_exists(ns)] + others)
    names = [ns for ns in journal if K.is_unmounted_file(ns) or marked.get(ns) == state.lab]
    names += [ns for ns in others if marked.get(ns) == state.lab and ns not in names]
    return names


def remove_etc(state: LabState, namespaces: list[str]) -> None:
    """The lab's /etc/netns/<ns>/ files: those its journal names (unless that namespace now bears
    another mark: somebody else's), and those of its marked namespaces (after a lost journal).
    Never by a pattern of names."""
    for ns in state.journal().etc:
        if ns in namespaces or not K.netns_exists(ns) or K.mark(ns) == state.lab:
            etcnetns.remove(ns)
    for ns in namespaces:
        if etcnetns.exists(ns):
            etcnetns.remove(ns)


def teardown(state: LabState) -> DownResult:
    result = DownResult(state.lab)
    namespaces = lab_namespaces(state)
    inodes = {K.netns_inode(ns) for ns in namespaces}
    # Every process inside the lab's namespaces, and every process netlab started for the lab
    # (marked in its environment) even if it left them; a recycled pid carries no such mark.
    pids = set(workloads.pids_in(inodes)) | set(workloads.marked(state.lab))
    workloads.stop(pids)
    result.processes = len(pids)
    # Pods wired through CNI: DEL through their chain first, as kubelet does (the plugins clean
    # what they made in the node: iptables rules, IPAM); harmless when that is gone already.
    for record in reversed(state.journal().cni):
        if K.netns_exists(record[0]) and K.mark(record[0]) == state.lab:
            cni_chain.del_record(str(state.dir), record)
    remove_etc(state, namespaces)
    for ns in namespaces:
        K.remove_netns(ns)
    result.namespaces = namespaces
    state.remove()
    return result

"""Pods come and go in a lab that is up: `netlab scale deployment/NAME --replicas N` and
`netlab delete pod/NAME` (a deployment replaces a deleted pod with a new one: new name, new IP).

What runs now is kept in the journal (a `live` line: each deployment's pods with node and address,
the next replica index, the addresses of deleted pods, which are given out last), so every command
that loads the lab (running.load_up) sees the current pods, and `down` still removes everything:
a new pod's namespace is recorded before it is made (the same transaction code as `up`).

One change, in order, as Kubernetes does it:
1. new pods: their namespaces, veths, addresses and processes (lifecycle.transaction; a failure
   removes the new pods only), then a bounded wait until their servers listen (kube-proxy takes
   only ready pods as endpoints);
2. every feature's rules for the new pods (`Feature.reload`: kube-proxy's tables with the new
   endpoints, NetworkPolicy's tables), one `nft -f` transaction per node and table;
3. removed pods: their processes stopped, their namespaces removed (`forget` in the journal);
4. stale UDP conntrack entries deleted in every node, as kube-proxy does after a sync;
   the cluster DNS's records rewritten and its server restarted (runtime/dnsserver.py);
5. the new `live` line.
"""

from __future__ import annotations

import json
import re
import subprocess
import time
from dataclasses import dataclass, field
from typing import Callable, Sequence

from .. import model, plan
from ..core.errors import NetlabError
from ..core.lab import Lab, Pod
from ..core.ops import NftApply, Spawn
from ..features import FEATURES
from ..features import deployments as D
from ..features import kubeproxy, services
from . import kernel as K
from . import dnsserver, lifecycle, running, workloads
from .state import LabState

LOCK_WAIT = 60.0
READY_WAIT = 5.0     # seconds a new pod's server gets to listen before it becomes an endpoint


@dataclass
class ScaleResult:
    lab: Lab                                     # the lab as it is now
    added: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    conntrack_deleted: int = 0


def live_of(lab: Lab, before: dict) -> dict:
    """The `live` record of a lab's deployment pods as they are (keeping `next` and `retired`)."""
    deps = {}
    for d in lab.deployments:
        pods = [[p.name, p.node, p.ip] for p in lab.pods
                if p.deployment == d.name and p.namespace == d.namespace]
        prev = before.get("deployments", {}).get(d.key, {})
        deps[d.key] = {"pods": pods, "next": prev.get("next", len(pods))}
    return {"deployments": deps, "retired": list(before.get("retired", [])),
            "born": dict(before.get("born", {}))}


def _deployment(lab: Lab, name: str):
    """deployment NAME or NAMESPACE/NAME."""
    ns, _, short = name.rpartition("/")
    found = [d for d in lab.deployments if d.name == short and (not ns or d.namespace == ns)]
    if not found:
        known = ", ".join(d.key for d in lab.deployments) or "none"
        raise NetlabError(f"lab {lab.name} has no deployment {name!r} (deployments: {known})")
    if len(found) > 1:
        raise NetlabError(f"deployment {name!r} is in several namespaces: write NAMESPACE/{short}")
    return found[0]


def _add(lab: Lab, live: dict, d, count: int) -> None:
    entry = live["deployments"][d.key]
    nodes = [n.name for n in lab.nodes]
    for _ in range(count):
        i = entry["next"]
        entry["next"] = i + 1
        node = D.next_node(nodes, [p[1] for p in entry["pods"]])
        entry["pods"].append([D.replica_name(d.name, d.namespace, d.template_hash, i), node, None])


def scale(name: str, deployment: str, replicas: int,
          make_kernel: Callable[[], K.Kernel] = K.Kernel) -> ScaleResult:
    """Scale a deployment of lab `name` to `replicas` pods: new ones on the least used nodes, the
    newest ones go first when scaling down."""
    if not 0 <= replicas <= 1000:
        raise NetlabError(f"--replicas {replicas}: use 0-1000")

    def edit(lab: Lab, live: dict) -> None:
        d = _deployment(lab, deployment)
        pods = live["deployments"][d.key]["pods"]
        if replicas > len(pods):
            _add(lab, live, d, replicas - len(pods))
        else:
            for p in pods[replicas:]:
                live["retired"].append(p[2])
            del pods[replicas:]
    return _change(name, edit, make_kernel)


def delete_pod(name: str, pod: str, make_kernel: Callable[[], K.Kernel] = K.Kernel) -> ScaleResult:
    """Delete a deployment's pod; its deployment makes a new one (a new name and address)."""
    def edit(lab: Lab, live: dict) -> None:
        try:
            p = lab.pod(pod)
        except StopIteration:
            raise NetlabError(f"lab {lab.name} has no pod {pod!r}: see `netlab get pods`") from None
        if not p.deployment:
            raise NetlabError(f"pod {pod} is not part of a deployment: netlab deletes only "
                              f"deployment pods (the deployment replaces them); bare pods are "
                              f"the scenario's")
        d = _deployment(lab, f"{p.namespace}/{p.deployment}")
        entry = live["deployments"][d.key]
        entry["pods"] = [q for q in entry["pods"] if q[0] != pod]
        live["retired"].append(p.ip)
        _add(lab, live, d, 1)
    return _change(name, edit, make_kernel)


def _change(name: str, edit: Callable[[Lab, dict], None],
            make_kernel: Callable[[], K.Kernel]) -> ScaleResult:
    state = LabState(name)
    with state.lock(timeout=LOCK_WAIT):
        old = running.load_up(name)
        info = state.info()
        live = live_of(old, state.journal().live)
        edit(old, live)
        new = model.parse(info["text"], info.get("source", "<scenario>"), name, live=live)
        live = live_of(new, live)          # the new pods' addresses are fixed from now on
        before = {p.name for p in old.pods}
        after = {p.name for p in new.pods}
        added = [p for p in new.pods if p.name not in before]
        removed = [p for p in old.pods if p.name not in after]
        live["born"] = {k: v for k, v in live["born"].items() if k in after}
        live["born"].update((p.name, time.time()) for p in added)
        ops = pod_ops(plan.build(new), added)
        # kube-proxy's tables, NetworkPolicy's, ... for the new pods (Feature.reload)
        rules = [op for feature in FEATURES for op in feature.reload(new)]

        def rollback(st: LabState) -> None:
            remove_pods(st, added)
        state.reopen()
        # A scale killed half way left a new pod's namespace (recorded, marked ours): remove it.
        remove_pods(state, [p for p in added if K.netns_exists(p.ns) and K.mark(p.ns) == name])
        lifecycle.transaction(state, ops, f"the new pods of lab {name}", lifecycle._apply,
                              rollback, make_kernel)
        # Like kube-proxy, which takes only ready pods as endpoints: a new pod's servers listen
        # before the rules send it traffic (bounded; a pod that never listens is verify's to name).
        wait_listening(state, added)
        state.reopen()
        lifecycle.transaction(state, rules, f"the kube-proxy rules of lab {name}",
                              lifecycle._apply, rollback, make_kernel)
        state.reopen()
        try:
            remove_pods(state, removed)
            deleted = flush_conntrack(old, new) if new.services else 0
            dnsserver.refresh(state, new, removed)      # the records follow the pods
            state.record("live " + json.dumps(live, separators=(",", ":")))
        finally:
            state.close()
        return ScaleResult(new, [p.name for p in added], [p.name for p in removed], deleted)


def _bound(pid: int, table: str, port: int, state: str) -> bool:
    """Whether the namespace of `pid` has a socket on `port` in this state (/proc/PID/net/...)."""
    want = f":{port:04X}"
    try:
        with open(f"/proc/{pid}/net/{table}") as f:
            return any(len(w) > 3 and w[3] == state and w[1].endswith(want)
                       for w in (line.split() for line in f))
    except OSError:
        return False


def wait_listening(state: LabState, pods: Sequence[Pod], timeout: float = READY_WAIT) -> None:
    """Wait (bounded) until each new pod's declared TCP ports listen and UDP ports are bound."""
    pids = {what.split("/", 1)[0]: pid for pid, what in state.journal().pids.items()}
    waiting = [(pids[p.name], table, port.port, st) for p in pods if p.name in pids
               for port in p.ports
               for table, st in ((("tcp", "0A"),) if port.protocol == "TCP" else (("udp", "07"),))]
    waiting += [(pids[p.name], "tcp", c.port, "0A") for p in pods if p.name in pids
                for c in p.containers if c.port]
    deadline = time.monotonic() + timeout
    while waiting and time.monotonic() < deadline:
        waiting = [w for w in waiting if not _bound(*w)]
        time.sleep(0.01)


def pod_ops(ops: Sequence, pods: Sequence[Pod]) -> list:
    """The operations of a lab's plan that make these pods: their namespaces, everything inside
    them, and their veths' node ends (by interface name in the node's namespace)."""
    nss = {p.ns for p in pods if not p.host_network}
    veths = {(p.host_veth) for p in pods if not p.host_network}
    owners = {p.name for p in pods}
    out = []
    for op in ops:
        if isinstance(op, NftApply):
            continue
        if isinstance(op, Spawn):
            keep = op.owner in owners
        else:
            # A WriteFile (a CNI conflist, the ingress nginx.conf) has no namespace: no pod's.
            keep = getattr(op, "ns", None) in nss or getattr(op, "ifname", None) in veths
        if keep:
            out.append(op)
    return out


def remove_pods(state: LabState, pods: Sequence[Pod]) -> None:
    """Stop the pods' processes and remove their namespaces; the journal forgets them."""
    nss = [p.ns for p in pods if not p.host_network and K.netns_exists(p.ns)]
    inodes = {K.netns_inode(ns) for ns in nss}
    workloads.stop(set(workloads.pids_in(i for i in inodes if i)))
    for ns in nss:
        K.remove_netns(ns)
    for p in pods:
        if not p.host_network:
            state.record(f"forget {p.ns}")


def flush_conntrack(old: Lab, new: Lab) -> int:
    """kube-proxy's stale UDP clean-up, in every node's namespace; how many entries went."""
    argvs = kubeproxy.stale_udp(old.services, services.all_endpoints(old), new.services,
                                services.all_endpoints(new))
    return sum(run_conntrack(n.ns, argv) for n in new.nodes for argv in argvs)


def run_conntrack(ns: str, argv: Sequence[str]) -> int:
    """Run one `conntrack` command inside namespace `ns` (never the root one); return how many
    entries it deleted. conntrack exits 1 when nothing matched: that is not an error."""
    r = subprocess.run(["ip", "netns", "exec", ns, *argv], capture_output=True, text=True,
                       timeout=30)
    text = r.stdout + r.stderr
    m = re.search(r"(\d+) flow entr(?:y has|ies have) been deleted", text)
    if m:
        return int(m.group(1))
    if r.returncode != 0 and "0 flow entries" not in text:
        raise NetlabError(f"`ip netns exec {ns} {' '.join(argv)}` failed: {text.strip()[:300]}")
    return 0

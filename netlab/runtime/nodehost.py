"""One node of a lab on a real host: `netlab up SCENARIO --node NODE --underlay DEV`.

The node's cni0, its pod veths, forwarding, and its routes (host-gw) or vxlan device are made in
the namespace netlab runs in (the host's own: the one place netlab touches it, and only here);
its pods get their own namespaces as usual. The node's IP must already be on the underlay device
(Vagrant's private network puts it there); netlab never adds or removes it.

What is kept on disk is keyed by lab and node (/run/netlab/labs/<lab>@<node>/), so several nodes
of one lab can share a filesystem (the stand-in VMs of the tests). The journal records, before
each change of the host: its links, its routes and each sysctl with its old value, so `down
--node` removes exactly those and puts the sysctls back.
"""

from __future__ import annotations

import dataclasses

from .. import plan
from ..core.errors import KernelError, NetlabError
from ..core.lab import Lab
from . import kernel as K
from . import workloads
from .lifecycle import DownResult, UpResult, flush, transaction
from .state import LabState


def state_name(lab: str, node: str) -> str:
    return plan.node_key(lab, node)


def check_host(lab: Lab, node: str, underlay: str) -> None:
    """Refuse (exit 2, nothing touched) what node mode cannot build on this host."""
    names = [n.name for n in lab.nodes]
    if node not in names:
        raise NetlabError(f"--node {node}: lab {lab.name} has no node '{node}': use one of "
                          f"{', '.join(names)}")
    plan.build_node(lab, node, underlay)   # a feature that cannot be on a real host says so here
    me = lab.node(node)
    addrs = K.here_link_addresses(underlay)
    if addrs is None:
        raise NetlabError(f"--underlay {underlay}: this host has no device {underlay}: name the "
                          f"device that carries {me.ip} (see `ip -br addr`)")
    if me.ip not in addrs:
        raise NetlabError(f"--underlay {underlay}: {underlay} does not have {node}'s address "
                          f"{me.ip} (it has {', '.join(addrs) or 'no IPv4 address'}): give the "
                          f"host that address first (Vagrant's private network does), or run on "
                          f"the host that has it")


_LINK_OPS = (plan.BridgeAdd, plan.VethAdd, plan.VxlanAdd)   # the ops that add a link


def _host_links(ops: list) -> list[str]:
    return [op.ifname for op in ops if isinstance(op, _LINK_OPS) and op.ns == plan.HERE]


def up(lab: Lab, node: str, underlay: str) -> UpResult:
    check_host(lab, node, underlay)
    state = LabState(state_name(lab.name, node))
    ops = plan.build_node(lab, node, underlay)
    with state.lock():
        result = UpResult(lab)
        if state.exists():
            if state.journal().complete and state.info().get("text") == lab.text:
                result.already_up = True
                return result
            if state.journal().complete:
                raise KernelError(f"node {node} of lab {lab.name} is already up from another "
                                  f"scenario: `sudo netlab down {lab.name} --node {node}` first")
            _teardown(state)
            result.cleaned_leftovers = True
        taken = [n for n in _host_links(ops) if K.here_link_exists(n)]
        if taken:
            raise NetlabError(f"--node: this host already has a link {taken[0]}: another lab or "
                              f"CNI uses it; remove it (ip link del {taken[0]}) or use another host")
        busy = [op.ns for op in ops if isinstance(op, plan.NetnsAdd) and K.netns_exists(op.ns)]
        if busy:
            raise K.NetnsExists(busy[0])
        state.begin(lab.source, lab.text)
        transaction(state, ops, f"node {node} of lab {lab.name}", _apply, _teardown)
        result.operations = len(ops)
        return result


def _apply(kern: K.Kernel, state: LabState, op: plan.Op) -> None:
    """Apply one op, recording first whatever it will change (write-ahead)."""
    if isinstance(op, plan.NetnsAdd):
        state.record(f"netns {op.ns}")
    elif isinstance(op, plan.Spawn):
        flush(kern)
        pid = workloads.spawn(op.ns, op.argv, state.log_path(op.owner, op.name), state.lab)
        state.record(f"pid {pid} {op.owner}/{op.name}")
        return
    elif op.ns == plan.HERE:
        record = f"link {op.ifname}" if isinstance(op, _LINK_OPS) else \
            f"route {op.dst} {op.via} {op.dev}" if isinstance(op, plan.RouteAdd) else None
        if isinstance(op, plan.Sysctl):
            state.record(f"sysctl {op.key} {K.here_sysctl(op.key)}")
        if record:
            state.record(record)
            try:
                kern.apply(op)   # never batched (HERE has no batch socket): done or failed now
            except BaseException:
                # Not made by this request (a route the host already had: EEXIST): not ours.
                state.record(f"forget {record}")
                raise
            return
    kern.apply(op)


def down(lab: str, node: str) -> DownResult:
    state = LabState(state_name(lab, node))
    with state.lock(wait=True):
        return _teardown(state)


def _teardown(state: LabState) -> DownResult:
    result = DownResult(state.lab)
    journal = state.journal()
    namespaces = [ns for ns in journal.namespaces if K.netns_exists(ns)]
    inodes = {K.netns_inode(ns) for ns in namespaces}
    # Processes inside the node's pods, and those netlab started for this node (in the host's
    # namespace too: never every process of the host's namespace).
    pids = set(workloads.pids_in(inodes)) | set(workloads.marked(state.lab))
    workloads.stop(pids)
    result.processes = len(pids)
    links, routes, sysctls = journal.links, journal.routes, journal.sysctls
    for dst, via, dev in reversed(routes):
        K.here_delete_route(dst, via, dev)
    for name in reversed(links):
        K.here_delete_link(name)
    for ns in namespaces:
        K.remove_netns(ns)
    for key, old in sysctls.items():
        K.here_sysctl(key, old)
    result.namespaces = namespaces
    state.remove()
    return result


def local_lab(lab: Lab, node: str) -> Lab:
    """The lab as seen from the host of `node`: that node's namespace is HERE."""
    nodes = tuple(dataclasses.replace(n, ns=plan.HERE) if n.name == node else n for n in lab.nodes)
    return dataclasses.replace(lab, nodes=nodes)


def local_view(lab: Lab, node: str) -> Lab:
    """What `show`, `exec` and `status` see of a node on this host: the lab named <lab>@<node>
    (its state here), that node HERE, only its pods."""
    # The other nodes are other hosts: no namespace of theirs here ("-").
    nodes = tuple(n if n.name == node else dataclasses.replace(n, ns="-")
                  for n in local_lab(lab, node).nodes)
    return dataclasses.replace(lab, name=state_name(lab.name, node), nodes=nodes,
                               pods=lab.pods_on(node))

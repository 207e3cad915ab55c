"""`netlab cni [LAB] add|del|check POD`: run the lab's CNI plugin chain by hand for one pod, as
kubelet's runtime would, and print each request (environment and stdin JSON, as a command that
runs as it is) and its answer: the cnitool of the lesson (Debian ships none)."""

from __future__ import annotations

import json
import sys
from typing import List

import typer

from ..core.errors import NetlabError
from ..core.lab import state_dir
from ..runtime import state
from .console import need_root


def cni(args: List[str] = typer.Argument(..., metavar="[LAB] add|del|check POD",
                                         help="The verb and the pod (LAB when several are up)."),
        ) -> None:
    """Run the lab's CNI chain for one pod (ADD, DEL or CHECK) and show requests and results."""
    need_root("cni")
    if len(args) not in (2, 3):
        raise NetlabError("usage: netlab cni [LAB] add|del|check POD")
    name = state.only_lab(args[0] if len(args) == 3 else None)
    verb, pod_name = args[-2].lower(), args[-1]
    if verb not in ("add", "del", "check"):
        raise NetlabError(f"netlab cni: {verb!r}: use add, del or check")
    from ..features import cni as feature
    from ..runtime import cni_chain as chain
    from ..runtime import running
    lab = running.load_up(name)
    if not lab.cni.plugins:
        raise NetlabError(f"lab {name} wires its pods itself (network.cni: builtin): bring up a "
                          f"lab with `cni: netlab` or `cni: reference` under network:")
    pod = next((p for p in lab.pods if p.name == pod_name and not p.host_network), None)
    if pod is None:
        known = ", ".join(p.name for p in lab.pods if not p.host_network)
        raise NetlabError(f"lab {name} has no pod '{pod_name}' on a CNI network: use one of {known}")
    op = feature.cni_add(lab, pod)
    conflist = json.loads(open(op.conflist).read())
    env = dict(op.calls[0][0])
    caps = json.loads(op.calls[0][2]).get("runtimeConfig", {})
    sd = state_dir(lab.name)
    prev = chain.load_result(sd, conflist["name"], op.container_id, op.ifname)
    netns = f"/run/netns/{pod.ns}"
    print(f"# {verb.upper()} of pod {pod.name} through {op.conflist}, plugins run in {op.node_ns}")
    if verb == "add" and prev is not None:
        # A second ADD fails in the plugin, and the runtime then DELs the chain (as kubelet does):
        # the pod would lose the network it has. Say so instead.
        raise NetlabError(f"pod {pod.name} already has its network (its ADD result is kept in "
                          f"{sd}): `netlab cni {name} del {pod.name}` first")
    try:
        if verb == "add":
            done = chain.add(conflist, op.container_id, netns, op.ifname, op.node_ns,
                             cni_args=env.get("CNI_ARGS", ""), capability_args=caps)
            chain.save_result(sd, conflist["name"], op.container_id, op.ifname, done.result)
        elif verb == "del":
            done = chain.delete(conflist, op.container_id, netns, op.ifname, op.node_ns, prev,
                                cni_args=env.get("CNI_ARGS", ""), capability_args=caps)
            chain.drop_result(sd, conflist["name"], op.container_id, op.ifname)
        else:
            if prev is None:
                raise NetlabError(f"pod {pod.name} has no ADD result kept (was it DEL'd?): "
                                  f"`netlab cni {name} add {pod.name}` first")
            done = chain.check(conflist, op.container_id, netns, op.ifname, op.node_ns, prev,
                               cni_args=env.get("CNI_ARGS", ""), capability_args=caps)
    except chain.ChainError as e:
        for call in e.calls:
            print(chain.render_call(call) + "\n")
        raise
    for call in done.calls:
        print(chain.render_call(call) + "\n")
    if done.result is not None:
        print("# the result kubelet's runtime keeps:")
        json.dump(done.result, sys.stdout, indent=2)
        print()
    print(f"# {verb.upper()} of {pod.name}: done")

"""netlab-cni: a CNI plugin executable (spec 1.0.0 and 1.1.0), run as kubelet's runtime runs one.

The runtime starts it INSIDE the node's network namespace (`ip netns exec <node-ns> netlab-cni`)
with the request in the environment (CNI_COMMAND, CNI_CONTAINERID, CNI_NETNS, CNI_IFNAME,
CNI_ARGS, CNI_PATH) and the network configuration JSON on stdin (see cni_request).

ADD makes a veth: one end in the node's namespace (named from the container id), enslaved to the
bridge (made, with the gateway address on it, if absent: the reference bridge plugin's isGateway),
the other end straight inside CNI_NETNS named CNI_IFNAME, with an address from the IPAM and a
default route via the gateway. It prints the spec's result JSON. DEL undoes it and always succeeds
(even for a container it never saw, or a namespace that is gone). CHECK compares the kernel with
prevResult. STATUS and GC (1.1.0) report free addresses and drop stale allocations.

This module holds the verbs, `run` (one invocation: environment and stdin in, exit code and JSON
out) and `main`, the console entry point (also `python -m netlab.runtime.cni_plugin`). The parts:
  cni_request  the request and the configuration, parsed and validated; the errors (pure)
  cni_ipam     the IPAM over a dict (pure) and its state on disk, under an flock
  cni_result   the ADD result and CHECK's comparison with the kernel (pure)
  cni_netlink  the kernel part: rtnetlink over a plain socket (no pyroute2)
Their public names are importable from here too, so a caller needs one module.
"""

from __future__ import annotations

import json
import os
import sys
from typing import Mapping, Optional

from .cni_ipam import (attachment_key, ipam_allocate, ipam_free, ipam_gc,  # noqa: F401
                       ipam_release, locked_state, pool)
from .cni_netlink import Netlink
from .cni_request import (COMMANDS, E_ALREADY_ADDED, E_DECODE, E_DRIFT,  # noqa: F401
                          E_HOST_NAMESPACE, E_INCOMPATIBLE_VERSION, E_INTERNAL, E_INVALID_CONFIG,
                          E_INVALID_ENV, E_IO, E_KERNEL, E_NO_ADDRESS, E_NOT_AVAILABLE,
                          E_TRY_AGAIN, E_UNKNOWN_CONTAINER, E_UNSUPPORTED_FIELD, LATEST,
                          SUPPORTED_VERSIONS, CniError, NetConf, Request, check_version,
                          config_address, decode, host_veth_name, parse_cni_args, parse_config,
                          parse_env, valid_ifname, version_key)
from .cni_result import Attachment, Expected, build_result, drift, expected_from  # noqa: F401

NETNS_DIR = "/run/netns"


# ---------------------------------------------------------------- the verbs

def cmd_version(data: dict) -> dict:
    version = data.get("cniVersion", LATEST)
    return {"cniVersion": version if version in SUPPORTED_VERSIONS else LATEST,
            "supportedVersions": SUPPORTED_VERSIONS}


def _record(req: Request) -> dict:
    rec = {"containerID": req.container_id, "ifname": req.ifname,
           "hostVeth": host_veth_name(req.container_id, req.ifname)}
    args = dict(req.args)
    if "K8S_POD_NAME" in args:
        rec["pod"] = f"{args.get('K8S_POD_NAMESPACE', 'default')}/{args['K8S_POD_NAME']}"
    return rec


def _refuse_host_namespace() -> None:
    # This plugin belongs in a node's namespace; in the machine's own one it would add a bridge,
    # addresses and a sysctl to the real host. So it runs only where the current namespace is one
    # of the named ones (/run/netns/*), and fails closed when it cannot tell. A user who runs a
    # node on a real host says so explicitly.
    if os.environ.get("NETLAB_CNI_ALLOW_HOST") == "1":
        return
    try:
        here = os.stat("/proc/thread-self/ns/net")
        named = os.listdir(NETNS_DIR)
    except OSError:
        named, here = [], None
    for name in named:
        try:
            st = os.stat(os.path.join(NETNS_DIR, name))
        except OSError:
            continue
        if here is not None and (st.st_dev, st.st_ino) == (here.st_dev, here.st_ino):
            return
    raise CniError(E_HOST_NAMESPACE, "refusing to run outside a named network namespace",
                   "run it inside the node's: ip netns exec <node-ns> netlab-cni "
                   "(or set NETLAB_CNI_ALLOW_HOST=1 for a node that is a real host)")


def cmd_add(req: Request, conf: NetConf) -> dict:
    _refuse_host_namespace()
    if not os.path.exists(req.netns):
        raise CniError(E_UNKNOWN_CONTAINER, "the container's network namespace does not exist",
                       req.netns)
    key = attachment_key(req.container_id, req.ifname)
    with locked_state(conf) as holder:
        requested = conf.requested_ip or dict(req.args).get("IP")
        if requested is not None:
            requested = str(config_address(requested.split("/")[0], "CNI_ARGS IP"))
        state, ip = ipam_allocate(holder["state"], conf, key, _record(req), requested)
        nl = Netlink()
        if nl.link_exists(host_veth_name(req.container_id, req.ifname)):
            raise CniError(E_ALREADY_ADDED, "container already added to this network",
                           f"{host_veth_name(req.container_id, req.ifname)} exists")
        holder["state"] = state       # recorded before the kernel objects are made
        try:
            att = nl.attach(conf, req, ip)
        except BaseException:
            nl.detach(host_veth_name(req.container_id, req.ifname))
            holder["state"], _ = ipam_release(state, key)
            raise
    return build_result(conf, att)


def cmd_del(req: Request, conf: NetConf) -> None:
    _refuse_host_namespace()
    key = attachment_key(req.container_id, req.ifname)
    with locked_state(conf) as holder:
        holder["state"], _ = ipam_release(holder["state"], key)
        # The veth is removed with either end; if the pod's namespace is gone, so is the veth.
        Netlink().detach(host_veth_name(req.container_id, req.ifname))


def cmd_check(req: Request, conf: NetConf) -> None:
    _refuse_host_namespace()
    exp = expected_from(conf, req)
    if not os.path.exists(req.netns):
        raise CniError(E_UNKNOWN_CONTAINER, "the container's network namespace does not exist",
                       req.netns)
    with locked_state(conf) as holder:
        rec = holder["state"].get("allocations", {}).get(attachment_key(req.container_id, req.ifname))
    nl = Netlink()
    problems = drift(exp, nl.observe_pod(req.netns, req.ifname), rec and rec["ip"])
    host = host_veth_name(req.container_id, req.ifname)
    if not nl.link_exists(host):
        problems.append(f"node-side veth {host} is missing")
    elif nl.master_of(host) != conf.bridge:
        problems.append(f"node-side veth {host} is not in bridge {conf.bridge}")
    if problems:
        raise CniError(E_DRIFT, "the container's network is not as ADD left it", "; ".join(problems))


def _needs_1_1(conf_version: str, verb: str) -> None:
    if version_key(conf_version) < (1, 1, 0):
        raise CniError(E_INCOMPATIBLE_VERSION, f"config version does not allow {verb}",
                       f"{verb} needs cniVersion 1.1.0, the config says {conf_version}")


def cmd_status(conf: NetConf) -> None:
    _needs_1_1(conf.cni_version, "STATUS")
    with locked_state(conf) as holder:
        free = ipam_free(holder["state"], conf)
    if free == 0:
        raise CniError(E_NOT_AVAILABLE, "plugin not available: no free address",
                       f"{conf.range_start}-{conf.range_end} is full")


def cmd_gc(conf: NetConf) -> None:
    _needs_1_1(conf.cni_version, "GC")
    _refuse_host_namespace()
    valid = {attachment_key(c, i) for c, i in (conf.valid_attachments or ())}
    with locked_state(conf) as holder:
        holder["state"], dropped = ipam_gc(holder["state"], valid)
        if dropped:
            nl = Netlink()
            for rec in dropped:
                nl.detach(rec.get("hostVeth") or host_veth_name(rec["containerID"], rec["ifname"]))


def run(env: Mapping[str, str], stdin: bytes) -> tuple[int, Optional[dict]]:
    """One plugin invocation: (exit code, JSON to print or None). Never raises a CniError."""
    version = LATEST
    try:
        req = parse_env(env)
        data = decode(stdin)
        if req.command == "VERSION":
            return 0, cmd_version(data)
        version = data.get("cniVersion", version) if isinstance(data.get("cniVersion"), str) else version
        conf = parse_config(data)
        if req.command == "ADD":
            return 0, cmd_add(req, conf)
        if req.command == "DEL":
            cmd_del(req, conf)
        elif req.command == "CHECK":
            cmd_check(req, conf)
        elif req.command == "STATUS":
            cmd_status(conf)
        elif req.command == "GC":
            cmd_gc(conf)
        return 0, None
    except CniError as e:
        return 1, e.to_json(version if version in SUPPORTED_VERSIONS else LATEST)
    except Exception as e:      # still the spec's error JSON, never a bare traceback
        err = CniError(E_INTERNAL, "netlab-cni failed", f"{type(e).__name__}: {e}")
        return 1, err.to_json(version if version in SUPPORTED_VERSIONS else LATEST)


def main() -> None:
    code, out = run(os.environ, sys.stdin.buffer.read())
    if out is not None:
        sys.stdout.write(json.dumps(out, indent=2) + "\n")
    sys.exit(code)



if __name__ == "__main__":
    main()

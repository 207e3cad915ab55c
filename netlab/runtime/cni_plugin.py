"""netlab-cni: a CNI plugin executable (spec 1.0.0 and 1.1.0), run as kubelet's runtime runs one.

The runtime starts it INSIDE the node's network namespace (`ip netns exec <node-ns> netlab-cni`)
with the request in the environment (CNI_COMMAND, CNI_CONTAINERID, CNI_NETNS, CNI_IFNAME,
CNI_ARGS, CNI_PATH) and the network configuration JSON on stdin:

    {"cniVersion": "1.0.0", "name": "netlab", "type": "netlab-cni", "bridge": "cni0", "mtu": 1500,
     "ipam": {"subnet": "10.244.1.0/24", "gateway": "10.244.1.1",
              "dataDir": "/run/netlab/labs/<lab>/cni"}}

ADD makes a veth: one end in the node's namespace (named from the container id), enslaved to the
bridge (made, with the gateway address on it, if absent: the reference bridge plugin's isGateway),
the other end straight inside CNI_NETNS named CNI_IFNAME, with an address from the IPAM and a
default route via the gateway. It prints the spec's result JSON. DEL undoes it and always succeeds
(even for a container it never saw, or a namespace that is gone). CHECK compares the kernel with
prevResult. STATUS and GC (1.1.0) report free addresses and drop stale allocations.

The IPAM state is one JSON file per network in dataDir, under an flock on its directory (never
/var/lib/cni, so two labs never share it); it is removed when the last allocation is released.

Layout: the pure part (request and config parsing, errors, IPAM over a dict, result building)
comes first and is unit-tested without root; the part that touches the kernel is the `_Netlink`
section at the end (rtnetlink requests built by netlab.nlmsg over a plain socket, no pyroute2).
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import fcntl
import hashlib
import ipaddress
import json
import os
import re
import socket
import struct
import sys
from dataclasses import dataclass, field
from typing import Iterator, Mapping, Optional

from . import nlmsg
from .batch import open_socket

SUPPORTED_VERSIONS = ["1.0.0", "1.1.0"]
LATEST = SUPPORTED_VERSIONS[-1]

# The spec's well-known error codes.
E_INCOMPATIBLE_VERSION = 1
E_UNSUPPORTED_FIELD = 2
E_UNKNOWN_CONTAINER = 3
E_INVALID_ENV = 4
E_IO = 5
E_DECODE = 6
E_INVALID_CONFIG = 7
E_TRY_AGAIN = 11
E_NOT_AVAILABLE = 50            # STATUS: the plugin cannot serve ADD now (1.1.0)
# netlab-cni's own codes (the spec leaves 100 and up to plugins).
E_ALREADY_ADDED = 100           # ADD for a container+ifname that is already attached
E_NO_ADDRESS = 101              # the subnet has no free address
E_DRIFT = 102                   # CHECK: the kernel is not what prevResult says
E_HOST_NAMESPACE = 103          # refused: running in the machine's own (init) namespace
E_KERNEL = 104                  # a netlink request failed
E_INTERNAL = 999                # anything else (the reference plugins' catch-all code too)

COMMANDS = ("ADD", "DEL", "CHECK", "VERSION", "STATUS", "GC")
NETNS_DIR = "/run/netns"

# Keys a runtime may send besides netlab-cni's own (libcni injects name, cniVersion, prevResult,
# runtimeConfig; args, capabilities and dns are well-known).
_KNOWN_KEYS = {"cniVersion", "cniVersions", "name", "type", "args", "capabilities", "runtimeConfig",
               "prevResult", "dns", "ipMasq", "cni.dev/valid-attachments", "cni.dev/attachments",
               "bridge", "mtu", "ipam"}
_IPAM_KEYS = {"type", "subnet", "gateway", "dataDir", "rangeStart", "rangeEnd"}
_CONTAINER_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$")
_NETWORK_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$")


class CniError(Exception):
    """An error the plugin reports as the spec's error JSON (and a non-zero exit)."""

    def __init__(self, code: int, msg: str, details: str = ""):
        super().__init__(msg)
        self.code, self.msg, self.details = code, msg, details

    def to_json(self, cni_version: str = LATEST) -> dict:
        out = {"cniVersion": cni_version, "code": self.code, "msg": self.msg}
        if self.details:
            out["details"] = self.details
        return out


# ---------------------------------------------------------------- the request (pure)

@dataclass(frozen=True)
class Request:
    """What the runtime passed in the environment."""
    command: str
    container_id: str = ""
    netns: str = ""
    ifname: str = ""
    args: tuple[tuple[str, str], ...] = ()
    path: tuple[str, ...] = ()


# Which variables each verb needs (as the reference plugins' skel asks for them).
_REQUIRED = {
    "ADD": ("CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME", "CNI_PATH"),
    "CHECK": ("CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME", "CNI_PATH"),
    "DEL": ("CNI_CONTAINERID", "CNI_IFNAME", "CNI_PATH"),
    "GC": ("CNI_PATH",),
    "STATUS": ("CNI_PATH",),
    "VERSION": (),
}


def parse_cni_args(text: str) -> tuple[tuple[str, str], ...]:
    """CNI_ARGS "K8S_POD_NAME=web;IgnoreUnknown=1" as pairs; a malformed one is error 4."""
    pairs = []
    for item in filter(None, text.split(";")):
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise CniError(E_INVALID_ENV, "invalid CNI_ARGS", f"{item!r} is not KEY=VALUE")
        pairs.append((key, value))
    return tuple(pairs)


def valid_ifname(name: str) -> bool:
    """Linux interface name rules, as the spec restates them for CNI_IFNAME."""
    return (0 < len(name) < 16 and name not in (".", "..")
            and not any(c in name for c in "/:") and not any(c.isspace() for c in name))


def parse_env(env: Mapping[str, str]) -> Request:
    """The request from the environment; a missing or invalid variable is error 4."""
    command = env.get("CNI_COMMAND", "")
    if command not in COMMANDS:
        raise CniError(E_INVALID_ENV, "invalid CNI_COMMAND",
                       f"{command!r} is not one of {', '.join(COMMANDS)}")
    missing = [v for v in _REQUIRED[command] if not env.get(v)]
    if missing:
        raise CniError(E_INVALID_ENV, f"required env variables [{','.join(missing)}] missing")
    cid, ifname = env.get("CNI_CONTAINERID", ""), env.get("CNI_IFNAME", "")
    if cid and not _CONTAINER_ID.match(cid):
        raise CniError(E_INVALID_ENV, "invalid CNI_CONTAINERID",
                       f"{cid!r}: must start with a letter or digit, then letters, digits, _ . -")
    if ifname and not valid_ifname(ifname):
        raise CniError(E_INVALID_ENV, "invalid CNI_IFNAME", f"{ifname!r} is not an interface name")
    return Request(command=command, container_id=cid, netns=env.get("CNI_NETNS", ""),
                   ifname=ifname, args=parse_cni_args(env.get("CNI_ARGS", "")),
                   path=tuple(filter(None, env.get("CNI_PATH", "").split(":"))))


# ---------------------------------------------------------------- the configuration (pure)

@dataclass(frozen=True)
class NetConf:
    """A validated network configuration."""
    cni_version: str
    name: str
    bridge: str
    mtu: int
    subnet: ipaddress.IPv4Network
    gateway: ipaddress.IPv4Address
    data_dir: str
    range_start: ipaddress.IPv4Address
    range_end: ipaddress.IPv4Address
    dns: dict = field(default_factory=dict)
    prev_result: Optional[dict] = None
    valid_attachments: Optional[tuple[tuple[str, str], ...]] = None
    requested_ip: Optional[str] = None     # runtimeConfig.ips (the "ips" capability)


def version_key(v: str) -> tuple[int, ...]:
    try:
        return tuple(int(p) for p in v.split("."))
    except ValueError:
        return (0,)


def decode(stdin: bytes) -> dict:
    """The stdin JSON as a dict; anything else is error 6."""
    try:
        data = json.loads(stdin or b"{}")
    except (ValueError, UnicodeDecodeError) as e:
        raise CniError(E_DECODE, "failed to decode the network configuration", str(e)) from None
    if not isinstance(data, dict):
        raise CniError(E_DECODE, "failed to decode the network configuration",
                       "the configuration must be a JSON object")
    return data


def check_version(data: dict) -> str:
    """The config's cniVersion when this plugin speaks it; else error 1 (absent means 0.1.0)."""
    version = data.get("cniVersion", "0.1.0")
    if version not in SUPPORTED_VERSIONS:
        raise CniError(E_INCOMPATIBLE_VERSION, "incompatible CNI versions",
                       f"config is {json.dumps(version)}, plugin supports {json.dumps(SUPPORTED_VERSIONS)}")
    return version


def _invalid(what: str) -> CniError:
    return CniError(E_INVALID_CONFIG, "invalid network configuration", what)


def _address(value, key: str) -> ipaddress.IPv4Address:
    try:
        return ipaddress.IPv4Address(value)
    except (ipaddress.AddressValueError, ValueError, TypeError):
        raise _invalid(f"ipam.{key} {json.dumps(value)} is not an IPv4 address") from None


def parse_config(data: dict) -> NetConf:
    """Validate a decoded configuration: version (1), unknown fields (2), the rest (7)."""
    version = check_version(data)
    for key in data:
        if key not in _KNOWN_KEYS:
            raise CniError(E_UNSUPPORTED_FIELD, "unsupported field in network configuration",
                           f"{key}: {json.dumps(data[key])}")
    name = data.get("name")
    if not isinstance(name, str) or not _NETWORK_NAME.match(name):
        raise _invalid(f"name {json.dumps(name)}: a network name of letters, digits, _ . -")
    bridge = data.get("bridge", "cni0")
    if not isinstance(bridge, str) or not valid_ifname(bridge):
        raise _invalid(f"bridge {json.dumps(bridge)} is not an interface name")
    mtu = data.get("mtu", 1500)
    if not isinstance(mtu, int) or isinstance(mtu, bool) or not 68 <= mtu <= 65535:
        raise _invalid(f"mtu {json.dumps(mtu)}: an integer from 68 to 65535")
    ipam = data.get("ipam")
    if not isinstance(ipam, dict):
        raise _invalid("ipam: a section with subnet, gateway and dataDir is required")
    for key in ipam:
        if key not in _IPAM_KEYS:
            raise CniError(E_UNSUPPORTED_FIELD, "unsupported field in network configuration",
                           f"ipam.{key}: {json.dumps(ipam[key])}")
    try:
        subnet = ipaddress.IPv4Network(ipam.get("subnet"))
    except (ipaddress.AddressValueError, ipaddress.NetmaskValueError, ValueError, TypeError):
        raise _invalid(f"ipam.subnet {json.dumps(ipam.get('subnet'))} is not an IPv4 network "
                       "(host bits must be zero)") from None
    if subnet.num_addresses < 4:
        raise _invalid(f"ipam.subnet {subnet} is too small: /30 at most")
    hosts = (subnet.network_address + 1, subnet.broadcast_address - 1)
    gateway = _address(ipam.get("gateway", str(hosts[0])), "gateway")
    if not hosts[0] <= gateway <= hosts[1]:
        raise _invalid(f"ipam.gateway {gateway} is not a host address of {subnet}")
    start = _address(ipam.get("rangeStart", str(hosts[0])), "rangeStart")
    end = _address(ipam.get("rangeEnd", str(hosts[1])), "rangeEnd")
    if not hosts[0] <= start <= end <= hosts[1]:
        raise _invalid(f"ipam range {start}-{end} is not inside the host addresses of {subnet}")
    data_dir = ipam.get("dataDir")
    if not isinstance(data_dir, str) or not os.path.isabs(data_dir):
        raise _invalid(f"ipam.dataDir {json.dumps(data_dir)}: an absolute path "
                       "(the lab's state, never /var/lib/cni)")
    if ipam.get("type", "netlab-cni") != "netlab-cni":
        raise _invalid(f"ipam.type {json.dumps(ipam['type'])}: netlab-cni has its own IPAM "
                       "(leave type out)")
    dns = data.get("dns", {})
    if not isinstance(dns, dict):
        raise _invalid("dns must be an object")
    prev = data.get("prevResult")
    if prev is not None and not isinstance(prev, dict):
        raise _invalid("prevResult must be an object")
    attachments = data.get("cni.dev/valid-attachments", data.get("cni.dev/attachments"))
    valid = None
    if attachments is not None:
        try:
            valid = tuple((a["containerID"], a["ifname"]) for a in attachments)
        except (TypeError, KeyError):
            raise _invalid("cni.dev/valid-attachments: a list of {containerID, ifname}") from None
    requested = None
    runtime = data.get("runtimeConfig", {})
    ips = runtime.get("ips") if isinstance(runtime, dict) else None
    if ips:
        if not isinstance(ips, list) or len(ips) != 1 or not isinstance(ips[0], str):
            raise _invalid(f"runtimeConfig.ips {json.dumps(ips)}: one IPv4 address")
        requested = str(_address(ips[0].split("/")[0], "runtimeConfig.ips"))
    return NetConf(cni_version=version, name=name, bridge=bridge, mtu=mtu, subnet=subnet,
                   gateway=gateway, data_dir=data_dir, range_start=start, range_end=end, dns=dns,
                   prev_result=prev, valid_attachments=valid, requested_ip=requested)


def host_veth_name(container_id: str, ifname: str) -> str:
    """The node-side veth name: stable from the attachment, so DEL finds it without the netns."""
    return "veth" + hashlib.sha1(f"{container_id}/{ifname}".encode()).hexdigest()[:8]


# ---------------------------------------------------------------- IPAM over a dict (pure)
#
# state = {"allocations": {"<containerID>/<ifname>": {"ip": ..., "containerID": ..., "ifname": ...,
#          "hostVeth": ..., ...}}, "last": "<the last address handed out>"}
# Addresses go round-robin from the last one handed out (as host-local does), so a released
# address is not handed straight back to the next pod while conntrack may still remember it.

def attachment_key(container_id: str, ifname: str) -> str:
    return f"{container_id}/{ifname}"


def pool(conf: NetConf) -> list[ipaddress.IPv4Address]:
    """The addresses IPAM may hand out: the range, minus the gateway."""
    first, last = int(conf.range_start), int(conf.range_end)
    return [ipaddress.IPv4Address(i) for i in range(first, last + 1)
            if ipaddress.IPv4Address(i) != conf.gateway]


def ipam_allocate(state: dict, conf: NetConf, key: str, record: dict,
                  requested: Optional[str] = None) -> tuple[dict, str]:
    """A new state with `key` holding the requested address, or else the next free one;
    returns (state, "a.b.c.d")."""
    allocations = state.get("allocations", {})
    if key in allocations:
        raise CniError(E_ALREADY_ADDED, "container already added to this network",
                       f"{key} holds {allocations[key]['ip']}: DEL it first")
    used = {a["ip"] for a in allocations.values()}
    addresses = pool(conf)
    if requested is not None:
        if ipaddress.IPv4Address(requested) not in addresses:
            raise CniError(E_NO_ADDRESS, "requested address not available",
                           f"{requested} is not in {conf.range_start}-{conf.range_end} "
                           f"(or is the gateway)")
        if requested in used:
            owner = next(k for k, a in allocations.items() if a["ip"] == requested)
            raise CniError(E_NO_ADDRESS, "requested address not available",
                           f"{requested} is held by {owner}")
        new = dict(allocations)
        new[key] = {**record, "ip": requested}
        return {**state, "allocations": new}, requested
    last = state.get("last")
    start = 0
    if last is not None and ipaddress.IPv4Address(last) in addresses:
        start = addresses.index(ipaddress.IPv4Address(last)) + 1
    for i in range(len(addresses)):
        ip = str(addresses[(start + i) % len(addresses)])
        if ip not in used:
            new = dict(allocations)
            new[key] = {**record, "ip": ip}
            return {"allocations": new, "last": ip}, ip
    raise CniError(E_NO_ADDRESS, "no free address",
                   f"all {len(addresses)} addresses of {conf.range_start}-{conf.range_end} are taken")


def ipam_release(state: dict, key: str) -> tuple[dict, Optional[dict]]:
    """A new state without `key`; returns (state, the released record or None)."""
    allocations = dict(state.get("allocations", {}))
    gone = allocations.pop(key, None)
    return {**state, "allocations": allocations}, gone


def ipam_gc(state: dict, valid: set[str]) -> tuple[dict, list[dict]]:
    """A new state keeping only the attachments in `valid`; returns (state, the dropped records)."""
    allocations = state.get("allocations", {})
    keep = {k: v for k, v in allocations.items() if k in valid}
    dropped = [v for k, v in allocations.items() if k not in valid]
    return {**state, "allocations": keep}, dropped


def ipam_free(state: dict, conf: NetConf) -> int:
    """How many addresses are still free."""
    used = {a["ip"] for a in state.get("allocations", {}).values()}
    return sum(1 for ip in pool(conf) if str(ip) not in used)


# ---------------------------------------------------------------- results (pure)

@dataclass(frozen=True)
class Attachment:
    """What ADD made, as the kernel reported it."""
    bridge: str
    bridge_mac: str
    host_veth: str
    host_mac: str
    ifname: str
    mac: str
    netns: str
    ip: str


def build_result(conf: NetConf, att: Attachment) -> dict:
    """The ADD result: interfaces (bridge, node-side veth, pod-side with sandbox), ips, routes,
    dns; merged after the prevResult's (their interface indexes shift by its interfaces)."""
    prev = conf.prev_result or {}
    interfaces = list(prev.get("interfaces", []))
    base = len(interfaces)
    pod_if = {"name": att.ifname, "mac": att.mac, "sandbox": att.netns}
    if version_key(conf.cni_version) >= (1, 1, 0):
        pod_if["mtu"] = conf.mtu
    interfaces += [{"name": att.bridge, "mac": att.bridge_mac},
                   {"name": att.host_veth, "mac": att.host_mac}, pod_if]
    ips = list(prev.get("ips", [])) + [{
        "address": f"{att.ip}/{conf.subnet.prefixlen}", "gateway": str(conf.gateway),
        "interface": base + 2}]
    routes = list(prev.get("routes", [])) + [{"dst": "0.0.0.0/0", "gw": str(conf.gateway)}]
    dns = conf.dns or prev.get("dns") or {}
    return {"cniVersion": conf.cni_version, "interfaces": interfaces, "ips": ips,
            "routes": routes, "dns": dns}


@dataclass(frozen=True)
class Expected:
    """What CHECK looks for, read from prevResult."""
    ifname: str
    mac: str
    address: str                 # "10.244.1.2/24"
    gateway: str
    default_route: bool


def expected_from(conf: NetConf, req: Request) -> Expected:
    """The interface of this request in prevResult and its address; error 7 if it is not there."""
    prev = conf.prev_result
    if prev is None:
        raise _invalid("CHECK needs prevResult (the result of the ADD)")
    interfaces = prev.get("interfaces", [])
    mine = [i for i, itf in enumerate(interfaces)
            if itf.get("name") == req.ifname and itf.get("sandbox") == req.netns]
    if not mine:
        raise _invalid(f"prevResult has no interface {req.ifname} in {req.netns}")
    ips = [ip for ip in prev.get("ips", []) if ip.get("interface") == mine[0]]
    if not ips:
        raise _invalid(f"prevResult has no address on {req.ifname}")
    routes = prev.get("routes", [])
    return Expected(ifname=req.ifname, mac=interfaces[mine[0]].get("mac", ""),
                    address=ips[0]["address"], gateway=ips[0].get("gateway", str(conf.gateway)),
                    default_route=any(r.get("dst") == "0.0.0.0/0" for r in routes))


def drift(exp: Expected, seen: Optional[dict], allocated: Optional[str]) -> list[str]:
    """What differs between prevResult and the kernel. `seen` is the pod interface as observed
    ({"mac", "up", "addresses": [...cidr], "default_via": [...]}) or None when it is missing;
    `allocated` is IPAM's address for the attachment."""
    problems = []
    ip = exp.address.split("/")[0]
    if allocated != ip:
        problems.append(f"IPAM holds {allocated or 'nothing'} for it, not {ip}")
    if seen is None:
        return problems + [f"interface {exp.ifname} is missing"]
    if exp.mac and seen["mac"] != exp.mac:
        problems.append(f"{exp.ifname} has MAC {seen['mac']}, not {exp.mac}")
    if not seen["up"]:
        problems.append(f"{exp.ifname} is down")
    if exp.address not in seen["addresses"]:
        problems.append(f"address {exp.address} is missing on {exp.ifname} "
                        f"(it has {', '.join(seen['addresses']) or 'none'})")
    if exp.default_route and exp.gateway not in seen["default_via"]:
        problems.append(f"default route via {exp.gateway} is missing")
    return problems


# ---------------------------------------------------------------- IPAM state on disk

@contextlib.contextmanager
def locked_state(conf: NetConf) -> Iterator[dict]:
    """The network's IPAM state under an exclusive flock, written back when the block ends.

    The lock is on the network's directory in dataDir; the file (and the directory) go away when
    the last allocation does. A waiter whose directory was removed meanwhile takes a new one.
    """
    netdir = os.path.join(conf.data_dir, conf.name)
    path = os.path.join(netdir, "allocations.json")
    while True:
        try:
            os.makedirs(netdir, mode=0o755, exist_ok=True)
            fd = os.open(netdir, os.O_RDONLY | os.O_DIRECTORY)
        except FileNotFoundError:
            continue
        except OSError as e:
            raise CniError(E_IO, "IPAM state directory unusable", f"{netdir}: {e}") from None
        fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            if os.stat(netdir).st_ino == os.fstat(fd).st_ino:
                break
        except FileNotFoundError:
            pass
        os.close(fd)      # removed (or replaced) while we waited: lock the new one
    try:
        try:
            with open(path) as f:
                state = json.load(f)
        except FileNotFoundError:
            state = {"allocations": {}}
        except (OSError, ValueError) as e:
            raise CniError(E_IO, "IPAM state unreadable", f"{path}: {e}") from None
        holder = {"state": state}
        try:
            yield holder
        finally:
            # Written back also when the verb failed: a rolled-back ADD leaves its release here.
            _write_state(netdir, path, holder["state"])
    finally:
        os.close(fd)


def _write_state(netdir: str, path: str, state: dict) -> None:
    try:
        if state.get("allocations"):
            tmp = path + ".tmp"
            with open(tmp, "w") as f:
                json.dump(state, f, indent=1, sort_keys=True)
            os.replace(tmp, path)
        else:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
            with contextlib.suppress(OSError):
                os.rmdir(netdir)
    except OSError as e:
        raise CniError(E_IO, "IPAM state I/O failed", f"{path}: {e}") from None


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
            requested = str(_address(requested.split("/")[0], "CNI_ARGS IP"))
        state, ip = ipam_allocate(holder["state"], conf, key, _record(req), requested)
        nl = _Netlink()
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
        _Netlink().detach(host_veth_name(req.container_id, req.ifname))


def cmd_check(req: Request, conf: NetConf) -> None:
    _refuse_host_namespace()
    exp = expected_from(conf, req)
    if not os.path.exists(req.netns):
        raise CniError(E_UNKNOWN_CONTAINER, "the container's network namespace does not exist",
                       req.netns)
    with locked_state(conf) as holder:
        rec = holder["state"].get("allocations", {}).get(attachment_key(req.container_id, req.ifname))
    nl = _Netlink()
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
            nl = _Netlink()
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


# ---------------------------------------------------------------- _Netlink: the kernel part
#
# The only code here that touches the kernel: rtnetlink over a plain socket, the requests built
# with netlab.nlmsg (no pyroute2: its import alone would cost more than the whole ADD). One socket
# per namespace: the node's (where the plugin runs) and, for the pod's side, one opened inside
# CNI_NETNS after entering it for a moment with setns() (this process has one thread).

_CLONE_NEWNET = 0x40000000
_NLMSG_ERROR, _NLMSG_DONE = 2, 3
_F_REQUEST, _F_ACK, _F_DUMP = 0x1, 0x4, 0x300
_F_CREATE = 0x1 | 0x4 | 0x200 | 0x400          # request, ack, excl, create
_RTM_NEWLINK, _RTM_DELLINK, _RTM_GETLINK, _RTM_GETADDR, _RTM_GETROUTE = 16, 17, 18, 22, 26
_IFLA_ADDRESS, _IFLA_IFNAME, _IFLA_MTU, _IFLA_MASTER = 1, 3, 4, 10
_IFLA_LINKINFO, _IFLA_INFO_KIND, _IFLA_INFO_DATA, _VETH_INFO_PEER, _IFLA_NET_NS_FD = 18, 1, 2, 1, 28
_IFA_ADDRESS, _IFA_LOCAL = 1, 2
_RTA_OIF, _RTA_GATEWAY, _RTA_TABLE = 4, 5, 15
_HDR = struct.Struct("=IHHII")
_IFINFO = struct.Struct("=BxHiII")
_IFADDR = struct.Struct("=BBBBI")
_RTMSG = struct.Struct("=BBBBBBBBI")
_NLA = struct.Struct("=HH")


@contextlib.contextmanager
def _entered(path: str) -> Iterator[None]:
    libc = ctypes.CDLL(None, use_errno=True)
    home = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    target = os.open(path, os.O_RDONLY)
    try:
        if libc.setns(target, _CLONE_NEWNET) != 0:
            raise OSError(ctypes.get_errno(), f"setns {path}")
        try:
            yield
        finally:
            libc.setns(home, _CLONE_NEWNET)
    finally:
        os.close(target)
        os.close(home)


def _ifinfo(index: int = 0, up: bool = False) -> bytes:
    return _IFINFO.pack(0, 0, index, 1 if up else 0, 1 if up else 0)


def _str(kind: int, value: str) -> bytes:
    return nlmsg.attr(kind, value.encode() + b"\0")


def _u32(kind: int, value: int) -> bytes:
    return nlmsg.attr(kind, struct.pack("=I", value))


def _attrs(data: bytes, offset: int, end: int) -> dict[int, bytes]:
    out = {}
    while offset + _NLA.size <= end:
        size, kind = _NLA.unpack_from(data, offset)
        if size < _NLA.size:
            break
        out[kind & 0x3FFF] = data[offset + _NLA.size:offset + size]
        offset += (size + 3) & ~3
    return out


def _mac(raw: Optional[bytes]) -> str:
    return ":".join(f"{b:02x}" for b in raw) if raw else ""


@dataclass(frozen=True)
class _Link:
    index: int
    up: bool
    mac: str
    master: int


class _Netlink:
    def __init__(self) -> None:
        self._socks: dict[Optional[str], socket.socket] = {}
        self._seq = 0

    def close(self) -> None:
        for sock in self._socks.values():
            sock.close()
        self._socks.clear()

    def _sock(self, netns: Optional[str]) -> socket.socket:
        sock = self._socks.get(netns)
        if sock is None:
            if netns is None:
                sock = open_socket()
            else:
                with _entered(netns):     # a netlink socket stays in the namespace it was made in
                    sock = open_socket()
            self._socks[netns] = sock
        return sock

    def _talk(self, netns: Optional[str], kind: int, flags: int, body: bytes) -> list[bytes]:
        """Send one request; its replies (each message from its header on), or OSError(errno)."""
        self._seq += 1
        seq = self._seq
        sock = self._sock(netns)
        sock.send(nlmsg.message(kind, flags, seq, body))
        out: list[bytes] = []
        while True:
            data = sock.recv(1 << 16)
            offset = 0
            while offset + _HDR.size <= len(data):
                length, mtype, _f, mseq, _pid = _HDR.unpack_from(data, offset)
                if length < _HDR.size:
                    break
                msg = data[offset:offset + length]
                offset += (length + 3) & ~3
                if mseq != seq:
                    continue
                if mtype == _NLMSG_ERROR:
                    err = -struct.unpack_from("=i", msg, _HDR.size)[0]
                    if err:
                        raise OSError(err, os.strerror(err))
                    return out
                if mtype == _NLMSG_DONE:
                    return out
                out.append(msg)
                if not flags & (_F_ACK | _F_DUMP):
                    return out

    def link(self, name: str, netns: Optional[str] = None) -> Optional[_Link]:
        try:
            reply = self._talk(netns, _RTM_GETLINK, _F_REQUEST, _ifinfo() + _str(_IFLA_IFNAME, name))
        except OSError as e:
            if e.errno == errno.ENODEV:
                return None
            raise
        _fam, _type, index, flags, _ch = _IFINFO.unpack_from(reply[0], _HDR.size)
        attrs = _attrs(reply[0], _HDR.size + _IFINFO.size, len(reply[0]))
        master = attrs.get(_IFLA_MASTER)
        return _Link(index=index, up=bool(flags & 1), mac=_mac(attrs.get(_IFLA_ADDRESS)),
                     master=struct.unpack("=I", master)[0] if master else 0)

    def link_name(self, index: int) -> Optional[str]:
        try:
            reply = self._talk(None, _RTM_GETLINK, _F_REQUEST, _ifinfo(index))
        except OSError:
            return None
        name = _attrs(reply[0], _HDR.size + _IFINFO.size, len(reply[0])).get(_IFLA_IFNAME, b"")
        return name.split(b"\0", 1)[0].decode()

    def _create(self, netns: Optional[str], body: bytes, kind: int = _RTM_NEWLINK) -> None:
        self._talk(netns, kind, _F_CREATE, body)

    def _fail(self, what: str, e: OSError) -> CniError:
        return CniError(E_KERNEL, f"{what} failed", e.strerror or str(e))

    def link_exists(self, name: str) -> bool:
        return self.link(name) is not None

    def master_of(self, name: str) -> Optional[str]:
        link = self.link(name)
        return self.link_name(link.master) if link and link.master else None

    def _ensure_bridge(self, conf: NetConf) -> int:
        if self.link(conf.bridge) is None:
            info = nlmsg.attr(_IFLA_LINKINFO, _str(_IFLA_INFO_KIND, "bridge"))
            try:
                self._create(None, _ifinfo() + _str(_IFLA_IFNAME, conf.bridge) +
                             _u32(_IFLA_MTU, conf.mtu) + info)
            except OSError as e:
                if e.errno != errno.EEXIST:      # another ADD made it meanwhile
                    raise
        idx = self.link(conf.bridge).index
        try:
            self._talk(None, nlmsg.RTM_NEWADDR, _F_CREATE,
                       nlmsg.addr_add(0, idx, str(conf.gateway), conf.subnet.prefixlen)[_HDR.size:])
        except OSError as e:
            if e.errno != errno.EEXIST:          # the gateway address is there already
                raise
        self._talk(None, _RTM_NEWLINK, _F_REQUEST | _F_ACK, _ifinfo(idx, up=True))
        # isGateway: the node routes for its pods (a sysctl of the node's namespace, not the host's).
        with open("/proc/sys/net/ipv4/ip_forward", "w") as f:
            f.write("1")
        return idx

    def attach(self, conf: NetConf, req: Request, ip: str) -> Attachment:
        host = host_veth_name(req.container_id, req.ifname)
        try:
            br_idx = self._ensure_bridge(conf)
            nsfd = os.open(req.netns, os.O_RDONLY)
            try:
                # The peer is born inside the pod's namespace with its final name.
                peer = _ifinfo() + _str(_IFLA_IFNAME, req.ifname) + _u32(_IFLA_MTU, conf.mtu) + \
                    _u32(_IFLA_NET_NS_FD, nsfd)
                info = nlmsg.attr(_IFLA_LINKINFO, _str(_IFLA_INFO_KIND, "veth") + nlmsg.attr(
                    _IFLA_INFO_DATA, nlmsg.attr(_VETH_INFO_PEER, peer)))
                self._create(None, _ifinfo() + _str(_IFLA_IFNAME, host) +
                             _u32(_IFLA_MTU, conf.mtu) + info)
            finally:
                os.close(nsfd)
            h = self.link(host)
            self._talk(None, _RTM_NEWLINK, _F_REQUEST | _F_ACK,
                       nlmsg.link_up(0, h.index, master=br_idx)[_HDR.size:])
            # Read after enslaving: a bridge without a MAC of its own takes its ports' lowest.
            br_mac = self.link(conf.bridge).mac
            pod = self.link(req.ifname, req.netns)
            self._talk(req.netns, nlmsg.RTM_NEWADDR, _F_CREATE,
                       nlmsg.addr_add(0, pod.index, ip, conf.subnet.prefixlen)[_HDR.size:])
            self._talk(req.netns, _RTM_NEWLINK, _F_REQUEST | _F_ACK, _ifinfo(pod.index, up=True))
            self._talk(req.netns, nlmsg.RTM_NEWROUTE, _F_CREATE,
                       nlmsg.route_add(0, "default", str(conf.gateway), pod.index)[_HDR.size:])
        except OSError as e:
            raise self._fail(f"wiring {req.ifname} of {req.container_id}", e) from None
        finally:
            self.close()
        return Attachment(bridge=conf.bridge, bridge_mac=br_mac, host_veth=host, host_mac=h.mac,
                          ifname=req.ifname, mac=pod.mac, netns=req.netns, ip=ip)

    def detach(self, host: str) -> None:
        try:
            link = self.link(host)
            if link is not None:
                self._talk(None, _RTM_DELLINK, _F_REQUEST | _F_ACK, _ifinfo(link.index))
        except OSError as e:
            if e.errno != errno.ENODEV:          # gone meanwhile (its pod's namespace went)
                raise self._fail(f"deleting {host}", e) from None

    def observe_pod(self, netns: str, ifname: str) -> Optional[dict]:
        try:
            link = self.link(ifname, netns)
            if link is None:
                return None
            addrs = []
            for msg in self._talk(netns, _RTM_GETADDR, _F_REQUEST | _F_DUMP,
                                  _IFADDR.pack(socket.AF_INET, 0, 0, 0, 0)):
                _fam, plen, _fl, _scope, index = _IFADDR.unpack_from(msg, _HDR.size)
                attrs = _attrs(msg, _HDR.size + _IFADDR.size, len(msg))
                raw = attrs.get(_IFA_LOCAL) or attrs.get(_IFA_ADDRESS)
                if index == link.index and raw:
                    addrs.append(f"{socket.inet_ntoa(raw)}/{plen}")
            via = []
            for msg in self._talk(netns, _RTM_GETROUTE, _F_REQUEST | _F_DUMP,
                                  _RTMSG.pack(socket.AF_INET, 0, 0, 0, 0, 0, 0, 0, 0)):
                fields = _RTMSG.unpack_from(msg, _HDR.size)
                attrs = _attrs(msg, _HDR.size + _RTMSG.size, len(msg))
                table = struct.unpack("=I", attrs[_RTA_TABLE])[0] if _RTA_TABLE in attrs else fields[4]
                oif = struct.unpack("=I", attrs[_RTA_OIF])[0] if _RTA_OIF in attrs else 0
                if fields[1] == 0 and table == 254 and oif == link.index and _RTA_GATEWAY in attrs:
                    via.append(socket.inet_ntoa(attrs[_RTA_GATEWAY]))
            return {"mac": link.mac, "up": link.up, "addresses": addrs, "default_via": via}
        except OSError as e:
            raise self._fail(f"reading {ifname} in {netns}", e) from None


if __name__ == "__main__":
    main()

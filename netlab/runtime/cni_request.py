"""What the runtime hands netlab-cni, validated: the request in the environment and the network
configuration on stdin; and the spec's errors (CniError, the well-known codes and netlab-cni's own).

Pure, unit-tested without root. The runtime passes the request as CNI_COMMAND, CNI_CONTAINERID,
CNI_NETNS, CNI_IFNAME, CNI_ARGS and CNI_PATH (parse_env -> Request) and the configuration JSON
on stdin (decode, parse_config -> NetConf):

    {"cniVersion": "1.0.0", "name": "netlab", "type": "netlab-cni", "bridge": "cni0", "mtu": 1500,
     "ipam": {"subnet": "10.244.1.0/24", "gateway": "10.244.1.1",
              "dataDir": "/run/netlab/labs/<lab>/cni"}}
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
import os
import re
from dataclasses import dataclass, field
from typing import Mapping, Optional

from ..core.versions import version_key  # noqa: F401  (the plugin and cni_result use it)

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


def invalid(what: str) -> CniError:
    """Error 7 with `what` as its details."""
    return CniError(E_INVALID_CONFIG, "invalid network configuration", what)


def config_address(value, key: str) -> ipaddress.IPv4Address:
    """An IPv4 address of the configuration (`key` names it in the error 7)."""
    try:
        return ipaddress.IPv4Address(value)
    except (ipaddress.AddressValueError, ValueError, TypeError):
        raise invalid(f"ipam.{key} {json.dumps(value)} is not an IPv4 address") from None


def parse_config(data: dict) -> NetConf:
    """Validate a decoded configuration: version (1), unknown fields (2), the rest (7)."""
    version = check_version(data)
    for key in data:
        if key not in _KNOWN_KEYS:
            raise CniError(E_UNSUPPORTED_FIELD, "unsupported field in network configuration",
                           f"{key}: {json.dumps(data[key])}")
    name = data.get("name")
    if not isinstance(name, str) or not _NETWORK_NAME.match(name):
        raise invalid(f"name {json.dumps(name)}: a network name of letters, digits, _ . -")
    bridge = data.get("bridge", "cni0")
    if not isinstance(bridge, str) or not valid_ifname(bridge):
        raise invalid(f"bridge {json.dumps(bridge)} is not an interface name")
    mtu = data.get("mtu", 1500)
    if not isinstance(mtu, int) or isinstance(mtu, bool) or not 68 <= mtu <= 65535:
        raise invalid(f"mtu {json.dumps(mtu)}: an integer from 68 to 65535")
    ipam = data.get("ipam")
    if not isinstance(ipam, dict):
        raise invalid("ipam: a section with subnet, gateway and dataDir is required")
    for key in ipam:
        if key not in _IPAM_KEYS:
            raise CniError(E_UNSUPPORTED_FIELD, "unsupported field in network configuration",
                           f"ipam.{key}: {json.dumps(ipam[key])}")
    try:
        subnet = ipaddress.IPv4Network(ipam.get("subnet"))
    except (ipaddress.AddressValueError, ipaddress.NetmaskValueError, ValueError, TypeError):
        raise invalid(f"ipam.subnet {json.dumps(ipam.get('subnet'))} is not an IPv4 network "
                       "(host bits must be zero)") from None
    if subnet.num_addresses < 4:
        raise invalid(f"ipam.subnet {subnet} is too small: /30 at most")
    hosts = (subnet.network_address + 1, subnet.broadcast_address - 1)
    gateway = config_address(ipam.get("gateway", str(hosts[0])), "gateway")
    if not hosts[0] <= gateway <= hosts[1]:
        raise invalid(f"ipam.gateway {gateway} is not a host address of {subnet}")
    start = config_address(ipam.get("rangeStart", str(hosts[0])), "rangeStart")
    end = config_address(ipam.get("rangeEnd", str(hosts[1])), "rangeEnd")
    if not hosts[0] <= start <= end <= hosts[1]:
        raise invalid(f"ipam range {start}-{end} is not inside the host addresses of {subnet}")
    data_dir = ipam.get("dataDir")
    if not isinstance(data_dir, str) or not os.path.isabs(data_dir):
        raise invalid(f"ipam.dataDir {json.dumps(data_dir)}: an absolute path "
                       "(the lab's state, never /var/lib/cni)")
    if ipam.get("type", "netlab-cni") != "netlab-cni":
        raise invalid(f"ipam.type {json.dumps(ipam['type'])}: netlab-cni has its own IPAM "
                       "(leave type out)")
    dns = data.get("dns", {})
    if not isinstance(dns, dict):
        raise invalid("dns must be an object")
    prev = data.get("prevResult")
    if prev is not None and not isinstance(prev, dict):
        raise invalid("prevResult must be an object")
    attachments = data.get("cni.dev/valid-attachments", data.get("cni.dev/attachments"))
    valid = None
    if attachments is not None:
        try:
            valid = tuple((a["containerID"], a["ifname"]) for a in attachments)
        except (TypeError, KeyError):
            raise invalid("cni.dev/valid-attachments: a list of {containerID, ifname}") from None
    requested = None
    runtime = data.get("runtimeConfig", {})
    ips = runtime.get("ips") if isinstance(runtime, dict) else None
    if ips:
        if not isinstance(ips, list) or len(ips) != 1 or not isinstance(ips[0], str):
            raise invalid(f"runtimeConfig.ips {json.dumps(ips)}: one IPv4 address")
        requested = str(config_address(ips[0].split("/")[0], "runtimeConfig.ips"))
    return NetConf(cni_version=version, name=name, bridge=bridge, mtu=mtu, subnet=subnet,
                   gateway=gateway, data_dir=data_dir, range_start=start, range_end=end, dns=dns,
                   prev_result=prev, valid_attachments=valid, requested_ip=requested)


def host_veth_name(container_id: str, ifname: str) -> str:
    """The node-side veth name: stable from the attachment, so DEL finds it without the netns."""
    return "veth" + hashlib.sha1(f"{container_id}/{ifname}".encode()).hexdigest()[:8]

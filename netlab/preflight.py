"""Checks made before `up` touches the kernel: the tools and kernel features a lab will need.

A missing tool (ping, curl, nft, a container's command) or kernel feature (veth, bridge, vxlan)
is reported with what to install, exit 2, before anything is created. Tools are looked up on the
PATH that netlab and the lab's processes use; kernel features are tried in a throwaway namespace
(kernel.missing_link_kinds), never in the root one.
"""

from __future__ import annotations

import shutil
from typing import Iterable, Optional

from . import kernel
from .errors import NetlabError
from .model import NETEXEC, Lab

# The Debian/Ubuntu package that brings each tool (setup.sh installs them all).
PACKAGES = {"ping": "iputils-ping", "curl": "curl", "nft": "nftables", "ip": "iproute2",
            "tcpdump": "tcpdump"}
# Every lab is proven with ping and curl run inside its namespaces (`netlab verify`, `netlab exec`).
ALWAYS = ("ping", "curl")
# The kernel config option behind each link kind, for the message.
KCONFIG = {"veth": "CONFIG_VETH", "bridge": "CONFIG_BRIDGE", "vxlan": "CONFIG_VXLAN"}


def tools_for(lab: Lab, extra: Iterable[str] = ()) -> list[str]:
    """The tools a lab needs on PATH: ping and curl, plus `extra` (e.g. nft for NAT modes)."""
    return list(dict.fromkeys([*ALWAYS, *extra]))


def kinds_for(lab: Lab) -> list[str]:
    """The link kinds a lab creates; vxlan only when its backend asks for it."""
    return ["veth", "bridge"] + (["vxlan"] if lab.backend == "vxlan" else [])


def missing_tools(tools: Iterable[str], path: Optional[str] = None) -> list[str]:
    return [t for t in tools if shutil.which(t, path=path) is None]


def check(lab: Lab, extra_tools: Iterable[str] = (), path: Optional[str] = None) -> None:
    """Raise a NetlabError (exit 2) naming what to install when the lab cannot be built here."""
    missing = missing_tools(tools_for(lab, extra_tools), path)
    if missing:
        pkgs = " ".join(dict.fromkeys(PACKAGES.get(t, t) for t in missing))
        raise NetlabError(f"{', '.join(missing)} not found on PATH: the lab needs "
                          f"{'it' if len(missing) == 1 else 'them'}; install with "
                          f"`sudo apt-get install {pkgs}` (or run ./setup.sh)")
    for pod in lab.pods:
        for c in pod.containers:
            if c.image != NETEXEC and c.argv and shutil.which(c.argv[0], path=path) is None:
                raise NetlabError(f"pod '{pod.name}', container '{c.name}': command "
                                  f"'{c.argv[0]}' not found on PATH: install it or fix the "
                                  f"container's command in {lab.source}")
    check_kernel(kinds_for(lab))


def check_kernel(kinds: list[str]) -> None:
    """Raise a NetlabError (exit 2) naming the kernel features (link kinds) that are missing."""
    missing = kernel.missing_link_kinds(kinds)
    if missing:
        what = ", ".join(f"{k} ({KCONFIG.get(k, k)})" for k in missing)
        raise NetlabError(f"this kernel cannot create {what} links: load the module "
                          f"(`sudo modprobe {missing[0]}`) or use a kernel built with it")

"""Checks made before `up` touches the kernel: the tools and kernel features a lab will need.

Every feature says what it needs (Feature.needs): tools on PATH, link kinds, the commands its
containers run, and checks of its own. A missing one is reported with what to install, exit 2,
before anything is created. Tools are looked up on the PATH that netlab and the lab's processes
use; kernel features are tried in a throwaway namespace (kernel.missing_link_kinds), never in the
root one.
"""

from __future__ import annotations

import shutil
from typing import Iterable, Optional

from ..core.errors import NetlabError
from ..core.feature import Needs
from ..core.lab import Lab
from ..features import FEATURES
from . import kernel

# The Debian/Ubuntu package that brings each tool (setup.sh installs them all).
PACKAGES = {"ping": "iputils-ping", "curl": "curl", "nft": "nftables", "ip": "iproute2",
            "tcpdump": "tcpdump", "dnsmasq": "dnsmasq-base", "nginx": "nginx",
            "dig": "bind9-dnsutils", "conntrack": "conntrack", "iptables": "iptables",
            "socat": "socat", "fping": "fping"}
# The kernel config option behind each link kind, for the message.
KCONFIG = {"veth": "CONFIG_VETH", "bridge": "CONFIG_BRIDGE", "vxlan": "CONFIG_VXLAN"}


def needs(lab: Lab) -> Needs:
    """What every feature of the lab needs, together, in feature order."""
    total = Needs()
    for feature in FEATURES:
        n = feature.needs(lab)
        total.tools += [t for t in n.tools if t not in total.tools]
        total.kinds += [k for k in n.kinds if k not in total.kinds]
        total.commands += n.commands
        total.checks += n.checks
    return total


def tools_for(lab: Lab, extra: Iterable[str] = ()) -> list[str]:
    """The tools a lab needs on PATH (ping and curl for every lab, nft for NAT...), plus `extra`."""
    return list(dict.fromkeys([*needs(lab).tools, *extra]))


def kinds_for(lab: Lab) -> list[str]:
    """The link kinds a lab creates; vxlan only when its backend asks for it."""
    return needs(lab).kinds


def missing_tools(tools: Iterable[str], path: Optional[str] = None) -> list[str]:
    return [t for t in tools if shutil.which(t, path=path) is None]


def check(lab: Lab, extra_tools: Iterable[str] = (), path: Optional[str] = None) -> None:
    """Raise a NetlabError (exit 2) naming what to install when the lab cannot be built here."""
    n = needs(lab)
    missing = missing_tools(dict.fromkeys([*n.tools, *extra_tools]), path)
    if missing:
        pkgs = " ".join(dict.fromkeys(PACKAGES.get(t, t) for t in missing))
        raise NetlabError(f"{', '.join(missing)} not found on PATH: the lab needs "
                          f"{'it' if len(missing) == 1 else 'them'}; install with "
                          f"`sudo apt-get install {pkgs}` (or run ./setup.sh)")
    for who, command in n.commands:
        if shutil.which(command, path=path) is None:
            raise NetlabError(f"{who}: command '{command}' not found on PATH: install it or fix "
                              f"the container's command in {lab.source}")
    for probe in n.checks:
        problem = probe()
        if problem:
            raise NetlabError(problem)
    check_kernel(n.kinds)


def check_kernel(kinds: list[str]) -> None:
    """Raise a NetlabError (exit 2) naming the kernel features (link kinds) that are missing."""
    missing = kernel.missing_link_kinds(kinds)
    if missing:
        what = ", ".join(f"{k} ({KCONFIG.get(k, k)})" for k in missing)
        raise NetlabError(f"this kernel cannot create {what} links: load the module "
                          f"(`sudo modprobe {missing[0]}`) or use a kernel built with it")

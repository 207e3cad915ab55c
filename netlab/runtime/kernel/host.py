"""A node on a real host (`up --node`): the host's own links, routes and sysctls, the one place
netlab touches the namespace it runs in, and only there."""

from __future__ import annotations

from typing import Optional

from .apply import IPRoute, _netlink_error


def here_link_addresses(ifname: str) -> Optional[list[str]]:
    """The IPv4 addresses (without prefix) of a link in the namespace netlab runs in; None when
    there is no such link."""
    with IPRoute() as sock:
        found = sock.link_lookup(ifname=ifname)
        if not found:
            return None
        return [a.get_attr("IFA_ADDRESS") for a in sock.get_addr(family=2, index=found[0])]


def here_link_exists(ifname: str) -> bool:
    with IPRoute() as sock:
        return bool(sock.link_lookup(ifname=ifname))


def here_delete_link(ifname: str) -> None:
    """Delete a link of this namespace if it is there (a veth takes its peer with it)."""
    with IPRoute() as sock:
        found = sock.link_lookup(ifname=ifname)
        if found:
            sock.link("del", index=found[0])


def here_delete_route(dst: str, via: str, dev: str) -> None:
    """Delete one route of this namespace if it is there (exactly this dst, gateway and device)."""
    with IPRoute() as sock:
        found = sock.link_lookup(ifname=dev)
        if not found:
            return
        try:
            sock.route("del", dst=dst, gateway=via, oif=found[0])
        except _netlink_error() as e:
            if e.code != 3:   # ESRCH: already gone
                raise


def here_sysctl(key: str, value: Optional[str] = None) -> str:
    """Read (and with `value`, then write) a sysctl of this namespace; returns the old value."""
    path = "/proc/sys/" + key.replace(".", "/")
    with open(path) as f:
        old = f.read().strip()
    if value is not None:
        with open(path, "w") as f:
            f.write(value)
    return old

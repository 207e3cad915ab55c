"""What a lab's namespaces hold, read through netlink and nft, as a view.snapshot.Snapshot (for
`netlab graph` of a live lab and `netlab trace`), and the kernel's own route lookup."""

from __future__ import annotations

import os

from .apply import IPRoute, Kernel, _netlink_error
from .netns import inside, netns_exists, netns_path


_ROUTE_TYPES = {1: "unicast", 6: "blackhole", 7: "unreachable", 8: "prohibit"}


def _nsids(sock: IPRoute, namespaces: list[str]) -> dict[int, str]:
    """The ids this namespace knows the others by (a veth's IFLA_LINK_NETNSID names its peer's)."""
    out = {}
    for other in namespaces:
        try:
            fd = os.open(netns_path(other), os.O_RDONLY)
        except FileNotFoundError:
            continue
        try:
            nsid = (sock.get_netnsid(fd=fd) or {}).get("nsid")
        except _netlink_error():
            nsid = None
        finally:
            os.close(fd)
        if nsid is not None and nsid < 0xFFFFFFFF:
            out[nsid] = other
    return out


def _nft_listing(ns: str) -> tuple[str, str]:
    """(`nft -j list ruleset`, `nft -a list ruleset`) inside ns: the ruleset to evaluate and its
    rules as nft prints them, by handle. ('', '') when nft is not installed or fails."""
    import subprocess
    out = []
    for flag in ("-j", "-a"):
        try:
            with inside(ns):  # the child inherits this thread's namespace
                r = subprocess.run(["nft", flag, "list", "ruleset"], capture_output=True,
                                   text=True, timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            return "", ""
        if r.returncode != 0:
            return "", ""
        out.append(r.stdout)
    return out[0], out[1]


def _bridge_nf(ns: str) -> bool:
    """net.bridge.bridge-nf-call-iptables inside ns: bridged IPv4 frames go through the nft
    hooks of the namespace (per namespace since Linux 5.3; absent without br_netfilter)."""
    try:
        with inside(ns):
            with open("/proc/sys/net/bridge/bridge-nf-call-iptables") as f:
                return f.read().strip() == "1"
    except OSError:
        return False


def observe(namespaces: list[str], lab: str = ""):
    """A Snapshot of what the kernel holds in these namespaces: links, addresses, routes, NAT.

    Missing namespaces are left out (the snapshot shows what is there)."""
    from ...view import nft, snapshot as S
    present = [ns for ns in namespaces if netns_exists(ns)]
    with Kernel() as kern:
        # Index -> name per namespace first: a veth's peer is named by index in its namespace.
        links = {ns: kern.sock(ns).get_links() for ns in present}
        names = {ns: {l["index"]: l.get_attr("IFLA_IFNAME") for l in ls} for ns, ls in links.items()}
        out = []
        for ns in present:
            sock = kern.sock(ns)
            nsids = _nsids(sock, [o for o in present if o != ns])
            addrs: dict[int, list[str]] = {}
            for a in sock.get_addr(family=2):
                addrs.setdefault(a["index"], []).append(f"{a.get_attr('IFA_ADDRESS')}/{a['prefixlen']}")
            bridge_nf = _bridge_nf(ns)
            ifaces = []
            for l in links[ns]:
                info = l.get_attr("IFLA_LINKINFO")
                kind = (info.get_attr("IFLA_INFO_KIND") if info else None) or \
                    ("loopback" if l["index"] == 1 else "other")
                peer = None
                if kind == "veth" and l.get_attr("IFLA_LINK"):
                    nsid = l.get_attr("IFLA_LINK_NETNSID")
                    where = ns if nsid is None else nsids.get(nsid)
                    if where in names:
                        peer = (where, names[where].get(l.get_attr("IFLA_LINK")))
                vni = None
                nf_call = False
                if kind == "vxlan":
                    data = info.get_attr("IFLA_INFO_DATA")
                    vni = data.get_attr("IFLA_VXLAN_ID") if data else None
                elif kind == "bridge":
                    data = info.get_attr("IFLA_INFO_DATA")
                    nf_call = bridge_nf or bool(data and data.get_attr("IFLA_BR_NF_CALL_IPTABLES"))
                master = l.get_attr("IFLA_MASTER")
                ifaces.append(S.Iface(
                    name=names[ns][l["index"]], kind=kind, up=bool(l["flags"] & 1),
                    master=names[ns].get(master) if master else None, peer=peer,
                    addrs=tuple(addrs.get(l["index"], ())), vni=vni, nf_call=nf_call))
            routes = []
            for r in sock.get_routes(family=2, table=254):
                dst = r.get_attr("RTA_DST")
                routes.append(S.Route(
                    dst=f"{dst}/{r['dst_len']}" if dst else "default", via=r.get_attr("RTA_GATEWAY"),
                    dev=names[ns].get(r.get_attr("RTA_OIF")),
                    type=_ROUTE_TYPES.get(r["type"], str(r["type"])), src=r.get_attr("RTA_PREFSRC")))
            with inside(ns):
                with open("/proc/sys/net/ipv4/ip_forward") as f:
                    forwarding = f.read().strip() == "1"
            as_json, as_text = _nft_listing(ns)
            ruleset = None
            if as_json:
                try:
                    ruleset = nft.parse(as_json, as_text)
                except (ValueError, KeyError, TypeError):
                    ruleset = None   # a JSON shape this nft writes that the parser does not know
            out.append(S.Namespace(ns, tuple(ifaces), tuple(routes), forwarding,
                                   S.nat_lines(nft.without_handles(as_text)), ruleset))
    return S.Snapshot(tuple(out), lab)


def route_get(ns: str, dst: str) -> dict:
    """`ip route get DST` inside ns: {dev, gateway, src} or {error} with the kernel's reason."""
    with Kernel() as kern:
        sock = kern.sock(ns)
        try:
            r = sock.route("get", dst=dst)[0]
        except _netlink_error() as e:
            return {"error": os.strerror(e.code)}
        names = {l["index"]: l.get_attr("IFLA_IFNAME") for l in sock.get_links()}
        return {"dev": names.get(r.get_attr("RTA_OIF")), "gateway": r.get_attr("RTA_GATEWAY"),
                "src": r.get_attr("RTA_PREFSRC"), "type": _ROUTE_TYPES.get(r["type"], str(r["type"]))}

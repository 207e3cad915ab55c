"""The one module that talks to the kernel: netlink through pyroute2, and namespace plumbing.

It creates named network namespaces in process (as `ip netns add` does, without pyroute2's
forking helper), keeps one netlink socket per namespace opened once, applies plan operations, and
observes what is there. Everything else in netlab is pure or goes through this module.
"""

from __future__ import annotations

import ctypes
import errno
import os
import subprocess
import threading
from contextlib import contextmanager
from typing import Callable, Iterator, Optional

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

from . import nlmsg
from ..core import ops as P
from .batch import Batch, BatchError, open_socket
from ..core.errors import KernelError, NetlabError

NETNS_DIR = "/run/netns"
CLONE_NEWNET = 0x40000000
MS_REC, MS_BIND, MS_SHARED = 0x4000, 0x1000, 1 << 20
MNT_DETACH = 2
NUD_PERMANENT = 0x80
RTNH_F_ONLINK = 4

_libc = ctypes.CDLL(None, use_errno=True)


def _check(result: int, what: str) -> None:
    if result != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


def _setns(fd: int) -> None:
    _check(_libc.setns(fd, CLONE_NEWNET), "setns")


def netns_path(ns: str) -> str:
    return os.path.join(NETNS_DIR, ns)


def netns_exists(ns: str) -> bool:
    return os.path.exists(netns_path(ns))


def list_netns() -> list[str]:
    try:
        return sorted(os.listdir(NETNS_DIR))
    except FileNotFoundError:
        return []


def netns_inode(ns: str) -> Optional[int]:
    try:
        return os.stat(netns_path(ns)).st_ino
    except OSError:
        return None


@contextmanager
def inside(ns: str) -> Iterator[None]:
    """Run the block with this thread in namespace `ns`; sockets and children made there stay there.

    setns() moves only the calling thread, so threads may enter different namespaces at once.
    ns "" (plan.HERE) is the namespace netlab runs in: the block runs where it is.
    """
    if ns == P.HERE:
        yield
        return
    home = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    try:
        target = os.open(netns_path(ns), os.O_RDONLY)
    except FileNotFoundError:
        os.close(home)
        raise NetlabError(f"namespace {ns} does not exist: is the lab up? (netlab status)", 1)
    try:
        _setns(target)
        try:
            yield
        finally:
            _setns(home)
    finally:
        os.close(target)
        os.close(home)


def enter(ns: str) -> None:
    """Move this thread into `ns` for good (before exec of a user's command)."""
    if ns == P.HERE:
        return
    try:
        fd = os.open(netns_path(ns), os.O_RDONLY)
    except FileNotFoundError:
        raise NetlabError(f"namespace {ns} does not exist: is the lab up? (netlab status)", 1)
    _setns(fd)
    os.close(fd)


CLONE_NEWNS = 0x00020000
MS_SLAVE = 1 << 19
ETC_NETNS = "/etc/netns"


def etc_files(ns: str) -> None:
    """What `ip netns exec` does after setns: a mount namespace of this process's own in which each
    file of /etc/netns/<ns>/ is bind-mounted over its namesake in /etc (a pod's own resolv.conf,
    hosts), and /sys shows the network namespace's own devices. Call it in the process that will
    exec (a child before exec, or `netlab exec`), never in netlab's own threads."""
    if ns == P.HERE:
        return
    own = os.path.join(ETC_NETNS, ns)
    _check(_libc.unshare(CLONE_NEWNS), "unshare(CLONE_NEWNS)")
    # Mounts made here must not propagate back to the host's mount namespace.
    _check(_libc.mount(b"none", b"/", None, MS_SLAVE | MS_REC, None), "mount --make-rslave /")
    if _libc.umount2(b"/sys", MNT_DETACH) == 0:
        _libc.mount(ns.encode(), b"/sys", b"sysfs", 0, None)
    try:
        entries = sorted(os.listdir(own))
    except OSError:
        return
    for entry in entries:
        src, dst = os.path.join(own, entry), os.path.join("/etc", entry)
        if os.path.exists(dst):
            _check(_libc.mount(src.encode(), dst.encode(), b"none", MS_BIND, None),
                   f"mount --bind {src} {dst}")


def has_etc_files(ns: str) -> bool:
    return ns != P.HERE and os.path.isdir(os.path.join(ETC_NETNS, ns))


def enter_like_ip_netns_exec(ns: str) -> None:
    """Move this process into `ns` for good, with its /etc/netns files, as `ip netns exec` does."""
    enter(ns)
    if has_etc_files(ns):
        etc_files(ns)


_shared_done = False


def _share_netns_dir() -> None:
    """Make /run/netns a shared mount, as iproute2 does, so namespaces show in every mount ns."""
    global _shared_done
    if _shared_done:
        return
    os.makedirs(NETNS_DIR, mode=0o755, exist_ok=True)
    d = NETNS_DIR.encode()
    if _libc.mount(b"", d, b"none", MS_SHARED | MS_REC, None) != 0:
        # Not a mount point yet: bind it onto itself first (iproute2's netns_add does the same).
        _check(_libc.mount(d, d, b"none", MS_BIND | MS_REC, None), "mount --bind /run/netns")
        _check(_libc.mount(b"", d, b"none", MS_SHARED | MS_REC, None), "mount --make-shared")
    _shared_done = True


def remove_netns(ns: str) -> None:
    """Remove a named namespace (the kernel frees it once no process or socket holds it)."""
    path = netns_path(ns)
    _libc.umount2(path.encode(), MNT_DETACH)
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


class NetnsExists(KernelError):
    def __init__(self, ns: str):
        super().__init__(f"namespace {ns} already exists and is not this lab's: remove it "
                         f"(ip netns del {ns}) or choose another lab name with --name")
        self.ns = ns


def mark(ns: str) -> Optional[str]:
    """The lab name netlab marked a namespace with, or None if it bears no netlab mark.

    Read in a thread of its own: setns() moves only that thread, and a process is found "inside a
    lab" by its main thread's namespace (/proc/PID/ns/net), so a `down` of that lab running at the
    same moment never takes this process (a `clean` looking at every namespace) for one of its own.
    """
    found: list = []
    reader = threading.Thread(target=lambda: found.append(_read_mark(ns)))
    reader.start()
    reader.join()
    return found[0] if found else None


def _read_mark(ns: str) -> Optional[str]:
    try:
        with inside(ns):
            sock = open_socket()  # a plain socket: an IPRoute costs ~7 ms, too much per namespace
        with sock:
            sock.send(nlmsg.link_get(1, 1))
            alias = nlmsg.link_alias(sock.recv(1 << 16)) or ""
    except (NetlabError, OSError):
        return None
    return alias[len(P.MARK):] if alias.startswith(P.MARK) else None


def _mark_now(sock, lab: str) -> None:
    """Bring `lo` up with the alias netlab:<lab>, waiting for the kernel's answer."""
    sock.send(nlmsg.link_up(1, 1, alias=P.MARK + lab))
    for _seq, err in nlmsg.acks(sock.recv(1 << 16)):
        if err:
            raise OSError(err, f"marking lo: {os.strerror(err)}")


def mark_netns(ns: str, lab: str) -> None:
    """Put netlab's mark on a namespace somebody else made for a lab (`netlab adopt`)."""
    with inside(ns):
        sock = open_socket()
    with sock:
        _mark_now(sock, lab)


class StepFailed(KernelError):
    """A batched operation failed; `op` says which, so `up` can report its step."""

    def __init__(self, op: P.Op, reason: str):
        super().__init__(f"`{op.ip().splitlines()[0]}` failed: {reason}")
        self.op = op


class Kernel:
    """Applies plan operations through one netlink socket per namespace.

    The common operations of namespaces netlab made itself (links, addresses, routes) are queued
    and sent in batches (see batch.py): `apply` may return before the kernel has done the work,
    and a failure may surface at a later `apply`, at `flush()` or when the `with` block ends,
    always as a KernelError naming the operation that failed (`.op`).
    """

    def __init__(self) -> None:
        self._socks: dict[str, IPRoute] = {}
        self._fds: dict[str, int] = {}
        self._index: dict[tuple[str, str], int] = {}
        self._batch = Batch()
        self._next_index: dict[str, int] = {}   # the ifindex to ask for next, per fresh namespace

    def close(self) -> None:
        self._batch.close()
        self._next_index.clear()
        for sock in self._socks.values():
            sock.close()
        for fd in self._fds.values():
            os.close(fd)
        self._socks.clear()
        self._fds.clear()
        self._index.clear()

    def __enter__(self) -> "Kernel":
        return self

    def __exit__(self, exc_type, *exc) -> None:
        try:
            if exc_type is None:
                self.flush()
        finally:
            self.close()

    # ------------------------------------------------------------ namespaces and sockets

    def create_netns(self, ns: str, lab: Optional[str] = None) -> None:
        """Create a named namespace in this thread, open its socket while inside, and come back.

        With `lab`, `lo` is brought up and marked before the namespace gets its name, so a named
        namespace of netlab's always bears its mark, even if netlab is killed right then.
        """
        _share_netns_dir()
        path = netns_path(ns)
        try:
            os.close(os.open(path, os.O_RDONLY | os.O_CREAT | os.O_EXCL, 0))
        except FileExistsError:
            raise NetnsExists(ns) from None
        home = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
        try:
            _check(_libc.unshare(CLONE_NEWNET), "unshare")
            try:
                # A plain netlink socket opened in here stays bound to this namespace.
                sock = open_socket()
                if lab is not None:
                    _mark_now(sock, lab)
                _check(_libc.mount(b"/proc/thread-self/ns/net", path.encode(), b"none", MS_BIND, None),
                       f"mount {path}")
                self._batch.add_socket(ns, sock)
                self._next_index[ns] = 2    # a fresh namespace holds only lo (1)
            finally:
                _setns(home)
        except BaseException:
            remove_netns(ns)
            raise
        finally:
            os.close(home)

    def sock(self, ns: str) -> IPRoute:
        self.flush()  # whoever talks to the kernel through pyroute2 sees every queued request done
        sock = self._socks.get(ns)
        if sock is None:
            # HERE has no batch socket, so its operations always take this (unbatched) path.
            with inside(ns):
                sock = self._socks[ns] = IPRoute()
        return sock

    def nsfd(self, ns: str) -> int:
        fd = self._fds.get(ns)
        if fd is None:
            fd = self._fds[ns] = os.open(netns_path(ns), os.O_RDONLY)
        return fd

    def index(self, ns: str, ifname: str) -> int:
        key = (ns, ifname)
        idx = self._index.get(key)
        if idx is None:
            # One RTM_GETLINK by name (sock() first sends whatever is queued); link_lookup would dump every link of the namespace.
            idx = self._index[key] = self.sock(ns).link("get", ifname=ifname)[0]["index"]
        return idx

    # ------------------------------------------------------------ operations

    def apply(self, op: P.Op) -> None:
        """Apply one kernel operation (perhaps later, batched: see the class); raises KernelError
        naming its iproute2 equivalent."""
        kind = type(op)
        applier = self._appliers[kind]
        try:
            fast = _FAST.get(kind)
            if fast is not None and applier is _DEFAULT_APPLIERS[kind] and fast(self, op):
                return
            if kind not in _NO_FLUSH:
                self.flush()
                # Something unknown may add links: ask for no more ifindexes, look them up.
                self._next_index.clear()
            applier(self, op)
        except BatchError as e:
            raise StepFailed(e.op, os.strerror(e.errno)) from None
        except NetlinkError as e:
            raise KernelError(f"`{op.ip().splitlines()[0]}` failed: {os.strerror(e.code)}") from None
        except OSError as e:
            raise KernelError(f"`{op.ip().splitlines()[0]}` failed: {e.strerror or e}") from None

    def flush(self) -> None:
        """Send every queued request and check its ack; raises KernelError naming the op."""
        if not self._batch.pending():
            return
        try:
            self._batch.flush()
        except BatchError as e:
            raise StepFailed(e.op, os.strerror(e.errno)) from None
        except OSError as e:
            raise KernelError(f"netlink batch failed: {e.strerror or e}") from None

    def _netns_add(self, op: P.NetnsAdd) -> None:
        self.create_netns(op.ns, op.lab)
        self._index[(op.ns, "lo")] = 1

    def _bridge_add(self, op: P.BridgeAdd) -> None:
        self.sock(op.ns).link("add", ifname=op.ifname, kind="bridge")

    def _veth_add(self, op: P.VethAdd) -> None:
        # The peer is created straight inside its namespace: no second move, no second socket.
        self.sock(op.ns).link("add", ifname=op.ifname, kind="veth",
                              peer={"ifname": op.peer, "net_ns_fd": self.nsfd(op.peer_ns)})

    def _link_up(self, op: P.LinkUp) -> None:
        extra = {"master": self.index(op.ns, op.master)} if op.master else {}
        self.sock(op.ns).link("set", index=self.index(op.ns, op.ifname), state="up", **extra)

    def _addr_add(self, op: P.AddrAdd) -> None:
        self.sock(op.ns).addr("add", index=self.index(op.ns, op.ifname), address=op.address,
                              prefixlen=op.prefixlen)

    def _route_add(self, op: P.RouteAdd) -> None:
        dst = "0.0.0.0/0" if op.dst == "default" else op.dst
        # proto boot (3) is what `ip route add` sets; pyroute2 would say static.
        self.sock(op.ns).route("add", dst=dst, gateway=op.via, oif=self.index(op.ns, op.dev),
                               proto=3)

    def _sysctl(self, op: P.Sysctl) -> None:
        # /proc/sys/net resolves to the namespace of the thread that opens the file.
        with inside(op.ns):
            with open("/proc/sys/" + op.key.replace(".", "/"), "w") as f:
                f.write(op.value)

    def _nft_apply(self, op: P.NftApply) -> None:
        # pyroute2's nftables support is too thin: run the real `nft -f -`; the child inherits
        # the network namespace of the thread that forks it, so the ruleset lands inside `ns`.
        with inside(op.ns):
            try:
                r = subprocess.run(["nft", "-f", "-"], input=op.ruleset, capture_output=True,
                                   text=True, timeout=30)
            except FileNotFoundError:
                raise KernelError("nft is not installed: install nftables "
                                  "(sudo ./setup.sh, or apt-get install nftables)") from None
        if r.returncode != 0:
            what = " ".join(r.stderr.split())[:300]
            raise KernelError(f"`ip netns exec {op.ns} nft -f -` failed: {what}")

    def _link_mtu(self, op: P.LinkMtu) -> None:
        self.sock(op.ns).link("set", index=self.index(op.ns, op.ifname), mtu=op.mtu)

    def _link_mac(self, op: P.LinkMac) -> None:
        self.sock(op.ns).link("set", index=self.index(op.ns, op.ifname), address=op.mac)

    def _vxlan_add(self, op: P.VxlanAdd) -> None:
        self.sock(op.ns).link("add", ifname=op.ifname, kind="vxlan", address=op.mac, mtu=op.mtu,
                              vxlan_id=op.vni, vxlan_local=op.local, vxlan_port=op.port,
                              vxlan_link=self.index(op.ns, op.dev), vxlan_learning=0)

    def _neigh_add(self, op: P.NeighAdd) -> None:
        self.sock(op.ns).neigh("add", dst=op.address, lladdr=op.mac,
                               ifindex=self.index(op.ns, op.dev), state=NUD_PERMANENT)

    def _fdb_append(self, op: P.FdbAppend) -> None:
        # pyroute2's fdb() adds NUD_NOARP|NUD_PERMANENT and NTF_SELF, as `bridge fdb ... self
        # permanent` does.
        self.sock(op.ns).fdb("append", ifindex=self.index(op.ns, op.dev), lladdr=op.mac,
                             dst=op.dst)

    def _onlink_route_add(self, op: P.OnlinkRouteAdd) -> None:
        # onlink: the kernel takes the gateway as directly reachable on the device, although no
        # address of the device covers it (the device must be up).
        self.sock(op.ns).route("add", dst=op.dst, gateway=op.via, oif=self.index(op.ns, op.dev),
                               flags=RTNH_F_ONLINK, proto=3)

    def _dev_route_add(self, op: P.DevRouteAdd) -> None:
        # scope link (253), as `ip route add DST dev DEV` sets for a route without a gateway.
        self.sock(op.ns).route("add", dst=op.dst, oif=self.index(op.ns, op.dev), scope=253,
                               proto=3)

    def _hairpin_on(self, op: P.HairpinOn) -> None:
        # IFLA_BRPORT_MODE is the bridge port's hairpin flag.
        self.sock(op.ns).brport("set", index=self.index(op.ns, op.ifname), mode=1)

    def _hairpin_off(self, op: P.HairpinOff) -> None:
        self.sock(op.ns).brport("set", index=self.index(op.ns, op.ifname), mode=0)

    # The deletes of the break-it exercises: an object already gone is no error (a learner may
    # have removed it by hand), so an undo can always run to its end.
    _GONE = (errno.ESRCH, errno.ENOENT, errno.EADDRNOTAVAIL, errno.ENODEV)

    def _gone_ok(self, call: Callable[[], object]) -> None:
        try:
            call()
        except NetlinkError as e:
            if e.code not in self._GONE:
                raise

    def _route_del(self, op: P.RouteDel) -> None:
        dst = "0.0.0.0/0" if op.dst == "default" else op.dst
        extra = {"gateway": op.via} if op.via else {}
        if op.dev:
            extra["oif"] = self.index(op.ns, op.dev)
        self._gone_ok(lambda: self.sock(op.ns).route("del", dst=dst, **extra))

    def _link_down(self, op: P.LinkDown) -> None:
        self.sock(op.ns).link("set", index=self.index(op.ns, op.ifname), state="down")

    def _addr_del(self, op: P.AddrDel) -> None:
        self._gone_ok(lambda: self.sock(op.ns).addr("del", index=self.index(op.ns, op.ifname),
                                                    address=op.address, prefixlen=op.prefixlen))

    def _neigh_del(self, op: P.NeighDel) -> None:
        self._gone_ok(lambda: self.sock(op.ns).neigh("del", dst=op.address,
                                                     ifindex=self.index(op.ns, op.dev)))

    def _neigh_replace(self, op: P.NeighReplace) -> None:
        self.sock(op.ns).neigh("replace", dst=op.address, lladdr=op.mac,
                               ifindex=self.index(op.ns, op.dev), state=NUD_PERMANENT)

    def _fdb_del(self, op: P.FdbDel) -> None:
        self._gone_ok(lambda: self.sock(op.ns).fdb("del", ifindex=self.index(op.ns, op.dev),
                                                   lladdr=op.mac, dst=op.dst))

    _appliers: dict[type, Callable] = {
        P.NetnsAdd: _netns_add,
        P.BridgeAdd: _bridge_add,
        P.VethAdd: _veth_add,
        P.LinkUp: _link_up,
        P.AddrAdd: _addr_add,
        P.RouteAdd: _route_add,
        P.Sysctl: _sysctl,
        P.NftApply: _nft_apply,
        P.LinkMtu: _link_mtu,
        P.LinkMac: _link_mac,
        P.VxlanAdd: _vxlan_add,
        P.NeighAdd: _neigh_add,
        P.FdbAppend: _fdb_append,
        P.OnlinkRouteAdd: _onlink_route_add,
        P.DevRouteAdd: _dev_route_add,
        P.HairpinOn: _hairpin_on,
        P.HairpinOff: _hairpin_off,
        P.RouteDel: _route_del,
        P.LinkDown: _link_down,
        P.AddrDel: _addr_del,
        P.NeighDel: _neigh_del,
        P.NeighReplace: _neigh_replace,
        P.FdbDel: _fdb_del,
    }

    # ------------------------------------------------------------ observation

    def ipv4_addresses(self, ns: str, ifname: Optional[str]) -> list[str]:
        """The IPv4 addresses (address/prefixlen) on one interface of a namespace (None: all)."""
        # One address dump, matched by label (an IPv4 address is labelled with its link's name).
        return [f"{a.get('IFA_ADDRESS')}/{a['prefixlen']}" for a in self.sock(ns).get_addr(family=2)
                if ifname is None or a.get("IFA_LABEL") == ifname]

    def link_mtu(self, ns: str, ifname: str) -> int:
        return self.sock(ns).get_links(ifname=ifname)[0].get("IFLA_MTU")


# ---------------------------------------------------------------- observation for graph and trace

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
        except NetlinkError:
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
    from ..view import nft, snapshot as S
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
        except NetlinkError as e:
            return {"error": os.strerror(e.code)}
        names = {l["index"]: l.get_attr("IFLA_IFNAME") for l in sock.get_links()}
        return {"dev": names.get(r.get_attr("RTA_OIF")), "gateway": r.get_attr("RTA_GATEWAY"),
                "src": r.get_attr("RTA_PREFSRC"), "type": _ROUTE_TYPES.get(r["type"], str(r["type"]))}


# ---------------------------------------------------------------- the batched path

def _new_index(kern: Kernel, ns: str, ifname: str) -> int:
    """Choose the ifindex of a link about to be made in `ns` (the kernel honours a requested
    ifindex), so later requests can name it without an RTM_GETLINK round trip."""
    idx = kern._next_index[ns]
    kern._next_index[ns] = idx + 1
    kern._index[(ns, ifname)] = idx
    return idx


def _known(kern: Kernel, *keys: tuple[str, str]) -> bool:
    """Whether every (ns, ifname) has a known ifindex in a namespace with a netlab socket."""
    return all(k in kern._index and kern._batch.has_socket(k[0]) for k in keys)


def _fast_netns_add(kern: Kernel, op: P.NetnsAdd) -> bool:
    kern.create_netns(op.ns, op.lab)   # marked before it is named: see create_netns
    kern._index[(op.ns, "lo")] = 1
    return True


def _fast_bridge_add(kern: Kernel, op: P.BridgeAdd) -> bool:
    if op.ns not in kern._next_index or (op.ns, op.ifname) in kern._index:
        return False
    idx = _new_index(kern, op.ns, op.ifname)
    kern._batch.queue(op.ns, lambda seq: nlmsg.bridge_add(seq, op.ifname, idx), op)
    return True


def _fast_veth_add(kern: Kernel, op: P.VethAdd) -> bool:
    if op.ns not in kern._next_index or op.peer_ns not in kern._next_index or \
            (op.ns, op.ifname) in kern._index or (op.peer_ns, op.peer) in kern._index:
        return False
    idx = _new_index(kern, op.ns, op.ifname)
    # The kernel gives the peer the ifindex asked for in its own ifinfomsg (veth_newlink).
    peer_idx = _new_index(kern, op.peer_ns, op.peer)
    fd = kern.nsfd(op.peer_ns)
    kern._batch.queue(op.ns, lambda seq: nlmsg.veth_add(seq, op.ifname, idx, op.peer, peer_idx, fd),
                      op, creates_in=op.peer_ns)
    return True


def _fast_link_up(kern: Kernel, op: P.LinkUp) -> bool:
    keys = [(op.ns, op.ifname)] + ([(op.ns, op.master)] if op.master else [])
    if not _known(kern, *keys):
        return False
    idx, master = kern._index[keys[0]], kern._index[keys[1]] if op.master else None
    kern._batch.queue(op.ns, lambda seq: nlmsg.link_up(seq, idx, master=master), op)
    return True


def _fast_addr_add(kern: Kernel, op: P.AddrAdd) -> bool:
    if not _known(kern, (op.ns, op.ifname)):
        return False
    idx = kern._index[(op.ns, op.ifname)]
    kern._batch.queue(op.ns, lambda seq: nlmsg.addr_add(seq, idx, op.address, op.prefixlen), op)
    return True


def _fast_route_add(kern: Kernel, op: P.RouteAdd) -> bool:
    if not _known(kern, (op.ns, op.dev)):
        return False
    idx = kern._index[(op.ns, op.dev)]
    kern._batch.queue(op.ns, lambda seq: nlmsg.route_add(seq, op.dst, op.via, idx), op)
    return True


# Operations the batch knows how to send; each returns False to take the ordinary path instead.
_FAST: dict[type, Callable[[Kernel, P.Op], bool]] = {
    P.NetnsAdd: _fast_netns_add,
    P.BridgeAdd: _fast_bridge_add,
    P.VethAdd: _fast_veth_add,
    P.LinkUp: _fast_link_up,
    P.AddrAdd: _fast_addr_add,
    P.RouteAdd: _fast_route_add,
}
# The appliers as shipped: one replaced by another engineer is used as it is, never batched.
_DEFAULT_APPLIERS = dict(Kernel._appliers)
# Ordinary appliers that need nothing queued to be done first (a sysctl of the namespace itself).
_NO_FLUSH = {P.Sysctl}


def missing_link_kinds(kinds: list[str]) -> list[str]:
    """The link kinds (veth, bridge, vxlan) this kernel cannot create.

    Each kind is tried in a throwaway namespace that only a netlink socket holds, so it vanishes
    when the socket closes: nothing is ever made in the root namespace. A kind the kernel does not
    know (module missing) fails with EOPNOTSUPP; any other answer means it is there.
    """
    home = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    try:
        _check(_libc.unshare(CLONE_NEWNET), "unshare")
        try:
            sock = IPRoute()
        finally:
            _setns(home)
    finally:
        os.close(home)
    extra = {"veth": {"peer": {"ifname": "probe-peer"}}, "vxlan": {"vxlan_id": 42, "vxlan_port": 4789}}
    missing = []
    with sock:
        for i, kind in enumerate(kinds):
            try:
                sock.link("add", ifname=f"probe{i}", kind=kind, **extra.get(kind, {}))
            except NetlinkError as e:
                if e.code == errno.EOPNOTSUPP:
                    missing.append(kind)
    return missing


def is_unmounted_file(ns: str) -> bool:
    """True when /run/netns/<ns> is a plain file, not a namespace: what `ip netns add` (and netlab)
    leave when killed between creating the file and bind-mounting the namespace on it."""
    try:
        return os.stat(netns_path(ns)).st_dev == os.stat(NETNS_DIR).st_dev
    except OSError:
        return False


# ---------------------------------------------------------------- a node on a real host (--node)

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
        except NetlinkError as e:
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

"""The one module that talks to the kernel: netlink through pyroute2, and namespace plumbing.

It creates named network namespaces in process (as `ip netns add` does, without pyroute2's
forking helper), keeps one netlink socket per namespace opened once, applies plan operations, and
observes what is there. Everything else in netlab is pure or goes through this module.
"""

from __future__ import annotations

import ctypes
import errno
import os
import threading
from contextlib import contextmanager
from typing import Callable, Iterator, Optional

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

from . import plan as P
from .errors import KernelError, NetlabError

NETNS_DIR = "/run/netns"
CLONE_NEWNET = 0x40000000
MS_REC, MS_BIND, MS_SHARED = 0x4000, 0x1000, 1 << 20
MNT_DETACH = 2

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
    """
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
    try:
        fd = os.open(netns_path(ns), os.O_RDONLY)
    except FileNotFoundError:
        raise NetlabError(f"namespace {ns} does not exist: is the lab up? (netlab status)", 1)
    _setns(fd)
    os.close(fd)


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
            with IPRoute() as sock:
                alias = sock.link("get", index=1)[0].get("ifalias") or ""
    except (NetlabError, NetlinkError, OSError):
        return None
    return alias[len(P.MARK):] if alias.startswith(P.MARK) else None


class Kernel:
    """Applies plan operations through one netlink socket per namespace."""

    def __init__(self) -> None:
        self._socks: dict[str, IPRoute] = {}
        self._fds: dict[str, int] = {}
        self._index: dict[tuple[str, str], int] = {}

    def close(self) -> None:
        for sock in self._socks.values():
            sock.close()
        for fd in self._fds.values():
            os.close(fd)
        self._socks.clear()
        self._fds.clear()
        self._index.clear()

    def __enter__(self) -> "Kernel":
        return self

    def __exit__(self, *exc) -> None:
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
                self._socks[ns] = IPRoute()
                if lab is not None:
                    self._socks[ns].link("set", index=1, state="up", ifalias=P.MARK + lab)
                _check(_libc.mount(b"/proc/thread-self/ns/net", path.encode(), b"none", MS_BIND, None),
                       f"mount {path}")
            finally:
                _setns(home)
        except BaseException:
            remove_netns(ns)
            raise
        finally:
            os.close(home)

    def sock(self, ns: str) -> IPRoute:
        sock = self._socks.get(ns)
        if sock is None:
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
            # One RTM_GETLINK by name; link_lookup would dump every link of the namespace.
            idx = self._index[key] = self.sock(ns).link("get", ifname=ifname)[0]["index"]
        return idx

    # ------------------------------------------------------------ operations

    def apply(self, op: P.Op) -> None:
        """Apply one kernel operation; raises KernelError naming its iproute2 equivalent."""
        try:
            self._appliers[type(op)](self, op)
        except NetlinkError as e:
            raise KernelError(f"`{op.ip().splitlines()[0]}` failed: {os.strerror(e.code)}") from None
        except OSError as e:
            raise KernelError(f"`{op.ip().splitlines()[0]}` failed: {e.strerror or e}") from None

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

    _appliers: dict[type, Callable] = {
        P.NetnsAdd: _netns_add,
        P.BridgeAdd: _bridge_add,
        P.VethAdd: _veth_add,
        P.LinkUp: _link_up,
        P.AddrAdd: _addr_add,
        P.RouteAdd: _route_add,
        P.Sysctl: _sysctl,
    }

    # ------------------------------------------------------------ observation

    def routes(self, ns: str) -> list[dict]:
        """The main table's IPv4 routes of a namespace as {dst, via, dev}."""
        sock = self.sock(ns)
        names = {link["index"]: link.get("ifname") for link in sock.get_links()}
        out = []
        for r in sock.get_routes(family=2, table=254):
            dst = r.get("dst")
            out.append({"dst": f"{dst}/{r['dst_len']}" if dst else "default",
                        "via": r.get("gateway"), "dev": names.get(r.get("oif"))})
        return out



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

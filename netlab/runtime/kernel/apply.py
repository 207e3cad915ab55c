"""The Kernel: applies plan operations through one netlink socket per namespace, opened once,
and reads back what a verify or a view needs (addresses, MTUs). pyroute2 is imported on first use.
"""

from __future__ import annotations

import errno
import os
import subprocess
import sys
from typing import Callable, Optional

from ...core import ops as P
from ...core.errors import KernelError
from .. import nlmsg
from ..batch import Batch, BatchError, open_socket
from .fast import _FAST, _NO_FLUSH, FastPath
from .netns import (CLONE_NEWNET, MS_BIND, NetnsExists, _check, _libc, _mark_now, _setns,
                    _share_netns_dir, inside, netns_path, remove_netns)

NUD_PERMANENT = 0x80
RTNH_F_ONLINK = 4


# pyroute2 is imported on first use: it costs ~0.15 s a command, and `up` of a fresh lab never
# needs it (its batch speaks netlink itself, nlmsg.py), nor do `status`, `down` or `verify`.
def IPRoute():
    from pyroute2 import IPRoute as _IPRoute
    return _IPRoute()


class _NotRaised(Exception):
    """Stands for pyroute2's NetlinkError while pyroute2 is not imported (so none was raised)."""


def _netlink_error() -> type:
    mod = sys.modules.get("pyroute2.netlink.exceptions")
    return mod.NetlinkError if mod is not None else _NotRaised


class StepFailed(KernelError):
    """A batched operation failed; `op` says which, so `up` can report its step."""

    def __init__(self, op: P.Op, reason: str):
        super().__init__(f"`{op.ip().splitlines()[0]}` failed: {reason}")
        self.op = op


class Kernel(FastPath):
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
        except _netlink_error() as e:
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

    def _vxlan_add(self, op: P.VxlanAdd) -> None:
        self.sock(op.ns).link("add", ifname=op.ifname, kind="vxlan", address=op.mac, mtu=op.mtu,
                              vxlan_id=op.vni, vxlan_local=op.local, vxlan_port=op.port,
                              vxlan_link=self.index(op.ns, op.dev), vxlan_learning=0)

    def _neigh_add(self, op: P.NeighAdd) -> None:
        self.sock(op.ns).neigh("add", dst=op.address, lladdr=op.mac,
                               ifindex=self.index(op.ns, op.dev), state=NUD_PERMANENT)

    def _neigh_permanent(self, op: P.NeighPermanent) -> None:
        for dev, address, mac in op.entries:
            self.sock(op.ns).neigh("replace", dst=address, lladdr=mac,
                                   ifindex=self.index(op.ns, dev), state=NUD_PERMANENT)

    def _link_address(self, op: P.LinkAddress) -> None:
        self.sock(op.ns).link("set", index=self.index(op.ns, op.ifname), address=op.mac)

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
        except _netlink_error() as e:
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
        P.LinkAddress: _link_address,
        P.NeighPermanent: _neigh_permanent,
    }

    # ------------------------------------------------------------ observation

    def ipv4_addresses(self, ns: str, ifname: Optional[str]) -> list[str]:
        """The IPv4 addresses (address/prefixlen) on one interface of a namespace (None: all)."""
        # One address dump, matched by label (an IPv4 address is labelled with its link's name).
        return [f"{a.get('IFA_ADDRESS')}/{a['prefixlen']}" for a in self.sock(ns).get_addr(family=2)
                if ifname is None or a.get("IFA_LABEL") == ifname]

    def link_mtu(self, ns: str, ifname: str) -> int:
        return self.sock(ns).get_links(ifname=ifname)[0].get("IFLA_MTU")


# The appliers as shipped: one replaced by another engineer is used as it is, never batched.
_DEFAULT_APPLIERS = dict(Kernel._appliers)


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
            sock = open_socket()     # a plain netlink socket: no pyroute2 import for this
        finally:
            _setns(home)
    finally:
        os.close(home)
    missing = []
    with sock:
        for i, kind in enumerate(kinds):
            sock.sendall(nlmsg.kind_add(i + 1, f"probe{i}", kind))
            answer = None
            while answer is None:
                answer = next((code for seq, code in nlmsg.acks(sock.recv(1 << 16))
                               if seq == i + 1), None)
            if answer == errno.EOPNOTSUPP:
                missing.append(kind)
    return missing

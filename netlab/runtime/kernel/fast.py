"""The batched path of `up`: for the common operations in namespaces netlab made itself (links,
addresses, routes, neighbours), the interface indexes are chosen up front and the requests queued
(batch.py), so no request waits for the kernel's answer to the one before. A mixin of Kernel: each
method returns False to take the ordinary (pyroute2) path instead.
"""

from __future__ import annotations

from typing import Callable

from ...core import ops as P
from .. import nlmsg


class FastPath:
    """The batched appliers; they keep Kernel's index of (namespace, ifname) -> ifindex."""

    def _new_index(self, ns: str, ifname: str) -> int:
        """Choose the ifindex of a link about to be made in `ns` (the kernel honours a requested
        ifindex), so later requests can name it without an RTM_GETLINK round trip."""
        idx = self._next_index[ns]
        self._next_index[ns] = idx + 1
        self._index[(ns, ifname)] = idx
        return idx


    def _known(self, *keys: tuple[str, str]) -> bool:
        """Whether every (ns, ifname) has a known ifindex in a namespace with a netlab socket."""
        return all(k in self._index and self._batch.has_socket(k[0]) for k in keys)


    def _fast_netns_add(self, op: P.NetnsAdd) -> bool:
        self.create_netns(op.ns, op.lab)   # marked before it is named: see create_netns
        self._index[(op.ns, "lo")] = 1
        return True


    def _fast_bridge_add(self, op: P.BridgeAdd) -> bool:
        if op.ns not in self._next_index or (op.ns, op.ifname) in self._index:
            return False
        idx = self._new_index(op.ns, op.ifname)
        self._batch.queue(op.ns, lambda seq: nlmsg.bridge_add(seq, op.ifname, idx), op)
        return True


    def _fast_veth_add(self, op: P.VethAdd) -> bool:
        if op.ns not in self._next_index or op.peer_ns not in self._next_index or \
                (op.ns, op.ifname) in self._index or (op.peer_ns, op.peer) in self._index:
            return False
        idx = self._new_index(op.ns, op.ifname)
        # The kernel gives the peer the ifindex asked for in its own ifinfomsg (veth_newlink).
        peer_idx = self._new_index(op.peer_ns, op.peer)
        fd = self.nsfd(op.peer_ns)
        self._batch.queue(op.ns, lambda seq: nlmsg.veth_add(seq, op.ifname, idx, op.peer, peer_idx, fd),
                          op, creates_in=op.peer_ns)
        return True


    def _fast_link_up(self, op: P.LinkUp) -> bool:
        keys = [(op.ns, op.ifname)] + ([(op.ns, op.master)] if op.master else [])
        if not self._known(*keys):
            return False
        idx, master = self._index[keys[0]], self._index[keys[1]] if op.master else None
        self._batch.queue(op.ns, lambda seq: nlmsg.link_up(seq, idx, master=master), op)
        return True


    def _fast_addr_add(self, op: P.AddrAdd) -> bool:
        if not self._known((op.ns, op.ifname)):
            return False
        idx = self._index[(op.ns, op.ifname)]
        self._batch.queue(op.ns, lambda seq: nlmsg.addr_add(seq, idx, op.address, op.prefixlen), op)
        return True


    def _fast_route_add(self, op: P.RouteAdd) -> bool:
        if not self._known((op.ns, op.dev)):
            return False
        idx = self._index[(op.ns, op.dev)]
        self._batch.queue(op.ns, lambda seq: nlmsg.route_add(seq, op.dst, op.via, idx), op)
        return True


    def _fast_neigh_add(self, op: P.NeighAdd) -> bool:
        if not self._known((op.ns, op.dev)):
            return False
        idx = self._index[(op.ns, op.dev)]
        self._batch.queue(op.ns, lambda seq: nlmsg.neigh_add(seq, idx, op.address, op.mac), op)
        return True


    def _fast_neigh_permanent(self, op: P.NeighPermanent) -> bool:
        if not self._known(*{(op.ns, dev) for dev, _, _ in op.entries}):
            return False
        for dev, address, mac in op.entries:
            idx = self._index[(op.ns, dev)]
            self._batch.queue(op.ns, lambda seq, idx=idx, a=address, m=mac:
                              nlmsg.neigh_add(seq, idx, a, m, replace=True), op)
        return True


    def _fast_link_address(self, op: P.LinkAddress) -> bool:
        if not self._known((op.ns, op.ifname)):
            return False
        idx = self._index[(op.ns, op.ifname)]
        self._batch.queue(op.ns, lambda seq: nlmsg.link_address(seq, idx, op.mac), op)
        return True


# Operations the batch knows how to send; each returns False to take the ordinary path instead.
_FAST: dict[type, Callable] = {
    P.NetnsAdd: FastPath._fast_netns_add,
    P.BridgeAdd: FastPath._fast_bridge_add,
    P.VethAdd: FastPath._fast_veth_add,
    P.LinkUp: FastPath._fast_link_up,
    P.AddrAdd: FastPath._fast_addr_add,
    P.RouteAdd: FastPath._fast_route_add,
    P.NeighAdd: FastPath._fast_neigh_add,
    P.LinkAddress: FastPath._fast_link_address,
    P.NeighPermanent: FastPath._fast_neigh_permanent,
}
# Ordinary appliers that need nothing queued to be done first (a sysctl of the namespace itself).
_NO_FLUSH = {P.Sysctl}

"""rtnetlink requests as bytes: pure builders for the messages `up` sends, and the ack parser.

These are the same messages iproute2 sends for the plan's commands (`ip link add ... type veth
peer name ... netns ...`, `ip link set ... master ... up`, `ip addr add`, `ip route add`), built
with struct, so the kernel module can send a whole batch of them in one sendmsg() per namespace
and read the acks back. No socket here: unit-tested as plain functions.
"""

from __future__ import annotations

import socket
import struct
from typing import Iterator, Optional

# <linux/netlink.h>, <linux/rtnetlink.h>, <linux/if_link.h>, <linux/veth.h>
NLMSG_ERROR = 2
NLM_F_REQUEST, NLM_F_ACK, NLM_F_EXCL, NLM_F_CREATE = 0x1, 0x4, 0x200, 0x400
RTM_NEWLINK, RTM_NEWADDR, RTM_NEWROUTE = 16, 20, 24
IFLA_IFNAME, IFLA_MASTER, IFLA_LINKINFO, IFLA_IFALIAS, IFLA_NET_NS_FD = 3, 10, 18, 20, 28
IFLA_INFO_KIND, IFLA_INFO_DATA, VETH_INFO_PEER = 1, 2, 1
IFA_ADDRESS, IFA_LOCAL = 1, 2
RTA_DST, RTA_OIF, RTA_GATEWAY = 1, 4, 5
IFF_UP = 0x1
RT_TABLE_MAIN, RTPROT_BOOT, RT_SCOPE_UNIVERSE, RTN_UNICAST = 254, 3, 0, 1

_HDR = struct.Struct("=IHHII")        # nlmsghdr: len, type, flags, seq, pid
_IFINFO = struct.Struct("=BxHiII")    # ifinfomsg: family, type, index, flags, change
_IFADDR = struct.Struct("=BBBBI")     # ifaddrmsg: family, prefixlen, flags, scope, index
_RTMSG = struct.Struct("=BBBBBBBBI")  # rtmsg: family, dst_len, src_len, tos, table, proto, scope,
                                      #        type, flags
_NLA = struct.Struct("=HH")
_ERR = struct.Struct("=i")

CREATE = NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL
CHANGE = NLM_F_REQUEST | NLM_F_ACK


def _pad(data: bytes) -> bytes:
    return data + b"\0" * (-len(data) % 4)


def attr(kind: int, payload: bytes) -> bytes:
    """One netlink attribute (struct nlattr + payload, padded to 4 bytes)."""
    return _pad(_NLA.pack(_NLA.size + len(payload), kind) + payload)


def _str(kind: int, value: str) -> bytes:
    return attr(kind, value.encode() + b"\0")


def _u32(kind: int, value: int) -> bytes:
    return attr(kind, struct.pack("=I", value))


def message(kind: int, flags: int, seq: int, body: bytes) -> bytes:
    return _HDR.pack(_HDR.size + len(body), kind, flags, seq, 0) + body


def _ifinfo(index: int = 0, up: bool = False) -> bytes:
    return _IFINFO.pack(socket.AF_UNSPEC, 0, index, IFF_UP if up else 0, IFF_UP if up else 0)


def bridge_add(seq: int, ifname: str, index: int) -> bytes:
    """ip link add IFNAME type bridge (with the ifindex chosen by the caller)."""
    linkinfo = attr(IFLA_LINKINFO, _str(IFLA_INFO_KIND, "bridge"))
    return message(RTM_NEWLINK, CREATE, seq, _ifinfo(index) + _str(IFLA_IFNAME, ifname) + linkinfo)


def kind_add(seq: int, ifname: str, kind: str) -> bytes:
    """ip link add IFNAME type KIND, with nothing else: enough to learn whether the kernel knows
    the kind (EOPNOTSUPP when it does not)."""
    linkinfo = attr(IFLA_LINKINFO, _str(IFLA_INFO_KIND, kind))
    return message(RTM_NEWLINK, CREATE, seq, _ifinfo() + _str(IFLA_IFNAME, ifname) + linkinfo)


def veth_add(seq: int, ifname: str, index: int, peer: str, peer_index: int, peer_nsfd: int) -> bytes:
    """ip link add IFNAME type veth peer name PEER netns PEER_NS, both ifindexes chosen."""
    peer_info = _ifinfo(peer_index) + _str(IFLA_IFNAME, peer) + _u32(IFLA_NET_NS_FD, peer_nsfd)
    data = attr(IFLA_INFO_DATA, attr(VETH_INFO_PEER, peer_info))
    linkinfo = attr(IFLA_LINKINFO, _str(IFLA_INFO_KIND, "veth") + data)
    return message(RTM_NEWLINK, CREATE, seq, _ifinfo(index) + _str(IFLA_IFNAME, ifname) + linkinfo)


def link_up(seq: int, index: int, master: Optional[int] = None, alias: Optional[str] = None) -> bytes:
    """ip link set DEV [master MASTER] up [alias ALIAS]"""
    attrs = (_u32(IFLA_MASTER, master) if master is not None else b"") + \
        (_str(IFLA_IFALIAS, alias) if alias is not None else b"")
    return message(RTM_NEWLINK, CHANGE, seq, _ifinfo(index, up=True) + attrs)


def addr_add(seq: int, index: int, address: str, prefixlen: int) -> bytes:
    """ip addr add ADDRESS/PREFIXLEN dev DEV (IPv4: local and address both ADDRESS, as ip does)."""
    raw = socket.inet_aton(address)
    body = _IFADDR.pack(socket.AF_INET, prefixlen, 0, RT_SCOPE_UNIVERSE, index) + \
        attr(IFA_LOCAL, raw) + attr(IFA_ADDRESS, raw)
    return message(RTM_NEWADDR, CREATE, seq, body)


def route_add(seq: int, dst: str, via: str, oif: int) -> bytes:
    """ip route add DST via VIA dev DEV: table main, proto boot, scope universe, as ip does."""
    if dst == "default":
        net, dst_len = None, 0
    else:
        net, _, plen = dst.partition("/")
        dst_len = int(plen) if plen else 32
    body = _RTMSG.pack(socket.AF_INET, dst_len, 0, 0, RT_TABLE_MAIN, RTPROT_BOOT,
                       RT_SCOPE_UNIVERSE, RTN_UNICAST, 0)
    if net is not None:
        body += attr(RTA_DST, socket.inet_aton(net))
    body += attr(RTA_GATEWAY, socket.inet_aton(via)) + _u32(RTA_OIF, oif)
    return message(RTM_NEWROUTE, CREATE, seq, body)


RTM_NEWNEIGH, NDA_DST, NDA_LLADDR, NUD_PERMANENT, IFLA_ADDRESS = 28, 1, 2, 0x80, 1
NLM_F_REPLACE = 0x100
_NDMSG = struct.Struct("=BBHiHBB")    # ndmsg: family, pad1, pad2, ifindex, state, flags, type


def _mac(mac: str) -> bytes:
    return bytes(int(b, 16) for b in mac.split(":"))


def neigh_add(seq: int, index: int, address: str, mac: str, replace: bool = False) -> bytes:
    """ip neigh add (or replace) ADDRESS lladdr MAC dev DEV nud permanent"""
    body = _NDMSG.pack(socket.AF_INET, 0, 0, index, NUD_PERMANENT, 0, 0) + \
        attr(NDA_DST, socket.inet_aton(address)) + attr(NDA_LLADDR, _mac(mac))
    flags = (NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_REPLACE) if replace else CREATE
    return message(RTM_NEWNEIGH, flags, seq, body)


def link_address(seq: int, index: int, mac: str) -> bytes:
    """ip link set dev DEV address MAC"""
    return message(RTM_NEWLINK, CHANGE, seq, _ifinfo(index) + attr(IFLA_ADDRESS, _mac(mac)))


def acks(data: bytes) -> Iterator[tuple[int, int]]:
    """(seq, errno) of every NLMSG_ERROR in a buffer read from the socket; errno 0 is success."""
    offset = 0
    while offset + _HDR.size <= len(data):
        length, kind, _flags, seq, _pid = _HDR.unpack_from(data, offset)
        if length < _HDR.size:
            break
        if kind == NLMSG_ERROR:
            yield seq, -_ERR.unpack_from(data, offset + _HDR.size)[0]
        offset += (length + 3) & ~3


RTM_GETLINK = 18


def link_get(seq: int, index: int) -> bytes:
    """ip link show dev INDEX (one link, no dump)."""
    return message(RTM_GETLINK, NLM_F_REQUEST, seq, _ifinfo(index))


def link_alias(data: bytes) -> Optional[str]:
    """The IFLA_IFALIAS of the RTM_NEWLINK reply at the start of `data` (None if it has none)."""
    if len(data) < _HDR.size + _IFINFO.size:
        return None
    length, kind, _flags, _seq, _pid = _HDR.unpack_from(data, 0)
    if kind != RTM_NEWLINK:
        return None
    offset, end = _HDR.size + _IFINFO.size, min(length, len(data))
    while offset + _NLA.size <= end:
        size, atype = _NLA.unpack_from(data, offset)
        if size < _NLA.size:
            return None
        if atype & 0x3FFF == IFLA_IFALIAS:
            return data[offset + _NLA.size:offset + size].split(b"\0", 1)[0].decode(errors="replace")
        offset += (size + 3) & ~3
    return None

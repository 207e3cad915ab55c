"""netlab-cni's kernel part: the bridge, veth pair, addresses and route of an attachment, made,
read and removed with rtnetlink.

The only code of the plugin that touches the kernel: rtnetlink over a plain socket, the requests
built with netlab.runtime.nlmsg (no pyroute2: its import alone would cost more than the whole
ADD). One socket per namespace: the node's (where the plugin runs) and, for the pod's side, one
opened inside CNI_NETNS after entering it for a moment with setns() (this process has one thread).
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import socket
import struct
from dataclasses import dataclass
from typing import Iterator, Optional

from . import nlmsg
from .batch import open_socket
from .cni_request import E_KERNEL, CniError, NetConf, Request, host_veth_name
from .cni_result import Attachment

_CLONE_NEWNET = 0x40000000
_NLMSG_ERROR, _NLMSG_DONE = 2, 3
_F_REQUEST, _F_ACK, _F_DUMP = 0x1, 0x4, 0x300
_F_CREATE = 0x1 | 0x4 | 0x200 | 0x400          # request, ack, excl, create
_RTM_NEWLINK, _RTM_DELLINK, _RTM_GETLINK, _RTM_GETADDR, _RTM_GETROUTE = 16, 17, 18, 22, 26
_IFLA_ADDRESS, _IFLA_IFNAME, _IFLA_MTU, _IFLA_MASTER = 1, 3, 4, 10
_IFLA_LINKINFO, _IFLA_INFO_KIND, _IFLA_INFO_DATA, _VETH_INFO_PEER, _IFLA_NET_NS_FD = 18, 1, 2, 1, 28
_IFA_ADDRESS, _IFA_LOCAL = 1, 2
_RTA_OIF, _RTA_GATEWAY, _RTA_TABLE = 4, 5, 15
_HDR = struct.Struct("=IHHII")
_IFINFO = struct.Struct("=BxHiII")
_IFADDR = struct.Struct("=BBBBI")
_RTMSG = struct.Struct("=BBBBBBBBI")
_NLA = struct.Struct("=HH")


@contextlib.contextmanager
def _entered(path: str) -> Iterator[None]:
    libc = ctypes.CDLL(None, use_errno=True)
    home = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    target = os.open(path, os.O_RDONLY)
    try:
        if libc.setns(target, _CLONE_NEWNET) != 0:
            raise OSError(ctypes.get_errno(), f"setns {path}")
        try:
            yield
        finally:
            libc.setns(home, _CLONE_NEWNET)
    finally:
        os.close(target)
        os.close(home)


def _ifinfo(index: int = 0, up: bool = False) -> bytes:
    return _IFINFO.pack(0, 0, index, 1 if up else 0, 1 if up else 0)


def _str(kind: int, value: str) -> bytes:
    return nlmsg.attr(kind, value.encode() + b"\0")


def _u32(kind: int, value: int) -> bytes:
    return nlmsg.attr(kind, struct.pack("=I", value))


def _attrs(data: bytes, offset: int, end: int) -> dict[int, bytes]:
    out = {}
    while offset + _NLA.size <= end:
        size, kind = _NLA.unpack_from(data, offset)
        if size < _NLA.size:
            break
        out[kind & 0x3FFF] = data[offset + _NLA.size:offset + size]
        offset += (size + 3) & ~3
    return out


def _mac(raw: Optional[bytes]) -> str:
    return ":".join(f"{b:02x}" for b in raw) if raw else ""


@dataclass(frozen=True)
class _Link:
    index: int
    up: bool
    mac: str
    master: int


class Netlink:
    """rtnetlink requests in the node's namespace and in a pod's (CNI_NETNS); errors as CniError."""

    def __init__(self) -> None:
        self._socks: dict[Optional[str], socket.socket] = {}
        self._seq = 0

    def close(self) -> None:
        for sock in self._socks.values():
            sock.close()
        self._socks.clear()

    def _sock(self, netns: Optional[str]) -> socket.socket:
        sock = self._socks.get(netns)
        if sock is None:
            if netns is None:
                sock = open_socket()
            else:
                with _entered(netns):     # a netlink socket stays in the namespace it was made in
                    sock = open_socket()
            self._socks[netns] = sock
        return sock

    def _talk(self, netns: Optional[str], kind: int, flags: int, body: bytes) -> list[bytes]:
        """Send one request; its replies (each message from its header on), or OSError(errno)."""
        self._seq += 1
        seq = self._seq
        sock = self._sock(netns)
        sock.send(nlmsg.message(kind, flags, seq, body))
        out: list[bytes] = []
        while True:
            data = sock.recv(1 << 16)
            offset = 0
            while offset + _HDR.size <= len(data):
                length, mtype, _f, mseq, _pid = _HDR.unpack_from(data, offset)
                if length < _HDR.size:
                    break
                msg = data[offset:offset + length]
                offset += (length + 3) & ~3
                if mseq != seq:
                    continue
                if mtype == _NLMSG_ERROR:
                    err = -struct.unpack_from("=i", msg, _HDR.size)[0]
                    if err:
                        raise OSError(err, os.strerror(err))
                    return out
                if mtype == _NLMSG_DONE:
                    return out
                out.append(msg)
                if not flags & (_F_ACK | _F_DUMP):
                    return out

    def link(self, name: str, netns: Optional[str] = None) -> Optional[_Link]:
        try:
            reply = self._talk(netns, _RTM_GETLINK, _F_REQUEST, _ifinfo() + _str(_IFLA_IFNAME, name))
        except OSError as e:
            if e.errno == errno.ENODEV:
                return None
            raise
        _fam, _type, index, flags, _ch = _IFINFO.unpack_from(reply[0], _HDR.size)
        attrs = _attrs(reply[0], _HDR.size + _IFINFO.size, len(reply[0]))
        master = attrs.get(_IFLA_MASTER)
        return _Link(index=index, up=bool(flags & 1), mac=_mac(attrs.get(_IFLA_ADDRESS)),
                     master=struct.unpack("=I", master)[0] if master else 0)

    def link_name(self, index: int) -> Optional[str]:
        try:
            reply = self._talk(None, _RTM_GETLINK, _F_REQUEST, _ifinfo(index))
        except OSError:
            return None
        name = _attrs(reply[0], _HDR.size + _IFINFO.size, len(reply[0])).get(_IFLA_IFNAME, b"")
        return name.split(b"\0", 1)[0].decode()

    def _create(self, netns: Optional[str], body: bytes, kind: int = _RTM_NEWLINK) -> None:
        self._talk(netns, kind, _F_CREATE, body)

    def _fail(self, what: str, e: OSError) -> CniError:
        return CniError(E_KERNEL, f"{what} failed", e.strerror or str(e))

    def link_exists(self, name: str) -> bool:
        return self.link(name) is not None

    def master_of(self, name: str) -> Optional[str]:
        link = self.link(name)
        return self.link_name(link.master) if link and link.master else None

    def _ensure_bridge(self, conf: NetConf) -> int:
        if self.link(conf.bridge) is None:
            info = nlmsg.attr(_IFLA_LINKINFO, _str(_IFLA_INFO_KIND, "bridge"))
            try:
                self._create(None, _ifinfo() + _str(_IFLA_IFNAME, conf.bridge) +
                             _u32(_IFLA_MTU, conf.mtu) + info)
            except OSError as e:
                if e.errno != errno.EEXIST:      # another ADD made it meanwhile
                    raise
        idx = self.link(conf.bridge).index
        try:
            self._talk(None, nlmsg.RTM_NEWADDR, _F_CREATE,
                       nlmsg.addr_add(0, idx, str(conf.gateway), conf.subnet.prefixlen)[_HDR.size:])
        except OSError as e:
            if e.errno != errno.EEXIST:          # the gateway address is there already
                raise
        self._talk(None, _RTM_NEWLINK, _F_REQUEST | _F_ACK, _ifinfo(idx, up=True))
        # isGateway: the node routes for its pods (a sysctl of the node's namespace, not the host's).
        with open("/proc/sys/net/ipv4/ip_forward", "w") as f:
            f.write("1")
        return idx

    def attach(self, conf: NetConf, req: Request, ip: str) -> Attachment:
        host = host_veth_name(req.container_id, req.ifname)
        try:
            br_idx = self._ensure_bridge(conf)
            nsfd = os.open(req.netns, os.O_RDONLY)
            try:
                # The peer is born inside the pod's namespace with its final name.
                peer = _ifinfo() + _str(_IFLA_IFNAME, req.ifname) + _u32(_IFLA_MTU, conf.mtu) + \
                    _u32(_IFLA_NET_NS_FD, nsfd)
                info = nlmsg.attr(_IFLA_LINKINFO, _str(_IFLA_INFO_KIND, "veth") + nlmsg.attr(
                    _IFLA_INFO_DATA, nlmsg.attr(_VETH_INFO_PEER, peer)))
                self._create(None, _ifinfo() + _str(_IFLA_IFNAME, host) +
                             _u32(_IFLA_MTU, conf.mtu) + info)
            finally:
                os.close(nsfd)
            h = self.link(host)
            self._talk(None, _RTM_NEWLINK, _F_REQUEST | _F_ACK,
                       nlmsg.link_up(0, h.index, master=br_idx)[_HDR.size:])
            # Read after enslaving: a bridge without a MAC of its own takes its ports' lowest.
            br_mac = self.link(conf.bridge).mac
            pod = self.link(req.ifname, req.netns)
            self._talk(req.netns, nlmsg.RTM_NEWADDR, _F_CREATE,
                       nlmsg.addr_add(0, pod.index, ip, conf.subnet.prefixlen)[_HDR.size:])
            self._talk(req.netns, _RTM_NEWLINK, _F_REQUEST | _F_ACK, _ifinfo(pod.index, up=True))
            self._talk(req.netns, nlmsg.RTM_NEWROUTE, _F_CREATE,
                       nlmsg.route_add(0, "default", str(conf.gateway), pod.index)[_HDR.size:])
        except OSError as e:
            raise self._fail(f"wiring {req.ifname} of {req.container_id}", e) from None
        finally:
            self.close()
        return Attachment(bridge=conf.bridge, bridge_mac=br_mac, host_veth=host, host_mac=h.mac,
                          ifname=req.ifname, mac=pod.mac, netns=req.netns, ip=ip)

    def detach(self, host: str) -> None:
        try:
            link = self.link(host)
            if link is not None:
                self._talk(None, _RTM_DELLINK, _F_REQUEST | _F_ACK, _ifinfo(link.index))
        except OSError as e:
            if e.errno != errno.ENODEV:          # gone meanwhile (its pod's namespace went)
                raise self._fail(f"deleting {host}", e) from None

    def observe_pod(self, netns: str, ifname: str) -> Optional[dict]:
        try:
            link = self.link(ifname, netns)
            if link is None:
                return None
            addrs = []
            for msg in self._talk(netns, _RTM_GETADDR, _F_REQUEST | _F_DUMP,
                                  _IFADDR.pack(socket.AF_INET, 0, 0, 0, 0)):
                _fam, plen, _fl, _scope, index = _IFADDR.unpack_from(msg, _HDR.size)
                attrs = _attrs(msg, _HDR.size + _IFADDR.size, len(msg))
                raw = attrs.get(_IFA_LOCAL) or attrs.get(_IFA_ADDRESS)
                if index == link.index and raw:
                    addrs.append(f"{socket.inet_ntoa(raw)}/{plen}")
            via = []
            for msg in self._talk(netns, _RTM_GETROUTE, _F_REQUEST | _F_DUMP,
                                  _RTMSG.pack(socket.AF_INET, 0, 0, 0, 0, 0, 0, 0, 0)):
                fields = _RTMSG.unpack_from(msg, _HDR.size)
                attrs = _attrs(msg, _HDR.size + _RTMSG.size, len(msg))
                table = struct.unpack("=I", attrs[_RTA_TABLE])[0] if _RTA_TABLE in attrs else fields[4]
                oif = struct.unpack("=I", attrs[_RTA_OIF])[0] if _RTA_OIF in attrs else 0
                if fields[1] == 0 and table == 254 and oif == link.index and _RTA_GATEWAY in attrs:
                    via.append(socket.inet_ntoa(attrs[_RTA_GATEWAY]))
            return {"mac": link.mac, "up": link.up, "addresses": addrs, "default_via": via}
        except OSError as e:
            raise self._fail(f"reading {ifname} in {netns}", e) from None

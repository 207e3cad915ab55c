"""The rtnetlink request builders, decoded by pyroute2's own parsers (no socket, no root)."""

from __future__ import annotations

import struct

import pytest
from pyroute2.netlink.rtnl.ifaddrmsg import ifaddrmsg
from pyroute2.netlink.rtnl.ifinfmsg import ifinfmsg
from pyroute2.netlink.rtnl.rtmsg import rtmsg

from netlab.runtime import nlmsg

CREATE = 0x1 | 0x4 | 0x200 | 0x400   # request, ack, excl, create: what `ip ... add` sends


def decode(cls, data: bytes):
    msg = cls(data)
    msg.decode()
    assert msg["header"]["length"] == len(data) and len(data) % 4 == 0
    return msg


def test_veth_add_asks_both_ifindexes_and_puts_the_peer_in_its_namespace():
    msg = decode(ifinfmsg, nlmsg.veth_add(7, "veth-web", 5, "eth0", 2, 42))
    assert (msg["header"]["type"], msg["header"]["flags"], msg["header"]["sequence_number"]) == \
        (nlmsg.RTM_NEWLINK, CREATE, 7)
    assert msg["index"] == 5 and msg.get_attr("IFLA_IFNAME") == "veth-web"
    info = msg.get_attr("IFLA_LINKINFO")
    assert info.get_attr("IFLA_INFO_KIND") == "veth"
    peer = info.get_attr("IFLA_INFO_DATA").get_attr("VETH_INFO_PEER")
    assert peer["index"] == 2
    assert peer.get_attr("IFLA_IFNAME") == "eth0" and peer.get_attr("IFLA_NET_NS_FD") == 42


def test_bridge_add():
    msg = decode(ifinfmsg, nlmsg.bridge_add(1, "cni0", 3))
    assert msg["index"] == 3 and msg.get_attr("IFLA_IFNAME") == "cni0"
    assert msg.get_attr("IFLA_LINKINFO").get_attr("IFLA_INFO_KIND") == "bridge"


def test_link_up_with_master_and_alias():
    msg = decode(ifinfmsg, nlmsg.link_up(9, 4, master=3))
    assert msg["header"]["flags"] == 0x1 | 0x4        # a change, not a create
    assert (msg["index"], msg["flags"] & 1, msg["change"] & 1) == (4, 1, 1)
    assert msg.get_attr("IFLA_MASTER") == 3 and msg.get_attr("IFLA_IFALIAS") is None
    lo = decode(ifinfmsg, nlmsg.link_up(1, 1, alias="netlab:lab"))
    assert lo.get_attr("IFLA_IFALIAS") == "netlab:lab" and lo.get_attr("IFLA_MASTER") is None


def test_addr_add_is_what_ip_addr_add_sends():
    msg = decode(ifaddrmsg, nlmsg.addr_add(3, 2, "10.244.1.2", 24))
    assert (msg["family"], msg["prefixlen"], msg["index"], msg["scope"]) == (2, 24, 2, 0)
    assert msg.get_attr("IFA_LOCAL") == msg.get_attr("IFA_ADDRESS") == "10.244.1.2"


@pytest.mark.parametrize("dst, net, plen", [("10.244.2.0/24", "10.244.2.0", 24),
                                            ("default", None, 0)])
def test_route_add_is_main_table_proto_boot(dst, net, plen):
    msg = decode(rtmsg, nlmsg.route_add(5, dst, "192.168.1.12", 2))
    assert (msg["table"], msg["proto"], msg["scope"], msg["type"], msg["dst_len"]) == \
        (254, 3, 0, 1, plen)
    assert msg.get_attr("RTA_DST") == net
    assert msg.get_attr("RTA_GATEWAY") == "192.168.1.12" and msg.get_attr("RTA_OIF") == 2


def test_acks_gives_seq_and_errno_of_each_error_message():
    def err(seq, code):
        return struct.pack("=IHHIIi", 36, nlmsg.NLMSG_ERROR, 0, seq, 0, code) + bytes(16)
    noise = struct.pack("=IHHII", 20, 3, 0, 99, 0) + bytes(4)   # not an ack: skipped
    assert list(nlmsg.acks(err(1, 0) + noise + err(2, -17))) == [(1, 0), (2, 17)]


def test_link_alias_reads_the_alias_of_a_link_reply():
    reply = bytearray(nlmsg.link_up(1, 1, alias="netlab:lab1"))
    reply[4:6] = struct.pack("=H", nlmsg.RTM_NEWLINK)
    assert nlmsg.link_alias(bytes(reply)) == "netlab:lab1"
    assert nlmsg.link_alias(nlmsg.link_up(1, 1, master=2)) is None
    assert nlmsg.link_alias(nlmsg.link_get(1, 1)) is None     # not a RTM_NEWLINK

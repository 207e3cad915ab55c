"""Matching one packet against nftables match expressions: a Packet, what the namespace knows
(Host: its interfaces' addresses), the packet's value of a left-hand expression (value_of) and
whether a match holds (matches), a value is in a right-hand side (is_in).

Pure. Conntrack is not modelled: `ct state` of a packet is `new`. A match that is not evaluated
here gives None (the caller assumes it matches and lists it as unknown).
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from typing import Any, Mapping, Optional

from .nft_ruleset import Chain, Rule, Ruleset

PROTOS = {"icmp": 1, "tcp": 6, "udp": 17, "sctp": 132, "icmpv6": 58}


@dataclass(frozen=True)
class Packet:
    """One IPv4 packet, the first of a new connection."""
    saddr: str
    daddr: str
    proto: str = "icmp"             # icmp (a ping), tcp or udp
    dport: Optional[int] = None
    sport: Optional[int] = None
    iif: str = ""                   # the interface it came in by ("" when made here)
    oif: str = ""                   # the interface it leaves by ("" when not known yet)
    mark: int = 0

    def where(self) -> str:
        return f"{self.daddr}:{self.dport}" if self.dport is not None else self.daddr


@dataclass(frozen=True)
class Host:
    """What the namespace knows for masquerade, redirect and fib: its interfaces' addresses."""
    addrs: Mapping[str, tuple[str, ...]] = field(default_factory=dict)   # ifname -> addresses

    def local(self, ip: str) -> bool:
        return ipaddress.IPv4Address(ip).is_loopback or any(ip in a for a in self.addrs.values())


def value_of(e: Any, p: Packet, host: Host) -> Any:
    """The packet's value of a left-hand expression; None when it does not have one that this
    evaluator knows (unknown), _NOPE when the packet has no such field (a tcp port of a ping)."""
    if not isinstance(e, dict) or len(e) != 1:
        return None
    (k, v), = e.items()
    if k == "payload":
        proto, fld = v.get("protocol"), v.get("field")
        if proto == "ip" and fld in ("saddr", "daddr"):
            return getattr(p, fld)
        if proto == "ip" and fld == "protocol":
            return p.proto
        if proto in ("tcp", "udp", "th", "sctp") and fld in ("sport", "dport"):
            if proto != "th" and p.proto != proto or p.proto not in ("tcp", "udp", "sctp"):
                return _NOPE
            return getattr(p, fld) if getattr(p, fld) is not None else _NOPE
        return None
    if k == "meta":
        key = v.get("key")
        if key == "l4proto":
            return p.proto
        if key in ("protocol", "nfproto"):
            return "ip" if key == "protocol" else "ipv4"
        if key in ("iifname", "iif"):
            return p.iif
        if key in ("oifname", "oif"):
            return p.oif
        if key == "mark":
            return p.mark
        return None
    if k == "ct" and v.get("key") == "state" and "dir" not in v:
        return "new"
    if k == "fib" and v.get("result") == "type":
        flags = v.get("flags", [])
        flags = [flags] if isinstance(flags, str) else flags
        addr = p.daddr if "daddr" in flags else p.saddr if "saddr" in flags else None
        if addr is None:
            return None
        return "local" if host.local(addr) else "unicast"
    if k == "concat":
        parts = tuple(value_of(x, p, host) for x in v)
        if any(x is None for x in parts):
            return None
        return _NOPE if any(x is _NOPE for x in parts) else parts
    if k in ("&", "|", "^") and isinstance(v, list) and len(v) == 2:
        a = value_of(v[0], p, host)
        b = arith(v[1], 0)
        if not isinstance(a, int) or b is None:
            return None
        return {"&": a & b, "|": a | b, "^": a ^ b}[k]
    return None


class _Nope:
    """The packet has no such field: every match on it fails (as the kernel's payload check)."""


_NOPE = _Nope()


def matches(rs: Ruleset, rule: Rule, v: dict, p: Packet, host: Host) -> Optional[bool]:
    """Whether a match holds; None when it is not evaluated here."""
    value = value_of(v["left"], p, host)
    if value is None:
        return None
    if value is _NOPE:
        return False
    chain_key = (rule.family, rule.table)
    op, right = v.get("op", "=="), v["right"]
    if op in ("<", ">", "<=", ">="):
        r = right
        if not isinstance(value, int) or not isinstance(r, int):
            return None
        return {"<": value < r, ">": value > r, "<=": value <= r, ">=": value >= r}[op]
    try:
        hit = is_in(value, right, rs, Chain(*chain_key, ""))
    except _Unknown:
        return None
    return (not hit) if op == "!=" else hit


class _Unknown(Exception):
    pass


def is_in(value: Any, right: Any, rs: Ruleset, chain: Chain) -> bool:
    """Whether the packet's value is the right-hand side, or in it (a prefix, range, set)."""
    if isinstance(right, str) and right.startswith("@"):
        return any(is_in(value, e[0] if isinstance(e, tuple) else e, rs, chain)
                   for e in rs.set_elems(chain.family, chain.table, right[1:]))
    if isinstance(right, list):            # ct state {established, related}; flag lists
        return any(is_in(value, r, rs, chain) for r in right)
    if isinstance(right, dict):
        (k, v), = right.items()
        if k == "set":
            return any(is_in(value, r, rs, chain) for r in (v if isinstance(v, list) else [v]))
        if k == "elem":
            return is_in(value, v["val"], rs, chain)
        if k == "concat":
            if not isinstance(value, tuple) or len(value) != len(v):
                return False
            return all(is_in(a, b, rs, chain) for a, b in zip(value, v))
        if k == "prefix":
            return _ip(value) is not None and _ip(value) in ipaddress.IPv4Network(
                f"{v['addr']}/{v['len']}", strict=False)
        if k == "range":
            lo, hi = v
            if _ip(value) is not None and _ip(lo) is not None:
                return _ip(lo) <= _ip(value) <= _ip(hi)
            if isinstance(value, int) and isinstance(lo, int):
                return lo <= value <= hi
            return False
        raise _Unknown(k)
    if isinstance(value, tuple):
        return False
    return _same(value, right)


def _same(value: Any, right: Any) -> bool:
    if isinstance(value, str) and isinstance(right, str):
        if right.endswith("*"):                 # an interface name wildcard: eth*
            return value.startswith(right[:-1])
        return value == right
    if isinstance(value, str) and isinstance(right, int):   # meta l4proto 6
        return PROTOS.get(value) == right
    return value == right


def _ip(x: Any) -> Optional[ipaddress.IPv4Address]:
    if not isinstance(x, str):
        return None
    try:
        return ipaddress.IPv4Address(x)
    except ValueError:
        return None



def arith(e: Any, mark: int) -> Optional[int]:
    """The integer of a mark expression (a number, `meta mark`, | & ^ of them); None if not one."""
    if isinstance(e, int):
        return e
    if isinstance(e, str):
        try:
            return int(e, 0)
        except ValueError:
            return None
    if isinstance(e, dict) and len(e) == 1:
        (op, args), = e.items()
        if op == "meta" and args.get("key") == "mark":
            return mark
        if op in ("|", "&", "^") and isinstance(args, list) and len(args) == 2:
            a, b = arith(args[0], mark), arith(args[1], mark)
            if a is None or b is None:
                return None
            return {"|": a | b, "&": a & b, "^": a ^ b}[op]
    return None

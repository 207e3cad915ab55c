"""A small nftables evaluator: where one packet goes through a namespace's ruleset.

Pure. `parse` reads `nft -j list ruleset` (and, to name rules as nft prints them, the text of
`nft -a list ruleset`); `evaluate` runs a Packet through the base chains of one hook in priority
order, as the kernel does, and returns its Outcomes: the verdict (accept, drop, reject) with the
rule that gave it, the packet as rewritten (DNAT, SNAT, masquerade, mark), and the rules it went
through. A `numgen ... vmap` (kube-proxy's choice of an endpoint) is a branch: every element is
one Outcome, in the map's order.

Evaluated: matches on ip saddr/daddr (addresses, prefixes, ranges, anonymous and named sets),
meta l4proto/protocol/nfproto, tcp/udp/th sport/dport (a tcp match fails on a udp packet),
meta iifname/oifname (with `*` wildcards), meta mark (and `mark and M`), ct state (the packet
is the first of its connection: `new`), fib daddr/saddr type (local or unicast), concatenations
and verdict maps (anonymous or named), jump/goto/return, accept/drop/reject, dnat/snat to an
address and port, masquerade, redirect, mark set. Not evaluated: everything else (ct mark,
ct status, meta skuid, limit, quota, ...): a match on it is assumed to match and is listed in
Outcome.unknown; statements with no effect on the path (counter, log, set updates) are skipped.
iptables-nft's compat expressions (`xt`, whose JSON has no parameters) are read from the rule's
text as nft translates it: conntrack state, addrtype, multiport, comment, DNAT, SNAT,
MASQUERADE, REJECT. Only the ip and inet families are read (ip6 and arp tables see no IPv4
packet; bridge and netdev tables are not evaluated). Conntrack is not modelled: each packet is
the first of a new connection, and replies are not un-NATed.
"""

from __future__ import annotations

import ipaddress
import json
import re
from dataclasses import dataclass, field, replace
from typing import Any, Mapping, Optional

PROTOS = {"icmp": 1, "tcp": 6, "udp": 17, "sctp": 132, "icmpv6": 58}
MAX_DEPTH = 64                      # the kernel allows 16 levels of jumps; loops are caught here


@dataclass(frozen=True)
class Packet:
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
class Rule:
    family: str
    table: str
    chain: str
    handle: int
    expr: tuple
    text: str

    def where(self) -> str:
        return f"chain {self.chain}, table {self.family} {self.table}"


@dataclass(frozen=True)
class Chain:
    family: str
    table: str
    name: str
    rules: tuple[Rule, ...] = ()
    hook: Optional[str] = None
    type: str = ""
    prio: int = 0
    policy: str = "accept"


@dataclass(frozen=True)
class Ruleset:
    chains: tuple[Chain, ...] = ()
    sets: tuple[tuple[tuple[str, str, str], tuple], ...] = ()   # ((family, table, name), elems)

    def chain(self, family: str, table: str, name: str) -> Optional[Chain]:
        return next((c for c in self.chains if (c.family, c.table, c.name) ==
                     (family, table, name)), None)

    def set_elems(self, family: str, table: str, name: str) -> tuple:
        return next((e for k, e in self.sets if k == (family, table, name)), ())

    def base_chains(self, hook: str) -> list[Chain]:
        """The chains of a hook in the order the kernel runs them (lowest priority first)."""
        return sorted((c for c in self.chains if c.hook == hook), key=lambda c: c.prio)


@dataclass(frozen=True)
class Outcome:
    verdict: str                    # accept, drop or reject
    packet: Packet                  # as it leaves the hook, rewritten
    rule: Optional[Rule] = None     # the rule that dropped or rejected (None: a chain's policy)
    chain: str = ""                 # where the verdict was given
    table: str = ""                 # "inet netlab-netpol"
    dnat: Optional[Rule] = None     # the rule that rewrote the destination
    snat: Optional[Rule] = None     # the rule that rewrote the source (snat, masquerade)
    rules: tuple[Rule, ...] = ()    # every rule that matched, in order
    unknown: tuple[str, ...] = ()   # expressions assumed to match
    branch: str = ""                # "numgen random mod 2: 1" when a random choice was made

    def reason(self) -> str:
        """`<rule>` (chain X, table Y), or the chain's policy."""
        if self.rule is not None:
            return f"`{self.rule.text}` ({self.rule.where()})"
        return f"the policy {self.verdict} of chain {self.chain} (table {self.table})"


# ---------------------------------------------------------------- parsing


def parse(json_text: str, text: str = "") -> Ruleset:
    """A Ruleset from `nft -j list ruleset`; `text` (`nft -a list ruleset`) names the rules as
    nft prints them (without it, a short rendering of the JSON is used)."""
    if not json_text.strip():
        return Ruleset()
    items = json.loads(json_text).get("nftables", [])
    texts = rule_texts(text)
    chains: dict[tuple, dict] = {}
    rules: dict[tuple, list[Rule]] = {}
    sets = []
    for item in items:
        (kind, body), = item.items() if len(item) == 1 else (("", {}),)
        fam = body.get("family") if isinstance(body, dict) else None
        if fam not in ("ip", "inet"):
            continue
        if kind == "chain":
            chains[(fam, body["table"], body["name"])] = body
        elif kind in ("set", "map"):
            sets.append(((fam, body["table"], body["name"]), tuple(_elems(body.get("elem", [])))))
        elif kind == "rule":
            key = (fam, body["table"], body["chain"])
            expr = tuple(body.get("expr", ()))
            words = texts.get((fam, body["table"], body["chain"], body.get("handle")))
            if words is None:
                comment = f' comment "{body["comment"]}"' if "comment" in body else ""
                words = render(expr) + comment
            rules.setdefault(key, []).append(Rule(fam, body["table"], body["chain"],
                                                  body.get("handle", 0), expr, words))
    out = []
    for key, c in chains.items():
        prio = c.get("prio", 0)
        out.append(Chain(key[0], key[1], key[2], tuple(rules.get(key, ())), c.get("hook"),
                         c.get("type", ""), prio if isinstance(prio, int) else 0,
                         c.get("policy", "accept")))
    return Ruleset(tuple(out), tuple(sets))


_HANDLE = re.compile(r"\s*# handle (\d+)\s*$")
_COUNTER = re.compile(r"\bcounter packets \d+ bytes \d+")
_CHAIN_COMMENT = re.compile(r'^\s*comment "[^"]*"\s*$')


def rule_texts(text: str) -> dict[tuple, str]:
    """(family, table, chain, handle) -> the rule as `nft -a list ruleset` prints it."""
    out: dict[tuple, str] = {}
    table = chain = None
    pending = ""
    for line in text.splitlines():
        words = line.split()
        if words[:1] == ["table"] and len(words) >= 3:
            table, chain = (words[1], words[2]), None
        elif words[:1] == ["chain"] and table and len(words) >= 2:
            chain, pending = words[1], ""
        elif chain and words in (["}"],):
            chain = None
        elif chain and table and words and not pending and (
                line.strip().startswith(("type ", "policy ")) or _CHAIN_COMMENT.match(line)):
            continue                 # the chain's own lines: its hook, policy, comment
        elif chain and table and words:
            pending = (pending + " " + line.strip()).strip()
            m = _HANDLE.search(pending)
            if m:
                # Counters change with every packet: the rule is named without them.
                words = _COUNTER.sub("counter", _HANDLE.sub("", pending))
                out[(table[0], table[1], chain, int(m.group(1)))] = " ".join(words.split())
                pending = ""
    return out


def without_handles(text: str) -> str:
    """`nft -a list ruleset` as `nft list ruleset` prints it (the handle comments removed)."""
    return re.sub(r"\s*# handle \d+", "", text)


def _elems(raw: list) -> list:
    """A named set's or map's elements: keys, or (key, verdict) pairs for a map."""
    out = []
    for e in raw:
        if isinstance(e, list) and len(e) == 2:
            out.append((_unwrap(e[0]), e[1]))
        else:
            out.append(_unwrap(e))
    return out


def _unwrap(e: Any) -> Any:
    # {"elem": {"val": X, "comment": ...}}: an element with a comment or timeout
    return e["elem"]["val"] if isinstance(e, dict) and "elem" in e else e


def render(expr: tuple) -> str:
    """A short nft-like text of a rule's expressions, for rules nft's text did not name."""
    return " ".join(_render(e) for e in expr)


def _render(e: Any) -> str:
    if not isinstance(e, dict):
        return json.dumps(e) if isinstance(e, (list, bool)) else str(e)
    (k, v), = e.items() if len(e) == 1 else (("?", e),)
    if k == "match":
        op = "" if v["op"] in ("==", "in") else v["op"] + " "
        return f"{_render(v['left'])} {op}{_render(v['right'])}"
    if k == "payload":
        return f"{v.get('protocol')} {v.get('field')}"
    if k in ("meta", "ct"):
        return f"{k} {v.get('key')}"
    if k == "fib":
        flags = v.get("flags", [])
        return f"fib {' . '.join([flags] if isinstance(flags, str) else flags)} {v.get('result')}"
    if k == "prefix":
        return f"{v['addr']}/{v['len']}"
    if k == "range":
        return f"{_render(v[0])}-{_render(v[1])}"
    if k == "set":
        return "{ " + ", ".join(_render(x) for x in (v if isinstance(v, list) else [v])) + " }"
    if k == "concat":
        return " . ".join(_render(x) for x in v)
    if k in ("jump", "goto"):
        return f"{k} {v['target']}"
    if k in ("dnat", "snat"):
        port = f":{v['port']}" if "port" in v else ""
        return f"{k} to {_render(v.get('addr', ''))}{port}"
    if k in ("vmap", "map"):
        return f"{_render(v['key'])} {k} {_render(v['data'])}"
    if v is None:
        return k
    return f"{k} {json.dumps(v)}"


# ---------------------------------------------------------------- evaluation


@dataclass(frozen=True)
class _State:
    pkt: Packet
    rules: tuple[Rule, ...] = ()
    unknown: tuple[str, ...] = ()
    dnat: Optional[Rule] = None
    snat: Optional[Rule] = None
    branch: str = ""


@dataclass(frozen=True)
class _End:
    verdict: str                     # accept, drop, reject, return
    st: _State
    rule: Optional[Rule] = None
    chain: Optional[Chain] = None


@dataclass(frozen=True)
class _Host:
    addrs: Mapping[str, tuple[str, ...]] = field(default_factory=dict)   # ifname -> addresses

    def local(self, ip: str) -> bool:
        return ipaddress.IPv4Address(ip).is_loopback or any(ip in a for a in self.addrs.values())


def evaluate(rs: Ruleset, hook: str, pkt: Packet,
             addrs: Optional[Mapping[str, tuple[str, ...]]] = None) -> list[Outcome]:
    """The packet through every base chain of `hook`, lowest priority first. `addrs` maps the
    namespace's interfaces to their IPv4 addresses (for masquerade, redirect and fib). An
    accept ends one base chain and the packet goes on to the next; drop and reject end it all.
    One Outcome per branch (a numgen choice); just one without random choices."""
    host = _Host(addrs or {})
    states = [_State(pkt)]
    finished: list[Outcome] = []
    nat_done = False
    for chain in rs.base_chains(hook):
        if chain.type == "nat" and nat_done:
            continue   # the first nat chain that binds the connection decides; later ones skip
        nxt = []
        for st in states:
            for end in _run(rs, chain, 0, st, host, 0):
                if end.verdict in ("drop", "reject"):
                    finished.append(_outcome(end, end.chain or chain))
                elif end.verdict == "return":     # off the end of the base chain: its policy
                    if chain.policy == "drop":
                        finished.append(_outcome(replace(end, verdict="drop"), chain))
                    else:
                        nxt.append(end.st)
                else:
                    nxt.append(end.st)
        if chain.type == "nat" and any(s.dnat or s.snat for s in nxt):
            nat_done = True
        states = nxt
    return [Outcome("accept", s.pkt, None, "", "", s.dnat, s.snat, s.rules, s.unknown, s.branch)
            for s in states] + finished


def _outcome(end: _End, chain: Chain) -> Outcome:
    st = end.st
    return Outcome(end.verdict, st.pkt, end.rule, chain.name, f"{chain.family} {chain.table}",
                   st.dnat, st.snat, st.rules, st.unknown, st.branch)


def _run(rs: Ruleset, chain: Chain, start: int, st: _State, host: _Host, depth: int) -> list[_End]:
    """Run `chain` from rule `start`; every way out of it (a branch each). A loop over the rules
    (chains of thousands of rules are common); recursion only for jumps and random branches."""
    if depth > MAX_DEPTH:
        return [_End("accept", replace(st, unknown=st.unknown + (f"jumps deeper than {MAX_DEPTH}: "
                                                                   f"a loop in {chain.name}",)))]
    i = start
    while i < len(chain.rules):
        rule = chain.rules[i]
        ways = _rule(rs, chain, rule, st, host, depth)
        i += 1
        if ways is None:
            continue                                 # did not match
        if len(ways) == 1 and ways[0][0] == "next":
            st = ways[0][2]
            continue
        if len(ways) == 1 and ways[0][0] == "jump":
            sub = _run(rs, ways[0][1], 0, ways[0][2], host, depth + 1)
            if len(sub) == 1 and sub[0].verdict == "return":
                st = sub[0].st                       # back from the jump: on with the next rule
                continue
            return [x for end in sub for x in (_run(rs, chain, i, end.st, host, depth)
                                               if end.verdict == "return" else [end])]
        out: list[_End] = []
        for kind, target, nst in ways:
            if kind == "next":
                out += _run(rs, chain, i, nst, host, depth)
            elif kind == "jump":
                for end in _run(rs, target, 0, nst, host, depth + 1):
                    if end.verdict == "return":
                        out += _run(rs, chain, i, end.st, host, depth)
                    else:
                        out.append(end)
            elif kind == "goto":
                out += _run(rs, target, 0, nst, host, depth + 1)
            else:
                out.append(_End(kind, nst, rule, chain))
        return out
    return [_End("return", st)]


Way = tuple[str, Optional[Chain], _State]     # ("next"|"jump"|"goto"|verdict, chain, state)


def _rule(rs: Ruleset, chain: Chain, rule: Rule, st: _State, host: _Host,
          depth: int) -> Optional[list[Way]]:
    """The ways out of one rule, or None when it does not match. Expressions run in order:
    matches filter, statements change the packet, a verdict (or a nat statement, which accepts)
    ends the rule; only a numgen vmap has more than one way out."""
    s = replace(st, rules=st.rules + (rule,))
    for e in rule.expr:
        (k, v), = e.items() if isinstance(e, dict) and len(e) == 1 else (("?", e),)
        if k == "match":
            ok = _match(rs, rule, v, s, host)
            if ok is None:
                s = replace(s, unknown=s.unknown + (f"{_render(e)} ({rule.where()})",))
            elif not ok:
                return None
        elif k in ("accept", "drop", "reject", "return"):
            return [(k, None, s)]
        elif k in ("jump", "goto"):
            target = rs.chain(chain.family, chain.table, v["target"])
            return [(k, target, s) if target else ("drop", None, s)]
        elif k == "vmap":
            ways = _vmap(rs, chain, v, s, host)
            if ways is None:
                s = replace(s, unknown=s.unknown + (f"{_render(e)} ({rule.where()})",))
            elif ways:
                return ways
            # no element matched: the rule goes on
        elif k in ("dnat", "snat", "masquerade", "redirect"):
            return [("accept", None, _nat(k, v or {}, rule, s, host))]
        elif k == "mangle":
            s = _mangle(rule, v, s)
        elif k == "xt" and isinstance(v, dict):
            got = _xt(v, rule, s, host)
            if got is None:
                s = replace(s, unknown=s.unknown + (f"xt {v.get('type')} {v.get('name')} "
                                                    f"({rule.where()})",))
            elif got is False:
                return None
            elif got is not True:
                return got
        # counter, log, limit, set updates, comments: no effect on the path
    return [("next", None, s)]


_XT_DNAT = re.compile(r"\b(dnat|snat) to (\d+\.\d+\.\d+\.\d+)(?::(\d+))?")
_XT_STATE = re.compile(r"\bct state ((?:[a-z]+,?)+)")
_XT_FIB = re.compile(r"\bfib (daddr|saddr) type (!= )?(\w+)")
_XT_PORTS = re.compile(r"\b(tcp|udp) (sport|dport) (!= )?(\{ [\d, -]+ \}|\d+(?:-\d+)?)")


def _xt(v: dict, rule: Rule, st: _State, host: _Host):
    """An iptables-nft compat expression (its JSON has no parameters): read from the rule's text
    as nft translates it. True/False for a match, the ways out for a target, None when unknown."""
    name, text, p = v.get("name", ""), rule.text, st.pkt
    if v.get("type") == "match":
        if name == "comment":
            return True
        if name == "conntrack" and _XT_STATE.search(text):
            return "new" in _XT_STATE.search(text).group(1).split(",")
        if name == "addrtype" and _XT_FIB.search(text):
            which, neg, kind = _XT_FIB.search(text).groups()
            got = "local" if host.local(p.daddr if which == "daddr" else p.saddr) else "unicast"
            return (got == kind) != bool(neg)
        if name == "multiport" and _XT_PORTS.search(text):
            proto, fld, neg, ports = _XT_PORTS.search(text).groups()
            value = getattr(p, fld)
            if p.proto != proto or value is None:
                return False
            hit = any(int(a) <= value <= int(b or a) for a, b in
                      re.findall(r"(\d+)(?:-(\d+))?", ports))
            return hit != bool(neg)
        return None
    if name in ("DNAT", "SNAT") and _XT_DNAT.search(text):
        kind, addr, port = _XT_DNAT.search(text).groups()
        spec = {"addr": addr, **({"port": int(port)} if port else {})}
        return [("accept", None, _nat(kind, spec, rule, st, host))]
    if name == "MASQUERADE":
        return [("accept", None, _nat("masquerade", {}, rule, st, host))]
    if name in ("REJECT", "DROP", "ACCEPT"):
        return [(name.lower(), None, st)]
    return None


def _vmap(rs: Ruleset, chain: Chain, v: dict, st: _State, host: _Host) -> Optional[list[Way]]:
    """A verdict map: the verdict of the matching element; every element for numgen."""
    data = v["data"]
    if isinstance(data, str) and data.startswith("@"):
        elems = rs.set_elems(chain.family, chain.table, data[1:])
    else:
        raw = data.get("set", []) if isinstance(data, dict) else []
        elems = tuple(_elems(raw if isinstance(raw, list) else [raw]))
    key = v["key"]
    ways: list[Way] = []

    def verdict(vd: dict, s: _State) -> Way:
        (kind, body), = vd.items()
        if kind in ("jump", "goto"):
            target = rs.chain(chain.family, chain.table, body["target"])
            return (kind, target, s) if target else ("drop", None, s)
        return (kind, None, s)

    if isinstance(key, dict) and "numgen" in key:
        n = key["numgen"].get("mod", len(elems))
        for k, vd in elems:
            ways.append(verdict(vd, replace(st, branch=f"numgen {key['numgen'].get('mode')} "
                                                        f"mod {n}: {k}")))
        return ways
    value = _value(key, st, host)
    if value is None:
        return None
    for k, vd in elems:
        if _in(value, k, rs, chain):
            return [verdict(vd, st)]
    return []


def _nat(kind: str, v: dict, rule: Rule, st: _State, host: _Host) -> _State:
    p = st.pkt
    if kind == "dnat":
        addr = v.get("addr")
        port = v.get("port")
        new = replace(p, daddr=addr if isinstance(addr, str) else p.daddr,
                      dport=port if isinstance(port, int) else p.dport)
        return replace(st, pkt=new, dnat=rule)
    if kind == "redirect":   # to this host: the address of the interface it came in by
        ips = host.addrs.get(p.iif, ()) or ("127.0.0.1",)
        port = v.get("port")
        return replace(st, pkt=replace(p, daddr=ips[0], dport=port if isinstance(port, int)
                                       else p.dport), dnat=rule)
    if kind == "snat":
        addr = v.get("addr")
        port = v.get("port")
        return replace(st, pkt=replace(p, saddr=addr if isinstance(addr, str) else p.saddr,
                                       sport=port if isinstance(port, int) else p.sport), snat=rule)
    ips = host.addrs.get(p.oif, ())        # masquerade: the address of the way out
    return replace(st, pkt=replace(p, saddr=ips[0] if ips else p.saddr), snat=rule)


def _mangle(rule: Rule, v: dict, st: _State) -> _State:
    key = v.get("key", {})
    if isinstance(key, dict) and key.get("meta", {}).get("key") == "mark":
        value = _arith(v.get("value"), st.pkt.mark)
        if value is not None:
            return replace(st, pkt=replace(st.pkt, mark=value))
    return replace(st, unknown=st.unknown + (f"{_render({'mangle': v})} ({rule.where()}): not "
                                             f"applied",))


def _arith(e: Any, mark: int) -> Optional[int]:
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
            a, b = _arith(args[0], mark), _arith(args[1], mark)
            if a is None or b is None:
                return None
            return {"|": a | b, "&": a & b, "^": a ^ b}[op]
    return None


# ---------------------------------------------------------------- matching


def _value(e: Any, st: _State, host: _Host) -> Any:
    """The packet's value of a left-hand expression; None when it does not have one that this
    evaluator knows (unknown), _NOPE when the packet has no such field (a tcp port of a ping)."""
    p = st.pkt
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
        parts = tuple(_value(x, st, host) for x in v)
        if any(x is None for x in parts):
            return None
        return _NOPE if any(x is _NOPE for x in parts) else parts
    if k in ("&", "|", "^") and isinstance(v, list) and len(v) == 2:
        a = _value(v[0], st, host)
        b = _arith(v[1], 0)
        if not isinstance(a, int) or b is None:
            return None
        return {"&": a & b, "|": a | b, "^": a ^ b}[k]
    return None


class _Nope:
    """The packet has no such field: every match on it fails (as the kernel's payload check)."""


_NOPE = _Nope()


def _match(rs: Ruleset, rule: Rule, v: dict, st: _State, host: _Host) -> Optional[bool]:
    """Whether a match holds; None when it is not evaluated here."""
    value = _value(v["left"], st, host)
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
        hit = _in(value, right, rs, Chain(*chain_key, ""))
    except _Unknown:
        return None
    return (not hit) if op == "!=" else hit


class _Unknown(Exception):
    pass


def _in(value: Any, right: Any, rs: Ruleset, chain: Chain) -> bool:
    """Whether the packet's value is the right-hand side, or in it (a prefix, range, set)."""
    if isinstance(right, str) and right.startswith("@"):
        return any(_in(value, e[0] if isinstance(e, tuple) else e, rs, chain)
                   for e in rs.set_elems(chain.family, chain.table, right[1:]))
    if isinstance(right, list):            # ct state {established, related}; flag lists
        return any(_in(value, r, rs, chain) for r in right)
    if isinstance(right, dict):
        (k, v), = right.items()
        if k == "set":
            return any(_in(value, r, rs, chain) for r in (v if isinstance(v, list) else [v]))
        if k == "elem":
            return _in(value, v["val"], rs, chain)
        if k == "concat":
            if not isinstance(value, tuple) or len(value) != len(v):
                return False
            return all(_in(a, b, rs, chain) for a, b in zip(value, v))
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


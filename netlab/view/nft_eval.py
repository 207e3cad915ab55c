"""Evaluating one Packet through a namespace's nftables hooks: `evaluate` runs it through the base
chains of one hook in priority order, as the kernel does, and returns its Outcomes.

Pure. An Outcome is the verdict (accept, drop, reject) with the rule that gave it, the packet as
rewritten (DNAT, SNAT, masquerade, redirect, mark) and the rules it went through. A `numgen ...
vmap` (kube-proxy's choice of an endpoint) is a branch: every element is one Outcome, in the
map's order. Matches are nft_match's; the rules and sets come from nft_ruleset.parse.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from typing import Mapping, Optional

from .nft_match import Host, Packet, arith, is_in, matches, value_of
from .nft_ruleset import Chain, Rule, Ruleset, elements, render_expr

MAX_DEPTH = 64                      # the kernel allows 16 levels of jumps; loops are caught here


@dataclass(frozen=True)
class Outcome:
    """One way a packet leaves a hook."""
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



def evaluate(rs: Ruleset, hook: str, pkt: Packet,
             addrs: Optional[Mapping[str, tuple[str, ...]]] = None) -> list[Outcome]:
    """The packet through every base chain of `hook`, lowest priority first. `addrs` maps the
    namespace's interfaces to their IPv4 addresses (for masquerade, redirect and fib). An
    accept ends one base chain and the packet goes on to the next; drop and reject end it all.
    One Outcome per branch (a numgen choice); just one without random choices."""
    host = Host(addrs or {})
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


def _run(rs: Ruleset, chain: Chain, start: int, st: _State, host: Host, depth: int) -> list[_End]:
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


def _rule(rs: Ruleset, chain: Chain, rule: Rule, st: _State, host: Host,
          depth: int) -> Optional[list[Way]]:
    """The ways out of one rule, or None when it does not match. Expressions run in order:
    matches filter, statements change the packet, a verdict (or a nat statement, which accepts)
    ends the rule; only a numgen vmap has more than one way out."""
    s = replace(st, rules=st.rules + (rule,))
    for e in rule.expr:
        (k, v), = e.items() if isinstance(e, dict) and len(e) == 1 else (("?", e),)
        if k == "match":
            ok = matches(rs, rule, v, s.pkt, host)
            if ok is None:
                s = replace(s, unknown=s.unknown + (f"{render_expr(e)} ({rule.where()})",))
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
                s = replace(s, unknown=s.unknown + (f"{render_expr(e)} ({rule.where()})",))
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


def _xt(v: dict, rule: Rule, st: _State, host: Host):
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


def _vmap(rs: Ruleset, chain: Chain, v: dict, st: _State, host: Host) -> Optional[list[Way]]:
    """A verdict map: the verdict of the matching element; every element for numgen."""
    data = v["data"]
    if isinstance(data, str) and data.startswith("@"):
        elems = rs.set_elems(chain.family, chain.table, data[1:])
    else:
        raw = data.get("set", []) if isinstance(data, dict) else []
        elems = tuple(elements(raw if isinstance(raw, list) else [raw]))
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
    value = value_of(key, st.pkt, host)
    if value is None:
        return None
    for k, vd in elems:
        if is_in(value, k, rs, chain):
            return [verdict(vd, st)]
    return []


def _nat(kind: str, v: dict, rule: Rule, st: _State, host: Host) -> _State:
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
        value = arith(v.get("value"), st.pkt.mark)
        if value is not None:
            return replace(st, pkt=replace(st.pkt, mark=value))
    return replace(st, unknown=st.unknown + (f"{render_expr({'mangle': v})} ({rule.where()}): not "
                                             f"applied",))

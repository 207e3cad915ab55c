"""An nftables ruleset as netlab reads it: `nft -j list ruleset` parsed into a Ruleset of
Chains of Rules (with named sets and maps), each rule named as `nft -a list ruleset` prints it.

Pure. Only the ip and inet families are read (ip6 and arp tables see no IPv4 packet; bridge and
netdev tables are not evaluated). What a packet does through the ruleset is nft_eval's.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any, Optional


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
            sets.append(((fam, body["table"], body["name"]), tuple(elements(body.get("elem", [])))))
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


def elements(raw: list) -> list:
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
    return " ".join(render_expr(e) for e in expr)


def render_expr(e: Any) -> str:
    """One expression of a rule as nft-like text."""
    if not isinstance(e, dict):
        return json.dumps(e) if isinstance(e, (list, bool)) else str(e)
    (k, v), = e.items() if len(e) == 1 else (("?", e),)
    if k == "match":
        op = "" if v["op"] in ("==", "in") else v["op"] + " "
        return f"{render_expr(v['left'])} {op}{render_expr(v['right'])}"
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
        return f"{render_expr(v[0])}-{render_expr(v[1])}"
    if k == "set":
        return "{ " + ", ".join(render_expr(x) for x in (v if isinstance(v, list) else [v])) + " }"
    if k == "concat":
        return " . ".join(render_expr(x) for x in v)
    if k in ("jump", "goto"):
        return f"{k} {v['target']}"
    if k in ("dnat", "snat"):
        port = f":{v['port']}" if "port" in v else ""
        return f"{k} to {render_expr(v.get('addr', ''))}{port}"
    if k in ("vmap", "map"):
        return f"{render_expr(v['key'])} {k} {render_expr(v['data'])}"
    if v is None:
        return k
    return f"{k} {json.dumps(v)}"

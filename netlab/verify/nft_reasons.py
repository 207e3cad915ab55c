"""What a namespace's nftables rules say about a lost or rewritten packet, for verify's reasons:
the rule that rewrote a client's source (a masquerade or snat, also iptables-nft's shape), a
chain that drops, a published port whose DNAT rule is missing, and rules in tables the lab's plan
does not have (somebody else's: the likely fault). Read with `nft list ruleset`, cached.
"""

from __future__ import annotations

import ipaddress
import re
import subprocess
from typing import Optional

from ..core.lab import Lab
from .checks import Check


def run(argv: list[str]) -> str:
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return proc.stdout if proc.returncode == 0 else ""


def find_source_nat(ruleset: str, client: str, ns: str) -> str:
    """The rule of an `nft list ruleset` text that rewrites packets from `client`: a masquerade or
    snat rule whose chain a rule matching `client` jumps to (iptables-nft's shape: the CNI bridge
    plugin's ipMasq), or one that matches it itself; said with the table, the chain and the
    command to see it."""
    table, chain, chains = "", "", {}
    for raw in ruleset.splitlines():
        line = raw.strip()
        if line.startswith("table "):
            table = line.removesuffix("{").strip()
        elif line.startswith("chain "):
            chain = line.split()[1]
            chains[(table, chain)] = []
        elif line and line != "}" and chain and not line.startswith(("type ", "policy ")):
            chains[(table, chain)].append(line)
    nat = {k: r for k, rules in chains.items() for r in rules
           if re.search(r"\b(masquerade|snat)\b", r)}

    for (tbl, ch), rules in chains.items():
        for rule in rules:
            jump = re.search(r"\b(?:jump|goto) (\S+)", rule)
            target = (tbl, jump.group(1)) if jump else None
            if target in nat and client in rule:
                return (f"`{_clean(rule)}` in {tbl}, chain {ch}, jumps to chain {target[1]}, "
                        f"which does `{_clean(nat[target])}`: the source is rewritten in {ns} "
                        f"(see `ip netns exec {ns} nft list ruleset`)")
    for (tbl, ch), rule in nat.items():
        if _saddr_matches(rule, client):
            return (f"`{_clean(rule)}` in {tbl}, chain {ch}, rewrites the source in {ns} "
                    f"(see `ip netns exec {ns} nft list ruleset`)")
    return ""


def _saddr_matches(rule: str, client: str) -> bool:
    """Whether a rule's `ip saddr X` (an address or a prefix, perhaps negated) takes `client`."""
    m = re.search(r"ip saddr (!= )?(\d+\.\d+\.\d+\.\d+(?:/\d+)?)", rule)
    if not m:
        return False
    inside = ipaddress.IPv4Address(client) in ipaddress.IPv4Network(m.group(2), strict=False)
    return inside != bool(m.group(1))


def _clean(rule: str) -> str:
    """A rule as one would write it: without its counters."""
    return re.sub(r"\s*counter packets \d+ bytes \d+", "", rule).strip()


_CHAIN = re.compile(r"^\s*chain (\S+) \{")
_HOOK = re.compile(r"type (\w+) hook (\w+) .*policy (\w+);")


class Nft:
    """The nftables rules of the namespaces on a packet's way, read with `nft list ruleset`
    (cached), against the tables the lab's plan puts there: a rule in a table the plan has not is
    somebody else's, and the likely fault."""

    def __init__(self, lab: Optional[Lab]):
        self.lab = lab
        self.listings: dict[str, str] = {}
        self.cache: dict[str, list[tuple[str, str, str]]] = {}
        self._planned: Optional[dict[str, str]] = None

    def listing(self, ns: str) -> str:
        """`nft list ruleset` in ns, read once per verify run."""
        if ns not in self.listings:
            self.listings[ns] = run(["ip", "netns", "exec", ns, "nft", "list", "ruleset"])
        return self.listings[ns]

    def source_nat(self, ns: str, client: str) -> str:
        """The rule in `ns` that rewrites packets from `client` (find_source_nat), or ""."""
        return find_source_nat(self.listing(ns), client, ns)

    def rules(self, ns: str) -> list[tuple[str, str, str]]:
        """(table, chain, line) of every rule and chain header in ns."""
        if ns not in self.cache:
            table, chain, out = "", "", []
            for line in self.listing(ns).splitlines():
                words = line.split()
                if words[:1] == ["table"] and len(words) >= 3:
                    table, chain = f"{words[1]} {words[2]}", ""
                elif _CHAIN.match(line):
                    chain = _CHAIN.match(line).group(1)
                elif words and words[0] != "}" and table:
                    out.append((table, chain, line.strip()))
            self.cache[ns] = out
        return self.cache[ns]

    def planned(self) -> dict[str, str]:
        """Every namespace's planned nft text (the plan's NftApply operations), joined."""
        if self._planned is None:
            self._planned = {}
            if self.lab is not None:
                from .. import plan
                for op in plan.build(self.lab):
                    if isinstance(getattr(op, "ruleset", None), str):
                        self._planned[op.ns] = self._planned.get(op.ns, "") + op.ruleset
        return self._planned

    def foreign(self, ns: str, table: str) -> bool:
        return f"table {table} " not in self.planned().get(ns, "")

    def rewrites(self, namespaces: list[str]) -> str:
        """The NAT rules in tables the plan does not have, named with their place."""
        found = [f"`{line}` in {ns} table {table} chain {chain}"
                 for ns in namespaces for table, chain, line in self.rules(ns)
                 if re.search(r"\b(masquerade|snat)\b", line) and self.foreign(ns, table)]
        return f": {found[0]}, not in the lab's plan" if found else ""

    def dropped(self, c: Check, routes) -> str:
        """A chain that drops (by policy or a rule) in a namespace on the way."""
        seen = []
        for ns, _, _ in c.hops:
            if ns is None or ns in seen:
                continue
            seen.append(ns)
            for table, chain, line in self.rules(ns):
                m = _HOOK.search(line)
                if m and m.group(3) == "drop":
                    return (f"the packet is dropped in {ns}: table {table} chain {chain} (hook "
                            f"{m.group(2)}) has policy drop (ip netns exec {ns} nft list ruleset)")
                if re.search(r"\b(drop|reject)\s*$", line) and self.foreign(ns, table):
                    return (f"the packet is dropped in {ns}: table {table} chain {chain} has "
                            f"`{line}` (ip netns exec {ns} nft list ruleset)")
        return ""

    def no_dnat(self, c: Check, routes) -> str:
        """A published port the plan DNATs in the namespace that owns the target, whose DNAT
        rule the kernel lacks."""
        if not c.port or routes.plan() is None:
            return ""
        owner = routes.plan().owner(c.target) if re.match(r"\d+\.", c.target or "") else None
        if owner is None:
            return ""
        ns = owner[0].name
        want = [line.strip() for line in self.planned().get(ns, "").splitlines()
                if f"dport {c.port} " in line and "dnat" in line]
        have = [line for _, _, line in self.rules(ns) if f"dport {c.port} " in line and
                "dnat" in line]
        if want and not have:
            return (f"{ns} has no DNAT rule for dport {c.port}: the plan has `{want[0]}` "
                    f"(ip netns exec {ns} nft list ruleset)")
        return ""

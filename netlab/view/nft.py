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

The parts: nft_ruleset (the ruleset read from nft's listing: Ruleset, Chain, Rule; parse),
nft_eval (a Packet through the hooks: evaluate, Outcome) and nft_match (the match expressions).
Callers import the public names from here.
"""

from __future__ import annotations

from .nft_eval import MAX_DEPTH, Outcome, evaluate  # noqa: F401
from .nft_match import PROTOS, Host, Packet  # noqa: F401
from .nft_ruleset import (Chain, Rule, Ruleset, parse, render, rule_texts,  # noqa: F401
                          without_handles)

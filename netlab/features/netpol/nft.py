"""NetworkPolicy compiled to nftables, pure: `ruleset()` is the `table inet netlab-netpol` one
node's namespace loads with `nft -f -`; `without_rule()` is the model of a ruleset with one
policy rule's nft rules deleted (what a broken ruleset should change).
"""

from __future__ import annotations

import ipaddress
from typing import Optional

from .model import _Cluster, _peer_matches
from .specs import TABLE, NetworkPolicy, Pod

# ---------------------------------------------------------------------------------------------
# nftables

def _nets(items) -> list[str]:
    nets = ipaddress.collapse_addresses(ipaddress.ip_network(i) for i in items)
    return [str(n.network_address) if n.prefixlen == 32 else str(n) for n in nets]


def _peer_addresses(peers, pol, c: _Cluster) -> list[str]:
    """Everything the peers of one rule select, as addresses: pods by selector, ipBlocks."""
    out = []
    for peer in peers:
        if peer.ipBlock is not None:
            if ipaddress.ip_network(peer.ipBlock.cidr).version == 4:
                out += [str(n) for n in peer.ipBlock.networks()]
            continue
        out += [p.ip + "/32" for p in c.pods.values() if _peer_matches(peer, pol, p.ip, p, c)]
    return _nets(out)


def _port_clauses(ports, dst_pods: Optional[list[Pod]]):
    """Rule fragments for a rule's ports: [(extra daddr restriction or None, 'meta l4proto ...')].

    Numbers and ranges per protocol go in one anonymous set. A named port resolves on the
    destination: for ingress that is the one pod of the chain; for egress each peer pod, so it
    becomes one clause per resolved number restricted to the pods that declare it."""
    if not ports:
        return [(None, "")]
    by_proto: dict[str, list[str]] = {}
    whole: set[str] = set()
    named: dict[tuple[str, int], list[str]] = {}
    for pp in ports:
        proto = pp.protocol.lower()
        if pp.port is None:
            whole.add(proto)
        elif isinstance(pp.port, str):
            for d in dst_pods or ():
                n = d.named_port(pp.port, pp.protocol)
                if n is not None:
                    named.setdefault((proto, n), []).append(d.ip)
        else:
            by_proto.setdefault(proto, []).append(
                f"{pp.port}-{pp.endPort}" if pp.endPort and pp.endPort != pp.port else str(pp.port))
    out = [(None, f"meta l4proto {p}") for p in sorted(whole)]
    for p in sorted(set(by_proto) - whole):
        out.append((None, f"meta l4proto {p} th dport {{ {', '.join(by_proto[p])} }}"))
    for (p, n), ips in sorted(named.items()):
        if p not in whole:
            out.append((ips, f"meta l4proto {p} th dport {n}"))
    return out


def _q(text: str) -> str:
    return '"' + text.replace('"', "'")[:120] + '"'


def ruleset(node: str, pods_on_node, pods, namespaces, policies,
            nodes: Optional[dict[str, str]] = None) -> str:
    """`table inet netlab-netpol` for one node's namespace: load with `nft -f -` (the text
    deletes and recreates the table, so loading it again replaces it in one transaction).

    Shape: Calico's, per endpoint. The forward hook dispatches by pod IP: `ip saddr vmap` to a
    per-pod egress chain for the node's egress-isolated pods (evaluated at the source's node),
    then `ip daddr vmap` to a per-pod ingress chain for its ingress-isolated pods (at the
    destination's node). Every rule of a policy is one nft rule (or a few, one per protocol)
    with the policy and rule in its comment, and its peers in a named set. So `nft list
    ruleset` reads like the YAML, trace stops at a rule naming a policy, and deleting one rule
    changes exactly the pairs it governed. kube-network-policies instead queues the first packet
    of each connection to a userspace daemon (nfqueue) that evaluates the policies in Go: there
    is no rule per policy to read, trace or delete, and it needs a daemon per node.

    Egress chains `return` when a rule allows (the packet goes on to the ingress dispatch);
    ingress chains `accept`; both end in `drop`: only pods a policy selects get a chain, so the
    default drop never touches other pods. Established and related traffic is accepted first,
    so replies pass. The hook is forward at priority filter (0): after Service DNAT
    (kube-proxy's nat at dstnat, -100), so the rules see the backend pod's IP, never a
    ClusterIP, and before masquerade (srcnat) so they see the client's own IP.

    Pod to pod on one node is bridged by cni0 and reaches the forward hook only through bridge
    netfilter: set `nf_call_iptables 1` on cni0 (`ip link set cni0 type bridge
    nf_call_iptables 1`); the per-namespace sysctl net.bridge.bridge-nf-call-iptables works too
    (on kernel 6.18 br_netfilter is built in, the sysctl is per network namespace, 1 by default
    and settable inside one). The node's own traffic to its pods is locally generated (output
    hook), never forwarded, so it is always allowed; the `ip saddr <node ip> accept` rule keeps
    the kubelet promise for anything forwarded with the node's address. IPv4 only: the
    dispatch maps are keyed by IPv4 addresses, as netlab's pods are.
    """
    c = _Cluster(namespaces, pods, nodes)
    node_ip = c.nodes.get(node)
    local = sorted((c.pod(p) if not isinstance(p, Pod) else p for p in pods_on_node),
                   key=lambda p: p.id)
    sets: list[str] = []
    chains: list[str] = []
    egress_map, ingress_map = [], []
    seen: set[str] = set()

    def add_set(name: str, peers, pol) -> str:
        if name not in seen:
            seen.add(name)
            addrs = _peer_addresses(peers, pol, c)
            elems = f" elements = {{ {', '.join(addrs)} }};" if addrs else ""
            sets.append(f"\tset {name} {{ type ipv4_addr; flags interval;{elems} }}")
        return name

    cache: dict = {}

    def rule_lines(pol, kind, i, rule, pod) -> list[str]:
        """The nft rules of one policy rule; an egress rule's do not depend on the pod."""
        key = (pol.id, kind, i, pod.id if kind == "Ingress" else "")
        if key in cache:
            return cache[key]
        accept = "accept" if kind == "Ingress" else "return"
        what = f"{pol.id} {kind.lower()} rule {i}"
        match = []
        if rule.peers:
            sname = add_set(f"{pol.namespace}.{pol.name}.{kind[:2].lower()}{i}", rule.peers, pol)
            match.append(f"ip {'saddr' if kind == 'Ingress' else 'daddr'} @{sname}")
        if kind == "Ingress":
            dsts = [pod]
        else:
            dsts = [p for p in c.pods.values()
                    if not rule.peers or any(_peer_matches(pe, pol, p.ip, p, c)
                                             for pe in rule.peers)]
        lines = []
        for only, clause in _port_clauses(rule.ports, dsts):
            words = list(match)
            if only is not None and set(only) != {d.ip for d in dsts}:
                words.append(f"ip daddr {{ {', '.join(_nets(ip + '/32' for ip in only))} }}")
            if clause:
                words.append(clause)
            lines.append(" ".join(words + [accept, "comment", _q(what)]))
        cache[key] = lines
        return lines

    for pod in local:
        for kind in ("Egress", "Ingress"):
            mine = c.selecting(kind, pod, policies)
            if not mine:
                continue
            chain = f"{kind.lower()}.{pod.namespace}.{pod.name}"
            accept = "accept" if kind == "Ingress" else "return"
            # itself: only a Service hairpin (pod -> ClusterIP -> same pod) gets here, after DNAT
            body = [f"ip {'saddr' if kind == 'Ingress' else 'daddr'} {pod.ip} {accept} "
                    f"comment {_q('the pod itself (Service hairpin)')}"]
            if kind == "Ingress" and node_ip:
                body.append(f"ip saddr {node_ip} accept comment {_q('own node (kubelet probes)')}")
            for pol in mine:
                rules = pol.ingress if kind == "Ingress" else pol.egress
                for i, rule in enumerate(rules, 1):
                    body += rule_lines(pol, kind, i, rule, pod)
            names = ", ".join(p.id for p in mine)
            body.append(f"drop comment {_q(f'{pod.id} isolated for {kind} by {names}')}")
            chains.append(f"\tchain {chain} {{\n" + "".join(f"\t\t{r}\n" for r in body) + "\t}")
            (egress_map if kind == "Egress" else ingress_map).append(f"{pod.ip} : jump {chain}")

    fwd = ["type filter hook forward priority filter; policy accept;",
           "ct state established,related accept"]
    if egress_map:
        fwd.append(f"ip saddr vmap {{ {', '.join(egress_map)} }}")
    if ingress_map:
        fwd.append(f"ip daddr vmap {{ {', '.join(ingress_map)} }}")
    chains.append("\tchain forward {\n" + "".join(f"\t\t{r}\n" for r in fwd) + "\t}")
    head = (f"# netlab NetworkPolicy for node {node}: per-pod chains, dispatched by pod IP\n"
            f"table inet {TABLE}\ndelete table inet {TABLE}\n")
    return head + f"table inet {TABLE} {{\n" + "\n".join(sets + chains) + "\n}\n"


def node_rulesets(pods, namespaces, policies, nodes: dict[str, str]) -> dict[str, str]:
    """ruleset() for every node that has pods: node name -> nft text (one NftApply each)."""
    return {node: ruleset(node, [p for p in pods if p.node == node], pods, namespaces,
                          policies, nodes)
            for node in sorted({p.node for p in pods})}


def without_rule(policies, policy_id: str, kind: str, index: int) -> tuple[NetworkPolicy, ...]:
    """The policies with one rule taken out (kind "ingress"/"egress", index from 1, as in the
    reasons and nft comments): the model of a ruleset with that rule's nft rules deleted."""
    out = []
    for p in policies:
        if p.id == policy_id:
            rules = list(getattr(p, kind))
            if not 1 <= index <= len(rules):
                raise ValueError(f"{policy_id} has no {kind} rule {index}")
            del rules[index - 1]
            # policyTypes stays what it was: taking out the last egress rule must not turn
            # an Ingress+Egress policy into an Ingress-only one
            p = p.model_copy(update={kind: tuple(rules), "policyTypes": p.types})
        out.append(p)
    return tuple(out)

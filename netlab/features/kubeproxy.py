"""kube-proxy's nftables mode, as text: the `table ip kube-proxy` one node's kube-proxy writes.

The layout, names and rules follow kubernetes/kubernetes pkg/proxy/nftables/proxier.go
(setupNFTables + syncProxyRules), written as the `add ...` statements knftables feeds to
`nft -f`, so `nft -f` of `transaction(ruleset(...))` replaces the whole table atomically:

  filter-prerouting/-input/-forward/-output (priority dstnat-10, before DNAT, so they see the
      Service address): `ct state new` jumps to endpoints-check, which rejects (reject-chain)
      Services with no endpoints via the maps no-endpoint-services / no-endpoint-nodeports, and
      to firewall-check (LoadBalancerSourceRanges; the firewall-ips map stays empty here).
  nat-prerouting/nat-output -> services: `ip daddr . meta l4proto . th dport vmap @service-ips`
      (ClusterIPs and LoadBalancer IPs), then NodePorts on every local address (`fib daddr type
      local`) through @service-nodeports.
  service-HASH-ns/name/proto/port: masquerade mark for traffic to the ClusterIP from outside the
      cluster CIDR, affinity lookups, then `numgen random mod N vmap { i : goto endpoint-... }`.
  external-HASH-...: NodePort/LoadBalancer entry. Cluster policy marks for masquerade and goes
      to service-...; Local policy short-circuits pod and node traffic and otherwise goes to
      local-HASH-... (only this node's endpoints, client IP kept).
  endpoint-HASH-...__IP/PORT: hairpin (`ip saddr <ep> jump mark-for-masquerade`), affinity
      update, `meta l4proto tcp dnat to IP:PORT`.
  nat-postrouting -> masquerading: `masquerade fully-random` for packets marked 0x4000.

Bridge netfilter, found on this kernel (6.18, br_netfilter built in), proven on
branch kubeproxy (tests/integration/test_kubeproxy_nft.py) and in tests/integration/test_services.py: /proc/sys/net/bridge/bridge-nf-call-iptables exists in
every network namespace and is per namespace (since Linux 5.3): setting it inside a node
namespace leaves the root namespace's value alone. A new namespace starts with it at 1. The
bridge's own option (`ip link set cni0 type bridge nf_call_iptables 1`, default 0) is the
per-bridge switch; bridged frames go through netfilter if EITHER is on. With both off, a pod
calling a Service whose endpoint sits on the same cni0 fails: the request is routed (DNAT'd by
the node), but the endpoint's reply is bridged straight back to the client, never un-DNAT'd, so
the client sees a reply from the pod's IP, not the ClusterIP, and resets it. With either on it
works, and so does kube-proxy's --masquerade-all (ruleset(masquerade_all=True)) without either:
the reply then goes to the node's cni0 address and is routed. Hairpin (an endpoint calling its
own Service) needs the endpoint chain's masquerade always, and hairpin_mode on the pod's bridge
port when bridge netfilter is on: br_netfilter DNATs the frame inside the bridge, which must
then send it back out the port it came in (with bridge netfilter off it is routed instead).
Where br_netfilter is a module (stock Debian), /proc/sys/net/bridge is absent until
`modprobe br_netfilter`, and neither switch exists.

Pure text: runtime/scale.py runs the `conntrack` deletions stale_udp() lists.
"""

from __future__ import annotations

import base64
import hashlib
from typing import Mapping, Sequence

# Service, ServicePort and Endpoint (in annotations only) are services.py's, which imports this
# module: no import back.

TABLE = "kube-proxy"
MASQ_MARK = "0x4000"      # kube-proxy's --masquerade-bit 14
NAME_MAX = 256            # knftables.NameLengthMax
PREFIX_MAX = 16           # chainNamePrefixLengthMax

_BASE_CHAINS = [          # name, type, hook, priority (knftables writes the number)
    ("filter-prerouting", "filter", "prerouting", -110),
    ("filter-input", "filter", "input", -110),
    ("filter-forward", "filter", "forward", -110),
    ("filter-output", "filter", "output", -110),
    ("nat-prerouting", "nat", "prerouting", -100),
    ("nat-output", "nat", "output", -100),
    ("nat-postrouting", "nat", "postrouting", 100),
]
_JUMPS = [                # nftablesJumpChains: destination, source, match
    ("endpoints-check", "filter-input", "ct state new"),
    ("endpoints-check", "filter-forward", "ct state new"),
    ("endpoints-check", "filter-output", "ct state new"),
    ("firewall-check", "filter-prerouting", "ct state new"),
    ("firewall-check", "filter-output", "ct state new"),
    ("services", "nat-output", ""),
    ("services", "nat-prerouting", ""),
    ("masquerading", "nat-postrouting", ""),
]


# ---------------------------------------------------------------- names


def hash_and_truncate(name: str) -> str:
    """kube-proxy's hashAndTruncate: the first 8 base32 characters of sha256(name), '-', name."""
    encoded = base64.b32encode(hashlib.sha256(name.encode()).digest()).decode()
    out = encoded[:8] + "-" + name
    limit = NAME_MAX - PREFIX_MAX
    return out[:limit - 3] + "..." if len(out) > limit else out


def port_name(svc: Service, port: ServicePort) -> str:
    """ServicePortName.String(): `ns/name:port`, or `ns/name` for an unnamed port."""
    return f"{svc.key}:{port.name}" if port.name else svc.key


def chain_base(svc: Service, port: ServicePort) -> str:
    """servicePortChainNameBase: `HASH-ns/name/proto/portname`."""
    return hash_and_truncate(f"{svc.key}/{port.protocol.lower()}/{port.name}")


def endpoint_base(svc: Service, port: ServicePort, ep: Endpoint) -> str:
    """servicePortEndpointChainNameBase: `HASH-ns/name/proto/portname__IP/PORT`."""
    return hash_and_truncate(f"{svc.key}/{port.protocol.lower()}/{port.name}__{ep.ip}/{ep.port}")


def service_chain(svc: Service, port: ServicePort) -> str:
    return "service-" + chain_base(svc, port)


def local_chain(svc: Service, port: ServicePort) -> str:
    return "local-" + chain_base(svc, port)


def external_chain(svc: Service, port: ServicePort) -> str:
    return "external-" + chain_base(svc, port)


def endpoint_chain(svc: Service, port: ServicePort, ep: Endpoint) -> str:
    return "endpoint-" + endpoint_base(svc, port, ep)


def affinity_set(svc: Service, port: ServicePort, ep: Endpoint) -> str:
    return "affinity-" + endpoint_base(svc, port, ep)


# ---------------------------------------------------------------- the ruleset


def _base(node_ip: str, nodeport_all: bool) -> list[str]:
    t = f"ip {TABLE}"
    out = [f'add table {t} {{ comment "rules for kube-proxy" ; }}']
    for name, typ, hook, prio in _BASE_CHAINS:
        out.append(f"add chain {t} {name} {{ type {typ} hook {hook} priority {prio} ; }}")
    done = set()
    for dst, src, match in _JUMPS:
        if dst not in done:
            out.append(f"add chain {t} {dst}")
            done.add(dst)
        out.append(f"add rule {t} {src} {match + ' ' if match else ''}jump {dst}")
    out += [
        f"add chain {t} mark-for-masquerade",
        f"add rule {t} mark-for-masquerade mark set mark or {MASQ_MARK}",
        f"add rule {t} masquerading mark and {MASQ_MARK} == 0 return",
        f"add rule {t} masquerading mark set mark xor {MASQ_MARK}",
        f"add rule {t} masquerading masquerade fully-random",
    ]
    # --nodeport-addresses: every local address (`fib daddr type local`, match-all) or only the
    # listed ones (the nodeport-ips set; kube-proxy's nftables default is the primary node IP).
    if nodeport_all:
        nodeports = "fib daddr type local ip daddr != 127.0.0.0/8"
    else:
        out += [f'add set {t} nodeport-ips {{ type ipv4_addr ; '
                f'comment "IPs that accept NodePort traffic" ; }}',
                f"add element {t} nodeport-ips {{ {node_ip} }}"]
        nodeports = "ip daddr @nodeport-ips"
    out += [
        f'add map {t} no-endpoint-services {{ type ipv4_addr . inet_proto . inet_service : '
        f'verdict ; comment "vmap to drop or reject packets to services with no endpoints" ; }}',
        f'add map {t} no-endpoint-nodeports {{ type inet_proto . inet_service : verdict ; '
        f'comment "vmap to drop or reject packets to service nodeports with no endpoints" ; }}',
        f'add chain {t} reject-chain {{ comment "helper for @no-endpoint-services / '
        f'@no-endpoint-nodeports" ; }}',
        f"add rule {t} reject-chain reject",
        f"add rule {t} endpoints-check ip daddr . meta l4proto . th dport vmap "
        f"@no-endpoint-services",
        f"add rule {t} endpoints-check {nodeports} meta l4proto . th dport vmap "
        f"@no-endpoint-nodeports",
        f'add map {t} firewall-ips {{ type ipv4_addr . inet_proto . inet_service : verdict ; '
        f'comment "destinations that are subject to LoadBalancerSourceRanges" ; }}',
        f"add rule {t} firewall-check ip daddr . meta l4proto . th dport vmap @firewall-ips",
        f'add map {t} service-ips {{ type ipv4_addr . inet_proto . inet_service : verdict ; '
        f'comment "ClusterIP, ExternalIP and LoadBalancer IP traffic" ; }}',
        f'add map {t} service-nodeports {{ type inet_proto . inet_service : verdict ; '
        f'comment "NodePort traffic" ; }}',
        f"add rule {t} services ip daddr . meta l4proto . th dport vmap @service-ips",
        f"add rule {t} services {nodeports} meta l4proto . th dport vmap @service-nodeports",
    ]
    return out


def _to_endpoints(t: str, svc: Service, port: ServicePort, chain: str,
                  eps: Sequence[Endpoint]) -> list[str]:
    """writeServiceToEndpointRules: affinity lookups first, then the random choice."""
    out = []
    if svc.session_affinity == "ClientIP":
        out += [f"add rule {t} {chain} ip saddr @{affinity_set(svc, port, ep)} "
                f"goto {endpoint_chain(svc, port, ep)}" for ep in eps]
    choices = " , ".join(f"{i} : goto {endpoint_chain(svc, port, ep)}" for i, ep in enumerate(eps))
    out.append(f"add rule {t} {chain} numgen random mod {len(eps)} vmap {{ {choices} }}")
    return out


def _service_port(svc: Service, port: ServicePort, eps: Sequence[Endpoint], node_name: str,
                  cluster_cidr: str, masquerade_all: bool) -> list[str]:
    t = f"ip {TABLE}"
    proto = port.protocol.lower()
    name = port_name(svc, port)
    local = [ep for ep in eps if ep.node == node_name]
    has_eps = bool(eps)
    external_local = svc.external_traffic_policy == "Local"
    has_external = has_eps and (bool(local) if external_local else True)
    exposed = svc.type in ("NodePort", "LoadBalancer")
    svc_chain, ext_chain, loc_chain = (service_chain(svc, port), external_chain(svc, port),
                                       local_chain(svc, port))
    out = [f"# {name}"]
    # No endpoints at all: reject. Local policy and none on this node: drop what is external.
    verdict_ext = "goto reject-chain" if not has_eps else "drop"

    if has_eps:
        # Declared before use, in the proxier's order: endpoint chains, the policy and
        # external chains, the affinity sets; then the rules that jump between them.
        ecs = [endpoint_chain(svc, port, ep) for ep in eps]
        out += [f"add chain {t} {c}" for c in ecs]
        out.append(f"add chain {t} {svc_chain}")
        if external_local and local:
            out.append(f"add chain {t} {loc_chain}")
        if exposed:
            out.append(f"add chain {t} {ext_chain}")
        if svc.session_affinity == "ClientIP":
            out += [f"add set {t} {affinity_set(svc, port, ep)} {{ type ipv4_addr ; "
                    f"flags dynamic,timeout ; timeout {svc.affinity_timeout}s ; }}" for ep in eps]
        if masquerade_all:
            out.append(f"add rule {t} {svc_chain} ip daddr {svc.cluster_ip} {proto} dport "
                       f"{port.port} jump mark-for-masquerade")
        else:
            out.append(f"add rule {t} {svc_chain} ip daddr {svc.cluster_ip} ip saddr != "
                       f"{cluster_cidr} jump mark-for-masquerade")
        out += _to_endpoints(t, svc, port, svc_chain, eps)
        if external_local and local:
            out += _to_endpoints(t, svc, port, loc_chain, local)
        if exposed and not external_local:
            out += [f"add rule {t} {ext_chain} jump mark-for-masquerade",
                    f"add rule {t} {ext_chain} goto {svc_chain}"]
        elif exposed:
            out += [
                f'add rule {t} {ext_chain} ip saddr {cluster_cidr} goto {svc_chain} '
                f'comment "short-circuit pod traffic"',
                f'add rule {t} {ext_chain} fib saddr type local jump mark-for-masquerade '
                f'comment "masquerade local traffic"',
                f'add rule {t} {ext_chain} fib saddr type local goto {svc_chain} '
                f'comment "short-circuit local traffic"',
            ]
            if local:
                out.append(f"add rule {t} {ext_chain} goto {loc_chain}")
        for ep, ec in zip(eps, ecs):
            out.append(f"add rule {t} {ec} ip saddr {ep.ip} jump mark-for-masquerade")
            if svc.session_affinity == "ClientIP":
                out.append(f"add rule {t} {ec} update @{affinity_set(svc, port, ep)} "
                           f"{{ ip saddr }}")
            out.append(f"add rule {t} {ec} meta l4proto {proto} dnat to {ep.ip}:{ep.port}")

    key = f"{proto} . {port.port}"
    if has_eps:
        out.append(f"add element {t} service-ips {{ {svc.cluster_ip} . {key} : "
                   f"goto {svc_chain} }}")
    else:
        out.append(f'add element {t} no-endpoint-services {{ {svc.cluster_ip} . {key} '
                   f'comment "{name}" : goto reject-chain }}')
    if svc.load_balancer_ip:
        if has_eps:
            out.append(f"add element {t} service-ips {{ {svc.load_balancer_ip} . {key} : "
                       f"goto {ext_chain} }}")
        if not has_external:
            out.append(f'add element {t} no-endpoint-services {{ {svc.load_balancer_ip} . '
                       f'{key} comment "{name}" : {verdict_ext} }}')
    if port.node_port:
        if has_eps:
            out.append(f"add element {t} service-nodeports {{ {proto} . {port.node_port} : "
                       f"goto {ext_chain} }}")
        if not has_external:
            out.append(f'add element {t} no-endpoint-nodeports {{ {proto} . {port.node_port} '
                       f'comment "{name}" : {verdict_ext} }}')
    return out


def ruleset(node_name: str, node_ip: str, cluster_cidr: str, services: Sequence[Service],
            endpoints: Mapping[str, Sequence[Endpoint]], nodeport_all: bool = True,
            masquerade_all: bool = False) -> str:
    """The `nft -f` text of node `node_name`'s kube-proxy table. `endpoints` maps a Service's
    key (`ns/name`) to its endpoints (services.endpoints()); only ready ones are used.
    `cluster_cidr` is the pod CIDR (kube-proxy's --cluster-cidr, its local-traffic detector).
    NodePorts answer on every local address (`nodeport_all`) or on `node_ip` only.
    `masquerade_all` is kube-proxy's --masquerade-all: every ClusterIP connection is SNAT'd
    (pods lose the client IP), which makes same-node endpoints work without bridge netfilter."""
    lines = _base(node_ip, nodeport_all)
    for svc in sorted(services, key=lambda s: (s.namespace, s.name)):
        if svc.headless:
            continue     # kube-proxy ignores headless Services: DNS answers with the pods
        eps = [ep for ep in endpoints.get(svc.key, ()) if ep.ready]
        for port in svc.ports:
            mine = [ep for ep in eps if ep.port_name == port.name]
            lines += [""] + _service_port(svc, port, mine, node_name, cluster_cidr,
                                          masquerade_all)
    return "\n".join(lines) + "\n"


def node_rulesets(nodes: Sequence[tuple[str, str]], cluster_cidr: str,
                  services: Sequence[Service], endpoints: Mapping[str, Sequence[Endpoint]],
                  nodeport_all: bool = True, masquerade_all: bool = False) -> dict[str, str]:
    """Every node's replacing transaction, by node name, from (name, node IP) pairs: what a plan
    turns into one NftApply per node namespace (`up`, `scale`, `delete` alike)."""
    return {name: transaction(ruleset(name, ip, cluster_cidr, services, endpoints, nodeport_all,
                                      masquerade_all))
            for name, ip in nodes}


def transaction(text: str) -> str:
    """One `nft -f` transaction replacing the table: created if absent (so the delete never
    fails), deleted, then written anew. Packets see the old table or the new one, never a mix;
    established connections keep their conntrack NAT. Affinity sets start empty again."""
    return f"add table ip {TABLE}\ndelete table ip {TABLE}\n{text}"


def removal() -> str:
    """The transaction removing the table (kube-proxy's CleanupLeftovers), absent or not."""
    return f"add table ip {TABLE}\ndelete table ip {TABLE}\n"


# ---------------------------------------------------------------- stale UDP conntrack


def _udp_ports(services: Sequence[Service], endpoints: Mapping[str, Sequence[Endpoint]]):
    out = {}
    for svc in services:
        if svc.headless:
            continue
        for port in svc.ports:
            if port.protocol == "UDP":
                ips = {ep.ip for ep in endpoints.get(svc.key, ())
                       if ep.ready and ep.port_name == port.name}
                out[(svc.key, port.name)] = (svc, port, ips)
    return out


def _service_ips(svc: Service) -> list[str]:
    return [svc.cluster_ip] + ([svc.load_balancer_ip] if svc.load_balancer_ip else [])


def stale_udp(old_services: Sequence[Service], old_endpoints: Mapping[str, Sequence[Endpoint]],
              new_services: Sequence[Service],
              new_endpoints: Mapping[str, Sequence[Endpoint]]) -> list[tuple[str, ...]]:
    """The `conntrack` deletions kube-proxy runs after a sync (pkg/proxy/conntrack/cleanup.go):
    UDP conntrack entries outlive the rules, so a client keeps reaching a removed endpoint (or
    keeps its cached reject) until they are deleted. For a deleted UDP Service port and for one
    that goes from no endpoints to some: every entry to its IPs and nodePort. For a removed
    endpoint: the entries NATed to it from the Service's IPs and nodePort."""
    old, new = _udp_ports(old_services, old_endpoints), _udp_ports(new_services, new_endpoints)
    ips: list[str] = []
    node_ports: list[int] = []
    nat: list[tuple[str, ...]] = []
    for k, (svc, port, eps) in old.items():
        if k not in new:
            ips += _service_ips(svc)
            continue
        nsvc, nport, neps = new[k]
        for ip in sorted(eps - neps):
            if nport.node_port:
                nat.append(("conntrack", "-D", "-p", "udp", "--dport", str(nport.node_port),
                            "--dst-nat", ip))
            for vip in _service_ips(nsvc):
                nat.append(("conntrack", "-D", "--orig-dst", vip, "--dst-nat", ip, "-p", "udp"))
    for k, (svc, port, eps) in new.items():
        before = old.get(k)
        if eps and (before is None or not before[2]):
            ips += _service_ips(svc)
            if port.node_port:
                node_ports.append(port.node_port)
    out = [("conntrack", "-D", "--orig-dst", ip, "-p", "udp") for ip in dict.fromkeys(ips)]
    out += [("conntrack", "-D", "-p", "udp", "--dport", str(p)) for p in dict.fromkeys(node_ports)]
    return out + nat

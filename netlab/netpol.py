"""NetworkPolicy: Kubernetes' policy model, its evaluator, its nftables compiler, its truth table.

Pure: nothing here touches the kernel. Four parts, each usable alone:

- the specs of `networkPolicies:` in networking.k8s.io/v1's shape (pydantic, extra fields
  forbidden) with Kubernetes' defaults, and `check()` against the lab's pods (named ports);
- `verdict()`: may this source reach this pod on this port and protocol, and which policy rule
  says so (the reference the kernel is compared with);
- `matrix()` and `render_matrix()`: every pair of pods, printed as the upstream "Netpol" e2e
  suite and cyclonus print it (rows sources, columns targets, `.` allowed, `X` denied, `!` where
  the observed verdict differs from the expected one);
- `ruleset()`: the `table inet netlab-netpol` one node's namespace loads with `nft -f -`.

Kubernetes semantics kept exactly (they are what learners guess wrong):
- `policyTypes` absent means [Ingress], plus Egress when the policy has egress rules;
- a pod no policy selects for a direction is not isolated in that direction;
- allowed traffic is the union of the rules of every policy that selects the pod; egress (at the
  source) and ingress (at the destination) must both allow;
- `ingress: []` allows nothing, `ingress: [{}]` allows everything; inside a rule an absent
  `from`/`to`/`ports` and an empty list mean the same: all sources / destinations / ports;
- a peer with podSelector and namespaceSelector selects pods matching both (AND); two peers are
  OR; podSelector alone means pods in the policy's own namespace; namespaceSelector {} means
  every namespace;
- ipBlock matches by address, also pod addresses (as Calico, Cilium and kube-network-policies
  do); named ports are resolved on the destination pod, by name and protocol;
- traffic from the destination pod's own node IP is always allowed (kubelet probes);
- a pod reaching itself never leaves its namespace: always allowed (upstream ignores loopback).
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field
from typing import Literal, Optional, Union

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

NS_LABEL = "kubernetes.io/metadata.name"
TABLE = "netlab-netpol"
Protocol = Literal["TCP", "UDP", "SCTP"]
_DNS_LABEL = re.compile(r"^[a-z0-9]([a-z0-9-]*[a-z0-9])?$")
_PORT_NAME = re.compile(r"^(?=.*[a-z])[a-z0-9]([a-z0-9-]*[a-z0-9])?$")  # IANA_SVC_NAME


class _Spec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


# ---------------------------------------------------------------------------------------------
# specs

class LabelSelectorRequirement(_Spec):
    key: str
    operator: Literal["In", "NotIn", "Exists", "DoesNotExist"]
    values: tuple[str, ...] = ()

    @model_validator(mode="after")
    def _values_fit_operator(self):
        if self.operator in ("In", "NotIn") and not self.values:
            raise ValueError(f"matchExpressions {self.key!r}: operator {self.operator} needs "
                             f"a non-empty `values` list")
        if self.operator in ("Exists", "DoesNotExist") and self.values:
            raise ValueError(f"matchExpressions {self.key!r}: operator {self.operator} takes "
                             f"no `values`; remove them")
        return self

    def matches(self, labels: dict[str, str]) -> bool:
        if self.operator == "In":
            return labels.get(self.key) in self.values
        if self.operator == "NotIn":
            return labels.get(self.key) not in self.values
        if self.operator == "Exists":
            return self.key in labels
        return self.key not in labels


class LabelSelector(_Spec):
    """Empty selects everything; all of matchLabels and matchExpressions must hold (AND)."""
    matchLabels: dict[str, str] = {}
    matchExpressions: tuple[LabelSelectorRequirement, ...] = ()

    def matches(self, labels: dict[str, str]) -> bool:
        return (all(labels.get(k) == v for k, v in self.matchLabels.items())
                and all(e.matches(labels) for e in self.matchExpressions))


class IPBlock(_Spec):
    cidr: str
    except_: tuple[str, ...] = Field(default=(), alias="except")

    @field_validator("cidr")
    @classmethod
    def _cidr(cls, v: str) -> str:
        try:
            ipaddress.ip_network(v, strict=True)
        except ValueError as e:
            raise ValueError(f"ipBlock cidr {v!r} is not a network in CIDR form "
                             f"(like 10.0.0.0/16, host bits zero): {e}") from None
        return v

    @model_validator(mode="after")
    def _except_inside(self):
        net = ipaddress.ip_network(self.cidr)
        for ex in self.except_:
            try:
                exn = ipaddress.ip_network(ex, strict=True)
            except ValueError as e:
                raise ValueError(f"ipBlock except {ex!r} is not a network in CIDR form: {e}") \
                    from None
            if exn.version != net.version or not exn.subnet_of(net) or exn == net:
                raise ValueError(f"ipBlock except {ex!r} must be a strict subnet of cidr "
                                 f"{self.cidr!r}")
        return self

    def matches(self, ip: str) -> bool:
        a = ipaddress.ip_address(ip)
        if a.version != ipaddress.ip_network(self.cidr).version:
            return False
        return (a in ipaddress.ip_network(self.cidr)
                and not any(a in ipaddress.ip_network(e) for e in self.except_))

    def networks(self) -> list[ipaddress.IPv4Network]:
        """cidr minus every except, as a list of networks (nft interval sets cannot subtract)."""
        nets = [ipaddress.ip_network(self.cidr)]
        for ex in map(ipaddress.ip_network, self.except_):
            nets = [piece for n in nets
                    for piece in ((n.address_exclude(ex)) if ex.subnet_of(n) else
                                  ([] if n.subnet_of(ex) else [n]))]
        return nets


class Peer(_Spec):
    podSelector: Optional[LabelSelector] = None
    namespaceSelector: Optional[LabelSelector] = None
    ipBlock: Optional[IPBlock] = None

    @model_validator(mode="after")
    def _one_kind(self):
        selector = self.podSelector is not None or self.namespaceSelector is not None
        if self.ipBlock is not None and selector:
            raise ValueError("a peer has either ipBlock or podSelector/namespaceSelector, not "
                             "both; write them as two peers (which means OR)")
        if self.ipBlock is None and not selector:
            raise ValueError("a peer must set podSelector, namespaceSelector or ipBlock; to "
                             "allow every source, leave out `from`/`to` instead")
        return self


class PolicyPort(_Spec):
    protocol: Protocol = "TCP"
    port: Optional[Union[int, str]] = None
    endPort: Optional[int] = None

    @field_validator("port")
    @classmethod
    def _port(cls, v):
        if isinstance(v, bool):
            raise ValueError("port must be a number or a port name")
        if isinstance(v, int) and not 1 <= v <= 65535:
            raise ValueError(f"port {v} is not in 1-65535")
        if isinstance(v, str) and (len(v) > 15 or not _PORT_NAME.match(v)):
            raise ValueError(f"port name {v!r} is not a valid port name (lowercase letters, "
                             f"digits and '-', at most 15, at least one letter)")
        return v

    @model_validator(mode="after")
    def _end_port(self):
        if self.endPort is None:
            return self
        if self.port is None:
            raise ValueError("endPort needs port: the range is port..endPort")
        if isinstance(self.port, str):
            raise ValueError(f"endPort cannot go with a named port ({self.port!r}); use a number")
        if not self.port <= self.endPort <= 65535:
            raise ValueError(f"endPort {self.endPort} must be >= port {self.port} and <= 65535")
        return self


class IngressRule(_Spec):
    from_: Optional[tuple[Peer, ...]] = Field(default=None, alias="from")
    ports: Optional[tuple[PolicyPort, ...]] = None

    @property
    def peers(self) -> tuple[Peer, ...]:
        return self.from_ or ()


class EgressRule(_Spec):
    to: Optional[tuple[Peer, ...]] = None
    ports: Optional[tuple[PolicyPort, ...]] = None

    @property
    def peers(self) -> tuple[Peer, ...]:
        return self.to or ()


class NetworkPolicy(_Spec):
    """One NetworkPolicy, flattened: metadata's name and namespace next to the spec's fields."""
    name: str
    namespace: str = "default"
    podSelector: LabelSelector = LabelSelector()
    policyTypes: Optional[tuple[Literal["Ingress", "Egress"], ...]] = None
    ingress: tuple[IngressRule, ...] = ()
    egress: tuple[EgressRule, ...] = ()

    @field_validator("name", "namespace")
    @classmethod
    def _dns_label(cls, v: str) -> str:
        # also what keeps the nft set and chain names built from them unambiguous
        if len(v) > 63 or not _DNS_LABEL.match(v):
            raise ValueError(f"{v!r} is not a DNS label (lowercase letters, digits and '-', "
                             f"at most 63, starting and ending with a letter or digit)")
        return v

    @property
    def types(self) -> tuple[str, ...]:
        """policyTypes as Kubernetes defaults it."""
        if self.policyTypes is not None:
            return self.policyTypes
        return ("Ingress", "Egress") if self.egress else ("Ingress",)

    @property
    def id(self) -> str:
        return f"{self.namespace}/{self.name}"


def parse_policies(items: list[dict]) -> tuple[NetworkPolicy, ...]:
    """The `networkPolicies:` list of a scenario; accepts the flat shape or the full object
    (`metadata: {name, namespace}`, `spec: {...}`) as kubectl writes it."""
    out = []
    for it in items:
        if isinstance(it, dict) and "spec" in it:
            it = {**it.get("metadata", {}), **it["spec"]}
        out.append(NetworkPolicy.model_validate(it))
    return tuple(out)


# ---------------------------------------------------------------------------------------------
# the cluster the policies act on (what the lab model must give)

@dataclass(frozen=True)
class ContainerPort:
    name: str
    port: int
    protocol: str = "TCP"


@dataclass(frozen=True)
class Pod:
    name: str
    namespace: str
    ip: str
    node: str
    labels: dict = field(default_factory=dict, hash=False)
    ports: tuple[ContainerPort, ...] = ()

    @property
    def id(self) -> str:
        return f"{self.namespace}/{self.name}"

    def named_port(self, name: str, protocol: str) -> Optional[int]:
        for p in self.ports:
            if p.name == name and p.protocol == protocol:
                return p.port
        return None


@dataclass(frozen=True)
class Namespace:
    name: str
    labels: dict = field(default_factory=dict, hash=False)

    @property
    def all_labels(self) -> dict[str, str]:
        """Its labels plus kubernetes.io/metadata.name, which the API server always sets."""
        return {**self.labels, NS_LABEL: self.name}


def check(policies, namespaces, pods) -> list[str]:
    """Errors a scenario must not be built with: unknown namespace, named ports no pod has."""
    errors = []
    ns_names = {n.name for n in namespaces}
    declared = {(p.name, p.protocol) for pod in pods for p in pod.ports}
    for pol in policies:
        if pol.namespace not in ns_names:
            errors.append(f"networkPolicy {pol.id}: namespace {pol.namespace!r} is not defined")
        for kind, rules in (("ingress", pol.ingress), ("egress", pol.egress)):
            for i, rule in enumerate(rules, 1):
                for pp in rule.ports or ():
                    if isinstance(pp.port, str) and (pp.port, pp.protocol) not in declared:
                        errors.append(f"networkPolicy {pol.id} {kind} rule {i}: no pod declares "
                                      f"a {pp.protocol} port named {pp.port!r}; name a "
                                      f"container port so or use its number")
    return errors


# ---------------------------------------------------------------------------------------------
# evaluator

class _Cluster:
    def __init__(self, namespaces, pods, nodes):
        self.ns = {n.name: n for n in namespaces}
        self.pods = {p.id: p for p in pods}
        self.by_ip = {p.ip: p for p in pods}
        self.nodes = dict(nodes or {})
        self.isolating: dict = {}      # (kind, pod id) -> policies selecting it; one policy list

    def selecting(self, kind: str, pod: Pod, policies) -> list:
        key = (kind, pod.id)
        if key not in self.isolating:
            self.isolating[key] = [p for p in policies if kind in p.types and selects(p, pod)]
        return self.isolating[key]

    def pod(self, ref: Union[str, Pod, None]) -> Optional[Pod]:
        if isinstance(ref, Pod):
            return ref
        return self.pods.get(ref) or self.by_ip.get(ref)

    def ip(self, ref) -> str:
        pod = self.pod(ref)
        return pod.ip if pod else str(ipaddress.ip_address(ref))

    def ns_labels(self, name: str) -> dict[str, str]:
        n = self.ns.get(name) or Namespace(name)
        return n.all_labels


def selects(pol: NetworkPolicy, pod: Pod) -> bool:
    return pol.namespace == pod.namespace and pol.podSelector.matches(pod.labels)


def _peer_matches(peer: Peer, pol: NetworkPolicy, ip: str, pod: Optional[Pod], c: _Cluster) -> bool:
    if peer.ipBlock is not None:
        return peer.ipBlock.matches(ip)
    if pod is None:
        return False                       # selectors select pods only, never other addresses
    if peer.namespaceSelector is None:
        ns_ok = pod.namespace == pol.namespace
    else:
        ns_ok = peer.namespaceSelector.matches(c.ns_labels(pod.namespace))
    pod_ok = peer.podSelector is None or peer.podSelector.matches(pod.labels)
    return ns_ok and pod_ok


def _port_matches(pp: PolicyPort, dst: Optional[Pod], port: int, proto: str) -> bool:
    if pp.protocol != proto:
        return False
    if pp.port is None:
        return True
    if isinstance(pp.port, str):
        return dst is not None and dst.named_port(pp.port, proto) == port
    return pp.port <= port <= (pp.endPort or pp.port)


def _rule_matches(rule, pol, peer_ip, peer_pod, dst_pod, port, proto, c) -> bool:
    if rule.peers and not any(_peer_matches(p, pol, peer_ip, peer_pod, c) for p in rule.peers):
        return False
    return not rule.ports or any(_port_matches(pp, dst_pod, port, proto) for pp in rule.ports)


def _direction(kind, pod, policies, peer_ip, peer_pod, dst_pod, port, proto, c):
    """(allowed, reason) of one side: `kind` is Ingress (pod is the destination) or Egress."""
    mine = c.selecting(kind, pod, policies)
    if not mine:
        return True, f"{pod.id} is not isolated for {kind}"
    for pol in mine:
        rules = pol.ingress if kind == "Ingress" else pol.egress
        for i, rule in enumerate(rules, 1):
            if _rule_matches(rule, pol, peer_ip, peer_pod, dst_pod, port, proto, c):
                return True, f"allowed by {pol.id} {kind.lower()} rule {i}"
    peer = peer_pod.id if peer_pod else peer_ip
    names = ", ".join(p.id for p in mine)
    return False, (f"denied: {names} select{'s' if len(mine) == 1 else ''} {pod.id} for {kind} "
                   f"and no rule allows {peer} on {proto}/{port}")


def verdict(policies, namespaces, pods, src, dst, port: int, proto: str = "TCP",
            nodes: Optional[dict[str, str]] = None) -> tuple[bool, str]:
    """May `src` open a connection to pod `dst` on port/proto? -> (allowed, reason).

    src: a pod ("ns/name", its IP, or a Pod) or any IP address (a node, the outside world);
    dst: a pod. nodes: node name -> node IP (for the own-node rule). The reason names the policy
    and rule that allowed, or the policies that isolate the pod when nothing allowed."""
    return _verdict(_Cluster(namespaces, pods, nodes), policies, src, dst, port, proto)


def _verdict(c: _Cluster, policies, src, dst, port: int, proto: str) -> tuple[bool, str]:
    dpod = c.pod(dst)
    if dpod is None:
        raise ValueError(f"destination {dst!r} is not a pod")
    spod, sip = c.pod(src), c.ip(src)
    proto = proto.upper()
    if spod is not None and spod.id == dpod.id:
        return True, f"{dpod.id} reaching itself never leaves the pod"
    if c.nodes.get(dpod.node) == sip:
        return True, f"allowed: from {dpod.id}'s own node {dpod.node} (kubelet probes)"
    reasons = []
    if spod is not None:
        ok, why = _direction("Egress", spod, policies, dpod.ip, dpod, dpod, port, proto, c)
        if not ok:
            return False, why
        reasons.append(why)
    ok, why = _direction("Ingress", dpod, policies, sip, spod, dpod, port, proto, c)
    if not ok:
        return False, why
    reasons.append(why)
    said = [r for r in reasons if r.startswith("allowed")]
    if not said:
        return True, (f"allowed: no policy isolates {spod.id + ' for Egress nor ' if spod else ''}"
                      f"{dpod.id} for Ingress")
    return True, "; ".join(said)


# ---------------------------------------------------------------------------------------------
# truth table

@dataclass(frozen=True)
class Matrix:
    """Verdicts for every ordered pair of pods on one port and protocol."""
    pods: tuple[str, ...]                   # "ns/name", rows and columns in this order
    port: int
    proto: str
    allowed: dict                           # (src, dst) -> bool
    reasons: dict = field(default_factory=dict)   # (src, dst) -> str

    def denied_pairs(self) -> set[tuple[str, str]]:
        return {k for k, v in self.allowed.items() if not v}


def matrix(policies, namespaces, pods, port: int, proto: str = "TCP",
           nodes: Optional[dict[str, str]] = None) -> Matrix:
    c = _Cluster(namespaces, pods, nodes)
    ids = tuple(sorted(p.id for p in pods))
    allowed, reasons = {}, {}
    for s in ids:
        for d in ids:
            allowed[s, d], reasons[s, d] = _verdict(c, policies, s, d, port, proto)
    return Matrix(ids, port, proto.upper(), allowed, reasons)


def render_matrix(expected: Matrix, observed: Optional[Matrix] = None) -> str:
    """The truth table: `.` allowed, `X` denied; with `observed`, `!` where it differs."""
    ids = expected.pods
    w = max(len(i) for i in ids)
    lines = [f"{expected.proto}/{expected.port}".ljust(w) + "  " + " ".join(
        i.ljust(w) for i in ids).rstrip()]
    for s in ids:
        cells = []
        for d in ids:
            e = expected.allowed[s, d]
            if observed is not None and observed.allowed.get((s, d)) != e:
                cells.append("!")
            else:
                cells.append("." if e else "X")
        lines.append(s.ljust(w) + "  " + " ".join(ch.ljust(w) for ch in cells).rstrip())
    return "\n".join(lines) + "\n"


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
